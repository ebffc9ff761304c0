//! What a STOMP session reads frames from and writes them to.

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::listener::stomp::codec::{CodecError, Incoming, Outgoing, StompCodec};
use crate::listener::stomp::frame::Version;
use crate::listener::ws::WsFramed;

/// A bidirectional STOMP frame stream (TCP `Framed` or a WebSocket adapter).
pub trait Transport:
    Stream<Item = Result<Incoming, CodecError>> + Sink<Outgoing, Error = CodecError> + Unpin + Send
{
    /// Switches header escaping to the negotiated version.
    fn set_version(&mut self, v: Version);

    /// Bytes received and not decoded yet (part of a frame): when it grows, the client
    /// is sending, which keeps the connection alive as a heart-beat does.
    fn undecoded(&self) -> usize;
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for Framed<T, StompCodec> {
    fn set_version(&mut self, v: Version) {
        self.codec_mut().set_version(v);
    }

    fn undecoded(&self) -> usize {
        self.read_buffer().len()
    }
}

impl Transport for WsFramed<StompCodec> {
    fn set_version(&mut self, v: Version) {
        self.codec.set_version(v);
    }

    fn undecoded(&self) -> usize {
        WsFramed::undecoded(self)
    }
}
