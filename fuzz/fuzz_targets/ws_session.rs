//! A sequence of raw WebSocket frames into a real WebSocket listener: the HTTP upgrade
//! is served by hyper (as `listener::serve_http_tls` does) over an in-memory duplex
//! stream, with the STOMP (`/ws`) or the MQTT (`/mqtt`) listener's own axum app, so the
//! frames go through tungstenite, `WsFramed`'s reassembly of protocol frames split
//! across or packed into messages, and the protocol session behind it.
//!
//! Frames are built from fields (FIN, RSV bits, any opcode, masked or not, minimal or
//! oversized or lying length encodings), carrying fuzzed bytes, a close code and reason,
//! or slices of prepared STOMP/MQTT packets (so sessions get past CONNECT); `Raw` steps
//! send bytes as they are.
//!
//! Checked: nothing panics; every write is taken or refused by a closed connection;
//! once the client hangs up, the HTTP connection and the session end.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Client;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use switchboard::listener::SlotHold;
use switchboard::listener::limit::{Gate, PeerLimits};
use switchboard::listener::mqtt::state::{MqttSettings, MqttState};
use switchboard::listener::origin::WsPolicy;
use switchboard::listener::stomp::codec::Limits;
use switchboard::listener::stomp::session::{Shared, StompSettings};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Arbitrary, Debug)]
struct Input {
    /// STOMP (`/ws`) or MQTT (`/mqtt`).
    stomp: bool,
    /// Offer the listener's subprotocol in the handshake.
    subprotocol: bool,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Frame {
        fin: bool,
        rsv: u8,
        opcode: Opcode,
        /// The client's masking key; `None` sends an unmasked frame (a protocol error).
        mask: Option<[u8; 4]>,
        /// 0: minimal length encoding, 1: 16-bit, 2: 64-bit, 3: claims `extra` more
        /// bytes than follow.
        length: u8,
        extra: u8,
        payload: Payload,
    },
    Raw(Vec<u8>),
    /// Virtual time passes (×100 ms).
    Wait(u16),
}

#[derive(Arbitrary, Debug)]
enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
    Other(u8),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    /// A prepared packet of the listener's protocol.
    Packet(u8),
    /// Part of a prepared packet: the first (`head`) or the rest after `at` bytes.
    Part {
        packet: u8,
        at: u8,
        head: bool,
    },
    Close {
        code: u16,
        reason: String,
    },
}

const STOMP: &[&[u8]] = &[
    b"CONNECT\naccept-version:1.0,1.1,1.2\nhost:localhost\nheart-beat:0,0\n\n\0",
    b"CONNECT\naccept-version:1.2\nlogin:bob\npasscode:secret\n\n\0",
    b"SUBSCRIBE\nid:s1\ndestination:/topic/a.b\nack:client-individual\n\n\0",
    b"SUBSCRIBE\nid:s2\ndestination:/queue/a\nack:client\nprefetch-count:2\n\n\0",
    b"SEND\ndestination:/topic/a.b\ncontent-type:text/plain\n\nhello\0",
    b"SEND\ndestination:/queue/fuzz.in\nreceipt:r1\ncontent-length:3\n\na\0b\0",
    b"ACK\nid:1\n\n\0",
    b"NACK\nid:2\n\n\0",
    b"BEGIN\ntransaction:t\n\n\0",
    b"COMMIT\ntransaction:t\n\n\0",
    b"\n",
    b"DISCONNECT\nreceipt:bye\n\n\0",
];

const MQTT: &[&[u8]] = &[
    // CONNECT 3.1.1, client id c1, clean, keep-alive 60
    b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1",
    // CONNECT 5.0, client id c2, not clean, keep-alive 0, no properties
    b"\x10\x0f\x00\x04MQTT\x05\x00\x00\x00\x00\x00\x02c2",
    // SUBSCRIBE id 1, a/b QoS 1 (3.1.1 layout)
    b"\x82\x08\x00\x01\x00\x03a/b\x01",
    // SUBSCRIBE id 2, # QoS 2 (5.0 layout: empty properties)
    b"\x82\x07\x00\x02\x00\x00\x01#\x02",
    // PUBLISH QoS 0 a/b
    b"\x30\x07\x00\x03a/bhi",
    // PUBLISH QoS 1 id 1 a/b, retained
    b"\x33\x09\x00\x03a/b\x00\x01hi",
    // PUBLISH QoS 2 id 2 fuzz/in/x
    b"\x34\x0f\x00\x09fuzz/in/x\x00\x02hi",
    // PUBACK 1, PUBREC 1, PUBREL 2, PUBCOMP 1
    b"\x40\x02\x00\x01",
    b"\x50\x02\x00\x01",
    b"\x62\x02\x00\x02",
    b"\x70\x02\x00\x01",
    // PINGREQ, DISCONNECT
    b"\xc0\x00",
    b"\xe0\x00",
];

fn prepared(stomp: bool, i: u8) -> &'static [u8] {
    let table = if stomp { STOMP } else { MQTT };
    table[usize::from(i) % table.len()]
}

fn frame(stomp: bool, step: &Step) -> Vec<u8> {
    let Step::Frame {
        fin,
        rsv,
        opcode,
        mask,
        length,
        extra,
        payload,
    } = step
    else {
        unreachable!()
    };
    let payload: Vec<u8> = match payload {
        Payload::Bytes(b) => b.clone(),
        Payload::Packet(i) => prepared(stomp, *i).to_vec(),
        Payload::Part { packet, at, head } => {
            let p = prepared(stomp, *packet);
            let at = usize::from(*at) % (p.len() + 1);
            if *head {
                p[..at].to_vec()
            } else {
                p[at..].to_vec()
            }
        }
        Payload::Close { code, reason } => {
            let mut v = code.to_be_bytes().to_vec();
            v.extend_from_slice(reason.as_bytes());
            v
        }
    };
    let op = match opcode {
        Opcode::Continuation => 0,
        Opcode::Text => 1,
        Opcode::Binary => 2,
        Opcode::Close => 8,
        Opcode::Ping => 9,
        Opcode::Pong => 10,
        Opcode::Other(o) => o & 0x0f,
    };
    let mut out = vec![(u8::from(*fin) << 7) | ((rsv & 7) << 4) | op];
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len() as u64
        + if length % 4 == 3 {
            u64::from(*extra)
        } else {
            0
        };
    match length % 4 {
        1 if len <= u64::from(u16::MAX) => {
            out.push(m | 126);
            out.extend((len as u16).to_be_bytes());
        }
        2 => {
            out.push(m | 127);
            out.extend(len.to_be_bytes());
        }
        _ if len < 126 => out.push(m | len as u8),
        _ if len <= u64::from(u16::MAX) => {
            out.push(m | 126);
            out.extend((len as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 127);
            out.extend(len.to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend(key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(&payload),
    }
    out
}

fn request(stomp: bool, subprotocol: bool) -> Vec<u8> {
    let (path, proto) = if stomp {
        ("/ws", "v12.stomp, v11.stomp")
    } else {
        ("/mqtt", "mqtt")
    };
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if subprotocol {
        r.push_str(&format!("Sec-WebSocket-Protocol: {proto}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

fn app(stomp: bool, cancel: &CancellationToken, tracker: &TaskTracker) -> axum::Router {
    let router = common::router();
    // The listener's admission gate without per-address limits; the one connection of
    // the input holds a slot of it, as `serve_http` would give it.
    let no_limits = PeerLimits {
        max_per_ip: 0,
        connect_rate: 0.0,
        connect_burst: 1.0,
    };
    let gate = Gate::new("fuzz", 1024, no_limits);
    let peer: SocketAddr = "127.0.0.1:1".parse().expect("address");
    let slot = gate.admit(peer.ip()).expect("a slot");
    let app = if stomp {
        let shared = Arc::new(Shared {
            router,
            auth: common::auth(),
            settings: StompSettings {
                limits: Limits {
                    max_frame_size: 4096,
                    max_headers: 32,
                    max_header_len: 1024,
                },
                ..StompSettings::default()
            },
            loopback: true,
        });
        switchboard::listener::stomp::server::ws_app(
            Arc::clone(&shared),
            shared,
            WsPolicy::default(),
            Arc::clone(&gate),
            cancel.clone(),
            tracker.clone(),
        )
    } else {
        let settings = MqttSettings {
            max_packet_size: 4096,
            ..MqttSettings::default()
        };
        let state = Arc::new(MqttState::new(router, common::auth(), settings));
        switchboard::listener::mqtt::server::ws_app(
            state,
            true,
            WsPolicy::default(),
            Arc::clone(&gate),
            cancel.clone(),
            tracker.clone(),
        )
    };
    app.layer(axum::Extension(axum::extract::ConnectInfo(peer)))
        .layer(axum::Extension(SlotHold::new(slot)))
}

fuzz_target!(|input: Input| {
    common::run_input(async move {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let app = app(input.stomp, &cancel, &tracker);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let http = tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service)
                .with_upgrades()
                .await;
        });
        let mut client = Client::new(client, false);
        client.write(&request(input.stomp, input.subprotocol)).await;
        common::settle().await;
        for step in input.steps.iter().take(64) {
            let bytes = match step {
                Step::Wait(t) => {
                    tokio::time::sleep(Duration::from_millis(u64::from(*t) * 100)).await;
                    continue;
                }
                Step::Raw(b) => b.clone(),
                Step::Frame { .. } => frame(input.stomp, step),
            };
            client.write(&bytes).await;
            common::settle().await;
        }
        client.finish().await;
        common::must_end("the HTTP connection", http)
            .await
            .expect("HTTP task");
        tracker.close();
        common::must_end("the WebSocket session", tracker.wait()).await;
    });
});
