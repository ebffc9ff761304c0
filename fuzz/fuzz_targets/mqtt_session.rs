//! A sequence of MQTT 3.1.1 / 5.0 packets, from up to two clients at once, into real MQTT
//! sessions (`listener::mqtt::session::run` over an in-memory duplex stream) sharing one
//! `MqttState` (sessions by client id, retained messages) on a router with an in-memory
//! core: CONNECT (clean or resumed, wills, credentials, properties), PUBLISH at every QoS
//! with retain and topic aliases, the QoS 1/2 acknowledgements, SUBSCRIBE (shared
//! subscriptions too), keep-alive expiry in virtual time, hang-ups and session takeover.
//!
//! Checked: nothing panics (libfuzzer-sys aborts on any panic, in any task); every write
//! is taken or refused by a closed session; once the clients hang up, every session ends.
//!
//! Packets are encoded here from structured steps (so most are well formed and reach the
//! session); property blocks can be raw bytes, and `Raw` steps send bytes as they are.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::Client;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use switchboard::listener::mqtt::codec::Codec;
use switchboard::listener::mqtt::session::{self, Socket};
use switchboard::listener::mqtt::state::{MqttSettings, MqttState};
use switchboard::listener::packet_io::PacketIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio_util::sync::CancellationToken;

#[derive(Arbitrary, Debug)]
enum Step {
    Packet {
        conn: bool,
        packet: Packet,
    },
    Raw {
        conn: bool,
        bytes: Vec<u8>,
    },
    HangUp {
        conn: bool,
    },
    /// Virtual time passes (×100 ms): keep-alive, parking, connect timeouts.
    Wait(u16),
}

#[derive(Arbitrary, Debug)]
enum Packet {
    Connect {
        v5: bool,
        client_id: Text,
        clean: bool,
        keep_alive: u16,
        will: Option<Will>,
        login: Option<(Text, Text)>,
        props: Props,
    },
    Publish {
        topic: Text,
        qos: u8,
        retain: bool,
        dup: bool,
        id: u8,
        props: Props,
        payload: Vec<u8>,
    },
    /// PUBACK, PUBREC, PUBREL, PUBCOMP (by `kind % 4`), with a 5.0 reason code.
    Ack {
        kind: u8,
        id: u8,
        reason: Option<u8>,
    },
    Subscribe {
        id: u8,
        props: Props,
        filters: Vec<(Text, u8)>,
    },
    Unsubscribe {
        id: u8,
        props: Props,
        filters: Vec<Text>,
    },
    PingReq,
    Disconnect {
        reason: Option<u8>,
        props: Props,
    },
    Auth {
        reason: u8,
        props: Props,
    },
}

#[derive(Arbitrary, Debug)]
struct Will {
    topic: Text,
    qos: u8,
    retain: bool,
    props: Props,
    payload: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Own(String),
}

#[derive(Arbitrary, Debug)]
enum Props {
    None,
    Known(Vec<Prop>),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Prop {
    PayloadFormat(u8),
    MessageExpiry(u32),
    ContentType(Text),
    ResponseTopic(Text),
    CorrelationData(Vec<u8>),
    SubscriptionId(u32),
    SessionExpiry(u32),
    ReceiveMaximum(u16),
    MaximumPacketSize(u32),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    RequestResponseInfo(u8),
    User(Text, Text),
    Other(u8, Vec<u8>),
}

const TEXTS: &[&str] = &[
    "a",
    "a/b",
    "a/+",
    "#",
    "+/b",
    "a/#",
    "$SYS/x",
    "$share/g/a/b",
    "$share/g/#",
    "fuzz/in/x",
    "fuzz/out",
    "",
    "a//b",
    "c1",
    "c2",
    "alice",
    "bob",
    "secret",
];

impl Text {
    fn get(&self) -> &str {
        match self {
            Text::Known(i) => TEXTS[usize::from(*i) % TEXTS.len()],
            Text::Own(s) => s,
        }
    }
}

fn varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn props(out: &mut Vec<u8>, p: &Props) {
    let mut body = Vec::new();
    match p {
        Props::None => {}
        Props::Raw(b) => body.extend_from_slice(b),
        Props::Known(list) => {
            for prop in list.iter().take(8) {
                match prop {
                    Prop::PayloadFormat(v) => body.extend([0x01, *v]),
                    Prop::MessageExpiry(v) => {
                        body.push(0x02);
                        body.extend(v.to_be_bytes());
                    }
                    Prop::ContentType(t) => {
                        body.push(0x03);
                        string(&mut body, t.get().as_bytes());
                    }
                    Prop::ResponseTopic(t) => {
                        body.push(0x08);
                        string(&mut body, t.get().as_bytes());
                    }
                    Prop::CorrelationData(d) => {
                        body.push(0x09);
                        string(&mut body, d);
                    }
                    Prop::SubscriptionId(v) => {
                        body.push(0x0B);
                        varint(&mut body, *v as usize & 0x0FFF_FFFF);
                    }
                    Prop::SessionExpiry(v) => {
                        body.push(0x11);
                        body.extend(v.to_be_bytes());
                    }
                    Prop::ReceiveMaximum(v) => {
                        body.push(0x21);
                        body.extend(v.to_be_bytes());
                    }
                    Prop::MaximumPacketSize(v) => {
                        body.push(0x27);
                        body.extend(v.to_be_bytes());
                    }
                    Prop::TopicAliasMaximum(v) => {
                        body.push(0x22);
                        body.extend(v.to_be_bytes());
                    }
                    Prop::TopicAlias(v) => {
                        body.push(0x23);
                        body.extend(v.to_be_bytes());
                    }
                    Prop::RequestResponseInfo(v) => body.extend([0x19, *v]),
                    Prop::User(k, v) => {
                        body.push(0x26);
                        string(&mut body, k.get().as_bytes());
                        string(&mut body, v.get().as_bytes());
                    }
                    Prop::Other(id, b) => {
                        body.push(*id);
                        body.extend_from_slice(b);
                    }
                }
            }
        }
    }
    varint(out, body.len());
    out.extend_from_slice(&body);
}

/// Encodes a packet for a connection speaking 5.0 (`v5`) or 3.1.1.
fn encode(p: &Packet, v5: bool) -> Vec<u8> {
    let mut body = Vec::new();
    let first = match p {
        Packet::Connect {
            v5: five,
            client_id,
            clean,
            keep_alive,
            will,
            login,
            props: pr,
        } => {
            string(&mut body, b"MQTT");
            body.push(if *five { 5 } else { 4 });
            let mut flags = u8::from(*clean) << 1;
            if let Some(w) = will {
                flags |= 0x04 | ((w.qos % 4) << 3) | (u8::from(w.retain) << 5);
            }
            if login.is_some() {
                flags |= 0xC0;
            }
            body.push(flags);
            body.extend(keep_alive.to_be_bytes());
            if *five {
                props(&mut body, pr);
            }
            string(&mut body, client_id.get().as_bytes());
            if let Some(w) = will {
                if *five {
                    props(&mut body, &w.props);
                }
                string(&mut body, w.topic.get().as_bytes());
                string(&mut body, &w.payload);
            }
            if let Some((u, pw)) = login {
                string(&mut body, u.get().as_bytes());
                string(&mut body, pw.get().as_bytes());
            }
            0x10
        }
        Packet::Publish {
            topic,
            qos,
            retain,
            dup,
            id,
            props: pr,
            payload,
        } => {
            let qos = qos % 4;
            string(&mut body, topic.get().as_bytes());
            if qos > 0 {
                body.extend(u16::from(*id).to_be_bytes());
            }
            if v5 {
                props(&mut body, pr);
            }
            body.extend_from_slice(payload);
            0x30 | (u8::from(*dup) << 3) | (qos << 1) | u8::from(*retain)
        }
        Packet::Ack { kind, id, reason } => {
            body.extend(u16::from(*id).to_be_bytes());
            if let (true, Some(r)) = (v5, reason) {
                body.push(*r);
            }
            [0x40, 0x50, 0x62, 0x70][usize::from(kind % 4)]
        }
        Packet::Subscribe {
            id,
            props: pr,
            filters,
        } => {
            body.extend(u16::from(*id).to_be_bytes());
            if v5 {
                props(&mut body, pr);
            }
            for (f, opts) in filters.iter().take(8) {
                string(&mut body, f.get().as_bytes());
                body.push(if v5 { *opts } else { opts % 4 });
            }
            0x82
        }
        Packet::Unsubscribe {
            id,
            props: pr,
            filters,
        } => {
            body.extend(u16::from(*id).to_be_bytes());
            if v5 {
                props(&mut body, pr);
            }
            for f in filters.iter().take(8) {
                string(&mut body, f.get().as_bytes());
            }
            0xA2
        }
        Packet::PingReq => 0xC0,
        Packet::Disconnect { reason, props: pr } => {
            if let (true, Some(r)) = (v5, reason) {
                body.push(*r);
                props(&mut body, pr);
            }
            0xE0
        }
        Packet::Auth { reason, props: pr } => {
            body.push(*reason);
            props(&mut body, pr);
            0xF0
        }
    };
    let mut out = vec![first];
    varint(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// The duplex stream as a socket that cannot be parked (as TLS or WebSocket).
struct Pipe(DuplexStream);

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Socket for Pipe {
    const PARKS: bool = false;
    fn raw_fd(&self) -> std::os::fd::RawFd {
        -1
    }
    fn into_std(self) -> std::io::Result<std::net::TcpStream> {
        Err(std::io::Error::other(
            "an in-memory stream cannot be parked",
        ))
    }
}

struct Slot {
    client: Client,
    session: tokio::task::JoinHandle<()>,
    /// The protocol level of the last CONNECT sent (how later packets are encoded).
    v5: bool,
}

fn settings() -> MqttSettings {
    MqttSettings {
        max_packet_size: 4096,
        max_inflight: 4,
        max_queued: 16,
        max_retained: 8,
        topic_alias_max: 4,
        ..MqttSettings::default()
    }
}

fn open(state: &Arc<MqttState>, cancel: &CancellationToken, id: u64) -> Slot {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let t = PacketIo::new(Pipe(server), Codec::new(state.settings.max_packet_size));
    let session = tokio::spawn(session::run(
        t,
        Arc::clone(state),
        session::Accepted {
            id,
            listener: "mqtt",
            peer: "127.0.0.1:1".parse().unwrap(),
        },
        true,
        cancel.clone(),
        None,
    ));
    Slot {
        client: Client::new(client, false),
        session,
        v5: false,
    }
}

async fn close(slot: Slot) {
    slot.client.finish().await;
    common::must_end("an MQTT session", slot.session)
        .await
        .expect("session task");
}

/// A fixed session (connect, subscribe, publish at QoS 1 to itself, acknowledge), which
/// inputs can start with. `FUZZ_DEMO=1`: every input is replaced by it, to check with
/// `FUZZ_TRACE=1` that the harness reaches deliveries: `FUZZ_DEMO=1 FUZZ_TRACE=1 mqtt_session -runs=1`.
fn demo() -> Vec<Step> {
    let packet = |packet| Step::Packet {
        conn: false,
        packet,
    };
    vec![
        packet(Packet::Connect {
            v5: false,
            client_id: Text::Own("demo".into()),
            clean: true,
            keep_alive: 60,
            will: None,
            login: None,
            props: Props::None,
        }),
        packet(Packet::Subscribe {
            id: 1,
            props: Props::None,
            filters: vec![(Text::Own("#".into()), 1)],
        }),
        packet(Packet::Publish {
            topic: Text::Own("a/b".into()),
            qos: 1,
            retain: false,
            dup: false,
            id: 7,
            props: Props::None,
            payload: b"hello".to_vec(),
        }),
        packet(Packet::Ack {
            kind: 0,
            id: 1,
            reason: None,
        }),
    ]
}

fuzz_target!(|input: (bool, Vec<Step>)| {
    // With the flag, the steps follow the demo session: deliveries to the client and
    // the QoS flows behind them are reached at once (in 5 minutes the fuzzer alone had
    // not put a matching SUBSCRIBE and PUBLISH in one input).
    let (prelude, steps) = input;
    let steps = match std::env::var_os("FUZZ_DEMO").is_some_and(|v| v == "1") {
        true => demo(),
        false if prelude => demo().into_iter().chain(steps).collect(),
        false => steps,
    };
    common::run_input(async move {
        let state = Arc::new(MqttState::new(common::router(), common::auth(), settings()));
        let cancel = CancellationToken::new();
        let mut slots: [Option<Slot>; 2] = [None, None];
        let mut next_id = 1;
        for step in steps.iter().take(64) {
            let conn = match step {
                Step::Wait(t) => {
                    tokio::time::sleep(Duration::from_millis(u64::from(*t) * 100)).await;
                    continue;
                }
                Step::HangUp { conn } => {
                    if let Some(slot) = slots[usize::from(*conn)].take() {
                        close(slot).await;
                    }
                    continue;
                }
                Step::Packet { conn, .. } | Step::Raw { conn, .. } => usize::from(*conn),
            };
            let slot = slots[conn].get_or_insert_with(|| {
                next_id += 1;
                open(&state, &cancel, next_id)
            });
            let bytes = match step {
                Step::Packet { packet, .. } => {
                    if let Packet::Connect { v5, .. } = packet {
                        slot.v5 = *v5;
                    }
                    encode(packet, slot.v5)
                }
                Step::Raw { bytes, .. } => bytes.clone(),
                _ => unreachable!(),
            };
            slot.client.write(&bytes).await;
            common::settle().await;
        }
        for slot in slots.into_iter().flatten() {
            close(slot).await;
        }
    });
});
