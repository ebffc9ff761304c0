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
        Refusal::PerIp | Refusal::Listener => "503 Service Unavailable",
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{reason}",
        reason.len()
    )
    .into_bytes()
}

/// Reads the start of the client's CONNECT (at most [`REFUSAL_TIME`]) to learn its
/// protocol level, then answers with a CONNACK it understands: MQTT 5 gets reason
/// 0x9F (connection rate exceeded) or 0x97 (quota exceeded); 3.1 and 3.1.1 get 0x03
/// (server unavailable), their nearest code. Nothing readable: just closed.
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
    let answer: &[u8] = match (level, why) {
        (None, _) => return,
        (Some(5), Refusal::Rate) => &[0x20, 0x03, 0x00, 0x9F, 0x00],
        (Some(5), _) => &[0x20, 0x03, 0x00, 0x97, 0x00],
        (Some(_), _) => &[0x20, 0x02, 0x00, 0x03],
    };
    answer_and_close(stream, answer).await;
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
