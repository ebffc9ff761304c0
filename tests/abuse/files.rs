//! The open-file limit (issue 26): at it, connections are refused at once in their
//! protocol instead of waiting in the listen queue, the episode is logged once, the
//! connections already open keep being served, and room made by closing is used again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{Daemon, http_json, wait_until};

/// The daemon's open-file limit in this test, soft and hard: room for a few dozen
/// connections beside what the daemon itself holds open.
const FILES: u64 = 100;

/// A raw MQTT CONNECT (clean session, keep-alive 0) of protocol `level` (4: 3.1.1,
/// 5: 5.0) over a fresh TCP connection.
fn mqtt_connect_send(addr: SocketAddr, level: u8, client_id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 0];
    if level == 5 {
        var.push(0); // no properties
    }
    var.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    var.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, var.len() as u8];
    p.extend_from_slice(&var);
    s.write_all(&p).unwrap();
    s
}

/// The CONNACK's return / reason code, and how long it took to come; `None` when the
/// connection closed without one.
fn connack(s: &mut TcpStream) -> (Option<u8>, Duration) {
    let started = Instant::now();
    let mut h = [0u8; 2];
    if s.read_exact(&mut h).is_err() {
        return (None, started.elapsed());
    }
    assert_eq!(h[0], 0x20, "CONNACK expected");
    let mut rest = vec![0u8; h[1] as usize];
    let code = s
        .read_exact(&mut rest)
        .ok()
        .and_then(|()| rest.get(1).copied());
    (code, started.elapsed())
}

/// Everything the server sends until it closes (a reset after its answer included).
fn read_all(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while let Ok(n) = s.read(&mut b) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// One MQTT packet (first byte, body), reading at most 5 s.
fn packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 2];
    s.read_exact(&mut first).expect("a packet");
    let mut body = vec![0u8; first[1] as usize];
    s.read_exact(&mut body).expect("the packet's body");
    (first[0], body)
}

/// At the open-file limit (soft and hard: the daemon cannot raise it): the start-up log
/// says what the limit allows; connections past it get a refusal at once (MQTT 3.1.1
/// CONNACK 0x03, MQTT 5 0x97, STOMP ERROR, HTTP 503; a silent client after a short wait)
/// instead of hanging in the listen queue; the episode is one line, not one per refusal
/// or per retry; connections already open keep being served; once some close, new ones are admitted again and the
/// end of the episode is logged with its count.
#[test]
fn out_of_file_descriptors_refuses_at_once_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let cfg = dir.path().join("switchboard.yaml");
    std::fs::write(&cfg, "connections:\n  max_per_ip: 0\n  connect_rate: 0\n").unwrap();
    let cfg = cfg.display().to_string();
    let d = Daemon::start_with_file_limit(dir, &["--config", &cfg], FILES);
    let log = d.log();
    let start_line = log
        .lines()
        .find(|l| l.contains("open files: room for about"))
        .unwrap_or_else(|| panic!("the limit is logged at start:\n{log}"));
    assert!(
        start_line.contains(&format!("open_files_limit={FILES}")),
        "{start_line}"
    );
    assert!(
        log.contains("max_connections is more than the open-file limit leaves room for"),
        "the listeners' default max_connections (10,000) cannot fit in {FILES} files:\n{log}"
    );

    // Fill the daemon's descriptors with MQTT connections, one at a time.
    let mqtt = d.addr("mqtt");
    let mut open = Vec::new();
    let first_refusal = loop {
        assert!(open.len() < FILES as usize, "never refused");
        let mut s = mqtt_connect_send(mqtt, 4, &format!("fill-{}", open.len()));
        let (code, took) = connack(&mut s);
        assert!(took < Duration::from_secs(3), "answered at once ({took:?})");
        match code {
            Some(0) => open.push(s),
            other => break other,
        }
    };
    assert_eq!(first_refusal, Some(0x03), "3.1.1: server unavailable");
    assert!(
        open.len() >= 20,
        "room for some connections: {}",
        open.len()
    );
    // Every further one is refused at once, not left waiting in the listen queue.
    let more = 40;
    for i in 0..more {
        let mut s = mqtt_connect_send(mqtt, 4, &format!("over-{i}"));
        let (code, took) = connack(&mut s);
        assert_eq!(code, Some(0x03), "refusal {i}");
        assert!(took < Duration::from_secs(3), "refusal {i} took {took:?}");
    }
    // A client that connects and says nothing holds the refusals back briefly (the
    // refusal waits 100 ms for a CONNECT to read the protocol level from), then gets
    // the 3.1.1 one; the next client is answered in its own.
    let mut silent = TcpStream::connect(mqtt).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (code, took) = connack(&mut silent);
    assert_eq!(code, Some(0x03), "silent client: server unavailable");
    assert!(
        took < Duration::from_secs(3),
        "silent client refused after {took:?}"
    );
    let mut v5 = mqtt_connect_send(mqtt, 5, "over-v5");
    assert_eq!(connack(&mut v5).0, Some(0x97), "MQTT 5: quota exceeded");
    let mut stomp = TcpStream::connect(d.addr("stomp")).unwrap();
    stomp
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stomp
        .write_all(b"CONNECT\naccept-version:1.2\nhost:/\n\n\0")
        .unwrap();
    let f = read_all(&mut stomp);
    assert!(
        f.starts_with("ERROR\nmessage:server full: out of file descriptors"),
        "{f}"
    );
    let mut admin = TcpStream::connect(d.addr("admin")).unwrap();
    admin
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    admin
        .write_all(b"GET /limits HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_all(&mut admin);
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");

    // The connections already open are served: one subscribes, another publishes.
    let (sub, rest) = open.split_first_mut().unwrap();
    let publisher = &mut rest[0];
    sub.write_all(b"\x82\x0b\x00\x01\x00\x06fd/top\x00")
        .unwrap();
    assert_eq!(packet(sub).0, 0x90, "SUBACK");
    publisher.write_all(b"\x30\x0a\x00\x06fd/topok").unwrap();
    let (first, body) = packet(sub);
    assert_eq!((first, &body[..]), (0x30, &b"\x00\x06fd/topok"[..]));

    // One line for the episode on this listener, not one per refusal or per retry.
    let log = d.log();
    let episode: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("out of file descriptors: new connections are refused"))
        .filter(|l| l.contains("listener=mqtt ") || l.ends_with("listener=mqtt"))
        .collect();
    assert_eq!(episode.len(), 1, "{log}");
    assert!(!log.contains("accept failed"), "{log}");

    // Room again once some close: new connections are admitted, the episode's end is
    // logged with how many were refused.
    open.truncate(open.len() - 5);
    wait_until(
        Duration::from_secs(10),
        "a connection admitted again",
        || {
            let mut s = mqtt_connect_send(mqtt, 4, "again");
            (connack(&mut s).0 == Some(0)).then_some(s)
        },
    );
    let end = wait_until(Duration::from_secs(5), "the episode's end logged", || {
        d.log()
            .lines()
            .find(|l| l.contains("file descriptors available again") && l.contains("listener=mqtt"))
            .map(str::to_owned)
    });
    let refused: u64 = end
        .split("refused=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count: {end}"));
    assert!(refused > more, "{end}");
    let (_, v) = http_json(d.addr("admin"), "GET", "/limits");
    assert_eq!(v["mqtt"]["refused"]["out_of_files"], refused, "{v}");
    assert!(
        v["stomp"]["refused"]["out_of_files"].as_u64() >= Some(1),
        "{v}"
    );
}
