//! A minimal MQTT 3.1.1 client over `rmqtt-codec`, for load generators that must speak to
//! Switchboard, Mosquitto and RabbitMQ's MQTT plugin alike.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rmqtt_codec::types::{Protocol, Publish, QoS};
use rmqtt_codec::v3::{Codec, Connect, Packet};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub type Conn = Framed<TcpStream, Codec>;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub async fn connect(addr: SocketAddr, id: &str) -> Conn {
    connect_session(addr, id, true).await
}

/// As [`connect`]; `clean_session: false` asks for a persistent session (kept, and its
/// queue durable, after the connection ends).
pub async fn connect_session(addr: SocketAddr, id: &str, clean_session: bool) -> Conn {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).ok();
    let mut c = Framed::new(s, Codec::new(16 * 1024 * 1024));
    let connect = Connect {
        protocol: Protocol::default(),
        clean_session,
        keep_alive: 0,
        client_id: id.into(),
        ..Connect::default()
    };
    c.send(Packet::Connect(Box::new(connect)))
        .await
        .expect("CONNECT");
    match c.next().await {
        Some(Ok((Packet::ConnectAck(a), _)))
            if a.return_code == rmqtt_codec::v3::ConnectAckReason::ConnectionAccepted =>
        {
            c
        }
        other => panic!("no CONNACK: {other:?}"),
    }
}

pub async fn subscribe(c: &mut Conn, filter: &str, qos: QoS) {
    c.send(Packet::Subscribe {
        packet_id: NonZeroU16::MIN,
        topic_filters: vec![(filter.into(), qos)],
    })
    .await
    .unwrap();
    loop {
        match c.next().await {
            Some(Ok((Packet::SubscribeAck { .. }, _))) => return,
            Some(Ok(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
}

pub fn publish(topic: &str, qos: QoS, pid: u16, body: &Bytes) -> Packet {
    let mut payload = Vec::with_capacity(body.len());
    payload.extend_from_slice(&now_ns().to_be_bytes());
    payload.extend_from_slice(&body[8.min(body.len())..]);
    Packet::Publish(Box::new(Publish {
        dup: false,
        retain: false,
        qos,
        topic: topic.into(),
        packet_id: NonZeroU16::new(pid),
        payload: payload.into(),
        properties: None,
    }))
}

/// A header (user property) every benchmark publish carries, from `SB_BENCH_HEADER`:
/// `traceparent` (a valid W3C one, which the router re-parents) or `plain` (an ordinary
/// user property of the same size, `x-not-traced`); `None` when unset. For the cost of
/// trace context (docs/benchmarks.md, "Cost of trace context").
pub fn bench_header() -> Option<(&'static str, &'static str)> {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    match std::env::var("SB_BENCH_HEADER").ok()?.as_str() {
        "traceparent" => Some(("traceparent", TP)),
        "plain" => Some(("x-not-traced", TP)),
        other => panic!("SB_BENCH_HEADER={other}: traceparent or plain"),
    }
}

pub mod v5 {
    //! An MQTT 5 publisher (the 3.1.1 client above cannot carry user properties).

    use super::*;
    use rmqtt_codec::v5::{Codec, Connect, Packet, PublishProperties};

    pub type Conn = Framed<TcpStream, Codec>;

    pub async fn connect(addr: SocketAddr, id: &str) -> Conn {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).ok();
        let mut c = Framed::new(s, Codec::new(16 * 1024 * 1024, 16 * 1024 * 1024));
        let connect = Connect {
            clean_start: true,
            keep_alive: 0,
            client_id: id.into(),
            ..Connect::default()
        };
        c.send(Packet::Connect(Box::new(connect)))
            .await
            .expect("CONNECT");
        match c.next().await {
            Some(Ok((Packet::ConnectAck(_), _))) => c,
            other => panic!("no CONNACK: {other:?}"),
        }
    }

    /// As [`super::publish`], with one user property.
    pub fn publish(
        topic: &str,
        qos: QoS,
        pid: u16,
        body: &Bytes,
        (name, value): (&str, &str),
    ) -> Packet {
        let mut payload = Vec::with_capacity(body.len());
        payload.extend_from_slice(&now_ns().to_be_bytes());
        payload.extend_from_slice(&body[8.min(body.len())..]);
        Packet::Publish(Box::new(Publish {
            dup: false,
            retain: false,
            qos,
            topic: topic.into(),
            packet_id: NonZeroU16::new(pid),
            payload: payload.into(),
            properties: Some(PublishProperties {
                user_properties: vec![(name.into(), value.into())],
                ..Default::default()
            }),
        }))
    }
}
