//! Connection limits: per peer address, connect rate, idle STOMP connections.

// ---- idle STOMP connections (issue 19) ---------------------------------------------

/// A STOMP connection that negotiated no heart-beats and sends nothing holds a slot
/// forever unless something ends it: `stomp.idle_timeout` closes it with an ERROR and a
/// log line, while a connection that keeps sending frames stays open.
#[test]
fn idle_stomp_connection_without_heart_beats_is_closed() {
    use std::time::Duration;
    let d = crate::common::daemon_with_config("stomp:\n  idle_timeout: 300ms\n");
    let mut idle = idle_stomp::Raw::login(&d, "0,0");
    let mut busy = idle_stomp::Raw::login(&d, "0,0");
    // The busy one sends a frame every 50 ms (a sixth of the timeout) until the idle one
    // has been closed, then for more than one timeout longer: it stays served.
    let mut n = 0;
    let mut busy_round = |busy: &mut idle_stomp::Raw| {
        n += 1;
        busy.send(format!("SEND\ndestination:/queue/idle-busy\nreceipt:{n}\n\nx\0").as_bytes());
        let f = busy
            .frame(Duration::from_secs(5))
            .expect("busy connection open");
        assert!(f.starts_with(&format!("RECEIPT\nreceipt-id:{n}")), "{f}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let error = loop {
        busy_round(&mut busy);
        if let Some(f) = idle.try_frame() {
            break f;
        }
    };
    assert!(error.starts_with("ERROR\n"), "{error}");
    assert!(error.contains("message:idle timeout"), "{error}");
    idle.expect_closed(Duration::from_secs(5));
    for _ in 0..12 {
        busy_round(&mut busy);
    }
    assert!(
        d.log().contains("idle timeout: closing"),
        "the close is logged:\n{}",
        d.log()
    );
}

/// A raw STOMP socket for the idle-connection tests.
mod idle_stomp {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use crate::common::Daemon;

    pub struct Raw {
        s: TcpStream,
        buf: Vec<u8>,
    }

    impl Raw {
        pub fn login(d: &Daemon, heart_beat: &str) -> Raw {
            let s = TcpStream::connect(d.addr("stomp")).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut r = Raw { s, buf: Vec::new() };
            r.send(
                format!("CONNECT\naccept-version:1.2\nhost:x\nheart-beat:{heart_beat}\n\n\0")
                    .as_bytes(),
            );
            let f = r.frame(Duration::from_secs(5)).expect("CONNECTED");
            assert!(f.starts_with("CONNECTED\n"), "{f}");
            r
        }

        pub fn send(&mut self, bytes: &[u8]) {
            self.s.write_all(bytes).unwrap();
        }

        /// One whole frame if one has arrived (waits at most the socket's read timeout).
        pub fn try_frame(&mut self) -> Option<String> {
            self.read_some();
            self.take_frame()
        }

        /// The next whole frame within `within`; None if the server closed first.
        pub fn frame(&mut self, within: Duration) -> Option<String> {
            let deadline = Instant::now() + within;
            loop {
                if let Some(f) = self.take_frame() {
                    return Some(f);
                }
                assert!(Instant::now() < deadline, "no frame within {within:?}");
                if !self.read_some() {
                    return None;
                }
            }
        }

        /// The server closes the connection within `within`.
        pub fn expect_closed(&mut self, within: Duration) {
            let deadline = Instant::now() + within;
            while self.read_some() {
                assert!(Instant::now() < deadline, "connection still open");
            }
        }

        fn take_frame(&mut self) -> Option<String> {
            while matches!(self.buf.first(), Some(b'\n' | b'\r')) {
                self.buf.remove(0);
            }
            let i = self.buf.iter().position(|&b| b == 0)?;
            let f: Vec<u8> = self.buf.drain(..=i).collect();
            Some(String::from_utf8_lossy(&f[..i]).into_owned())
        }

        /// Reads what is there; false once the connection is closed.
        fn read_some(&mut self) -> bool {
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    true
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    true
                }
                Err(_) => false,
            }
        }
    }
}
