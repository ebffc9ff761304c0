//! What a STOMP session reads frames from and writes them to.

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::listener::packet_io::PacketIo;
use crate::listener::stomp::codec::{CodecError, Incoming, Outgoing, StompCodec};
use crate::listener::stomp::frame::Version;
use crate::listener::ws::WsFramed;

/// A bidirectional STOMP frame stream (TCP [`PacketIo`], a WebSocket adapter, or
/// `Framed` in the fuzz targets).
pub trait Transport:
    Stream<Item = Result<Incoming, CodecError>> + Sink<Outgoing, Error = CodecError> + Unpin + Send
{
    /// Switches header escaping to the negotiated version.
    fn set_version(&mut self, v: Version);

    /// Bytes received and not decoded yet (part of a frame): when it grows, the client
    /// is sending, which keeps the connection alive as a heart-beat does.
    fn undecoded(&self) -> usize;

    /// The next frame already received, decoded without reading the socket (the rest
    /// of what one read brought, for publishing several SENDs as one batch); `None`
    /// when no complete frame is buffered, or the transport cannot tell.
    fn next_buffered(&mut self) -> Option<Result<Incoming, CodecError>> {
        None
    }
}

/// TCP (plain or TLS): no read or write buffer while the connection is idle.
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for PacketIo<S, StompCodec> {
    fn set_version(&mut self, v: Version) {
        self.codec_mut().set_version(v);
    }

    fn undecoded(&self) -> usize {
        PacketIo::undecoded(self)
    }

    fn next_buffered(&mut self) -> Option<Result<Incoming, CodecError>> {
        self.decode_buffered()
    }
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

    fn next_buffered(&mut self) -> Option<Result<Incoming, CodecError>> {
        self.decode_buffered()
    }
}
