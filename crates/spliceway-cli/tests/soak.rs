//! `spliceway soak`: its self-test (the verdict code on synthetic runs, the load's checks
//! against its own upstream servers, a flipped byte, a relay that hides resets) passes in
//! seconds, and bad usage exits 2. The soak itself runs for minutes: scripts/soak.sh.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_spliceway");

#[test]
fn the_soak_self_test_passes() {
    let out = Command::new(EXE)
        .args(["soak", "--self-test"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("soak self-test: passed"), "{stdout}");
}

#[test]
fn a_soak_of_no_minutes_is_a_usage_error() {
    for minutes in ["0", "-1", "soon"] {
        let flag = format!("--minutes={minutes}");
        let out = Command::new(EXE).args(["soak", &flag]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "--minutes {minutes}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("positive number of minutes"), "{stderr}");
    }
}
