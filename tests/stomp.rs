//! STOMP with stomp.py (an independent client, PyPI) over real sockets: every frame type,
//! ack modes, NACK, transactions, receipts, temp reply queues, topics, auth.

mod common;

use std::process::Command;

use common::Daemon;

/// Runs a scenario of tests/py/stomp_scenarios.py against `d`.
fn scenario(d: &Daemon, name: &str, extra: &[&str]) {
    common::python_scenario(d, "stomp_scenarios.py", "stomp", name, extra);
}

macro_rules! stomp_scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        #[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
        fn $name() {
            let d = Daemon::start(&[], &[]);
            let admin = d.addr("admin").port().to_string();
            scenario(&d, stringify!($name), &["--admin-port", &admin]);
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
    topics,
    competing_consumers,
    redelivered_false_first,
    requeue_any_case,
    batched_sends,
);

/// Request/reply through a temporary queue; a reply after its owner left is dropped,
/// counted (the scenario checks `GET /memory`) and logged.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn temp_reply_queue() {
    let d = Daemon::start(&[], &[]);
    let admin = d.addr("admin").port().to_string();
    scenario(&d, "temp_reply_queue", &["--admin-port", &admin]);
    let log = d.log();
    assert!(
        log.lines().any(|l| l
            .contains("reply to a temporary queue that no longer exists; message dropped")
            && l.contains("stomp.reply_to_gone")),
        "the dropped reply is logged:\n{log}"
    );
}

/// RabbitMQ tutorials log in as guest/guest: on a loopback listener of a router without
/// users, the credentials are accepted as anonymous (logged once); with users configured,
/// an unknown user is still refused.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn guest_login_without_users() {
    let d = Daemon::start(&[], &[]);
    scenario(&d, "guest_login", &[]);
    let log = d.log();
    assert!(
        log.contains("no users are configured") && log.contains("login=guest"),
        "the INFO line says why guest was let in:\n{log}"
    );

    let hash = common::password_hash("pw");
    let d = common::daemon_with_config(&format!(
        "auth:\n  users:\n    alice:\n      password_hash: \"{hash}\"\n"
    ));
    let reply = raw_connect(
        &d,
        "CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\n\n\0",
    );
    assert!(
        reply.starts_with("ERROR\n") && reply.contains("bad credentials"),
        "unknown user refused where users exist: {reply}"
    );
}

/// Sends `frame` on a fresh connection and returns everything the server answered
/// before closing (or within 5 s).
fn raw_connect(d: &Daemon, frame: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.addr("stomp")).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(frame.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn auth() {
    let hash = common::password_hash("s3cret");
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

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn tls() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    common::self_signed(dir.path());
    let ca = dir.path().join("cert.pem").display().to_string();
    let config = dir.path().join("sb.yaml");
    std::fs::write(
        &config,
        "tls:\n  stomp:\n    cert: cert.pem\n    key: key.pem\n",
    )
    .unwrap();
    let cfg = config.display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    scenario(&d, "tls", &["--ca", &ca]);
    // A plain-text client gets no STOMP session on the TLS port.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.addr("stomp")).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"CONNECT\naccept-version:1.2\n\n\0").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("CONNECTED"));
    common::wait_until(
        std::time::Duration::from_secs(5),
        "the failed handshake in the log",
        || d.log().contains("TLS handshake failed").then_some(()),
    );
}

#[test]
fn bad_tls_files_are_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sb.yaml");
    std::fs::write(
        &config,
        "tls:\n  stomp:\n    cert: missing.pem\n    key: missing.key\n",
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .env("SWITCHBOARD_DATA_DIR", "off")
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.stomp:") && err.contains("missing.pem: cannot read certificates"),
        "{err}"
    );
}
