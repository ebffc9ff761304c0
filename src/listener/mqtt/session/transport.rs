//! What an MQTT session reads packets from and writes them to, and which of those can
//! be parked.

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};

use super::park;
use crate::listener::mqtt::codec::{Codec, CodecError, In, Out};
use crate::listener::packet_io::PacketIo;
use crate::listener::ws::WsFramed;

/// A bidirectional MQTT packet stream (TCP `PacketIo` or a WebSocket adapter).
pub trait Transport:
    Stream<Item = Result<In, CodecError>> + Sink<Out, Error = CodecError> + Unpin + Send
{
    /// Whether a connection on this transport can wait in the [`park`] poller while
    /// idle: a plain TCP socket can; TLS and WebSocket keep state outside the socket.
    const PARKS: bool = false;

    /// Limits outbound packets to the client's Maximum Packet Size.
    fn set_max_outbound(&mut self, max: u32);

    /// The next packet already received, decoded without reading the socket (the rest
    /// of what one read brought, for publishing several as one batch); `None` when no
    /// complete packet is buffered, or the transport cannot tell.
    fn next_buffered(&mut self) -> Option<Result<In, CodecError>> {
        None
    }

    /// The socket, when the connection can be parked right now (nothing buffered).
    fn park_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Gives the socket up for parking (the codec is dropped); only called after `park_fd` said yes.
    fn detach(self) -> std::io::Result<park::Detached>
    where
        Self: Sized,
    {
        Err(std::io::Error::other("this transport cannot be parked"))
    }
}

/// A byte stream under `PacketIo`: whether it is a plain socket that can be parked.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send {
    const PARKS: bool;
    fn raw_fd(&self) -> std::os::fd::RawFd;
    fn into_std(self) -> std::io::Result<std::net::TcpStream>;
}

impl Socket for tokio::net::TcpStream {
    const PARKS: bool = true;
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
    fn into_std(self) -> std::io::Result<std::net::TcpStream> {
        tokio::net::TcpStream::into_std(self)
    }
}

impl Socket for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    const PARKS: bool = false;
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self.get_ref().0)
    }
    fn into_std(self) -> std::io::Result<std::net::TcpStream> {
        Err(std::io::Error::other("a TLS connection cannot be parked"))
    }
}

impl<S: Socket> Transport for PacketIo<S, Codec> {
    const PARKS: bool = S::PARKS;

    fn set_max_outbound(&mut self, max: u32) {
        self.codec_mut().set_max_outbound(max);
    }

    fn next_buffered(&mut self) -> Option<Result<In, CodecError>> {
        self.decode_buffered()
    }

    fn park_fd(&self) -> Option<std::os::fd::RawFd> {
        (S::PARKS && self.is_idle()).then(|| self.get_ref().raw_fd())
    }

    fn detach(self) -> std::io::Result<park::Detached> {
        // Between packets (`park_fd`): the codec holds nothing but settings the session
        // has, and is made again on revival (`Codec::connected`).
        let (io, _codec) = self.into_parts();
        Ok(park::Detached {
            stream: io.into_std()?,
        })
    }
}

impl Transport for WsFramed<Codec> {
    fn set_max_outbound(&mut self, max: u32) {
        self.codec.set_max_outbound(max);
    }

    fn next_buffered(&mut self) -> Option<Result<In, CodecError>> {
        self.decode_buffered()
    }
}
