//! A minimal XMPP c2s client (plain TCP, SASL PLAIN, resource binding) for load
//! generators: enough to send chat messages and count the ones that arrive. It cannot
//! be tokio-xmpp's client: the build enables xmpp-parsers' `component` feature, which
//! switches the stanza namespace for every user of the crate (../shared/CRATES.md).
//! Needs a server that allows plaintext c2s and PLAIN auth (scripts/peers/prosody.cfg.lua).

use std::net::SocketAddr;
use std::time::Instant;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub struct Session {
    pub r: OwnedReadHalf,
    pub w: OwnedWriteHalf,
}

async fn read_until(r: &mut OwnedReadHalf, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf).await.expect("XMPP read");
        assert!(
            n > 0,
            "XMPP server closed the stream: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if text.contains("<failure") || text.contains("stream:error") {
            panic!("XMPP login failed: {text}");
        }
        if text.contains(needle) {
            return text.into_owned();
        }
    }
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

/// Logs `jid` (`user@domain`) in with `password`, binds a resource and becomes available.
pub async fn login(addr: SocketAddr, jid: &str, password: &str) -> Session {
    let (user, domain) = jid.split_once('@').expect("user@domain");
    let s = TcpStream::connect(addr).await.expect("connect to XMPP c2s");
    s.set_nodelay(true).ok();
    let (mut r, mut w) = s.into_split();
    w.write_all(header(domain).as_bytes()).await.unwrap();
    read_until(&mut r, "</stream:features>").await;
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    let auth =
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>");
    w.write_all(auth.as_bytes()).await.unwrap();
    read_until(&mut r, "<success").await;
    w.write_all(header(domain).as_bytes()).await.unwrap();
    read_until(&mut r, "</stream:features>").await;
    w.write_all(b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>").await.unwrap();
    read_until(&mut r, "</iq>").await;
    // Wait for the server's echo of our presence: until it has processed it, the account
    // has no available resource and messages to it bounce as errors.
    w.write_all(b"<presence/>").await.unwrap();
    read_until(&mut r, "<presence").await;
    Session { r, w }
}

/// Sends `n` chat messages to `to` (bodies `m0`, `m1`, …), in batches of 200 stanzas per
/// write.
pub async fn send_chats(w: &mut OwnedWriteHalf, to: &str, n: usize) {
    send_bodies(w, to, n, |i| format!("m{i}")).await
}

/// Sends one chat message with body `probe`.
pub async fn send_probe(w: &mut OwnedWriteHalf, to: &str) {
    send_bodies(w, to, 1, |_| "probe".into()).await
}

async fn send_bodies(w: &mut OwnedWriteHalf, to: &str, n: usize, body: impl Fn(usize) -> String) {
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!(
            "<message to='{to}' type='chat' id='m{i}'><body>{}</body></message>",
            body(i)
        ));
        if i % 200 == 199 || i + 1 == n {
            w.write_all(batch.as_bytes()).await.expect("XMPP write");
            batch.clear();
        }
    }
}

/// Reads until `n` `<message` stanzas arrived; returns when the last one did.
pub async fn count_messages(r: &mut OwnedReadHalf, n: usize) -> Instant {
    const TAG: &[u8] = b"<message";
    let mut got = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got < n {
        let k = tokio::time::timeout(std::time::Duration::from_secs(10), r.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no XMPP stanza for 10 s after {got} of {n} messages"))
            .expect("XMPP read");
        assert!(k > 0, "XMPP stream closed after {got} messages");
        carry.extend_from_slice(&buf[..k]);
        got += carry.windows(TAG.len()).filter(|w| *w == TAG).count();
        // Keep a tail that may hold the start of a tag cut by this read.
        let keep = carry.len().min(TAG.len() - 1);
        carry.drain(..carry.len() - keep);
    }
    Instant::now()
}
