//! Protocol-level refusals said at accept time, before any session exists: cheap,
//! bounded (see [`super::limit::Gate::refusing`]) and short. The answer is written, the
//! write side shut, and what the client sends is read and dropped for a moment so that
//! it reads the answer instead of a connection reset.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::limit::Refusal;

/// How long a refused client has to send its first bytes or read the answer.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Writes `answer`, shuts the write side, drains the client for at most
/// [`REFUSAL_TIME`] (64 KiB at most), then closes.
pub async fn answer_and_close(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_TIME, stream.write_all(answer)).await;
    let _ = stream.shutdown().await;
    drain(&mut stream).await;
}

async fn drain(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let mut left = 64 * 1024usize;
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// A STOMP ERROR frame saying why.
pub fn stomp_error(why: Refusal) -> Vec<u8> {
    let reason = why.reason();
    format!(
        "ERROR\nmessage:{reason}\ncontent-type:text/plain\ncontent-length:{}\n\n{reason}\0",
        reason.len()
    )
    .into_bytes()
}

/// An HTTP response saying why: 429 for the connect rate (retry in a second), 503
/// otherwise.
pub fn http_error(why: Refusal) -> Vec<u8> {
    let reason = why.reason();
    let status = match why {
        Refusal::Rate => "429 Too Many Requests",
        Refusal::PerIp | Refusal::Listener | Refusal::Files => "503 Service Unavailable",
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{reason}",
        reason.len()
    )
    .into_bytes()
}

/// Reads the start of the client's CONNECT (at most [`REFUSAL_TIME`]) to learn its
/// protocol level, then answers with a CONNACK it understands ([`mqtt_connack`]).
/// Nothing readable: just closed.
pub async fn mqtt(mut stream: TcpStream, why: Refusal) {
    let mut head = Vec::with_capacity(16);
    let level = tokio::time::timeout(REFUSAL_TIME, async {
        let mut buf = [0u8; 64];
        loop {
            if let Some(l) = mqtt_level(&head) {
                return Some(l);
            }
            if head.len() >= 64 {
                return None;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .flatten();
    let Some(level) = level else { return };
    answer_and_close(stream, mqtt_connack(level, why)).await;
}

/// The refusing CONNACK for a client of protocol `level` (`mqtt_level`): MQTT 5 gets
/// reason 0x9F (connection rate exceeded) or 0x97 (quota exceeded); 3.1 and 3.1.1 get
/// 0x03 (server unavailable), their nearest code.
fn mqtt_connack(level: u8, why: Refusal) -> &'static [u8] {
    match (level, why) {
        (5, Refusal::Rate) => &[0x20, 0x03, 0x00, 0x9F, 0x00],
        (5, _) => &[0x20, 0x03, 0x00, 0x97, 0x00],
        _ => &[0x20, 0x02, 0x00, 0x03],
    }
}

/// How a listener refuses a connection it cannot keep, when it cannot wait either (see
/// [`refuse_now`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    Mqtt,
    Stomp,
    Http,
    /// Closed without a word (TLS: an answer would cost a handshake).
    Silent,
}

/// Refuses `stream` at once, without waiting for anything: reads what the client has
/// already sent (an MQTT client's CONNECT, to answer at its protocol level; 3.1.1
/// when it is not there yet: the caller gives it a moment to arrive first), writes the refusal in `voice`, shuts the write side and
/// closes. For a listener out of file descriptors, which must give the descriptor back
/// before it can accept the next connection.
pub fn refuse_now(mut stream: std::net::TcpStream, voice: Voice, why: Refusal) {
    use std::io::{Read, Write};
    if voice == Voice::Silent || stream.set_nonblocking(true).is_err() {
        return;
    }
    // Reading what is there lets the close end with a FIN, not a reset that could
    // reach the client before it read the answer.
    let mut head = [0u8; 512];
    let got = stream.read(&mut head).unwrap_or(0);
    let answer: std::borrow::Cow<'static, [u8]> = match voice {
        Voice::Mqtt => mqtt_connack(mqtt_level(&head[..got]).unwrap_or(4), why).into(),
        Voice::Stomp => stomp_error(why).into(),
        Voice::Http => http_error(why).into(),
        Voice::Silent => return,
    };
    let _ = stream.write(&answer);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// The protocol level of a CONNECT whose start is `b`, once enough of it is there.
/// `Some(0)`: not a CONNECT (answered as 3.1.1).
fn mqtt_level(b: &[u8]) -> Option<u8> {
    let first = *b.first()?;
    if first >> 4 != 1 {
        return Some(0);
    }
    // Remaining length: 1 to 4 bytes.
    let mut i = 1;
    loop {
        let byte = *b.get(i)?;
        i += 1;
        if byte & 0x80 == 0 || i > 4 {
            break;
        }
    }
    let len = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize;
    b.get(i + 2 + len).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_at_once_in_the_client_s_protocol() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let answer = |voice: Voice, send: &[u8]| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(send).unwrap();
            let (s, _) = l.accept().unwrap();
            // What the client sent is there before the refusal reads it.
            std::thread::sleep(std::time::Duration::from_millis(20));
            refuse_now(s, voice, Refusal::Files);
            // Up to the close (a reset when the refusal left bytes unread).
            let mut got = Vec::new();
            let mut b = [0u8; 256];
            while let Ok(n @ 1..) = c.read(&mut b) {
                got.extend_from_slice(&b[..n]);
            }
            got
        };
        let v5 = [
            0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00,
            0x00,
        ];
        assert_eq!(answer(Voice::Mqtt, &v5), [0x20, 0x03, 0x00, 0x97, 0x00]);
        let v311 = [
            0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00,
        ];
        assert_eq!(answer(Voice::Mqtt, &v311), [0x20, 0x02, 0x00, 0x03]);
        let stomp = answer(Voice::Stomp, b"CONNECT\n\n\0");
        assert!(
            stomp.starts_with(b"ERROR\nmessage:server full"),
            "{stomp:?}"
        );
        let http = answer(Voice::Http, b"GET / HTTP/1.1\r\n\r\n");
        assert!(http.starts_with(b"HTTP/1.1 503 "), "{http:?}");
        assert!(answer(Voice::Silent, b"x").is_empty());
    }

    #[test]
    fn level_of_a_connect() {
        let v5 = [0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02];
        assert_eq!(mqtt_level(&v5[..8]), None);
        assert_eq!(mqtt_level(&v5), Some(5));
        let v31 = [
            0x10, 0x10, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
        ];
        assert_eq!(mqtt_level(&v31), Some(3));
        assert_eq!(mqtt_level(&[0x30, 0x00]), Some(0));
    }
}
