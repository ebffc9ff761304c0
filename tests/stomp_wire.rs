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

    /// Sends `bytes` one at a time, paced by the read timeout (one every 200 ms while
    /// the server is quiet), checking before each that the server has neither closed the
    /// connection nor sent anything but heart-beats.
    fn trickle(&mut self, bytes: &[u8]) {
        let started = Instant::now();
        for &b in bytes {
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("closed by the server after {:?}", started.elapsed()),
                Ok(n) => assert!(
                    chunk[..n].iter().all(|&c| c == b'\n'),
                    "after {:?}: {:?}",
                    started.elapsed(),
                    String::from_utf8_lossy(&chunk[..n])
                ),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read failed after {:?}: {e}", started.elapsed()),
            }
            if let Err(e) = self.s.write_all(&[b]) {
                panic!("write failed after {:?}: {e}", started.elapsed());
            }
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
    // Beats every 100 ms asked: two EOLs (and nothing else) arrive, waited for with a
    // bound generous for a loaded machine.
    let mut r = Raw::login(&d, "0,100");
    let started = Instant::now();
    let mut beats = 0;
    while beats < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{beats} heart-beats in 5 s"
        );
        let mut chunk = [0u8; 64];
        match r.s.read(&mut chunk) {
            Ok(n) => {
                assert!(
                    n > 0 && chunk[..n].iter().all(|&b| b == b'\n'),
                    "heart-beat EOLs only: {:?}",
                    &chunk[..n]
                );
                beats += n;
            }
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
    }

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

/// What the client sends keeps its connection alive however rarely the server beats.
/// The server offers `60000,1000`; a client asking `1000,60000` gets a beat every 60 s
/// and must send something within 2 × 1 s. Sending only EOLs, or one frame a byte at a
/// time, for three times that or more (30 bytes or more, 200 ms apart), it is still
/// served; one that stops is closed with the heart-beat ERROR. Likewise a connection
/// without heart-beats that sends EOLs outlives `idle_timeout` (2 s here).
#[test]
fn what_the_client_sends_defers_the_heart_beat_and_idle_timeouts() {
    let d = daemon_with("stomp:\n  heart_beat: \"60000,1000\"\n  idle_timeout: 2s\n");
    let served = |heart_beat: &str, trickled: &[u8], then: &[u8]| {
        let mut r = Raw::login(&d, heart_beat);
        r.trickle(trickled);
        r.send(then);
        let f = r.frame(Duration::from_secs(10)).expect("RECEIPT");
        assert!(f.starts_with("RECEIPT\n"), "{heart_beat}: {f}");
    };
    let frame = b"SEND\ndestination:/queue/trickle\nreceipt:r\n\nslow\0";
    let send = b"SEND\ndestination:/queue/beats\nreceipt:r\n\nalive\0";
    std::thread::scope(|s| {
        s.spawn(|| served("1000,60000", &[b'\n'; 30], send));
        s.spawn(|| served("0,0", &[b'\n'; 30], send));
        s.spawn(|| served("1000,60000", frame, b""));
        s.spawn(|| {
            let mut r = Raw::login(&d, "1000,60000");
            r.trickle(&[b'\n'; 5]);
            let f = r.frame(Duration::from_secs(20)).expect("ERROR");
            assert!(f.starts_with("ERROR\n"), "{f}");
            assert_eq!(header(&f, "message"), Some("heart-beat timeout"), "{f}");
            r.expect_closed(Duration::from_secs(5));
        });
    });
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

/// Topic subscription buffer in the slow-consumer test (`max_length`, drop-oldest).
const SUB_MAX_LENGTH: usize = 500;
/// Body of each firehose message.
const FIREHOSE_BODY: usize = 4096;
/// What the daemon's RSS may grow by in the slow-consumer test beyond the messages its
/// subscription buffers may hold: allocator slack, per-message bookkeeping (headers,
/// queue entries) and each connection's codec and write buffers in a debug build.
/// Measured on a busy 2-core machine: the RSS grows by about 8 MiB with the bound (the
/// limit is some 14 MiB), by some 36 MiB when the slow subscriber's buffer is unbounded.
const SLOW_CONSUMER_RSS_MARGIN: u64 = 8 * 1024 * 1024;

fn subscriber(d: &Daemon, id: &str) -> Raw {
    let mut r = Raw::login(d, "0,0");
    r.send(format!("SUBSCRIBE\nid:{id}\ndestination:/topic/firehose\nreceipt:r\n\n\0").as_bytes());
    let f = r.frame(Duration::from_secs(5)).unwrap();
    assert!(f.starts_with("RECEIPT"), "{f}");
    r
}

/// One slow subscriber (it reads nothing while the firehose runs) and two fast ones on
/// a topic: the fast ones receive every message, in order, while the slow one has
/// received none: they keep their own pace. The slow one's buffer drops its oldest
/// (counted: what it is finally given plus what was dropped is everything), and the
/// daemon's RSS grows by no more than the subscription buffers may hold plus
/// [`SLOW_CONSUMER_RSS_MARGIN`].
#[test]
fn a_slow_consumer_neither_slows_others_nor_grows_memory() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const N: usize = 5000;
    // A mark with a receipt after every 100 messages.
    const TOTAL: usize = N + N / 100;
    let d = daemon_with(&format!(
        "queues:\n  subscription_defaults:\n    max_length: {SUB_MAX_LENGTH}\n"
    ));
    let mut slow = subscriber(&d, "s");
    let fast: Vec<Raw> = (0..2).map(|i| subscriber(&d, &format!("f{i}"))).collect();
    let baseline = d.rss_bytes();
    let progress: Vec<Arc<AtomicUsize>> = fast.iter().map(|_| Arc::default()).collect();
    let readers: Vec<_> = fast
        .into_iter()
        .zip(progress.iter().cloned())
        .map(|(mut r, seen)| {
            std::thread::spawn(move || {
                let mut next = 0;
                for got in 0..TOTAL {
                    let f = r
                        .frame(Duration::from_secs(30))
                        .unwrap_or_else(|| panic!("fast subscriber closed after {got}"));
                    assert!(f.starts_with("MESSAGE"), "{f}");
                    if let Some(n) = header(&f, "n") {
                        assert_eq!(n, next.to_string(), "in order, nothing lost");
                        next += 1;
                    }
                    seen.store(got + 1, Ordering::Relaxed);
                }
                // Still subscribed (its subscription is counted below).
                (next, r)
            })
        })
        .collect();

    let mut publisher = Raw::login(&d, "0,0");
    let body = "x".repeat(FIREHOSE_BODY);
    let mut peak = baseline;
    // Paced by receipts (the core accepted each batch), as a real producer would be, and
    // never more than 300 messages ahead of the slower fast subscriber, so the fast
    // ones' buffers never overflow however slow this machine is; the slow one reads
    // nothing and must overflow.
    for chunk in 0..N / 100 {
        while chunk * 101
            > progress
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .min()
                .unwrap()
                + 300
        {
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
            format!("SEND\ndestination:/topic/firehose\nmark:{chunk}\nreceipt:{chunk}\n\nmark\0")
                .as_bytes(),
        );
        publisher.send(&batch);
        let receipt = publisher.frame(Duration::from_secs(30)).unwrap();
        assert!(
            receipt.contains(&format!("receipt-id:{chunk}")),
            "{receipt}"
        );
        peak = peak.max(d.rss_bytes());
    }
    let fast: Vec<Raw> = readers
        .into_iter()
        .map(|r| {
            let (got, raw) = r.join().unwrap();
            assert_eq!(got, N, "every message to each fast subscriber");
            raw
        })
        .collect();
    peak = peak.max(d.rss_bytes());

    // Memory: what the three subscription buffers may hold (the fast ones' stay far
    // below theirs), plus the margin.
    let frame = (FIREHOSE_BODY + 100) as u64;
    let limit = 3 * SUB_MAX_LENGTH as u64 * frame + SLOW_CONSUMER_RSS_MARGIN;
    let grew = peak.saturating_sub(baseline);
    println!(
        "RSS grew by {} KiB (limit {} KiB)",
        grew / 1024,
        limit / 1024
    );
    assert!(
        grew <= limit,
        "the daemon's RSS grew by {grew} bytes, over {limit}: the slow subscriber's messages are held"
    );

    // While the fast ones got everything, the slow one had read nothing (it has not read
    // its socket yet) and its buffer had overflowed: it did not hold them back.
    let sub_stats = |d: &Daemon| {
        let (_, v) = common::http_json(d.addr("admin"), "GET", "/queues");
        let subs: Vec<serde_json::Value> = v["queues"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["name"].as_str().unwrap().starts_with("$sb.sub."))
            .cloned()
            .collect();
        assert_eq!(subs.len(), 3, "{v}");
        subs
    };
    let subs = sub_stats(&d);
    let dropping: Vec<_> = subs.iter().filter(|q| q["dropped"] != 0).collect();
    assert_eq!(
        dropping.len(),
        1,
        "only the slow subscription dropped: {subs:?}"
    );
    assert!(
        dropping[0]["ready"].as_u64().unwrap() <= SUB_MAX_LENGTH as u64,
        "bounded: {:?}",
        dropping[0]
    );
    assert!(d.log().contains("message dropped"), "drops are logged");

    // The slow one, reading at last, gets the newest messages in order, down to the last
    // mark; what it got plus what was dropped is everything.
    let mut received = 0u64;
    let mut last_n = None;
    loop {
        let f = slow
            .frame(Duration::from_secs(30))
            .expect("the slow subscriber is still served");
        received += 1;
        if let Some(n) = header(&f, "n").map(|n| n.parse::<usize>().unwrap()) {
            assert!(
                last_n.is_none_or(|l| n > l),
                "in order: {n} after {last_n:?}"
            );
            last_n = Some(n);
        }
        if header(&f, "mark") == Some((N / 100 - 1).to_string().as_str()) {
            break;
        }
    }
    assert_eq!(last_n, Some(N - 1), "the newest message was kept");
    let slow_q = sub_stats(&d)
        .into_iter()
        .find(|q| q["dropped"] != 0)
        .unwrap();
    assert_eq!(
        received + slow_q["dropped"].as_u64().unwrap(),
        TOTAL as u64,
        "received {received}, the rest counted as dropped: {slow_q}"
    );
    drop(fast);
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
