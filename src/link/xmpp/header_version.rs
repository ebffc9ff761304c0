//! The `version` a component server leaves out of its stream header, added before
//! tokio-xmpp reads it.
//!
//! XEP-0114 servers (Prosody, ejabberd) open a component stream without
//! `version='1.0'`. tokio-xmpp refuses such a header unless it is built with its
//! `component` feature, and that feature also turns on xmpp-parsers' `component`, the
//! compile-time namespace switch this build leaves off so that a client link can live in
//! it ([`super::accept_ns`]). So the component's socket is read through [`WithVersion`],
//! which adds the attribute to the server's stream header when it is missing and is a
//! plain pass-through after that header.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Past this many bytes without the end of the stream header, the bytes are handed on
/// as they are: the XML parser then says what is wrong with them.
const HEADER_MAX: usize = 4096;

/// A socket whose peer's stream header gets `version='1.0'` if it has none.
pub(super) struct WithVersion<S> {
    inner: S,
    state: State,
}

enum State {
    /// Reading the peer's stream header: what has arrived so far, held back.
    Header(Vec<u8>),
    /// Handing out the (completed) header, from this offset.
    Release(Vec<u8>, usize),
    /// After the header: straight through.
    Through,
}

impl<S> WithVersion<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: State::Header(Vec::new()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WithVersion<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Through => return Pin::new(&mut this.inner).poll_read(cx, buf),
                State::Release(bytes, at) => {
                    let n = (bytes.len() - *at).min(buf.remaining());
                    buf.put_slice(&bytes[*at..*at + n]);
                    *at += n;
                    if *at == bytes.len() {
                        this.state = State::Through;
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Header(held) => {
                    let mut chunk = [0u8; 1024];
                    let mut read = ReadBuf::new(&mut chunk);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                    let eof = read.filled().is_empty();
                    held.extend_from_slice(read.filled());
                    let done = if eof || held.len() > HEADER_MAX {
                        Some(std::mem::take(held))
                    } else {
                        with_version(held)
                    };
                    if let Some(bytes) = done {
                        this.state = if bytes.is_empty() {
                            State::Through
                        } else {
                            State::Release(bytes, 0)
                        };
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WithVersion<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// `bytes` with `version='1.0'` added to the first element's start tag when it has no
/// `version` attribute; `None` while that tag has not fully arrived. An XML declaration
/// before it (`<?xml version='1.0'?>`) is skipped, not mistaken for the header.
fn with_version(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut at = skip_space(bytes, 0);
    if bytes[at..].starts_with(b"<?") {
        at = find(bytes, at, b"?>")? + 2;
        at = skip_space(bytes, at);
    }
    let start = at;
    let mut quote = None;
    let mut names = Vec::new(); // the tag without its quoted values
    let end = loop {
        let c = *bytes.get(at)?;
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b'>' => break at,
            None => names.push(c),
        }
        at += 1;
    };
    let has_version = names
        .split(|c| c.is_ascii_whitespace())
        .any(|word| word.starts_with(b"version") && word[7..].iter().all(|&c| c == b'='));
    let mut out = bytes.to_vec();
    if !has_version && start < end {
        let at = if bytes[end - 1] == b'/' { end - 1 } else { end };
        out.splice(at..at, b" version='1.0'".iter().copied());
    }
    Some(out)
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

fn find(bytes: &[u8], from: usize, what: &[u8]) -> Option<usize> {
    bytes[from..]
        .windows(what.len())
        .position(|w| w == what)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const PROSODY: &str = "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='a>b' from='bridge.localhost'>";

    #[test]
    fn a_header_without_version_gets_one_once_it_is_complete() {
        let full = PROSODY.as_bytes();
        for cut in 0..full.len() {
            assert_eq!(with_version(&full[..cut]), None, "cut at {cut}");
        }
        let fixed = String::from_utf8(with_version(full).unwrap()).unwrap();
        assert_eq!(
            fixed,
            PROSODY.replace(
                "from='bridge.localhost'>",
                "from='bridge.localhost' version='1.0'>"
            )
        );
    }

    #[test]
    fn a_header_with_version_is_left_alone() {
        for h in [
            "<stream:stream version='1.0' xmlns='jabber:client'>",
            "<stream:stream xmlns='jabber:client' version = \"1.0\"><features/>",
        ] {
            assert_eq!(with_version(h.as_bytes()).unwrap(), h.as_bytes());
        }
    }

    #[tokio::test]
    async fn the_stream_reads_the_fixed_header_then_the_rest_unchanged() {
        let wire = format!("{PROSODY}<handshake/>");
        let mut s = WithVersion::new(wire.as_bytes());
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        assert_eq!(
            got,
            wire.replace(
                "from='bridge.localhost'>",
                "from='bridge.localhost' version='1.0'>"
            )
        );
    }
}
