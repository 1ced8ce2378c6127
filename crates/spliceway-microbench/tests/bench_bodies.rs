//! Each criterion bench body, run once at a tiny size, so that the benchmarks cannot rot
//! (`cargo test` never runs the `harness = false` benches themselves).

use spliceway::Mode;
use spliceway_microbench::MIB;
use spliceway_microbench::connection::{ConnectionBench, one_connection};
use spliceway_microbench::engine::{EngineBench, SIZES_BYTES};

#[test]
fn engine_moves_a_payload_in_both_modes_at_every_size() {
    for mode in [Mode::Splice, Mode::Copy] {
        for size in SIZES_BYTES {
            let bench = EngineBench::start(mode, size, MIB).unwrap();
            let transfer = bench.transfer().unwrap();
            assert_eq!(transfer.bytes, MIB, "{mode} {size}");
            assert!(
                transfer.relay_cpu > std::time::Duration::ZERO,
                "{mode} {size}: no CPU time read"
            );
            assert!(transfer.cpu_seconds_per_gib().is_finite());
        }
    }
}

#[test]
fn connection_cycles_direct_and_relayed() {
    let bench = ConnectionBench::start().unwrap();
    for _ in 0..20 {
        one_connection(bench.direct_addr()).unwrap();
        one_connection(bench.relay_addr()).unwrap();
    }
    assert!(bench.relay.cpu_time().unwrap() > std::time::Duration::ZERO);
    let stats = bench.relay.handle.snapshot().stats;
    assert_eq!(stats.accepted, 20);
}
