//! The admin API's authentication and cross-site checks, WebSocket origins.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use base64::Engine;

use crate::common::{Daemon, daemon_with_config, password_hash, wait_until};

/// One HTTP/1.1 request with a `Host` and extra header lines, over a real socket:
/// (status, whole response text).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// An `auth.admin_tokens` entry: the token's SHA-256 digest.
fn token_digest(token: &str) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(token.as_bytes()))
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn basic(user: &str, password: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b}")
}

/// With an admin user and an admin token configured, every request but `/health`
/// needs them: none or wrong → 401, a valid non-admin user → 403; Basic of the admin
/// user and the bearer token both work, for reading and for reloading.
#[test]
fn admin_api_needs_admin_credentials_once_admins_exist() {
    let token = "tok-5b1f0c2e9a7d4e3f8c6b";
    let config = format!(
        "auth:\n  users:\n    root:\n      password_hash: \"{}\"\n      admin: true\n    bob:\n      password_hash: \"{}\"\n  admin_tokens: [\"{}\"]\n",
        password_hash("rootpw"),
        password_hash("bobpw"),
        token_digest(token),
    );
    let d = daemon_with_config(&config);
    let a = d.addr("admin");
    let host = a.to_string();
    let get = |path: &str, auth: Option<&str>| {
        let h: Vec<(&str, &str)> = auth.map(|v| ("Authorization", v)).into_iter().collect();
        request(a, "GET", path, &host, &h)
    };
    let (s, r) = get("/health", None);
    assert_eq!((s, body(&r)), (200, "ok"), "health stays open: {r}");
    let (s, r) = get("/queues", None);
    assert_eq!(s, 401, "no credentials: {r}");
    assert!(
        r.to_ascii_lowercase().contains("www-authenticate: basic"),
        "{r}"
    );
    assert_eq!(get("/routes", None).0, 401);
    assert_eq!(get("/queues", Some(&basic("root", "nope"))).0, 401);
    assert_eq!(get("/queues", Some(&basic("mallory", "rootpw"))).0, 401);
    assert_eq!(
        get("/queues", Some(&basic("bob", "bobpw"))).0,
        403,
        "not an admin"
    );
    let (s, r) = get("/queues", Some(&basic("root", "rootpw")));
    assert_eq!(s, 200, "{r}");
    assert!(body(&r).starts_with("{\"queues\""), "{r}");
    assert_eq!(get("/routes", Some(&format!("Bearer {token}"))).0, 200);
    assert_eq!(get("/routes", Some("Bearer tok-guessed")).0, 401);
    assert_eq!(get("/routes", Some(&format!("Bearer {token}x"))).0, 401);
    let post = |auth: Option<&str>| {
        let h: Vec<(&str, &str)> = auth.map(|v| ("Authorization", v)).into_iter().collect();
        request(a, "POST", "/routes/reload", &host, &h).0
    };
    assert_eq!(post(None), 401);
    assert_eq!(post(Some(&format!("Bearer {token}"))), 200);
    assert_eq!(post(Some(&basic("root", "rootpw"))), 200);
    assert!(d.log().contains("admin API request refused"), "{}", d.log());
}

/// Without admins (loopback only): a state-changing request from another site is
/// refused (`Origin` of another host, `Sec-Fetch-Site: cross-site`), one from the API's
/// own origin or from no site goes through; a `Host` that is not a loopback name (a
/// DNS-rebinding page) is refused for reads too.
#[test]
fn admin_api_refuses_cross_site_and_rebound_requests() {
    let d = Daemon::start(&[], &[]);
    let a = d.addr("admin");
    let host = a.to_string();
    let reload = |headers: &[(&str, &str)]| request(a, "POST", "/routes/reload", &host, headers);
    let (s, r) = reload(&[("Origin", "http://evil.example")]);
    assert_eq!(s, 403, "foreign Origin: {r}");
    let (s, r) = reload(&[("Origin", &format!("http://{}:{}", "localhost", a.port()))]);
    assert_eq!(s, 403, "another origin of the same machine: {r}");
    let (s, r) = reload(&[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(s, 403, "Sec-Fetch-Site cross-site: {r}");
    let (s, r) = reload(&[("Origin", "null")]);
    assert_eq!(s, 403, "opaque origin: {r}");
    let (s, r) = reload(&[("Origin", &format!("http://{host}"))]);
    assert_eq!(s, 200, "same origin: {r}");
    let (s, r) = reload(&[("Sec-Fetch-Site", "same-origin")]);
    assert_eq!(s, 200, "{r}");
    let (s, r) = reload(&[]);
    assert_eq!(s, 200, "no browser (curl): {r}");
    let rebound = format!("evil.example:{}", a.port());
    let (s, r) = request(a, "GET", "/queues", &rebound, &[]);
    assert_eq!(s, 421, "DNS rebinding Host: {r}");
    let (s, r) = request(a, "GET", "/queues", &format!("localhost:{}", a.port()), &[]);
    assert_eq!(s, 200, "{r}");
    assert!(
        d.log().contains("cross-site request refused"),
        "{}",
        d.log()
    );
}

/// A raw MQTT 3.1.1 CONNECT (persistent session) and SUBSCRIBE; returns the socket once
/// the SUBACK came (the session queue exists).
fn mqtt_persistent_subscriber(addr: SocketAddr, client_id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60];
    var.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    var.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, var.len() as u8];
    p.extend_from_slice(&var);
    s.write_all(&p).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK");
    let topic = b"abuse/admin";
    let mut sub = vec![
        0x82,
        (2 + 2 + topic.len() + 1) as u8,
        0,
        1,
        0,
        topic.len() as u8,
    ];
    sub.extend_from_slice(topic);
    sub.push(1);
    s.write_all(&sub).unwrap();
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback).unwrap();
    assert_eq!(suback[0], 0x90, "SUBACK");
    s
}

/// A raw STOMP connection with a temporary queue and a durable subscription, both
/// confirmed by a RECEIPT.
fn stomp_temp_and_durable(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\n\n\0")
        .unwrap();
    // A temporary queue comes into being when a SEND names it in `reply-to`.
    s.write_all(b"SEND\ndestination:/queue/abuse.requests\nreply-to:/temp-queue/replies\n\nping\0")
        .unwrap();
    s.write_all(b"SUBSCRIBE\nid:2\ndestination:/topic/abuse.news\ndurable:true\nsubscription-name:secretfeed\nreceipt:r2\n\n\0").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("receipt-id:r2") {
        let n = s.read(&mut buf).expect("STOMP reply");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("CONNECTED"));
    s
}

/// `/queues` names MQTT client ids, temporary queues and STOMP durable subscriptions
/// only to admins: an unauthenticated caller (loopback, no admin configured) sees those
/// entries with the owner part replaced by an opaque tag; an admin sees them whole.
#[test]
fn queues_hide_client_ids_from_non_admins() {
    let d = Daemon::start(&[], &[]);
    let _mqtt = mqtt_persistent_subscriber(d.addr("mqtt"), "victim-phone-7");
    let _stomp = stomp_temp_and_durable(d.addr("stomp"));
    let a = d.addr("admin");
    let (s, r) = request(a, "GET", "/queues", &a.to_string(), &[]);
    assert_eq!(s, 200, "{r}");
    let b = body(&r);
    assert!(!b.contains("victim-phone-7"), "client id listed: {b}");
    assert!(
        !b.contains("secretfeed"),
        "durable subscription name listed: {b}"
    );
    let v: serde_json::Value = serde_json::from_str(b).unwrap();
    let names: Vec<(&str, bool)> = v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["name"].as_str().unwrap(), q["redacted"] == true))
        .collect();
    for prefix in ["$mqtt.s.", "$sb.tmp.", "stomp."] {
        assert!(
            names.iter().any(|(n, r)| n.starts_with(prefix) && *r),
            "a redacted {prefix} entry: {names:?}"
        );
        assert!(
            names.iter().all(|(n, r)| !n.starts_with(prefix) || *r),
            "every {prefix} entry redacted: {names:?}"
        );
    }

    // An admin sees the names.
    let token = "tok-admin-sees-all-0d9e";
    let config = format!("auth:\n  admin_tokens: [\"{}\"]\n", token_digest(token));
    let d = daemon_with_config(&config);
    let _mqtt = mqtt_persistent_subscriber(d.addr("mqtt"), "victim-phone-7");
    let a = d.addr("admin");
    let (s, r) = request(
        a,
        "GET",
        "/queues",
        &a.to_string(),
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(s, 200, "{r}");
    assert!(body(&r).contains("$mqtt.s.victim-phone-7"), "{r}");
}

/// A raw WebSocket client: the handshake's status, and the socket when it is 101.
pub fn ws_open(
    addr: SocketAddr,
    host: &str,
    path: &str,
    protocol: &str,
    origin: Option<&str>,
) -> (u16, Option<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n{origin}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, (status == 101).then_some(s))
}

/// Sends one masked frame (`opcode` 1: text, 2: binary).
pub fn ws_send(s: &mut TcpStream, opcode: u8, payload: &[u8]) {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let mask = [0x11, 0x22, 0x33, 0x44];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&f).unwrap();
}

/// Reads one (unmasked) frame's payload; `None` when the connection ends first.
pub fn ws_read(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).ok()?;
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).ok()?;
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).ok()?;
    Some(p)
}

/// STOMP CONNECT over a raw WebSocket: the first frame's text.
fn stomp_ws_connect(addr: SocketAddr, origin: Option<&str>, login: Option<(&str, &str)>) -> String {
    let (status, s) = ws_open(addr, &addr.to_string(), "/ws", "v12.stomp", origin);
    let mut s = s.unwrap_or_else(|| panic!("upgrade refused ({status}) for origin {origin:?}"));
    let login = login.map_or(String::new(), |(l, p)| format!("login:{l}\npasscode:{p}\n"));
    ws_send(
        &mut s,
        1,
        format!("CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\n{login}\n\0").as_bytes(),
    );
    String::from_utf8_lossy(&ws_read(&mut s).unwrap_or_default()).into_owned()
}

/// MQTT 3.1.1 CONNECT (anonymous, clean session) over a raw WebSocket: the CONNACK's
/// return code, `None` when the connection ended without one.
fn mqtt_ws_connect(addr: SocketAddr, origin: &str) -> Option<u8> {
    let (status, s) = ws_open(addr, &addr.to_string(), "/mqtt", "mqtt", Some(origin));
    let mut s = s.unwrap_or_else(|| panic!("upgrade refused ({status}) for origin {origin}"));
    let id = b"ws-origin";
    let mut var = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x02,
        0,
        60,
        0,
        id.len() as u8,
    ];
    var.extend_from_slice(id);
    let mut p = vec![0x10, var.len() as u8];
    p.extend_from_slice(&var);
    ws_send(&mut s, 2, &p);
    ws_read(&mut s)?.get(3).copied()
}

/// WebSocket origins. By default only the listener's own origin (or no Origin: not a
/// browser) may open it, and on a loopback listener only under a loopback `Host` (a
/// DNS-rebinding page is its own origin); a page of another origin gets 403 and a log
/// line. Headless Chromium on a page from another origin cannot open STOMP over
/// WebSocket.
#[test]
#[cfg_attr(not(peers), ignore = "needs Node and Chromium: run scripts/test")]
fn websocket_listeners_refuse_foreign_origins() {
    let config = format!(
        "auth:\n  users:\n    web:\n      password_hash: \"{}\"\n",
        password_hash("webpw")
    );
    let d = daemon_with_config(&config);
    let ws = d.addr("stomp-ws");
    let own = format!("http://{ws}");

    let f = stomp_ws_connect(ws, None, None);
    assert!(
        f.starts_with("CONNECTED"),
        "no Origin (not a browser), anonymous on loopback: {f}"
    );
    let f = stomp_ws_connect(ws, Some(&own), None);
    assert!(
        f.starts_with("CONNECTED"),
        "own origin (a library such as paho sends it): {f}"
    );
    let f = stomp_ws_connect(ws, Some(&own), Some(("web", "webpw")));
    assert!(f.starts_with("CONNECTED"), "own origin with a login: {f}");

    for (addr, path, proto) in [
        (ws, "/ws", "v12.stomp"),
        (d.addr("mqtt-ws"), "/mqtt", "mqtt"),
    ] {
        let host = addr.to_string();
        for origin in [
            "http://evil.example",
            "null",
            &format!("http://localhost:{}", addr.port() + 1),
        ] {
            let (status, _) = ws_open(addr, &host, path, proto, Some(origin));
            assert_eq!(status, 403, "{path} from {origin}");
        }
        // DNS rebinding: evil.example resolved to 127.0.0.1, so the page is "same-origin".
        let rebound = format!("evil.example:{}", addr.port());
        let (status, _) = ws_open(
            addr,
            &rebound,
            path,
            proto,
            Some(&format!("http://{rebound}")),
        );
        assert_eq!(status, 403, "{path} under a rebound Host");
    }
    assert!(d.log().contains("origin not allowed"), "{}", d.log());

    // A real browser: the harness serves its page from another port of 127.0.0.1, a
    // foreign origin to the listener.
    let dir = std::env::var("SWITCHBOARD_NODE_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser").into());
    let refused = || {
        let (_, v) = crate::common::http_json(d.addr("admin"), "GET", "/limits");
        v["stomp-ws"]["refused"]["origin"].as_u64().unwrap()
    };
    let before = refused();
    assert!(before >= 4, "the raw refusals counted: {before}");
    let out = Command::new("node")
        .current_dir(&dir)
        .args([
            "ws_client.mjs",
            "stomp",
            &format!("ws://{ws}/ws"),
            "--count",
            "1",
        ])
        .args(["--timeout", "10", "--login", "web", "--passcode", "webpw"])
        .output()
        .expect("node (run scripts/setup browser)");
    assert!(
        !out.status.success(),
        "the foreign page got through\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        Duration::from_secs(10),
        "the browser's refusal counted",
        || (refused() > before).then_some(()),
    );
}

/// `ws_allowed_origins` lets pages of a named origin in, but a browser page gets no
/// anonymous access (not even on loopback) unless `ws_allow_anonymous_browsers`.
#[test]
fn websocket_allowed_origins_are_configurable() {
    let d = daemon_with_config(&format!(
        "auth:\n  users:\n    web:\n      password_hash: \"{}\"\nstomp:\n  ws_allowed_origins: [\"https://app.example\"]\nmqtt:\n  ws_allowed_origins: [\"https://app.example\"]\n  ws_allow_anonymous_browsers: true\n",
        password_hash("webpw")
    ));
    let ws = d.addr("stomp-ws");
    let app = Some("https://app.example");
    let f = stomp_ws_connect(ws, app, None);
    assert!(f.starts_with("ERROR"), "an allowed page, anonymous: {f}");
    let f = stomp_ws_connect(ws, app, Some(("web", "webpw")));
    assert!(
        f.starts_with("CONNECTED"),
        "an allowed page with a login: {f}"
    );
    let (status, _) = ws_open(
        ws,
        &ws.to_string(),
        "/ws",
        "v12.stomp",
        Some("https://other.example"),
    );
    assert_eq!(status, 403);
    let mqtt = d.addr("mqtt-ws");
    assert_eq!(
        mqtt_ws_connect(mqtt, "https://app.example"),
        Some(0),
        "anonymous browsers allowed on mqtt-ws"
    );
}
