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
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/crash_load.py"
        ))
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

fn durable_scenario(d: &common::Daemon, name: &str) -> String {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/durable_scenarios.py"
        ))
        .args(["--port", &d.addr("stomp").port().to_string()])
        .args(["--mqtt-port", &d.addr("mqtt").port().to_string()])
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "scenario {name} failed\nstdout:\n{stdout}\nstderr:\n{stderr}\ndaemon log:\n{}",
        d.log()
    );
    stderr
}

/// STOMP: a persistent queue (acked gone, unacked redelivered flagged, never-delivered
/// unflagged, transient gone, order kept) and a durable topic subscription that
/// collected while away, across kill -9.
#[test]
fn stomp_queues_and_durable_subscriptions_survive_kill_9() {
    let d = common::Daemon::start(&[], &[]);
    durable_scenario(&d, "stomp_before");
    let d = d.kill_and_restart(&[]);
    durable_scenario(&d, "stomp_after");
}

/// MQTT: a persistent session (subscription, queued QoS 1 message) and a retained
/// message across kill -9.
#[test]
fn mqtt_sessions_and_retained_messages_survive_kill_9() {
    let d = common::Daemon::start(&[], &[]);
    durable_scenario(&d, "mqtt_before");
    let d = d.kill_and_restart(&[]);
    durable_scenario(&d, "mqtt_after");
}

/// A torn tail (the journal truncated mid-record) is cut back to the last complete
/// record on start-up, logged, and everything before it is delivered.
#[test]
fn a_torn_journal_tail_is_recovered_and_logged() {
    let d = common::Daemon::start(&[], &[]);
    durable_scenario(&d, "torn_before");
    let d = d.kill_change_restart(
        |dir| {
            let data = dir.join("data");
            let mut segments: Vec<_> = std::fs::read_dir(&data)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "journal"))
                .collect();
            segments.sort();
            let last = segments.last().expect("a journal segment");
            let len = std::fs::metadata(last).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
            f.set_len(len - 3).unwrap();
        },
        &[],
    );
    let log = d.current_log();
    assert!(
        log.contains("torn tail") && log.contains("bytes discarded"),
        "the repair is logged:\n{log}"
    );
    durable_scenario(&d, "torn_after");
}
