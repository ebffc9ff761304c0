//! A framed packet stream that holds no buffer while its connection is idle.
//!
//! `tokio_util::codec::Framed` keeps a read buffer and an 8 KiB write buffer for the whole
//! life of a connection. A broker holding 10,000 mostly idle MQTT connections pays that
//! for every one of them (Mosquitto pays about 0.7 KiB per idle connection in all). Here
//! both buffers are given back whenever they are empty: reads go to a stack chunk and
//! only what arrived is copied into the read buffer, which is dropped when a read would
//! wait with nothing pending, and a completed flush drops the write buffer. A busy
//! connection keeps its buffers within a burst; the cost when it goes quiet is one small
//! allocation on its next packet.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes read per system call.
const READ_CHUNK: usize = 4096;
/// Encoded bytes waiting to be written above which `poll_ready` flushes first.
const WRITE_HIGH: usize = 8192;

/// `Framed` for codecs whose decoder takes whatever bytes are buffered (each call sees
/// the unconsumed rest), with buffers released while empty.
pub struct PacketIo<S, C> {
    io: S,
    codec: C,
    rbuf: BytesMut,
    wbuf: BytesMut,
    eof: bool,
}

impl<S, C> PacketIo<S, C> {
    pub fn new(io: S, codec: C) -> Self {
        PacketIo {
            io,
            codec,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn codec_mut(&mut self) -> &mut C {
        &mut self.codec
    }

    /// Nothing buffered either way and not at end of stream: the connection can be
    /// handed elsewhere (the codec goes with it, so a packet cut between two reads stays
    /// cut in the same place).
    pub fn is_idle(&self) -> bool {
        self.rbuf.is_empty() && self.wbuf.is_empty() && !self.eof
    }

    /// The next item from what is already buffered, without reading: the rest of what
    /// the last read brought. `None` when nothing complete is buffered.
    pub fn decode_buffered(&mut self) -> Option<Result<C::Item, C::Error>>
    where
        C: Decoder,
    {
        if self.rbuf.is_empty() {
            return None;
        }
        self.codec.decode(&mut self.rbuf).transpose()
    }

    /// Bytes received and not decoded yet (part of a packet).
    pub fn undecoded(&self) -> usize {
        self.rbuf.len()
    }

    /// The stream and the codec, for a connection that [`PacketIo::is_idle`].
    pub fn into_parts(self) -> (S, C) {
        (self.io, self.codec)
    }
}

impl<S, C> Stream for PacketIo<S, C>
where
    S: AsyncRead + Unpin,
    C: Decoder + Unpin,
    C::Error: From<io::Error>,
{
    type Item = Result<C::Item, C::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if !this.rbuf.is_empty()
                && let Some(item) = this.codec.decode(&mut this.rbuf)?
            {
                return Poll::Ready(Some(Ok(item)));
            }
            if this.eof {
                if this.rbuf.is_empty() {
                    return Poll::Ready(None);
                }
                let e =
                    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-packet");
                this.rbuf.clear();
                return Poll::Ready(Some(Err(e.into())));
            }
            let spare = this.rbuf.capacity() - this.rbuf.len();
            let n = if !this.rbuf.is_empty() && spare >= READ_CHUNK {
                // A packet in progress made room for itself (its size was known): read
                // straight into it. (An empty buffer is not kept for this: an idle
                // connection would hold it.)
                let mut rb = ReadBuf::uninit(this.rbuf.spare_capacity_mut());
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                // SAFETY: `poll_read` initialised the first `n` bytes of the spare
                // capacity (`ReadBuf` guarantees what it reports as filled is).
                unsafe { this.rbuf.set_len(this.rbuf.len() + n) };
                n
            } else {
                // Read onto the stack and copy what arrived: an idle wait holds no buffer.
                let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut rb = ReadBuf::uninit(&mut chunk);
                match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        // Not `capacity() > 0`: a buffer read to its end has none left
                        // and still holds its allocation.
                        if this.rbuf.is_empty() {
                            this.rbuf = BytesMut::new();
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(r) => r?,
                }
                this.rbuf.extend_from_slice(rb.filled());
                rb.filled().len()
            };
            if n == 0 {
                this.eof = true;
            }
        }
    }
}

impl<S, C, I> Sink<I> for PacketIo<S, C>
where
    S: AsyncWrite + Unpin,
    C: Encoder<I> + Unpin,
    C::Error: From<io::Error>,
{
    type Error = C::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.wbuf.len() >= WRITE_HIGH {
            return self.poll_flush(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: I) -> Result<(), Self::Error> {
        let this = self.get_mut();
        this.codec.encode(item, &mut this.wbuf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        while !this.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &this.wbuf))?;
            if n == 0 {
                let e = io::Error::new(io::ErrorKind::WriteZero, "connection closed while writing");
                return Poll::Ready(Err(e.into()));
            }
            this.wbuf.advance(n);
        }
        // Written to its end, it has no capacity left and still holds its allocation.
        this.wbuf = BytesMut::new();
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.as_mut().poll_flush(cx))?;
        ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::LinesCodec;

    fn pending<T: Stream + Unpin>(s: &mut T) -> bool {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        Pin::new(s).poll_next(&mut cx).is_pending()
    }

    /// No allocation behind it (a buffer read or written to its end has no capacity
    /// left either, but still holds one).
    fn holds_nothing(b: &BytesMut) -> bool {
        b.capacity() == 0 && std::ptr::eq(b.as_ptr(), BytesMut::new().as_ptr())
    }

    /// Length-prefixed packets (a 4-byte length, then the bytes); makes room for a
    /// packet once its length is known, as the STOMP codec does for `content-length`.
    struct Sized;

    impl Decoder for Sized {
        type Item = Vec<u8>;
        type Error = io::Error;

        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Vec<u8>>> {
            let Some(len) = src
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
            else {
                return Ok(None);
            };
            let len = len as usize;
            if src.len() < 4 + len {
                src.reserve(4 + len - src.len());
                return Ok(None);
            }
            src.advance(4);
            Ok(Some(src.split_to(len).to_vec()))
        }
    }

    #[tokio::test]
    async fn a_packet_that_made_room_for_itself_is_read_into_it() {
        let (mut peer, io) = tokio::io::duplex(1 << 20);
        let mut p = PacketIo::new(io, Sized);
        let body: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut wire = (body.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&body);
        // The length and a little: the decoder reserves the rest, later reads go there.
        peer.write_all(&wire[..10]).await.unwrap();
        assert!(pending(&mut p));
        assert!(p.rbuf.capacity() >= 4 + body.len());
        peer.write_all(&wire[10..]).await.unwrap();
        assert_eq!(p.next().await.unwrap().unwrap(), body);
        assert!(pending(&mut p));
        assert!(holds_nothing(&p.rbuf), "given back once empty");
    }

    #[tokio::test]
    async fn packets_split_across_reads_and_buffers_released_when_idle() {
        let (mut peer, io) = tokio::io::duplex(64);
        let mut p = PacketIo::new(io, LinesCodec::new());
        peer.write_all(b"hello\nwor").await.unwrap();
        assert_eq!(p.next().await.unwrap().unwrap(), "hello");
        // Half a packet is kept while the rest is awaited.
        assert!(pending(&mut p));
        assert_eq!(&p.rbuf[..], b"wor");
        peer.write_all(b"ld\n").await.unwrap();
        assert_eq!(p.next().await.unwrap().unwrap(), "world");
        assert!(pending(&mut p));
        assert!(
            holds_nothing(&p.rbuf),
            "an idle connection holds no read buffer"
        );

        // A packet larger than one read chunk.
        let big = "x".repeat(3 * READ_CHUNK + 17);
        let w = tokio::spawn(async move {
            peer.write_all(format!("{big}\n").as_bytes()).await.unwrap();
            peer
        });
        assert_eq!(p.next().await.unwrap().unwrap().len(), 3 * READ_CHUNK + 17);
        let mut peer = w.await.unwrap();

        // Writing: everything arrives, and the write buffer goes once flushed.
        let r = tokio::spawn(async move {
            let mut got = vec![0u8; 10];
            peer.read_exact(&mut got).await.unwrap();
            (peer, got)
        });
        p.feed("abcd".to_string()).await.unwrap();
        p.feed("efgh".to_string()).await.unwrap();
        SinkExt::<String>::flush(&mut p).await.unwrap();
        assert!(
            holds_nothing(&p.wbuf),
            "an idle connection holds no write buffer"
        );
        let (mut peer, got) = r.await.unwrap();
        assert_eq!(&got, b"abcd\nefgh\n");

        // The peer goes mid-packet: an error, not a silently dropped fragment.
        peer.write_all(b"cut").await.unwrap();
        drop(peer);
        assert!(p.next().await.unwrap().is_err());
        assert!(p.next().await.is_none());
    }
}
