//! STOMP with stomp.py (an independent client, PyPI) over real sockets: every frame type,
//! ack modes, NACK, transactions, receipts, temp reply queues, topics, auth.

mod common;

use std::process::Command;

use common::Daemon;

fn python() -> String {
    std::env::var("SWITCHBOARD_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into())
}

/// Runs a scenario of tests/py/stomp_scenarios.py against `d`.
fn scenario(d: &Daemon, name: &str, extra: &[&str]) {
    let port = d.addr("stomp").port().to_string();
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/stomp_scenarios.py"
        ))
        .args(["--port", &port, name])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "scenario {name} failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

macro_rules! stomp_scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let d = Daemon::start(&[], &[]);
            scenario(&d, stringify!($name), &[]);
        }
    )*};
}

stomp_scenarios!(
    versions,
    frames_and_headers,
    ack_modes,
    ack_v11,
    nack_requeue_and_reject,
    transactions,
    temp_reply_queue,
    topics,
    competing_consumers,
);

#[test]
fn auth() {
    let hash = {
        let mut child = Command::new(common::BIN)
            .arg("passwd")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let config = dir.path().join("switchboard.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  anonymous: never\n  users:\n    alice:\n      password_hash: \"{hash}\"\n      publish: [\"queue:allowed.#\"]\n      subscribe: [\"queue:allowed.#\"]\n"
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    scenario(&d, "auth", &["--user", "alice", "--password", "s3cret"]);
    let log = d.log();
    assert!(log.contains("login refused"), "refusals are logged:\n{log}");
    assert!(log.contains("publish refused by permissions"), "{log}");
}
