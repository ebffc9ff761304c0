//! Connection limits: per peer address, connect rate, idle STOMP connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::{daemon_with_config, http_json, wait_until};

/// A STOMP CONNECT over a fresh TCP connection: the socket and the first frame's text
/// (empty when the connection closed without one).
fn stomp_connect(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\n\n\0");
    let f = read_frame(&mut s);
    (s, f)
}

fn read_frame(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\0") {
        match s.read(&mut b) {
            Ok(1) => got.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got)
        .trim_start_matches('\n')
        .to_owned()
}

/// A raw MQTT 5 CONNECT (clean start) over a fresh TCP connection: the socket, with
/// the CONNECT written.
fn mqtt5_connect_send(addr: SocketAddr, client_id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Protocol name, level 5, clean start, keep-alive 60, no properties.
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
    var.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    var.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, var.len() as u8];
    p.extend_from_slice(&var);
    let _ = s.write_all(&p);
    s
}

/// The CONNACK's reason code; `None` when the connection closed without one.
fn connack_reason(s: &mut TcpStream) -> Option<u8> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    assert_eq!(h[0], 0x20, "CONNACK expected");
    let mut rest = vec![0u8; h[1] as usize];
    s.read_exact(&mut rest).ok()?;
    rest.get(1).copied()
}

/// `connections.max_per_ip: 3`: the fourth connection from one address is refused
/// at the protocol level (STOMP ERROR, MQTT 5 CONNACK 0x97) while the third works;
/// closing one lets the next in. Refusals are counted in the admin API and logged.
#[test]
fn per_address_limit_refuses_the_next_connection() {
    let d = daemon_with_config("connections:\n  max_per_ip: 3\n");
    let stomp = d.addr("stomp");
    let mut open: Vec<TcpStream> = (0..3)
        .map(|i| {
            let (s, f) = stomp_connect(stomp);
            assert!(f.starts_with("CONNECTED"), "connection {i}: {f}");
            s
        })
        .collect();
    let (_, f) = stomp_connect(stomp);
    assert!(f.starts_with("ERROR"), "the fourth: {f}");
    assert!(f.contains("too many connections from this address"), "{f}");
    // The third still works.
    open[2]
        .write_all(b"SUBSCRIBE\nid:1\ndestination:/queue/abuse.limit\nreceipt:r1\n\n\0")
        .unwrap();
    let f = read_frame(&mut open[2]);
    assert!(f.starts_with("RECEIPT"), "{f}");
    // One closed: room for another.
    drop(open.remove(0));
    wait_until(Duration::from_secs(10), "a slot given back", || {
        let (s, f) = stomp_connect(stomp);
        f.starts_with("CONNECTED").then_some(s)
    });

    let mqtt = d.addr("mqtt");
    let _kept: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut s = mqtt5_connect_send(mqtt, &format!("per-ip-{i}"));
            assert_eq!(connack_reason(&mut s), Some(0), "MQTT connection {i}");
            s
        })
        .collect();
    let mut over = mqtt5_connect_send(mqtt, "per-ip-over");
    assert_eq!(connack_reason(&mut over), Some(0x97), "quota exceeded");

    let (_, v) = http_json(d.addr("admin"), "GET", "/limits");
    assert!(v["stomp"]["refused"]["per_ip"].as_u64() >= Some(1), "{v}");
    assert!(v["mqtt"]["refused"]["per_ip"].as_u64() >= Some(1), "{v}");
    assert_eq!(v["mqtt"]["max_per_ip"], 3, "{v}");
    assert!(
        d.log().contains("too many connections from this address"),
        "{}",
        d.log()
    );
}

/// `connections.connect_rate: 1`, `connect_burst: 3`: a burst of 30 MQTT connections
/// from one address gets CONNACK 0x9F past the first few (30 admitted would take 27 s
/// of refill), a burst of HTTP connections to a WebSocket listener gets 429, the
/// refusals are counted and logged with a count, and an honest client still connects
/// once the bucket refills.
#[test]
fn connect_rate_refuses_a_burst_and_an_honest_client_connects_after() {
    let d = daemon_with_config("connections:\n  connect_rate: 1\n  connect_burst: 3\n");
    let mqtt = d.addr("mqtt");
    let mut burst: Vec<TcpStream> = (0..30)
        .map(|i| mqtt5_connect_send(mqtt, &format!("burst-{i}")))
        .collect();
    let reasons: Vec<Option<u8>> = burst.iter_mut().map(connack_reason).collect();
    let refused = reasons.iter().filter(|r| **r == Some(0x9F)).count();
    let accepted = reasons.iter().filter(|r| **r == Some(0)).count();
    assert!(refused >= 1, "no refusal in the burst: {reasons:?}");
    assert!(
        accepted >= 3,
        "the burst allowance was admitted: {reasons:?}"
    );
    assert_eq!(refused + accepted, 30, "every one answered: {reasons:?}");
    drop(burst);

    let ws = d.addr("mqtt-ws");
    let statuses: Vec<u16> = (0..30)
        .map(|_| super::admin::request(ws, "GET", "/mqtt", &ws.to_string(), &[]).0)
        .collect();
    assert!(statuses.contains(&429), "HTTP refusal: {statuses:?}");

    // The honest client: refused while the bucket is empty, in within a few seconds.
    wait_until(Duration::from_secs(15), "an honest client admitted", || {
        let mut s = mqtt5_connect_send(mqtt, "honest");
        (connack_reason(&mut s) == Some(0)).then_some(())
    });

    let (_, v) = http_json(d.addr("admin"), "GET", "/limits");
    assert!(v["mqtt"]["refused"]["rate"].as_u64() >= Some(1), "{v}");
    assert!(v["mqtt-ws"]["refused"]["rate"].as_u64() >= Some(1), "{v}");
    let log = d.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection rate exceeded"))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(lines.iter().all(|l| l.contains("count=")), "{lines:?}");
    assert!(
        lines.len() < refused + statuses.iter().filter(|s| **s == 429).count(),
        "at most one line per second per cause, not one per refusal: {lines:?}"
    );
}

// ---- idle STOMP connections (issue 19) ---------------------------------------------

/// A STOMP connection that negotiated no heart-beats and sends nothing holds a slot
/// forever unless something ends it: `stomp.idle_timeout` closes it with an ERROR and a
/// log line, while a connection that keeps sending frames stays open.
#[test]
fn idle_stomp_connection_without_heart_beats_is_closed() {
    use std::time::Duration;
    let d = crate::common::daemon_with_config("stomp:\n  idle_timeout: 300ms\n");
    let mut idle = idle_stomp::Raw::login(&d, "0,0");
    let mut busy = idle_stomp::Raw::login(&d, "0,0");
    // The busy one sends a frame every 50 ms (a sixth of the timeout) until the idle one
    // has been closed, then for more than one timeout longer: it stays served.
    let mut n = 0;
    let mut busy_round = |busy: &mut idle_stomp::Raw| {
        n += 1;
        busy.send(format!("SEND\ndestination:/queue/idle-busy\nreceipt:{n}\n\nx\0").as_bytes());
        let f = busy
            .frame(Duration::from_secs(5))
            .expect("busy connection open");
        assert!(f.starts_with(&format!("RECEIPT\nreceipt-id:{n}")), "{f}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let error = loop {
        busy_round(&mut busy);
        if let Some(f) = idle.try_frame() {
            break f;
        }
    };
    assert!(error.starts_with("ERROR\n"), "{error}");
    assert!(error.contains("message:idle timeout"), "{error}");
    idle.expect_closed(Duration::from_secs(5));
    for _ in 0..12 {
        busy_round(&mut busy);
    }
    assert!(
        d.log().contains("idle timeout: closing"),
        "the close is logged:\n{}",
        d.log()
    );
}

/// A raw STOMP socket for the idle-connection tests.
mod idle_stomp {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use crate::common::Daemon;

    pub struct Raw {
        s: TcpStream,
        buf: Vec<u8>,
    }

    impl Raw {
        pub fn login(d: &Daemon, heart_beat: &str) -> Raw {
            let s = TcpStream::connect(d.addr("stomp")).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut r = Raw { s, buf: Vec::new() };
            r.send(
                format!("CONNECT\naccept-version:1.2\nhost:x\nheart-beat:{heart_beat}\n\n\0")
                    .as_bytes(),
            );
            let f = r.frame(Duration::from_secs(5)).expect("CONNECTED");
            assert!(f.starts_with("CONNECTED\n"), "{f}");
            r
        }

        pub fn send(&mut self, bytes: &[u8]) {
            self.s.write_all(bytes).unwrap();
        }

        /// One whole frame if one has arrived (waits at most the socket's read timeout).
        pub fn try_frame(&mut self) -> Option<String> {
            self.read_some();
            self.take_frame()
        }

        /// The next whole frame within `within`; None if the server closed first.
        pub fn frame(&mut self, within: Duration) -> Option<String> {
            let deadline = Instant::now() + within;
            loop {
                if let Some(f) = self.take_frame() {
                    return Some(f);
                }
                assert!(Instant::now() < deadline, "no frame within {within:?}");
                if !self.read_some() {
                    return None;
                }
            }
        }

        /// The server closes the connection within `within`.
        pub fn expect_closed(&mut self, within: Duration) {
            let deadline = Instant::now() + within;
            while self.read_some() {
                assert!(Instant::now() < deadline, "connection still open");
            }
        }

        fn take_frame(&mut self) -> Option<String> {
            while matches!(self.buf.first(), Some(b'\n' | b'\r')) {
                self.buf.remove(0);
            }
            let i = self.buf.iter().position(|&b| b == 0)?;
            let f: Vec<u8> = self.buf.drain(..=i).collect();
            Some(String::from_utf8_lossy(&f[..i]).into_owned())
        }

        /// Reads what is there; false once the connection is closed.
        fn read_some(&mut self) -> bool {
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    true
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    true
                }
                Err(_) => false,
            }
        }
    }
}
