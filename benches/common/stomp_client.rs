//! A minimal STOMP client on the router's own codec, for load generators that must
//! speak to Switchboard and RabbitMQ's STOMP plugin alike.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use switchboard::listener::stomp::codec::{Incoming, Outgoing, StompCodec};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame, Version};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub type Conn = Framed<TcpStream, StompCodec>;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub async fn connect(addr: SocketAddr, login: Option<(&str, &str)>) -> Conn {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).ok();
    let mut c = Framed::new(s, StompCodec::default());
    let mut f = Frame::new(Cmd::Connect)
        .with_header("accept-version", "1.2")
        .with_header("host", "/");
    if let Some((l, p)) = login {
        f = f.with_header("login", l).with_header("passcode", p);
    }
    c.send(Outgoing::Frame(f)).await.expect("send CONNECT");
    loop {
        match c.next().await {
            Some(Ok(Incoming::Frame(f))) if f.command == Cmd::Connected => break,
            Some(Ok(Incoming::HeartBeat)) => continue,
            other => panic!("no CONNECTED: {other:?}"),
        }
    }
    c.codec_mut().set_version(Version::V1_2);
    c
}

pub async fn receipt(c: &mut Conn, id: &str) {
    loop {
        match c.next().await {
            Some(Ok(Incoming::Frame(f)))
                if f.command == Cmd::Receipt && f.header("receipt-id") == Some(id) =>
            {
                return;
            }
            Some(Ok(Incoming::Frame(f))) if f.command == Cmd::Error => {
                panic!("ERROR: {:?} {:?}", f.headers, f.body)
            }
            Some(Ok(_)) => continue,
            other => panic!("no RECEIPT: {other:?}"),
        }
    }
}
