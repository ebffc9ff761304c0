//! A TCP forwarder from a loopback port to a peer, whose connections a test can cut and
//! whose new connections it can refuse: a network failure between the router and one
//! peer, without disturbing the peer other tests share.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Copies one direction of a forwarded connection.
type Pipe = fn(TcpStream, TcpStream) -> std::io::Result<()>;

pub struct Forwarder {
    port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
    swallowing: Arc<AtomicBool>,
}

impl Forwarder {
    /// Forwards `127.0.0.1:port` to `to`, bytes as they are.
    pub fn start(port: u16, to: &'static str) -> Forwarder {
        Self::with(port, to, plain)
    }

    /// Forwards a free loopback port to the NATS server `to`, hiding the other servers
    /// of its cluster from the client (as a server configured with `no_advertise`): the
    /// client knows only the forwarder, so cutting it loses NATS altogether.
    pub fn nats(to: &'static str) -> Forwarder {
        Self::with(0, to, nats_without_discovery)
    }

    fn with(port: u16, to: &'static str, downstream: Pipe) -> Forwarder {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let swallowing = Arc::new(AtomicBool::new(false));
        let (kept, refused) = (Arc::clone(&conns), Arc::clone(&refusing));
        let swallowed = Arc::clone(&swallowing);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if refused.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let mut kept = kept.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                let swallowed = Arc::clone(&swallowed);
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    move |from, to| upstream(from, to, &swallowed),
                );
                pipe(server, client, downstream);
            }
        });
        Forwarder {
            port,
            conns,
            refusing,
            swallowing,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every forwarded connection, as a network failure would.
    pub fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// While `yes`, new connections are closed as soon as they are accepted (the peer
    /// is unreachable); `cut` the open ones as well for a full outage.
    pub fn refuse(&self, yes: bool) {
        self.refusing.store(yes, Ordering::SeqCst);
    }

    /// While `yes`, what clients send is read and thrown away instead of forwarded: the
    /// data a client writes just before its connection dies, which never reaches the
    /// peer (the peer's own data still flows to the client).
    pub fn swallow(&self, yes: bool) {
        self.swallowing.store(yes, Ordering::SeqCst);
    }
}

/// The client-to-peer direction: as it is, unless swallowing.
fn upstream(
    mut from: TcpStream,
    mut to: TcpStream,
    swallowing: &AtomicBool,
) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if !swallowing.load(Ordering::SeqCst) {
            to.write_all(&buf[..n])?;
        }
    }
}

fn pipe(
    from: TcpStream,
    to: TcpStream,
    copy: impl FnOnce(TcpStream, TcpStream) -> std::io::Result<()> + Send + 'static,
) {
    std::thread::spawn(move || {
        let _ = copy(from, to.try_clone().unwrap());
        let _ = to.shutdown(Shutdown::Both);
    });
}

fn plain(mut from: TcpStream, mut to: TcpStream) -> std::io::Result<()> {
    std::io::copy(&mut from, &mut to).map(drop)
}

/// The server-to-client direction of a NATS connection with `connect_urls` dropped
/// from every `INFO`; message payloads (`MSG`/`HMSG`, whose last field is their size)
/// pass through untouched.
fn nats_without_discovery(from: TcpStream, mut to: TcpStream) -> std::io::Result<()> {
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        if from.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        if let Some(json) = text.strip_prefix("INFO ") {
            let mut info: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
            if let Some(o) = info.as_object_mut() {
                o.remove("connect_urls");
                o.remove("ws_connect_urls");
            }
            to.write_all(format!("INFO {info}\r\n").as_bytes())?;
            continue;
        }
        to.write_all(&line)?;
        if text.starts_with("MSG ") || text.starts_with("HMSG ") {
            let size: u64 = text.split_whitespace().last().unwrap().parse().unwrap();
            let copied = std::io::copy(&mut (&mut from).take(size + 2), &mut to)?;
            if copied < size + 2 {
                return Ok(());
            }
        }
    }
}
