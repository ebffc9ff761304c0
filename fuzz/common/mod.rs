//! What the session targets share: a router over an in-memory core, a user store, the
//! per-input runtime, and the client end of a connection (a duplex stream whose output
//! is drained by a task that remembers the ids the server sent, for ACKs).
//!
//! Each input runs on its own current-thread runtime with a paused clock: time only
//! moves when every task is waiting, so heart-beats, keep-alives and connect timeouts
//! fire deterministically and at once, and a session that never ends (a hang) is seen as
//! virtual time running past a bound, not as a slow fuzzer.
#![allow(dead_code)] // each target uses a part

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use switchboard::auth::{Anonymous, Auth, Permissions, Rule, User};
use switchboard::core::Core;
use switchboard::router::Router;
use switchboard::routes::{CompileContext, compile_sources};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

/// How long (virtual time) sessions get to end once their clients have hung up.
pub const END_WITHIN: Duration = Duration::from_secs(3600);
/// How long (virtual time) one write may wait for the session to read.
pub const WRITE_WITHIN: Duration = Duration::from_secs(3600);

const ROUTES: &str = r#"
routes:
  - name: fan
    from: { queue: fuzz.in }
    to:
      - queue: a
      - topic: a.b
      - mqtt: "fuzz/out"
    transform:
      set_headers: { x-fuzz: "1" }
  - name: mqtt-in
    from: { mqtt: "fuzz/in/#" }
    to:
      - queue: b.x
    passthrough: true
"#;

/// A router over an in-memory core (no data dir) with a small route table.
pub fn router() -> Router {
    let table = compile_sources(
        &[("fuzz.yaml".into(), ROUTES.into())],
        &CompileContext::default(),
    )
    .unwrap_or_else(|e| panic!("fuzz routes: {e:?}"));
    Router::new(Core::default(), Arc::new(ArcSwap::from_pointee(table)))
}

/// Anonymous clients with every right (the listener counts as loopback), `alice`
/// (password `secret`) with every right, and `bob` (password `secret`) restricted, so the
/// permission checks are on the fuzzed paths too. The hashes are cheap argon2id ones:
/// the default cost would make every login take tens of milliseconds.
pub fn auth() -> Arc<Auth> {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| {
        use argon2::password_hash::PasswordHasher;
        let params = argon2::Params::new(8, 1, 1, None).expect("argon2 params");
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_with_salt(b"secret", b"fuzzsaltfuzzsalt")
            .expect("argon2 hash")
            .to_string()
    });
    let rules = |v: &[&str]| v.iter().map(|r| Rule::parse(r).expect("rule")).collect();
    let bob = Permissions {
        publish: rules(&["topic:a.#", "queue:b.*"]),
        subscribe: rules(&["topic:#", "queue:b.*"]),
    };
    let mut users = HashMap::new();
    users.insert(
        "alice".to_owned(),
        User {
            password_hash: hash.clone(),
            perms: Arc::new(Permissions::all()),
        },
    );
    users.insert(
        "bob".to_owned(),
        User {
            password_hash: hash.clone(),
            perms: Arc::new(bob),
        },
    );
    Arc::new(Auth {
        users,
        anonymous: Anonymous::Loopback,
        anonymous_perms: Arc::new(Permissions::all()),
    })
}

/// Runs one input on a fresh current-thread runtime with a paused clock.
pub fn run_input<F: Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(f);
}

/// Lets every task run until all of them wait (the clock moves 1 ms).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Values the server sent that a client would echo back (`ack`, `message-id`,
/// `subscription`, `receipt-id`), most recent last, a few kept.
pub type Seen = Arc<Mutex<Vec<String>>>;

/// The client end of one connection.
pub struct Client {
    pub w: Option<WriteHalf<DuplexStream>>,
    pub seen: Seen,
    reader: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Splits the client end: the read half is drained by a task (a client that reads
    /// everything), noting header values when `headers` is set (STOMP).
    pub fn new(io: DuplexStream, headers: bool) -> Self {
        let (r, w) = tokio::io::split(io);
        let seen: Seen = Arc::default();
        let reader = tokio::spawn(drain(r, headers.then(|| Arc::clone(&seen))));
        Client {
            w: Some(w),
            seen,
            reader,
        }
    }

    /// Writes bytes; false once the server has gone (the write half is then dropped).
    /// A write the session does not take within [`WRITE_WITHIN`] is a hang.
    pub async fn write(&mut self, bytes: &[u8]) -> bool {
        let Some(w) = self.w.as_mut() else {
            return false;
        };
        match tokio::time::timeout(WRITE_WITHIN, w.write_all(bytes)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                self.w = None;
                false
            }
            Err(_) => panic!("the session took no input for {WRITE_WITHIN:?} and did not close"),
        }
    }

    /// Hangs up (end of stream for the session).
    pub async fn hang_up(&mut self) {
        if let Some(mut w) = self.w.take() {
            let _ = w.shutdown().await;
        }
    }

    /// The `i`th value seen, counting back from the newest, if any.
    pub fn seen(&self, i: u8) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        let n = seen.len();
        (n > 0).then(|| seen[n - 1 - usize::from(i) % n].clone())
    }

    /// Hangs up and waits for the server to close its end.
    pub async fn finish(mut self) {
        self.hang_up().await;
        let _ = self.reader.await;
    }
}

/// `FUZZ_TRACE=1`: what the server sends is printed to stderr (escaped), to see how far
/// an input gets (`TARGET -runs=0 CORPUS_DIR` replays a corpus).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some_and(|v| v == "1"))
}

async fn drain(mut r: ReadHalf<DuplexStream>, seen: Option<Seen>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line = Vec::new();
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if trace() {
                    eprintln!("server> {}", buf[..n].escape_ascii());
                }
                let Some(seen) = &seen else { continue };
                for &b in &buf[..n] {
                    if b != b'\n' && b != 0 {
                        if line.len() < 256 {
                            line.push(b);
                        }
                        continue;
                    }
                    note(&line, seen);
                    line.clear();
                }
            }
        }
    }
}

fn note(line: &[u8], seen: &Seen) {
    let Ok(text) = std::str::from_utf8(line) else {
        return;
    };
    for name in ["ack:", "message-id:", "subscription:", "receipt-id:"] {
        if let Some(v) = text.strip_prefix(name) {
            let mut seen = seen.lock().unwrap();
            if seen.len() >= 16 {
                seen.remove(0);
            }
            seen.push(v.to_owned());
        }
    }
}

/// Awaits a server-side task, bounded by [`END_WITHIN`] of virtual time.
pub async fn must_end<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(END_WITHIN, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not end within {END_WITHIN:?} after its client hung up"),
    }
}

/// Escapes a header value as STOMP 1.1+ does (a raw value can still come from `Raw`).
pub fn stomp_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ':' => out.push_str("\\c"),
            c => out.push(c),
        }
    }
    out
}
