//! STOMP over WebSocket: the same frame stream as TCP, one codec, WebSocket messages
//! as the byte carrier. Clients (stompjs, the STOMP-over-WebSocket convention) send one
//! frame per message, but the decoder does not rely on it: messages are appended to one
//! buffer and decoded as a stream. Frames go out as text messages when they are UTF-8
//! (what browsers expect) and as binary messages otherwise.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{Message, WebSocket};
use bytes::BytesMut;
use futures::{Sink, Stream};
use tokio_util::codec::{Decoder, Encoder};

use super::codec::{CodecError, Incoming, Outgoing, StompCodec};
use super::frame::Version;
use super::session::Transport;

/// A WebSocket carrying STOMP frames.
pub struct WsTransport {
    ws: WebSocket,
    codec: StompCodec,
    rbuf: BytesMut,
    eof: bool,
}

impl WsTransport {
    pub fn new(ws: WebSocket, codec: StompCodec) -> Self {
        Self {
            ws,
            codec,
            rbuf: BytesMut::new(),
            eof: false,
        }
    }
}

fn ws_err(e: axum::Error) -> CodecError {
    CodecError::Io(std::io::Error::other(e))
}

impl Stream for WsTransport {
    type Item = Result<Incoming, CodecError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.codec.decode(&mut this.rbuf).transpose() {
                return Poll::Ready(Some(item));
            }
            if this.eof {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Text(t))) => this.rbuf.extend_from_slice(t.as_bytes()),
                Some(Ok(Message::Binary(b))) => this.rbuf.extend_from_slice(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Some(Err(ws_err(e)))),
            }
        }
    }
}

impl Sink<Outgoing> for WsTransport {
    type Error = CodecError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.ws).poll_ready(cx).map_err(ws_err)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Outgoing) -> Result<(), Self::Error> {
        let mut buf = BytesMut::new();
        self.codec.encode(item, &mut buf)?;
        let bytes = buf.freeze();
        let msg = match axum::extract::ws::Utf8Bytes::try_from(bytes.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(bytes),
        };
        Pin::new(&mut self.ws).start_send(msg).map_err(ws_err)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_err)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(ws_err)
    }
}

impl Transport for WsTransport {
    fn set_version(&mut self, v: Version) {
        self.codec.set_version(v);
    }
}
