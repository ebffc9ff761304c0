//! A sequence of STOMP frames, from up to two clients at once, into real STOMP sessions
//! (`listener::stomp::session::run` over an in-memory duplex stream) on one router with
//! an in-memory core: CONNECT, SUBSCRIBE, SEND, ACK with ids the server sent, BEGIN/COMMIT,
//! heart-beats and timeouts (virtual time), hang-ups and reconnects.
//!
//! Checked: nothing panics (libfuzzer-sys aborts on any panic, in any task); every write
//! is taken or refused by a closed session (a session that stops reading without closing
//! is a hang); once the clients hang up, every session ends.
//!
//! The input is decoded with `arbitrary` into steps; frames are built from tables of the
//! commands, headers, values and destinations the session knows, plus fuzzed text, and a
//! `Raw` step sends bytes as they are, so the codec's error paths stay reachable.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Client;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use switchboard::listener::stomp::codec::{Limits, StompCodec};
use switchboard::listener::stomp::session::{self, Shared, StompSettings};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

#[derive(Arbitrary, Debug)]
enum Step {
    Frame {
        conn: bool,
        cmd: Cmd,
        headers: Vec<(Name, Value)>,
        /// Adds a correct `content-length`.
        length: bool,
        body: Vec<u8>,
    },
    Raw {
        conn: bool,
        bytes: Vec<u8>,
    },
    /// A heart-beat (an EOL).
    Eol {
        conn: bool,
    },
    /// The client hangs up; the slot connects anew on its next step.
    HangUp {
        conn: bool,
    },
    /// Virtual time passes (×10 ms): heart-beat and idle deadlines, connect timeouts.
    Wait(u16),
}

#[derive(Arbitrary, Debug)]
enum Cmd {
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Destination,
    Id,
    Ack,
    Receipt,
    Transaction,
    ContentLength,
    ContentType,
    AcceptVersion,
    Host,
    Login,
    Passcode,
    HeartBeat,
    MessageId,
    Subscription,
    Persistent,
    Durable,
    PrefetchCount,
    SubscriptionName,
    ReplyTo,
    Requeue,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Dest(u8),
    Known(u8),
    /// An id the server sent this client (ack, message-id, subscription, receipt-id).
    Seen(u8),
    Num(u32),
    Text(String),
}

const DESTS: &[&str] = &[
    "/queue/a",
    "/queue/b.x",
    "/queue/fuzz.in",
    "/topic/a.b",
    "/topic/a.#",
    "/topic/*.b",
    "/topic/#",
    "/temp-queue/t1",
    "/temp-queue/t2",
    "/topic/$SYS.x",
    "/queue/$mqtt.s.c1",
    "/queue/stomp.alice.d",
    "/topic/fuzz.out",
    "/queue/",
    "/topic/a..b",
    "a",
];

const VALUES: &[&str] = &[
    "1.2",
    "1.0,1.1,1.2",
    "1.1",
    "1.0",
    "0,0",
    "0,100",
    "100,0",
    "1000,1000",
    "true",
    "false",
    "auto",
    "client",
    "client-individual",
    "alice",
    "bob",
    "secret",
    "wrong",
    "tx1",
    "tx2",
    "s1",
    "s2",
    "0",
    "1",
    "",
    "text/plain",
    "application/json",
];

impl Name {
    fn text(&self) -> &str {
        match self {
            Name::Destination => "destination",
            Name::Id => "id",
            Name::Ack => "ack",
            Name::Receipt => "receipt",
            Name::Transaction => "transaction",
            Name::ContentLength => "content-length",
            Name::ContentType => "content-type",
            Name::AcceptVersion => "accept-version",
            Name::Host => "host",
            Name::Login => "login",
            Name::Passcode => "passcode",
            Name::HeartBeat => "heart-beat",
            Name::MessageId => "message-id",
            Name::Subscription => "subscription",
            Name::Persistent => "persistent",
            Name::Durable => "durable",
            Name::PrefetchCount => "prefetch-count",
            Name::SubscriptionName => "subscription-name",
            Name::ReplyTo => "reply-to",
            Name::Requeue => "requeue",
            Name::Other(s) => s,
        }
    }
}

impl Cmd {
    fn text(&self) -> &str {
        match self {
            Cmd::Connect => "CONNECT",
            Cmd::Stomp => "STOMP",
            Cmd::Send => "SEND",
            Cmd::Subscribe => "SUBSCRIBE",
            Cmd::Unsubscribe => "UNSUBSCRIBE",
            Cmd::Ack => "ACK",
            Cmd::Nack => "NACK",
            Cmd::Begin => "BEGIN",
            Cmd::Commit => "COMMIT",
            Cmd::Abort => "ABORT",
            Cmd::Disconnect => "DISCONNECT",
            Cmd::Other(s) => s,
        }
    }
}

fn value(v: &Value, client: &Client) -> String {
    match v {
        Value::Dest(i) => DESTS[usize::from(*i) % DESTS.len()].to_owned(),
        Value::Known(i) => VALUES[usize::from(*i) % VALUES.len()].to_owned(),
        Value::Seen(i) => client.seen(*i).unwrap_or_else(|| "1".to_owned()),
        Value::Num(n) => n.to_string(),
        Value::Text(s) => common::stomp_escape(s),
    }
}

fn frame(cmd: &Cmd, headers: &[(Name, Value)], length: bool, body: &[u8], c: &Client) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + body.len());
    out.extend_from_slice(cmd.text().as_bytes());
    out.push(b'\n');
    for (n, v) in headers.iter().take(16) {
        out.extend_from_slice(common::stomp_escape(n.text()).as_bytes());
        out.push(b':');
        out.extend_from_slice(value(v, c).as_bytes());
        out.push(b'\n');
    }
    if length {
        out.extend_from_slice(format!("content-length:{}\n", body.len()).as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
    out
}

struct Slot {
    client: Client,
    session: tokio::task::JoinHandle<()>,
}

fn settings() -> StompSettings {
    StompSettings {
        // Small limits: the limit paths are reached with short inputs.
        limits: Limits {
            max_frame_size: 4096,
            max_headers: 32,
            max_header_len: 1024,
        },
        max_subscriptions: 8,
        default_prefetch: 4,
        max_transaction_frames: 16,
        max_transactions: 4,
        ..StompSettings::default()
    }
}

fn open(shared: &Arc<Shared>, cancel: &CancellationToken, id: u64) -> Slot {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let t = Framed::new(server, StompCodec::new(shared.settings.limits));
    let session = tokio::spawn(session::run(
        t,
        Arc::clone(shared),
        id,
        "127.0.0.1:1".into(),
        cancel.clone(),
    ));
    Slot {
        client: Client::new(client, true),
        session,
    }
}

async fn close(slot: Slot) {
    slot.client.finish().await;
    common::must_end("a STOMP session", slot.session)
        .await
        .expect("session task");
}

fuzz_target!(|steps: Vec<Step>| {
    common::run_input(async move {
        let shared = Arc::new(Shared {
            router: common::router(),
            auth: common::auth(),
            settings: settings(),
            loopback: true,
        });
        let cancel = CancellationToken::new();
        let mut slots: [Option<Slot>; 2] = [None, None];
        let mut next_id = 1;
        for step in steps.iter().take(64) {
            let (conn, bytes) = match step {
                Step::Wait(t) => {
                    tokio::time::sleep(Duration::from_millis(u64::from(*t) * 10)).await;
                    continue;
                }
                Step::HangUp { conn } => {
                    if let Some(slot) = slots[usize::from(*conn)].take() {
                        close(slot).await;
                    }
                    continue;
                }
                Step::Frame {
                    conn,
                    cmd,
                    headers,
                    length,
                    body,
                } => {
                    let slot = slots[usize::from(*conn)].get_or_insert_with(|| {
                        next_id += 1;
                        open(&shared, &cancel, next_id)
                    });
                    (*conn, frame(cmd, headers, *length, body, &slot.client))
                }
                Step::Raw { conn, bytes } => (*conn, bytes.clone()),
                Step::Eol { conn } => (*conn, b"\n".to_vec()),
            };
            let slot = slots[usize::from(conn)].get_or_insert_with(|| {
                next_id += 1;
                open(&shared, &cancel, next_id)
            });
            slot.client.write(&bytes).await;
            common::settle().await;
        }
        for slot in slots.into_iter().flatten() {
            close(slot).await;
        }
    });
});
