//! Durability with real clients and real crashes: the daemon is killed with SIGKILL
//! and restarted over the same data directory.

mod common;

use std::process::Command;

use common::{BIN, python};

/// Under persistent load from STOMP and MQTT publishers, SIGKILL at random moments (20
/// times), restart each time: every confirmed message arrives at least once, in order
/// per queue (tests/py/crash_load.py checks and prints the duplicate count).
#[test]
fn kill_9_under_load_loses_no_confirmed_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/crash_load.py"))
        .args(["--bin", BIN, "--dir"])
        .arg(dir.path())
        .args(["--kills", "20"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "crash test failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log (tail):\n{}",
        String::from_utf8_lossy(&out.stderr),
        &log[log.len().saturating_sub(6000)..]
    );
    println!("{stdout}");
}
