//! A WebSocket as a frame stream for any codec: WebSocket messages carry the protocol's
//! bytes (appended to one buffer and decoded as a stream, so a frame split across
//! messages or several frames in one message both work). Outgoing frames go as text
//! messages when `text` is set and they are UTF-8 (what STOMP browser clients expect),
//! else as binary messages (MQTT). The upgrade that opens one is served by
//! [`crate::listener::ws_endpoint`].

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{Message, WebSocket};
use bytes::BytesMut;
use futures::{Sink, Stream};
use tokio_util::codec::{Decoder, Encoder};

/// A WebSocket carrying a codec's frames.
pub struct WsFramed<C> {
    ws: WebSocket,
    pub codec: C,
    rbuf: BytesMut,
    eof: bool,
    text: bool,
}

impl<C> WsFramed<C> {
    pub fn new(ws: WebSocket, codec: C, text: bool) -> Self {
        Self {
            ws,
            codec,
            rbuf: BytesMut::new(),
            eof: false,
            text,
        }
    }

    /// Bytes received and not decoded yet (part of a frame).
    pub fn undecoded(&self) -> usize {
        self.rbuf.len()
    }
}

fn io(e: axum::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl<C> Stream for WsFramed<C>
where
    C: Decoder + Unpin,
    C::Error: From<std::io::Error>,
{
    type Item = Result<C::Item, C::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_frame(cx)
    }
}

impl<C> WsFramed<C>
where
    C: Decoder + Unpin,
    C::Error: From<std::io::Error>,
{
    /// The next frame already received, without waiting: decoded from what is buffered
    /// or from WebSocket messages that have arrived already (a client sending fast puts
    /// several in one TCP read). What sessions publish as one batch, as they do with
    /// what one TCP read brought; `None` when nothing complete is there yet.
    pub fn decode_buffered(&mut self) -> Option<Result<C::Item, C::Error>> {
        // A no-op waker is enough: the session polls the stream again with its own
        // before it sleeps, which registers its waker.
        match self.poll_frame(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(item) => item,
            Poll::Pending => None,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<C::Item, C::Error>>> {
        let this = self;
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
                Some(Err(e)) => return Poll::Ready(Some(Err(io(e).into()))),
            }
        }
    }
}

impl<C, O> Sink<O> for WsFramed<C>
where
    C: Encoder<O> + Unpin,
    C::Error: From<std::io::Error>,
{
    type Error = C::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.ws)
            .poll_ready(cx)
            .map_err(|e| io(e).into())
    }

    fn start_send(mut self: Pin<&mut Self>, item: O) -> Result<(), Self::Error> {
        let mut buf = BytesMut::new();
        self.codec.encode(item, &mut buf)?;
        if buf.is_empty() {
            return Ok(());
        }
        let bytes = buf.freeze();
        let msg = match self.text {
            true => match axum::extract::ws::Utf8Bytes::try_from(bytes.clone()) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(bytes),
            },
            false => Message::Binary(bytes),
        };
        Pin::new(&mut self.ws)
            .start_send(msg)
            .map_err(|e| io(e).into())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(|e| io(e).into())
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(|e| io(e).into())
    }
}
