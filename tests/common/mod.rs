//! Test harness: runs the real `switchboard` binary on loopback port 0 with a temporary
//! routes directory, finds its listeners through `--ready-file`, and talks to it over
//! real sockets.
#![allow(dead_code)]

pub mod cluster;
pub mod forwarder;
pub mod xmpp_server;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Turns off every listener but admin (tests that run the binary themselves must not
/// take the default ports).
pub const OTHER_LISTENERS_OFF: &[&str] = &[
    "--listen",
    "stomp=off",
    "--listen",
    "stomp-ws=off",
    "--listen",
    "mqtt=off",
    "--listen",
    "mqtt-ws=off",
];

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub listeners: serde_json::Map<String, serde_json::Value>,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with `routes` (file name, text) in a fresh routes directory.
    pub fn start(routes: &[(&str, &str)], extra_args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let routes_dir = dir.path().join("routes");
        std::fs::create_dir(&routes_dir).unwrap();
        for (name, text) in routes {
            std::fs::write(routes_dir.join(name), text).unwrap();
        }
        Self::start_in(dir, extra_args)
    }

    pub fn start_in(dir: tempfile::TempDir, extra_args: &[&str]) -> Daemon {
        Self::launch(dir, extra_args, None)
    }

    /// As [`Daemon::start_in`], with the daemon's open-file limit, soft and hard, set to
    /// `files` before it starts (so it cannot raise it).
    pub fn start_with_file_limit(
        dir: tempfile::TempDir,
        extra_args: &[&str],
        files: u64,
    ) -> Daemon {
        Self::launch(dir, extra_args, Some(files))
    }

    fn launch(dir: tempfile::TempDir, extra_args: &[&str], files: Option<u64>) -> Daemon {
        let ready = dir.path().join("ready.json");
        let log = dir.path().join("daemon.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--routes".into(),
            dir.path().join("routes").display().to_string(),
            "--listen".into(),
            "admin=127.0.0.1:0".into(),
            "--listen".into(),
            "stomp=127.0.0.1:0".into(),
            "--listen".into(),
            "stomp-ws=127.0.0.1:0".into(),
            "--listen".into(),
            "mqtt=127.0.0.1:0".into(),
            "--listen".into(),
            "mqtt-ws=127.0.0.1:0".into(),
            "--ready-file".into(),
            ready.display().to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env("SWITCHBOARD_LOG", "info,switchboard=debug")
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some(files) = files {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: files,
                rlim_max: files,
            };
            // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd.spawn().expect("spawn switchboard");
        let mut d = Daemon {
            child,
            dir,
            listeners: serde_json::Map::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: serde_json::Value = serde_json::from_str(&text).expect("ready file is JSON");
                d.listeners = v["listeners"].as_object().cloned().unwrap_or_default();
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("switchboard exited early ({status}):\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "switchboard did not become ready:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn routes_dir(&self) -> PathBuf {
        self.dir.path().join("routes")
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners[listener]
            .as_str()
            .unwrap_or_else(|| panic!("no listener {listener}"))
            .parse()
            .unwrap()
    }

    /// The daemon's log, earlier runs' first (see `kill_and_restart`).
    pub fn log(&self) -> String {
        let earlier =
            std::fs::read_to_string(self.dir.path().join("earlier.log")).unwrap_or_default();
        earlier + &std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's resident set size in bytes (VmRSS of /proc/PID/status).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// The log of the current run only.
    pub fn current_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// SIGKILL (no chance to flush anything), then a new daemon over the same
    /// directory: routes, data directory and log file (appended to).
    pub fn kill_and_restart(self, extra_args: &[&str]) -> Daemon {
        self.kill_change_restart(|_| {}, extra_args)
    }

    /// As `kill_and_restart`, calling `between` with the directory while it is down.
    pub fn kill_change_restart(
        mut self,
        between: impl FnOnce(&Path),
        extra_args: &[&str],
    ) -> Daemon {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let previous = self.log();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        drop(self);
        let _ = std::fs::remove_file(dir.path().join("ready.json"));
        // Keep the earlier runs' logs readable in failure messages (see `log`).
        std::fs::write(
            dir.path().join("earlier.log"),
            format!("{previous}\n===== killed and restarted =====\n"),
        )
        .ok();
        between(dir.path());
        Daemon::start_in(dir, extra_args)
    }

    /// SIGTERM (an orderly stop), then a new daemon over the same directory, as
    /// `kill_and_restart`.
    pub fn stop_and_restart(mut self, extra_args: &[&str]) -> Daemon {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_change_restart(|_| {}, extra_args)
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log();
                return (status, log);
            }
            assert!(
                Instant::now() < deadline,
                "did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request over a real socket: returns (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub fn http_json(addr: SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(addr, method, path);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, v)
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes a file the way editors do: to a temporary name, then renamed over the target.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The Python with the peer clients (set by scripts/test; .venv by default).
/// Starts a stepped scenario: a script that announces its steps on stdout (a line such as
/// `ready` or `restart`) and waits for the test on stdin. Returns the child (stdin and
/// stderr piped) and its stdout as lines.
pub fn spawn_stepped(
    cmd: &mut std::process::Command,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads a stepped scenario's stdout ([`spawn_stepped`]) up to and including the line
/// `step`; returns what it printed (ending with `step` and a newline when it got there).
pub fn read_to_step(
    lines: &mut std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    step: &str,
) -> String {
    let mut out = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        out.push_str(&line);
        out.push('\n');
        if line == step {
            break;
        }
    }
    out
}

/// Ends a stepped scenario ([`spawn_stepped`]) that waits for one line on stdin (a
/// port): writes `answer`, reads the rest of its stdout after `out` (what
/// [`read_to_step`] gave) and waits for it. `Ok(stdout)` when it exited successfully
/// with `ok` last, else `Err` with its stdout and stderr, for the test's message.
pub fn finish_stepped(
    mut child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    mut out: String,
    answer: &str,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{answer}").unwrap();
    for line in lines {
        out.push_str(&line.unwrap());
        out.push('\n');
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    if status.success() && out.trim_end().ends_with("ok") {
        Ok(out)
    } else {
        Err(format!("stdout:\n{out}\nstderr:\n{err}"))
    }
}

pub fn python() -> String {
    std::env::var("SWITCHBOARD_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into())
}

/// Runs `tests/py/<script>` with `--port PORT SCENARIO extra…` and asserts it passed;
/// returns what it printed.
pub fn python_scenario(
    d: &Daemon,
    script: &str,
    listener: &str,
    name: &str,
    extra: &[&str],
) -> String {
    let port = d.addr(listener).port().to_string();
    let out = Command::new(python())
        .arg(format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR")))
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
    stdout.into_owned()
}

/// `switchboard passwd` for a password: its argon2 PHC string.
pub fn password_hash(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts a daemon with a settings file.
pub fn daemon_with_config(config: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let path = dir.path().join("switchboard.yaml");
    std::fs::write(&path, config).unwrap();
    let p = path.display().to_string();
    Daemon::start_in(dir, &["--config", &p])
}

/// A throw-away CA-less self-signed certificate for localhost / 127.0.0.1 in `dir`
/// (`cert.pem`, `key.pem`), made with openssl.
pub fn self_signed(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
}

/// Held for a test's duration: keeps tests that share a real peer (RabbitMQ, Prosody)
/// from overlapping with one that restarts or disturbs it. A file lock, so it works
/// across cargo-nextest's processes and cargo test's threads alike.
pub struct PeerLock(#[allow(dead_code)] std::fs::File);

/// Takes the lock for `peer` (shared or exclusive), then checks that the peer answers
/// on `addr` (locking first: another test may be restarting it right now).
pub fn peer_lock(peer: &str, exclusive: bool, addr: &str, setup_hint: &str) -> PeerLock {
    let f =
        std::fs::File::create(std::env::temp_dir().join(format!("switchboard-tests-{peer}.lock")))
            .unwrap();
    if exclusive {
        f.lock().unwrap();
    } else {
        f.lock_shared().unwrap();
    }
    assert!(
        TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).is_ok(),
        "{peer} is not answering on {addr}: run {setup_hint}"
    );
    PeerLock(f)
}

/// A prefix for names in a shared peer that no other test run uses.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t{}{name}{nanos:x}", std::process::id())
}
