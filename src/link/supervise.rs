//! The loop every link runs in: connect, run the session until it ends, record why,
//! wait a backoff delay, connect again — until shutdown. What a session does is the
//! link kind's own business ([`Supervised`]); how a link is kept connected, and what
//! operators see of it (state, reconnect count and last error on `/links`, the log
//! lines), is the same for every kind.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Backoff, LinkState, LinkStatus};
use crate::core::shared::lease::{Holder, Lease};

/// A link kind, as its supervisor drives it.
pub(crate) trait Supervised: Send {
    /// A live connection to the peer.
    type Conn: Send;
    /// The kind in the log lines the supervisor writes (`AMQP link lost; reconnecting`).
    const LABEL: &'static str;

    /// One connection attempt; the error says why it failed.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Conn, String>> + Send;

    /// Runs one connected session until it ends, and says why it ended. After
    /// `cancel`, the session ends for shutdown (its reason is then not reported).
    fn run(
        &mut self,
        conn: Self::Conn,
        cancel: &CancellationToken,
    ) -> impl Future<Output = String> + Send;

    /// This router is about to wait on standby (another router holds the lease): drop
    /// any state kept for resuming the previous connection, which is now the other
    /// router's business.
    fn on_standby(&mut self) {}

    /// Logs a connection made; each kind names its peer in its own terms.
    fn log_connected(&self);

    /// Logs a connection attempt that failed (`error` is what `/links` shows too).
    fn log_cannot_connect(&self, error: &str);
}

/// Keeps `link` connected until `cancel`: the state on `status` follows
/// connecting → connected → retrying → …, then stopped.
///
/// The link runs only while this router holds `lease` (a router running alone always
/// does; clustered, one router at a time runs a link that allows one connection —
/// see [`crate::core::shared::lease`]). Without it the link is on `standby`; when the
/// lease is lost the session is ended at once (another router is about to connect),
/// and the lease is given back on shutdown.
pub(crate) async fn supervise<L: Supervised>(
    mut link: L,
    status: Arc<LinkStatus>,
    mut backoff: Backoff,
    cancel: CancellationToken,
    mut lease: Lease,
) {
    let mut connected_before = false;
    let mut failures = 0u32;
    loop {
        if !matches!(lease.holder(), Holder::Us) {
            link.on_standby();
        }
        if !standby(&status, &mut lease, &cancel).await {
            break;
        }
        status.set_state(LinkState::Connecting);
        let attempt = tokio::select! {
            _ = cancel.cancelled() => break,
            () = lease.lost() => continue,
            c = link.connect() => c,
        };
        match attempt {
            Ok(conn) => {
                failures = 0;
                backoff.reset();
                if connected_before {
                    LinkStatus::bump(&status.counters.reconnects);
                }
                connected_before = true;
                status.set_state(LinkState::Connected);
                link.log_connected();
                let session = cancel.child_token();
                let run = link.run(conn, &session);
                tokio::pin!(run);
                let reason = tokio::select! {
                    reason = &mut run => reason,
                    () = lease.lost() => {
                        session.cancel();
                        run.await;
                        tracing::warn!("{} link handed over: this router no longer holds its lease", L::LABEL);
                        status.set_error("lease lost: another router runs the link");
                        continue;
                    }
                };
                if cancel.is_cancelled() {
                    break;
                }
                tracing::warn!(reason = %reason, "{} link lost; reconnecting", L::LABEL);
                status.set_error(reason);
            }
            Err(e) => {
                let e = format!("connect failed: {e}");
                link.log_cannot_connect(&e);
                status.set_error(e);
                failures += 1;
                if lease.is_contended() && failures >= STEP_ASIDE_AFTER {
                    // The peer may be reachable from another router, not from here.
                    tracing::warn!(
                        failures,
                        "{} link cannot connect from this router; letting another router of the cluster try",
                        L::LABEL
                    );
                    failures = 0;
                    lease.step_aside(STEP_ASIDE_FOR);
                }
            }
        }
        if !retry_pause(&status, &mut backoff, &cancel).await {
            break;
        }
    }
    lease.release().await;
    status.set_state(LinkState::Stopped);
    tracing::info!("{} link stopped", L::LABEL);
}

/// Failed connection attempts in a row after which a router holding a contended lease
/// steps aside, and for how long it then leaves the lease to the others: a peer
/// unreachable from one router may be reachable from another. Alone, it just retries.
const STEP_ASIDE_AFTER: u32 = 3;
const STEP_ASIDE_FOR: Duration = Duration::from_secs(10);

/// Waits, on `standby`, until this router holds `lease` (at once if it does). `false`
/// when shutdown came first.
async fn standby(status: &LinkStatus, lease: &mut Lease, cancel: &CancellationToken) -> bool {
    let mut logged = false;
    loop {
        let holder = match lease.holder() {
            Holder::Us => return true,
            Holder::Other(node) => Some(node),
            Holder::Unknown => None,
        };
        if !logged {
            tracing::info!(lease = lease.name(), held_by = ?holder, "link on standby: another router of the cluster runs it");
            logged = true;
        }
        status.set_standby(holder);
        tokio::select! {
            _ = cancel.cancelled() => return false,
            () = lease.changed() => {}
        }
    }
}

/// Between connection attempts: marks the link `retrying`, waits the next backoff
/// delay. `false` when shutdown came first.
async fn retry_pause(
    status: &LinkStatus,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> bool {
    status.set_state(LinkState::Retrying);
    let delay = backoff.next_delay();
    tracing::info!(
        kind = status.kind,
        in_ms = delay.as_millis() as u64,
        "link retrying"
    );
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// Refuses the first attempt, loses the first session, then stays connected (and says
    /// so on `up`) until shutdown.
    struct Flaky {
        attempts: u32,
        up: mpsc::Sender<()>,
    }

    impl Supervised for Flaky {
        type Conn = u32;
        const LABEL: &'static str = "test";

        async fn connect(&mut self) -> Result<u32, String> {
            self.attempts += 1;
            match self.attempts {
                1 => Err("refused".into()),
                n => Ok(n),
            }
        }

        async fn run(&mut self, attempt: u32, cancel: &CancellationToken) -> String {
            if attempt == 2 {
                return "dropped".into();
            }
            let _ = self.up.send(()).await;
            cancel.cancelled().await;
            "shutdown".into()
        }

        fn log_connected(&self) {}

        fn log_cannot_connect(&self, _: &str) {}
    }

    #[tokio::test]
    async fn reconnects_until_shutdown_and_reports_what_happened() {
        let status = Arc::new(LinkStatus::new("t", "test", "nowhere".into()));
        let (up, mut is_up) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let link = Flaky { attempts: 0, up };
        let task = tokio::spawn(supervise(
            link,
            Arc::clone(&status),
            backoff,
            cancel.clone(),
            Lease::alone("t"),
        ));
        is_up.recv().await.unwrap();
        assert_eq!(status.state(), LinkState::Connected);
        assert_eq!(status.counters.reconnects.load(Ordering::Relaxed), 1);
        assert_eq!(status.to_json()["last_error"], "dropped");
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(status.state(), LinkState::Stopped);
        // The shutdown is no error.
        assert_eq!(status.to_json()["last_error"], "dropped");
    }
}
