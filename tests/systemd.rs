//! systemd service notifications (src/systemd.rs): the daemon run as systemd runs a
//! `Type=notify` unit with `WatchdogSec=`, `NOTIFY_SOCKET` naming a Unix datagram socket
//! the test binds and `WATCHDOG_USEC` set.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, http_json};

/// Datagrams until one has the line `want` (that one included), each as its text.
fn until(sock: &UnixDatagram, want: &str, log: &std::path::Path) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no `{want}` from the daemon ({e}); got {got:?}\nlog:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = text.lines().any(|l| l == want);
        got.push(text);
        if done {
            return got;
        }
    }
}

/// A STOMP CONNECT answered by CONNECTED.
fn stomp_answers(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
        .unwrap();
    let mut first = String::new();
    BufReader::new(s).read_line(&mut first).unwrap();
    assert_eq!(first, "CONNECTED\n");
}

/// The daemon as a systemd unit runs it: one route, admin, STOMP and MQTT listeners,
/// `NOTIFY_SOCKET` naming a socket the test bound (returned) and `env` besides.
struct Unit {
    child: std::process::Child,
    sock: UnixDatagram,
    log: std::path::PathBuf,
    ready_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Unit {
    fn start(env: &[(&str, &str)]) -> Unit {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("routes")).unwrap();
        std::fs::write(
            dir.path().join("routes/r.yaml"),
            "routes:\n  - name: r\n    from: {queue: a}\n    to: [{queue: b}]\n",
        )
        .unwrap();
        let sock_path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let ready_file = dir.path().join("ready.json");
        let log = dir.path().join("daemon.log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--routes")
            .arg(dir.path().join("routes"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready_file)
            .args([
                "--listen",
                "admin=127.0.0.1:0",
                "--listen",
                "stomp=127.0.0.1:0",
            ])
            .args(["--listen", "stomp-ws=off", "--listen", "mqtt=127.0.0.1:0"])
            .args(["--listen", "mqtt-ws=off"])
            .env("NOTIFY_SOCKET", &sock_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Unit {
            child,
            sock,
            log,
            ready_file,
            _dir: dir,
        }
    }

    fn until(&self, want: &str) -> Vec<String> {
        until(&self.sock, want, &self.log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tells_systemd_ready_once_listeners_answer_pings_the_watchdog_and_says_stopping() {
    let mut unit = Unit::start(&[("WATCHDOG_USEC", "300000")]);
    let before = unit.until("READY=1");
    let (ready, pings) = before.split_last().unwrap();
    assert!(
        pings.iter().all(|p| p == "WATCHDOG=1\n"),
        "only watchdog pings before READY=1: {before:?}"
    );
    assert!(
        ready
            .lines()
            .any(|l| l == "STATUS=ready: 1 routes (table version 1); listening: admin, mqtt, stomp"),
        "{ready:?}"
    );
    // Ready means the listeners answer: the ready file is there, the admin API says
    // ready, a STOMP client is answered, an MQTT client connects.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&unit.ready_file).unwrap()).unwrap();
    let addr = |l: &str| -> SocketAddr { v["listeners"][l].as_str().unwrap().parse().unwrap() };
    let (status, body) = http_json(addr("admin"), "GET", "/health/ready");
    assert_eq!((status, &body["ready"]), (200, &serde_json::json!(true)));
    stomp_answers(addr("stomp"));
    TcpStream::connect(addr("mqtt")).unwrap();

    // WatchdogSec=0.3 s: pings every 150 ms; three within a second and a half.
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(unit.until("WATCHDOG=1").len(), 1);
    }
    assert!(start.elapsed() < Duration::from_millis(1500));

    let ok = Command::new("kill")
        .args(["-TERM", &unit.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let stopping = unit.until("STOPPING=1");
    assert!(
        stopping
            .last()
            .unwrap()
            .contains("STATUS=stopping: draining connections"),
        "{stopping:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = unit.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}\n{}", unit.log());
}

/// A watchdog set for another process (`WATCHDOG_PID`, as systemd leaves it for a child
/// of the main process) is not pinged: READY=1 is the first datagram (an enabled
/// watchdog pings as soon as the daemon starts, before it is ready).
#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let unit = Unit::start(&[("WATCHDOG_USEC", "300000"), ("WATCHDOG_PID", "1")]);
    let got = unit.until("READY=1");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        !unit.log().contains("systemd watchdog enabled"),
        "{}",
        unit.log()
    );
}

/// contrib/systemd/switchboard.service as `systemd-analyze` reads it (no systemd runs
/// in the test machines, but the tool works on files): valid, every program it names
/// executable (the binary path pointed at this build), and its hardening rated "OK"
/// (exposure at most 2.0 of 10; 1.4 when written).
#[test]
fn the_example_unit_is_valid_and_hardened() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/systemd/switchboard.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/switchboard", BIN)).unwrap();
    let analyze = |args: &[&str]| {
        let out = Command::new("systemd-analyze")
            .args(args)
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package systemd) on the test machine");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = analyze(&["verify", "--man=no"]);
    assert!(ok && text.trim().is_empty(), "{text}");
    let (_, text) = analyze(&["security", "--offline=yes"]);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for switchboard.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}
