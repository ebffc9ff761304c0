//! STOMP on the wire: exact frames for bad input, limits and heart-beats, with a raw
//! socket (no client library smoothing anything over).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Daemon;

struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(d: &Daemon) -> Raw {
        let s = TcpStream::connect(d.addr("stomp")).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Raw { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn login(d: &Daemon, heart_beat: &str) -> Raw {
        let mut r = Raw::connect(d);
        r.send(
            format!("CONNECT\naccept-version:1.2\nhost:x\nheart-beat:{heart_beat}\n\n\0")
                .as_bytes(),
        );
        let f = r.frame(Duration::from_secs(5)).expect("CONNECTED");
        assert!(f.starts_with("CONNECTED\n"), "{f}");
        r
    }

    /// Reads until one whole frame (up to NUL), skipping heart-beat EOLs. None on EOF.
    fn frame(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            while matches!(self.buf.first(), Some(b'\n') | Some(b'\r')) {
                self.buf.remove(0);
            }
            if let Some(i) = self.buf.iter().position(|&b| b == 0) {
                let f: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&f[..f.len() - 1]).into_owned());
            }
            assert!(
                Instant::now() < deadline,
                "no frame within {within:?}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return None,
            }
        }
    }

    /// The connection is closed by the server within `within`.
    fn expect_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
            assert!(Instant::now() < deadline, "connection still open");
        }
    }
}

fn header<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame
        .split("\n\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
}

fn daemon_with(config: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let path = dir.path().join("sb.yaml");
    std::fs::write(&path, config).unwrap();
    let p = path.display().to_string();
    Daemon::start_in(dir, &["--config", &p])
}

#[test]
fn malformed_frames_get_an_error_and_close() {
    let d = Daemon::start(&[], &[]);
    let cases: &[(&[u8], &str)] = &[
        (b"HELLO\n\n\0", "unknown command \"HELLO\""),
        (
            b"SEND\ndestination:/queue/a\nbroken-header\n\nx\0",
            "malformed header line",
        ),
        (
            b"SEND\ndestination:/queue/a\nbad:\\x\n\nx\0",
            "invalid escape sequence",
        ),
        (
            b"SEND\ndestination:/queue/a\ncontent-length:1\n\nxy\0",
            "frame body is not terminated by a NUL",
        ),
    ];
    for (bytes, message) in cases {
        let mut r = Raw::login(&d, "0,0");
        r.send(bytes);
        let f = r.frame(Duration::from_secs(5)).expect("ERROR frame");
        assert!(f.starts_with("ERROR\n"), "{f}");
        assert!(header(&f, "message").unwrap().starts_with(message), "{f}");
        r.expect_closed(Duration::from_secs(5));
    }
    // A frame before CONNECT.
    let mut r = Raw::connect(&d);
    r.send(b"SEND\ndestination:/queue/a\n\nx\0");
    let f = r.frame(Duration::from_secs(5)).unwrap();
    assert_eq!(header(&f, "message"), Some("not connected"), "{f}");
    // An unknown destination prefix names the destination.
    let mut r = Raw::login(&d, "0,0");
    r.send(b"SEND\ndestination:/exchange/x\nreceipt:r9\n\nx\0");
    let f = r.frame(Duration::from_secs(5)).unwrap();
    assert_eq!(header(&f, "receipt-id"), Some("r9"), "{f}");
    assert!(f.contains("unknown destination `/exchange/x`"), "{f}");
    r.expect_closed(Duration::from_secs(5));
    assert!(d.log().contains("malformed frame"), "bad input is logged");
    // The daemon is unharmed.
    let mut ok = Raw::login(&d, "0,0");
    ok.send(b"SEND\ndestination:/queue/a\nreceipt:1\n\nx\0");
    assert!(
        ok.frame(Duration::from_secs(5))
            .unwrap()
            .starts_with("RECEIPT\nreceipt-id:1")
    );
}

#[test]
fn limits_frame_size_subscriptions_and_connections() {
    let d = daemon_with(
        "stomp:\n  max_frame_size: 1024\n  max_subscriptions: 2\n  max_connections: 3\n",
    );
    let mut r = Raw::login(&d, "0,0");
    let mut big = b"SEND\ndestination:/queue/a\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 2000));
    big.push(0);
    r.send(&big);
    let f = r.frame(Duration::from_secs(5)).unwrap();
    assert_eq!(
        header(&f, "message"),
        Some("frame exceeds the maximum size of 1024 octets"),
        "{f}"
    );
    r.expect_closed(Duration::from_secs(5));

    let mut r = Raw::login(&d, "0,0");
    r.send(b"SUBSCRIBE\nid:1\ndestination:/queue/a\n\n\0SUBSCRIBE\nid:2\ndestination:/queue/b\n\n\0SUBSCRIBE\nid:3\ndestination:/queue/c\n\n\0");
    let f = r.frame(Duration::from_secs(5)).unwrap();
    assert_eq!(header(&f, "message"), Some("too many subscriptions"), "{f}");
    r.expect_closed(Duration::from_secs(5));

    let _a = Raw::login(&d, "0,0");
    let _b = Raw::login(&d, "0,0");
    let _c = Raw::login(&d, "0,0");
    let mut over = Raw::connect(&d);
    let f = over.frame(Duration::from_secs(5)).unwrap();
    assert_eq!(
        header(&f, "message"),
        Some("connection limit reached"),
        "{f}"
    );
    over.expect_closed(Duration::from_secs(5));
}

#[test]
fn heart_beats_both_ways_and_a_silent_peer_is_dropped_with_redelivery() {
    let d = daemon_with("stomp:\n  heart_beat: \"100,100\"\n");
    // The server beats when asked to.
    let mut r = Raw::login(&d, "0,100");
    std::thread::sleep(Duration::from_millis(450));
    let mut chunk = [0u8; 64];
    let n = r.s.read(&mut chunk).unwrap();
    assert!(
        n >= 2 && chunk[..n].iter().all(|&b| b == b'\n'),
        "heart-beat EOLs: {:?}",
        &chunk[..n]
    );

    // A client that promised beats every 100 ms and then goes silent is dropped, and the
    // message it held unacknowledged goes to another consumer, marked redelivered.
    let mut silent = Raw::login(&d, "100,0");
    silent.send(b"SUBSCRIBE\nid:s\ndestination:/queue/hb\nack:client-individual\n\n\0SEND\ndestination:/queue/hb\n\nheld\0");
    let f = silent.frame(Duration::from_secs(5)).unwrap();
    assert!(f.starts_with("MESSAGE\n") && f.ends_with("held"), "{f}");
    let started = Instant::now();
    silent.expect_closed(Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "dropped within the window"
    );

    let mut other = Raw::login(&d, "0,0");
    other.send(b"SUBSCRIBE\nid:s\ndestination:/queue/hb\nack:auto\n\n\0");
    let f = other.frame(Duration::from_secs(5)).unwrap();
    assert_eq!(header(&f, "redelivered"), Some("true"), "{f}");
    assert!(f.ends_with("held"));
    assert!(d.log().contains("heart-beat timeout"));
}

#[test]
fn unsupported_version_is_refused_with_the_supported_list() {
    let d = Daemon::start(&[], &[]);
    let mut r = Raw::connect(&d);
    r.send(b"CONNECT\naccept-version:2.0\n\n\0");
    let f = r.frame(Duration::from_secs(5)).unwrap();
    assert_eq!(header(&f, "version"), Some("1.0,1.1,1.2"), "{f}");
    r.expect_closed(Duration::from_secs(5));
}

#[test]
fn one_error_frame_only() {
    let d = Daemon::start(&[], &[]);
    let mut r = Raw::connect(&d);
    r.send(b"CONNECT\naccept-version:9.9\n\n\0");
    assert!(
        r.frame(Duration::from_secs(5))
            .unwrap()
            .starts_with("ERROR\n")
    );
    assert_eq!(
        r.frame(Duration::from_secs(5)),
        None,
        "closed right after the one ERROR"
    );
}

#[test]
fn a_slow_consumer_neither_slows_others_nor_grows_memory() {
    let d = daemon_with("queues:\n  subscription_defaults:\n    max_length: 500\n");
    // The slow one subscribes and never reads its socket.
    let mut slow = Raw::login(&d, "0,0");
    slow.send(b"SUBSCRIBE\nid:s\ndestination:/topic/firehose\nreceipt:r\n\n\0");
    assert!(
        slow.frame(Duration::from_secs(5))
            .unwrap()
            .starts_with("RECEIPT")
    );
    let mut fast = Raw::login(&d, "0,0");
    fast.send(b"SUBSCRIBE\nid:f\ndestination:/topic/firehose\nreceipt:r\n\n\0");
    assert!(
        fast.frame(Duration::from_secs(5))
            .unwrap()
            .starts_with("RECEIPT")
    );

    const N: usize = 5000;
    let addr = d.addr("stomp");
    // The publisher never runs more than 300 messages ahead of the fast subscriber, so the
    // fast one's buffer (500) never overflows however slow this machine is; the slow one
    // reads nothing and must overflow.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&progress);
    let publisher = std::thread::spawn(move || {
        let mut r = Raw {
            s: TcpStream::connect(addr).unwrap(),
            buf: Vec::new(),
        };
        r.s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        r.send(b"CONNECT\naccept-version:1.2\n\n\0");
        assert!(
            r.frame(Duration::from_secs(10))
                .unwrap()
                .starts_with("CONNECTED")
        );
        let body = "x".repeat(1024);
        // Paced by receipts (the core accepted each batch), as a real producer would be.
        for chunk in 0..N / 100 {
            while chunk * 101 > seen.load(std::sync::atomic::Ordering::Relaxed) + 300 {
                std::thread::sleep(Duration::from_millis(2));
            }
            let mut batch = Vec::new();
            for i in 0..100 {
                batch.extend_from_slice(
                    format!(
                        "SEND\ndestination:/topic/firehose\nn:{}\n\n{body}\0",
                        chunk * 100 + i
                    )
                    .as_bytes(),
                );
            }
            batch.extend_from_slice(
                format!("SEND\ndestination:/topic/firehose\nreceipt:{chunk}\n\nmark\0").as_bytes(),
            );
            r.send(&batch);
            let receipt = r.frame(Duration::from_secs(30)).unwrap();
            assert!(
                receipt.contains(&format!("receipt-id:{chunk}")),
                "{receipt}"
            );
        }
    });
    let mut got = 0;
    while got < N + N / 100 {
        let f = fast
            .frame(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("fast subscriber closed after {got}"));
        assert!(f.starts_with("MESSAGE"));
        got += 1;
        progress.store(got, std::sync::atomic::Ordering::Relaxed);
    }
    publisher.join().unwrap();
    let (_, v) = common::http_json(d.addr("admin"), "GET", "/queues");
    let subs: Vec<&serde_json::Value> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["name"].as_str().unwrap().starts_with("$sb.sub."))
        .collect();
    assert_eq!(subs.len(), 2, "{v}");
    let slow_q = subs
        .iter()
        .find(|q| q["dropped"].as_u64().unwrap() > 0)
        .expect("the slow subscription dropped its oldest");
    assert!(
        subs.iter()
            .any(|q| q["dropped"] == 0 && q["delivered"].as_u64() == Some((N + N / 100) as u64)),
        "the fast one lost nothing: {v}"
    );
    assert!(
        slow_q["ready"].as_u64().unwrap() <= 500,
        "bounded: {slow_q}"
    );
    assert!(d.log().contains("message dropped"), "drops are logged");
    drop(slow);
}

/// A header the router reads with a value it cannot read is an ERROR naming the header
/// and the value, with a log line, never a silent default (issue 24: `requeue:maybe` was
/// a requeue, `durable:yes` a non-durable subscription, `heart-beat:x` no heart-beats).
#[test]
fn unreadable_header_values_are_errors() {
    let d = Daemon::start(&[], &[]);
    let held = b"SUBSCRIBE\nid:s\ndestination:/queue/hv\nack:client-individual\n\n\0SEND\ndestination:/queue/hv\n\nx\0";
    let cases: &[(&str, &[u8], &[u8], &str)] = &[
        // (what, frames before, the bad frame, expected body text)
        ("NACK requeue", held, b"NACK\nid:1\nrequeue:maybe\n\n\0", "`requeue` header `maybe`"),
        (
            "NACK requeue in a transaction",
            b"SUBSCRIBE\nid:s\ndestination:/queue/hvt\nack:client-individual\n\n\0SEND\ndestination:/queue/hvt\n\nx\0",
            b"BEGIN\ntransaction:t\n\n\0NACK\nid:1\ntransaction:t\nrequeue:no\n\n\0",
            "`requeue` header `no`",
        ),
        (
            "SUBSCRIBE durable",
            b"",
            b"SUBSCRIBE\nid:d\ndestination:/topic/hv\ndurable:yes\n\n\0",
            "`durable` header `yes`",
        ),
        (
            "SUBSCRIBE persistent",
            b"",
            b"SUBSCRIBE\nid:d\ndestination:/topic/hv\npersistent:1\n\n\0",
            "`persistent` header `1`",
        ),
        (
            "UNSUBSCRIBE durable",
            b"SUBSCRIBE\nid:d\ndestination:/topic/hv\n\n\0",
            b"UNSUBSCRIBE\nid:d\ndurable:maybe\n\n\0",
            "`durable` header `maybe`",
        ),
        (
            "SEND persistent",
            b"",
            b"SEND\ndestination:/queue/hv2\npersistent:yes\n\nx\0",
            "`persistent` header `yes`",
        ),
    ];
    for (what, before, bad, body) in cases {
        let mut r = Raw::login(&d, "0,0");
        r.send(before);
        if !before.is_empty() && before.starts_with(b"SUBSCRIBE\nid:s") {
            let m = r.frame(Duration::from_secs(5)).expect("MESSAGE");
            assert!(m.starts_with("MESSAGE\n"), "{what}: {m}");
        }
        r.send(bad);
        let f = r.frame(Duration::from_secs(5)).expect("ERROR frame");
        assert!(f.starts_with("ERROR\n"), "{what}: {f}");
        assert_eq!(header(&f, "message"), Some("invalid header"), "{what}: {f}");
        assert!(
            f.contains(body),
            "{what}: the ERROR names header and value: {f}"
        );
        r.expect_closed(Duration::from_secs(5));
    }
    // CONNECT's heart-beat: no silent `0,0`.
    let mut r = Raw::connect(&d);
    r.send(b"CONNECT\naccept-version:1.2\nheart-beat:often\n\n\0");
    let f = r.frame(Duration::from_secs(5)).expect("ERROR frame");
    assert_eq!(header(&f, "message"), Some("invalid header"), "{f}");
    assert!(f.contains("`heart-beat` header `often`"), "{f}");
    r.expect_closed(Duration::from_secs(5));
    // Each refusal is logged with the header and the value.
    let log = d.log();
    for v in ["maybe", "no", "yes", "1", "often"] {
        assert!(
            log.lines()
                .any(|l| l.contains("invalid header value") && l.contains(&format!("value={v}"))),
            "log line for `{v}`:\n{log}"
        );
    }
    // The requeue:maybe message was not settled: it comes back, redelivered.
    let mut other = Raw::login(&d, "0,0");
    other.send(b"SUBSCRIBE\nid:s\ndestination:/queue/hv\n\n\0");
    let f = other.frame(Duration::from_secs(5)).unwrap();
    assert_eq!(header(&f, "redelivered"), Some("true"), "{f}");
}
