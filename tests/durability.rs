//! Durability with real clients and real crashes: the daemon is killed with SIGKILL
//! and restarted over the same data directory.

mod common;

use std::process::Command;

use common::{BIN, python};

/// Under persistent load from STOMP and MQTT publishers, SIGKILL at random moments (20
/// times), restart each time: every confirmed message arrives at least once, in order
/// per queue; no message whose ACK was confirmed with a RECEIPT comes back; every
/// redelivery carries `redelivered:true` (STOMP) or DUP (MQTT QoS 1)
/// (tests/py/crash_load.py checks and prints the duplicate count).
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
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
        .args(["--admin-port", &d.addr("admin").port().to_string()])
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

/// STOMP: a persistent queue (acked gone, the rest flagged redelivered since a crash
/// may have lost delivery marks, transient gone, order kept) and a durable topic
/// subscription that collected while away, across kill -9.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn stomp_queues_and_durable_subscriptions_survive_kill_9() {
    let d = common::Daemon::start(&[], &[]);
    durable_scenario(&d, "stomp_before");
    let d = d.kill_and_restart(&[]);
    durable_scenario(&d, "stomp_after");
}

/// The same across an orderly stop (SIGTERM): the delivery marks are complete, so only
/// the messages that were handed out come back flagged redelivered.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn stomp_queues_survive_an_orderly_restart_with_exact_redelivered_flags() {
    let d = common::Daemon::start(&[], &[]);
    durable_scenario(&d, "stomp_before");
    let d = d.stop_and_restart(&[]);
    assert!(
        d.current_log().contains("clean=true"),
        "the journal was closed cleanly:\n{}",
        d.current_log()
    );
    durable_scenario(&d, "stomp_after_clean");
}

/// MQTT: a persistent session (subscription, queued QoS 1 message) and a retained
/// message across kill -9.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn mqtt_sessions_and_retained_messages_survive_kill_9() {
    let d = common::Daemon::start(&[], &[]);
    durable_scenario(&d, "mqtt_before");
    let d = d.kill_and_restart(&[]);
    durable_scenario(&d, "mqtt_after");
}

/// A torn tail (the journal truncated mid-record) is cut back to the last complete
/// record on start-up, logged, and everything before it is delivered.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
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

/// Publishers block above the memory watermark and resume once consumers drain the
/// queues; both transitions are logged.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn the_memory_watermark_blocks_and_releases_publishers() {
    let d = common::daemon_with_config("durability:\n  memory_high_watermark: 200000\n");
    durable_scenario(&d, "memory_watermark");
    let log = d.log();
    assert!(
        log.contains("publishers blocked") && log.contains("memory watermark"),
        "{log}"
    );
    assert!(log.contains("publishers resumed"), "{log}");
}

/// A small tmpfs mounted over the data directory, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], at);
        Tmpfs(at.to_owned())
    }

    fn remount(&self, how: &str) {
        mount(&["-o", &format!("remount,{how}")], &self.0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], at: &std::path::Path) {
    let out = Command::new("mount").args(args).arg(at).output().unwrap();
    assert!(
        out.status.success(),
        "mount {args:?} {} failed (these tests need root to mount a tmpfs): {}",
        at.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fills the file system at `dir` with a file until it is full.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&chunk[..1]);
    path
}

/// A full or read-only data directory: persistent publishes are refused with a clear
/// error at each protocol's level (STOMP ERROR, MQTT 5 PUBACK failure code), transient
/// ones still flow, and once the disk is writable again persistent publishes are
/// accepted; nothing accepted is lost (kill -9 and a restart on the directory mounted
/// read-only, which still recovers and serves what it holds).
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn read_only_and_full_disks_refuse_persistent_publishes_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let cfg = dir.path().join("sb.yaml");
    // The disk watermark would block first on a small disk: off here.
    std::fs::write(&cfg, "durability:\n  disk_free_limit: 0\n").unwrap();
    let cfg = cfg.display().to_string();
    let fs = Tmpfs::mount(&dir.path().join("data"), "4m");
    let d = common::Daemon::start_in(dir, &["--config", &cfg]);
    durable_scenario(&d, "before");

    let filler = fill(&d.dir.path().join("data"));
    let said = durable_scenario(&d, "full_refuses");
    assert!(said.contains("No space left on device"), "{said}");
    std::fs::remove_file(&filler).unwrap();
    durable_scenario(&d, "full_recovers");
    let log = d.log();
    assert!(log.contains("store write failed"), "{log}");
    assert!(log.contains("store writable again"), "{log}");

    // Restart on a read-only directory (a file system remounted read-only): it starts,
    // says so, refuses persistent publishes and serves what it holds.
    let d = d.kill_change_restart(|_| fs.remount("ro"), &["--config", &cfg]);
    assert!(
        d.current_log().contains("cannot be written"),
        "{}",
        d.current_log()
    );
    let said = durable_scenario(&d, "full_refuses");
    assert!(said.contains("Read-only file system"), "{said}");
    let said = durable_scenario(&d, "ack_refused");
    assert!(said.contains("Read-only file system"), "{said}");
    durable_scenario(&d, "expect_accepted_but_acked");
    // Writable again: accepted again, without a restart.
    fs.remount("rw");
    durable_scenario(&d, "full_recovers");
    drop(d);
    drop(fs);
}

/// Below the disk free-space limit publishers wait; freeing space lets them through.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn the_disk_watermark_blocks_and_releases_publishers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let cfg = dir.path().join("sb.yaml");
    std::fs::write(&cfg, "durability:\n  disk_free_limit: 8388608\n").unwrap();
    let cfg = cfg.display().to_string();
    let fs = Tmpfs::mount(&dir.path().join("data"), "16m");
    let d = common::Daemon::start_in(dir, &["--config", &cfg]);
    durable_scenario(&d, "before");
    let filler = d.dir.path().join("data/filler");
    std::fs::write(&filler, vec![0u8; 10 * 1024 * 1024]).unwrap();
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the disk watermark is logged",
        || d.log().contains("disk watermark").then_some(()),
    );
    let mut waiter = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/durable_scenarios.py"
        ))
        .args(["--port", &d.addr("stomp").port().to_string()])
        .args(["--mqtt-port", &d.addr("mqtt").port().to_string()])
        .args(["--timeout", "20", "blocked_then_resumes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Free the disk once the scenario has seen its publish held back.
    let mut stdout = std::io::BufReader::new(waiter.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(
        line.trim(),
        "held",
        "the scenario's first line; stderr: {}",
        std::io::read_to_string(waiter.stderr.take().unwrap()).unwrap_or_default()
    );
    std::fs::remove_file(&filler).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert!(
        out.status.success() && rest.trim_end().ends_with("ok"),
        "{rest}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert!(d.log().contains("publishers resumed"), "{}", d.log());
    drop(d);
    drop(fs);
}

/// Two routers never share a journal: the second one refuses to start, saying why.
#[test]
fn a_data_directory_in_use_is_refused() {
    let d = common::Daemon::start(&[], &[]);
    let out = Command::new(BIN)
        .args(["run", "--routes", "/nonexistent", "--data-dir"])
        .arg(d.dir.path().join("data"))
        .args(common::OTHER_LISTENERS_OFF)
        .args(["--listen", "admin=127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another switchboard process") && err.contains("--data-dir"),
        "{err}"
    );
}
