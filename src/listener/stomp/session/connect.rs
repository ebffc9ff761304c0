//! CONNECT (or STOMP): version, login, heart-beats; answered with CONNECTED.

use std::time::Duration;

use super::connection::Connection;
use super::fatal::{Fatal, fatal};
use super::headers::invalid_header;
use super::transport::Transport;
use crate::listener::stomp::codec::Outgoing;
use crate::listener::stomp::frame::{Command, Frame, Version};

impl<T: Transport> Connection<T> {
    /// Answers the first frame, which must be CONNECT or STOMP.
    pub(super) async fn connect(&mut self, f: Frame) -> Result<(), Fatal> {
        if !matches!(f.command, Command::Connect | Command::Stomp) {
            return Err(fatal(
                "not connected",
                format!("expected CONNECT or STOMP, got {}", f.command.as_str()),
            ));
        }
        let Some(version) = Version::negotiate(f.header("accept-version")) else {
            let mut e = fatal(
                "unsupported protocol version",
                "supported versions are 1.0, 1.1 and 1.2",
            );
            e.headers.push(("version".into(), "1.0,1.1,1.2".into()));
            return Err(e);
        };
        self.version = version;
        // Heart-beats: cx,cy from the client (read before the login, which is slow).
        let (cx, cy) = match f.header("heart-beat").filter(|_| version >= Version::V1_1) {
            None => (0, 0),
            Some(h) => parse_heart_beat(h).ok_or_else(|| {
                invalid_header(
                    "invalid header",
                    "heart-beat",
                    h,
                    "expected `CX,CY`, two whole numbers of milliseconds",
                )
            })?,
        };
        let principal = self
            .shared
            .auth
            .login(f.header("login"), f.header("passcode"), self.shared.loopback)
            .await
            .map_err(|e| {
                tracing::warn!(login = f.header("login").unwrap_or(""), peer = %self.peer, error = %e, "login refused");
                fatal("access refused", e.to_string())
            })?;
        tracing::Span::current().record("user", principal.name());
        crate::listener::connections::identify(self.conn_id, principal.user.clone(), None);
        self.principal = Some(principal);

        // sx,sy offered by us.
        let (sx, sy) = self.shared.settings.heart_beat;
        let out = if sx != 0 && cy != 0 { sx.max(cy) } else { 0 };
        let inn = if cx != 0 && sy != 0 { cx.max(sy) } else { 0 };
        self.send_every = (out != 0).then(|| Duration::from_millis(out));
        self.recv_within = (inn != 0).then(|| Duration::from_millis(inn));

        let mut c = Frame::new(Command::Connected)
            .with_header("version", version.as_str())
            .with_header("server", concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .with_header("session", self.id.clone());
        if version >= Version::V1_1 {
            c = c.with_header("heart-beat", format!("{sx},{sy}"));
        }
        self.write(Outgoing::Frame(c)).await?;
        self.flush().await?;
        self.t.set_version(version);
        tracing::debug!(version = version.as_str(), "connected");
        Ok(())
    }
}

/// `CX,CY` of a CONNECT `heart-beat` header.
fn parse_heart_beat(h: &str) -> Option<(u64, u64)> {
    let (a, b) = h.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}
