//! The shipped load benchmark still runs: its quickest mode against the
//! real bridge prints a report table. Speed is the tool's business, not
//! this test's; it only checks that the tool works end to end.

use std::process::Command;

#[test]
fn quick_ingest_run_prints_a_table() {
    let output = Command::new(env!("CARGO_BIN_EXE_cherry-bench"))
        .args(["--quick", "--scenario", "ingest"])
        .args(["--bridge", env!("CARGO_BIN_EXE_cherry-bridge")])
        .output()
        .expect("cherry-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cherry-bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| scenario"), "a table header:\n{stdout}");
    assert!(stdout.contains("| ingest"), "an ingest row:\n{stdout}");
}
