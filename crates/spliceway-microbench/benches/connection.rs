//! One connection's setup and teardown (connect, 1-byte echo, close), straight to the echo
//! server and through an in-process relay; prints the relay's CPU time per connection.
//!
//! ```text
//! cargo bench -p spliceway-microbench --bench connection
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use spliceway_microbench::connection::{ConnectionBench, one_connection};

fn connection(c: &mut Criterion) {
    let bench = ConnectionBench::start().expect("start the echo server and the relay");
    let mut group = c.benchmark_group("connection");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("direct", |b| {
        b.iter(|| one_connection(black_box(bench.direct_addr())).expect("direct connection"));
    });
    let mut connections = 0u64;
    let mut relay_cpu = Duration::ZERO;
    group.bench_function("relayed", |b| {
        b.iter_custom(|iterations| {
            let cpu_before = bench.relay.cpu_time().expect("relay CPU time");
            let start = Instant::now();
            for _ in 0..iterations {
                one_connection(black_box(bench.relay_addr())).expect("relayed connection");
            }
            let elapsed = start.elapsed();
            relay_cpu += bench.relay.cpu_time().expect("relay CPU time") - cpu_before;
            connections += iterations;
            elapsed
        });
    });
    group.finish();
    if connections > 0 {
        eprintln!(
            "\nRelay worker thread: {:.1} µs CPU per relayed connection ({connections} connections)",
            relay_cpu.as_secs_f64() * 1e6 / connections as f64
        );
    }
}

criterion_group!(benches, connection);
criterion_main!(benches);
