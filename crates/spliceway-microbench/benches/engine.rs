//! Splice vs copy: a 64 MiB payload per iteration through an in-process relay, for pipe (or
//! copy buffer) sizes from 64 KiB to 1 MiB; prints the relay's CPU seconds per GiB at the end.
//!
//! ```text
//! cargo bench -p spliceway-microbench --bench engine
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use spliceway::Mode;
use spliceway_microbench::engine::{EngineBench, SIZES_BYTES, Transfer};
use spliceway_microbench::{GIB, MIB};

/// Bytes moved per iteration.
const PAYLOAD_BYTES: u64 = 64 * MIB;

fn engine(c: &mut Criterion) {
    let mut summary: Vec<(Mode, usize, Transfer)> = Vec::new();
    for mode in [Mode::Splice, Mode::Copy] {
        let mut group = c.benchmark_group(format!("engine/{mode}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Bytes(PAYLOAD_BYTES));
        for size in SIZES_BYTES {
            let bench = EngineBench::start(mode, size, PAYLOAD_BYTES).expect("start the relay");
            let mut totals = Transfer::default();
            let id = BenchmarkId::from_parameter(format!("{}KiB", size >> 10));
            group.bench_function(id, |b| {
                b.iter_custom(|iterations| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iterations {
                        let transfer = bench.transfer().expect("transfer through the relay");
                        elapsed += transfer.elapsed;
                        totals.add(black_box(transfer));
                    }
                    elapsed
                });
            });
            if totals.bytes > 0 {
                summary.push((mode, size, totals));
            }
        }
        group.finish();
    }
    if summary.is_empty() {
        return;
    }
    eprintln!(
        "\nRelay worker thread, all iterations (warm-up included), {} MiB per transfer:\n",
        PAYLOAD_BYTES / MIB
    );
    eprintln!("| mode | pipe/buffer | GiB moved | throughput MiB/s | relay CPU s/GiB |");
    eprintln!("| --- | --- | --- | --- | --- |");
    for (mode, size, t) in summary {
        eprintln!(
            "| {mode} | {} KiB | {:.1} | {:.0} | {:.3} |",
            size >> 10,
            t.bytes as f64 / GIB as f64,
            t.throughput() / MIB as f64,
            t.cpu_seconds_per_gib()
        );
    }
}

criterion_group!(benches, engine);
criterion_main!(benches);
