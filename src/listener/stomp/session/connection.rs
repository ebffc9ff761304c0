//! A STOMP connection's state and its serve loop: frames in; receipts, deliveries and
//! heart-beats out; until DISCONNECT, an error, a timeout or shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::ack::Outstanding;
use super::fatal::{Fatal, fatal};
use super::receipt::Unconfirmed;
use super::settings::Shared;
use super::subscribe::Sub;
use super::transaction::{Tx, TxBytes};
use super::transport::Transport;
use crate::auth::Principal;
use crate::core::ByteBudget;
use crate::listener::confirm::Confirmations;
use crate::listener::stomp::codec::{CodecError, Incoming, Outgoing};
use crate::listener::stomp::convert::error_frame;
use crate::listener::stomp::frame::{Command, Frame, Version};
use crate::ratelog::Cause;

/// What woke the serve loop.
enum Event {
    Confirmed(Unconfirmed, Result<(), crate::core::PublishError>),
    Frame(Frame),
    Deliver,
    SendHeartBeat,
    /// The heart-beat deadline may have passed.
    RecvDeadline,
    /// The idle deadline may have passed.
    IdleDeadline,
    /// Nothing sent for [`RELEASE_AFTER`]: the subscriptions are quiet.
    Quiet,
}

/// How long after its last frame sent a connection's subscriptions count as quiet and
/// their queues give back the room their last burst grew (as an MQTT session does when
/// it parks): without it a subscriber that took a burst keeps room for it while idle.
const RELEASE_AFTER: Duration = Duration::from_secs(2);

/// What becomes of the connection once a frame is handled.
pub(super) enum AfterFrame {
    Continue,
    /// DISCONNECT: close (its RECEIPT, if asked for, is sent).
    Close,
}

/// One connection: its transport, its login, its subscriptions and what it owes them,
/// its transactions and its receipts waiting for the store.
pub(super) struct Connection<T: Transport> {
    pub(super) t: T,
    pub(super) shared: Arc<Shared>,
    pub(super) id: String,
    /// The process-unique connection id ([`crate::listener::next_connection_id`]).
    pub(super) conn_id: u64,
    pub(super) peer: String,
    pub(super) version: Version,
    pub(super) principal: Option<Principal>,
    pub(super) subs: BTreeMap<String, Sub>,
    pub(super) notify: Arc<Notify>,
    pub(super) outstanding: BTreeMap<u64, Outstanding>,
    pub(super) next_ack: u64,
    pub(super) txs: HashMap<String, Tx>,
    pub(super) tx_bytes: TxBytes,
    /// Caps the unacknowledged bytes of every subscription of this connection.
    pub(super) budget: Arc<ByteBudget>,
    pub(super) temp: HashMap<String, String>,
    pub(super) send_every: Option<Duration>,
    pub(super) recv_within: Option<Duration>,
    last_sent: Instant,
    /// When the last frame was sent, until the subscriptions' queues gave back their
    /// room ([`RELEASE_AFTER`] later).
    room_since: Option<Instant>,
    /// Last frame, EOL or part of a frame received: what the heart-beat check measures.
    last_recv: Instant,
    /// Bytes of a frame in progress when `last_recv` was set: more since means part of
    /// a frame arrived (see [`Connection::passed`]).
    recv_undecoded: usize,
    /// Last frame, EOL or part of a frame received, or frame sent (heart-beats sent do
    /// not count): what `idle_timeout` measures.
    last_active: Instant,
    /// Receipts of SENDs whose messages, and of ACKs and NACKs whose settlements, are
    /// not durable yet, in arrival order.
    pub(super) confirmations: Confirmations<Unconfirmed>,
    /// An ACK or NACK settled a delivery of a durable queue since the last RECEIPT: the
    /// next RECEIPT waits until what it wrote to the store (a removal, a dead-letter
    /// copy) is durable, so a RECEIPT confirms every earlier settlement.
    pub(super) settled_durable: bool,
    /// Shared (clustered) queues settled on since the last RECEIPT: the next one waits
    /// until those settlements left this router ([`crate::core::Core::settlements_sent`]).
    pub(super) settled_shared: Vec<String>,
}

/// Counted, rate-limited causes of this listener (see [`crate::ratelog`]).
static UNACKED_BYTES: Cause = Cause::new("stomp.unacked_bytes");

/// Serves one connection until it ends.
pub async fn run<T: Transport>(
    t: T,
    shared: Arc<Shared>,
    conn_id: u64,
    peer: String,
    cancel: CancellationToken,
) {
    let tx_bytes = TxBytes::new(shared.router.core().clone());
    let budget = ByteBudget::new(shared.settings.max_unacked_bytes, &UNACKED_BYTES);
    let mut s = Connection {
        t,
        shared,
        id: format!("sb-{conn_id}"),
        conn_id,
        peer,
        version: Version::V1_0,
        principal: None,
        subs: BTreeMap::new(),
        notify: Arc::new(Notify::new()),
        outstanding: BTreeMap::new(),
        next_ack: 1,
        txs: HashMap::new(),
        tx_bytes,
        budget,
        temp: HashMap::new(),
        send_every: None,
        recv_within: None,
        last_sent: Instant::now(),
        room_since: None,
        last_recv: Instant::now(),
        recv_undecoded: 0,
        last_active: Instant::now(),
        confirmations: Confirmations::default(),
        settled_durable: false,
        settled_shared: Vec::new(),
    };
    let mut result = s.serve(&cancel).await;
    if let Err(f) = &mut result
        && cancel.is_cancelled()
        && crate::listener::connections::closed_by_operator(conn_id)
    {
        f.message = "closed by an operator".into();
        f.detail = "an operator closed this connection; unacknowledged messages are returned to their queues".into();
    }
    match result {
        Ok(()) => tracing::debug!("connection closed"),
        Err(f) => {
            tracing::info!(error = %f.message, "closing connection with ERROR");
            let mut e = error_frame(&f.message, &f.detail, f.receipt.as_deref());
            e.headers.extend(f.headers);
            let _ = s.t.send(Outgoing::Frame(e)).await;
            let _ = s.t.close().await;
        }
    }
}

/// Refuses a connection over the listener's limit: ERROR, then close.
pub async fn refuse<T: Transport>(mut t: T, reason: &str) {
    let _ = t
        .send(Outgoing::Frame(error_frame(reason, reason, None)))
        .await;
    let _ = t.close().await;
}

impl<T: Transport> Connection<T> {
    pub(super) async fn serve(&mut self, cancel: &CancellationToken) -> Result<(), Fatal> {
        let first = tokio::select! {
            _ = cancel.cancelled() => return Err(fatal("server shutting down", "the server is shutting down")),
            r = tokio::time::timeout(self.shared.settings.connect_timeout, next_frame(&mut self.t, &mut self.last_recv, &mut self.recv_undecoded, &mut self.last_active)) => match r {
                Err(_) => return Err(fatal("no CONNECT", "no CONNECT frame within the connect timeout")),
                Ok(None) => return Ok(()),
                Ok(Some(f)) => f?,
            },
        };
        // Boxed, as every handler below: the task of an idle connection is sized for
        // the largest state of this loop, and a handler's state inline would be it.
        Box::pin(self.connect(first)).await?;
        loop {
            let hb_send = self.send_every.map(|d| self.last_sent + d);
            let hb_recv = self.recv_deadline();
            let idle_at = self.idle_deadline();
            let quiet_at = self.quiet_deadline();
            let notify = Arc::clone(&self.notify);
            // The select only picks what happened; the work is done after it.
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    return Err(fatal("server shutting down", "the server is shutting down; unacknowledged messages are returned to their queues"));
                }
                // The session keeps reading while receipts wait for the store, so a
                // pipelining client's messages share fsyncs.
                Some((u, r)) = self.confirmations.next(), if !self.confirmations.is_empty() => {
                    Event::Confirmed(u, r)
                }
                frame = next_frame(&mut self.t, &mut self.last_recv, &mut self.recv_undecoded, &mut self.last_active), if !self.confirmations.is_full() => {
                    let Some(frame) = frame else { return Ok(()) };
                    Event::Frame(frame?)
                }
                _ = notify.notified() => Event::Deliver,
                _ = sleep_opt(hb_send) => Event::SendHeartBeat,
                _ = sleep_opt(hb_recv) => Event::RecvDeadline,
                _ = sleep_opt(idle_at) => Event::IdleDeadline,
                _ = sleep_opt(quiet_at) => Event::Quiet,
            };
            match self.on_event(event).await? {
                AfterFrame::Continue => {}
                AfterFrame::Close => return Ok(()),
            }
        }
    }

    /// Does what an event of the serve loop asks. Each handler's future is boxed on its
    /// own, sized for what that event needs (the serve loop's state, what an idle
    /// connection carries, keeps none of them): a future is moved into its box whole, so
    /// one box sized for the largest handler cost every delivery that size in allocation
    /// and copying (the MQTT session's case: 36 KiB, 12 % of its CPU).
    async fn on_event(&mut self, event: Event) -> Result<AfterFrame, Fatal> {
        match event {
            Event::Confirmed(u, r) => Box::pin(self.confirmed(u, r)).await?,
            Event::Frame(frame) => return Box::pin(self.on_frame(frame)).await,
            Event::Deliver => Box::pin(self.deliver()).await?,
            Event::SendHeartBeat => {
                Box::pin(async {
                    self.write(Outgoing::HeartBeat).await?;
                    self.flush().await
                })
                .await?;
            }
            Event::Quiet => {
                for sub in self.subs.values() {
                    sub.consumer.release_idle_memory();
                }
                self.room_since = None;
            }
            Event::RecvDeadline => {
                if self.passed(Self::recv_deadline) {
                    tracing::info!("heart-beat timeout: closing");
                    return Err(fatal(
                        "heart-beat timeout",
                        "no frame or heart-beat received within the negotiated window",
                    ));
                }
            }
            Event::IdleDeadline => {
                if self.passed(Self::idle_deadline) {
                    let after = self.idle().unwrap_or_default();
                    tracing::info!(
                        ?after,
                        "idle timeout: closing a connection without heart-beats"
                    );
                    return Err(fatal(
                        "idle timeout",
                        format!(
                            "nothing received or sent for {after:?} on a connection without heart-beats; negotiate heart-beats (CONNECT heart-beat:CX,CY) to stay connected while idle"
                        ),
                    ));
                }
            }
        }
        Ok(AfterFrame::Continue)
    }

    /// When the connection is closed unless something arrives first: twice the
    /// negotiated receive interval after the last thing received.
    fn recv_deadline(&self) -> Option<Instant> {
        self.recv_within.map(|d| self.last_recv + d * 2)
    }

    /// How long a connection may stay without traffic: only for connections the
    /// heart-beat check does not cover.
    fn idle(&self) -> Option<Duration> {
        self.shared
            .settings
            .idle_timeout
            .filter(|_| self.recv_within.is_none())
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.idle().map(|d| self.last_active + d)
    }

    /// When the subscriptions count as quiet (see [`RELEASE_AFTER`]); `None` once their
    /// room was given back, until a frame is sent again.
    fn quiet_deadline(&self) -> Option<Instant> {
        self.room_since
            .filter(|_| !self.subs.is_empty())
            .map(|t| t + RELEASE_AFTER)
    }

    /// A timer armed for `deadline` fired: whether the deadline, as it stands now, has
    /// passed. Reading heart-beats does not wake the serve loop (a wake-up per beat would
    /// cost more than the beat), and part of a frame wakes nothing, so the timer may have
    /// been armed for a deadline what arrived since has pushed back; if so the loop
    /// re-arms it for the remainder. Part of a frame counts as received now.
    fn passed(&mut self, deadline: fn(&Self) -> Option<Instant>) -> bool {
        let undecoded = self.t.undecoded();
        if undecoded != self.recv_undecoded {
            self.recv_undecoded = undecoded;
            self.last_recv = Instant::now();
            self.last_active = self.last_recv;
        }
        deadline(self).is_some_and(|at| at <= Instant::now())
    }

    /// Queues a frame or heart-beat for writing (see [`Connection::flush`]).
    pub(super) async fn write(&mut self, o: Outgoing) -> Result<(), Fatal> {
        self.last_sent = Instant::now();
        if matches!(o, Outgoing::Frame(_) | Outgoing::Encoded(_)) {
            self.last_active = self.last_sent;
            self.room_since = Some(self.last_sent);
        }
        self.t
            .feed(o)
            .await
            .map_err(|e| fatal("write failed", e.to_string()))
    }

    pub(super) async fn flush(&mut self) -> Result<(), Fatal> {
        self.t
            .flush()
            .await
            .map_err(|e| fatal("write failed", e.to_string()))
    }

    /// Answers a frame, in the order frames arrived: a SEND that can start a run goes
    /// with the SENDs buffered behind it (see `send_run`).
    pub(super) async fn on_frame(&mut self, mut frame: Frame) -> Result<AfterFrame, Fatal> {
        // A loop, not recursion: a buffer of SENDs to alternating topics would otherwise
        // nest one run's handler in another's.
        while Self::starts_run(&frame) {
            match self.on_send_run(frame).await? {
                Some(next) => frame = next,
                None => return Ok(AfterFrame::Continue),
            }
        }
        if !matches!(frame.command, Command::Send | Command::Ack | Command::Nack) {
            // Every earlier SEND, ACK and NACK is confirmed before any other
            // frame is answered, so receipts come back in the order asked.
            // SENDs, ACKs and NACKs queue their receipts behind the earlier
            // ones instead (see `answer`).
            while let Some((u, r)) = self.confirmations.next().await {
                self.confirmed(u, r).await?;
            }
        }
        self.handle(frame).await
    }

    /// The next frame already received (see [`Transport::next_buffered`]), heart-beats
    /// skipped; each counts as received now, as in `next_frame`. `None`: nothing
    /// complete is buffered.
    pub(super) fn buffered_frame(&mut self) -> Option<Result<Frame, CodecError>> {
        loop {
            let item = self.t.next_buffered()?;
            self.last_recv = Instant::now();
            self.recv_undecoded = self.t.undecoded();
            self.last_active = self.last_recv;
            match item {
                Ok(Incoming::HeartBeat) => continue,
                Ok(Incoming::Frame(f)) => return Some(Ok(f)),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Hands a frame to its handler.
    async fn handle(&mut self, f: Frame) -> Result<AfterFrame, Fatal> {
        let receipt = f.header("receipt").map(str::to_owned);
        let r = match f.command {
            Command::Send => self.on_send(f).await.map(|()| AfterFrame::Continue),
            Command::Subscribe => self.on_subscribe(f).await.map(|()| AfterFrame::Continue),
            Command::Unsubscribe => self.on_unsubscribe(f).await.map(|()| AfterFrame::Continue),
            Command::Ack | Command::Nack => self.on_ack(f).await.map(|()| AfterFrame::Continue),
            Command::Begin | Command::Commit | Command::Abort => {
                self.on_tx(f).await.map(|()| AfterFrame::Continue)
            }
            Command::Disconnect => {
                self.deliver().await?;
                self.receipt(&f).await?;
                Ok(AfterFrame::Close)
            }
            Command::Connect | Command::Stomp => {
                Err(fatal("already connected", "CONNECT sent twice"))
            }
            other => Err(fatal(
                "unexpected frame",
                format!(
                    "{} is a server frame; clients may not send it",
                    other.as_str()
                ),
            )),
        };
        // The ERROR for a frame that asked for a receipt carries its receipt-id.
        r.map_err(|mut e| {
            e.receipt = receipt;
            e
        })
    }

    /// The logged-in user (every frame after CONNECT has one).
    pub(super) fn principal(&self) -> Result<&Principal, Fatal> {
        self.principal
            .as_ref()
            .ok_or_else(|| fatal("not connected", "not connected"))
    }
}

/// The next frame, skipping heart-beats; `None` at end of stream. Every frame or
/// heart-beat received sets `last_recv` and `last_active`, and `recv_undecoded` to what
/// is left buffered. (Not a method: the serve loop waits for it and for the session's
/// confirmations at once.)
async fn next_frame<T: Transport>(
    t: &mut T,
    last_recv: &mut Instant,
    recv_undecoded: &mut usize,
    last_active: &mut Instant,
) -> Option<Result<Frame, Fatal>> {
    loop {
        let item = t.next().await?;
        *last_recv = Instant::now();
        *recv_undecoded = t.undecoded();
        *last_active = *last_recv;
        match item {
            Ok(Incoming::HeartBeat) => continue,
            Ok(Incoming::Frame(f)) => return Some(Ok(f)),
            Err(e) => return read_failed(e).map(Err),
        }
    }
}

/// What a failed read means: the end of the stream (`None`, an I/O error), or an ERROR
/// for a malformed frame.
pub(super) fn read_failed(e: CodecError) -> Option<Fatal> {
    match e {
        CodecError::Io(e) => {
            tracing::debug!(error = %e, "read error");
            None
        }
        e => {
            tracing::warn!(error = %e, "malformed frame");
            Some(fatal(e.to_string(), format!("malformed frame: {e}")))
        }
    }
}

/// Sleeps until `at`; forever without one.
async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
