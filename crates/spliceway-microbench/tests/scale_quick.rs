//! The scale benchmark at a very small size, against the library relay in this process: hash
//! integrity, planned endings and the descriptor-baseline check all pass, and their failure
//! paths report. (The real measurement runs the `spliceway` binary: `scripts/scale.sh`.)
//!
//! Alone in its test binary: the scenarios count this process's descriptors.

use std::time::Duration;

use spliceway_microbench::scale::target::RelayChoice;
use spliceway_microbench::scale::{self, Options};

#[test]
fn quick_scale_scenarios_pass_in_process() {
    let options = Options {
        idle: 100,
        active: 100,
        active_bytes: 64 << 10,
        churn: 1000,
        burst: 100,
        settle: Duration::from_secs(5),
        ..Options::quick(RelayChoice::InProcess)
    };
    let report = scale::run(&options, &mut |_| {}).expect("the scale benchmark runs");
    assert!(
        report.failures.is_empty(),
        "{:#?}\n{}",
        report.failures,
        report.text
    );
    let results = &report.json["results"];
    assert_eq!(results["active"]["every_hash_intact"], true);
    assert_eq!(results["active"]["intact"], 100);
    assert_eq!(results["idle"]["established"], 100);
    assert_eq!(results["churn"]["fds_back_to_baseline"], true);
    assert_eq!(results["churn"]["unexpected_endings_client"], 0);
    assert_eq!(results["churn"]["unexpected_endings_upstream"], 0);
    let line = report
        .text
        .lines()
        .find(|l| l.contains("every hash intact"))
        .expect("the active table");
    assert!(line.contains("| yes"), "{line}");
}
