//! An MQTT connection's state and its serve loop: packets in; acknowledgements and
//! deliveries out; keep-alive and parking deadlines; until the connection ends or is
//! parked.

use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::alias::Aliases;
use super::connect::{connect_session, read_connect};
use super::end::{End, end};
use super::outbound::Inflight;
use super::park;
use super::publish::Unconfirmed;
use super::reason_code;
use super::stamp::Stamp;
use super::transport::Transport;
use crate::auth::Principal;
use crate::core::{Confirmation, Consumer, PublishError};
use crate::listener::confirm::Confirmations;
use crate::listener::connections::Registration;
use crate::listener::limit::ConnSlot;
use crate::listener::mqtt::codec::{CodecError, In, Out, Version, Will};
use crate::listener::mqtt::state::{Handoff, Leave, MqttState, SessionData};

/// Where a consumer's deliveries come from.
pub(super) enum Source {
    /// The session queue (the client's own subscriptions).
    Session,
    /// The queue of a shared or `$queue/` subscription.
    Shared(String),
}

/// One connection: its transport, the session it serves, what is in flight each way.
/// `T` is the transport: a live connection's ([`Transport`]), or [`park::Detached`]
/// while it waits in the poller.
pub(super) struct Connection<T> {
    pub(super) t: T,
    pub(super) state: Arc<MqttState>,
    /// The connection id, listed for the admin API while the connection lives (see
    /// [`crate::listener::connections`]): unlisted when the connection is dropped.
    pub(super) conn: Registration,
    pub(super) version: Version,
    /// Shared with the session registry's key: one allocation, not two.
    pub(super) client_id: Arc<str>,
    pub(super) principal: Principal,
    pub(super) data: Arc<Mutex<SessionData>>,
    /// Whether the session outlives the connection (session expiry > 0 at CONNECT):
    /// decides the session queue's options. The queue's name and options are derived
    /// when needed rather than kept: every idle connection would carry them.
    pub(super) persistent: bool,
    /// Index 0: the session queue; then shared / `$queue/` subscriptions.
    pub(super) consumers: Vec<(Source, Consumer)>,
    pub(super) notify: Arc<Notify>,
    pub(super) inflight: BTreeMap<u16, Inflight>,
    pub(super) next_pid: u16,
    pub(super) client_receive_max: u16,
    /// `NonZero`: 4 bytes, not 8 (MQTT 5 forbids 0).
    pub(super) client_max_packet: Option<std::num::NonZeroU32>,
    /// Topic aliases both ways (5.0 only), made when first needed.
    pub(super) aliases: Option<Box<Aliases>>,
    /// 1.5 × the keep-alive in force, in milliseconds; 0: none. Not a `Duration`: with
    /// the other small fields it packs into what one would take.
    pub(super) keep_alive_ms: u32,
    pub(super) last_recv: Stamp,
    /// When the serve loop last had something to do: idle for `mqtt.park_idle_after`,
    /// a plain TCP connection is parked (see [`park`]).
    pub(super) last_active: Stamp,
    /// Fires at the earliest the keep-alive could expire or the connection could be
    /// parked; re-armed then, not on every packet. Boxed: only connections with a
    /// keep-alive or that can be parked carry it, and a parked one carries none.
    pub(super) timer: Option<Pin<Box<Sleep>>>,
    pub(super) handoff: Arc<Handoff>,
    /// The connection's admission slot (listener and peer-address counts; 8 bytes),
    /// held while the connection lives (parked or not).
    pub(super) permit: Option<ConnSlot>,
    pub(super) will: Option<Box<Will>>,
    pub(super) session_expiry: u32,
    /// Acknowledgements of QoS 1/2 PUBLISHes whose messages are not durable yet (and
    /// PUBRELs waiting for a settlement to be), in arrival order (MQTT §4.6).
    pub(super) confirmations: Confirmations<Unconfirmed>,
    /// Flushes asked for since the last write (see [`Connection::flush`]).
    pub(super) unflushed: u32,
}

/// Most flushes put off while more work is ready.
const FLUSH_EVERY: u32 = 64;

/// What woke the serve loop.
enum Event {
    Packet(In),
    Confirmed(Unconfirmed, Result<(), PublishError>),
    Deliver,
    /// The keep-alive or park deadline may have passed.
    Timer,
    Flush,
    End(End),
}

/// Why the serve loop returned.
enum Stop {
    End(End),
    /// Idle long enough to wait in the poller instead of a task of its own.
    Park,
}

/// How a connection ends when reading from it failed.
pub(super) fn read_failed(e: CodecError) -> End {
    match e {
        CodecError::Io(e) => End {
            code: None,
            reason: format!("read error: {e}"),
            will: true,
        },
        e => {
            tracing::warn!(error = %e, "malformed packet");
            end(e.reason_code(), e.to_string())
        }
    }
}

/// Where a connection came from, as the admin API lists it.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// Process-unique ([`crate::listener::next_connection_id`]).
    pub id: u64,
    /// `mqtt` or `mqtt-ws`.
    pub listener: &'static str,
    pub peer: SocketAddr,
}

/// Serves one connection until it ends.
///
/// Not an `async fn`: its arguments would stay in the connection's task for its whole
/// life. Everything before the serve loop runs once, in a boxed future freed when the
/// session starts, so an idle connection's task holds little more than its `Connection`.
///
/// `permit` (the connection's admission slot) stays with the session, parked or not; a
/// caller holding the permit itself passes `None`.
pub fn run<T: Transport + 'static>(
    t: T,
    state: Arc<MqttState>,
    conn: Accepted,
    loopback: bool,
    cancel: CancellationToken,
    permit: Option<ConnSlot>,
) -> impl Future<Output = ()> + Send {
    let start = Box::pin(start(t, state, conn, loopback, cancel, permit));
    async move {
        if let Some(s) = start.await {
            live(s).await;
        }
    }
}

/// Serves a connected session until it ends or is parked.
pub(super) async fn live<T: Transport + 'static>(mut s: Connection<T>) {
    loop {
        match s.serve().await {
            Stop::End(ended) => return Box::pin(s.finish(ended)).await,
            Stop::Park => match park::park(s) {
                park::Parking::Parked => return,
                park::Parking::Kept(back) => {
                    // Tried again only after another idle period: a poller that cannot
                    // take it now (shutting down, out of descriptors) is not asked at
                    // every turn of the loop.
                    s = back;
                    s.last_active = Stamp::now();
                }
                park::Parking::Lost(gone, e) => {
                    let ended = End {
                        code: None,
                        reason: format!("connection lost while parking: {e}"),
                        will: true,
                    };
                    return Box::pin(gone.finish(ended)).await;
                }
            },
        }
    }
}

/// CONNECT and the session it opens (or takes over).
pub(super) async fn start<T: Transport>(
    t: T,
    state: Arc<MqttState>,
    conn: Accepted,
    loopback: bool,
    cancel: CancellationToken,
    permit: Option<ConnSlot>,
) -> Option<Connection<T>> {
    let (t, connect) = read_connect(t, &state, &cancel).await?;
    let s = connect_session(t, &state, conn, connect, loopback, permit).await?;
    // Registered as the holder before this check: a shutdown from now on kicks it.
    if cancel.is_cancelled() {
        s.handoff.set_gone(&state);
        return None;
    }
    Some(s)
}

impl<T> Connection<T> {
    /// The same session on another transport (parking and reviving it), and the one
    /// it had.
    pub(super) fn swap_transport<U>(self, t: U) -> (T, Connection<U>) {
        let s = Connection {
            t,
            state: self.state,
            conn: self.conn,
            version: self.version,
            client_id: self.client_id,
            principal: self.principal,
            data: self.data,
            persistent: self.persistent,
            consumers: self.consumers,
            notify: self.notify,
            inflight: self.inflight,
            next_pid: self.next_pid,
            client_receive_max: self.client_receive_max,
            client_max_packet: self.client_max_packet,
            aliases: self.aliases,
            keep_alive_ms: self.keep_alive_ms,
            last_recv: self.last_recv,
            last_active: self.last_active,
            timer: self.timer,
            handoff: self.handoff,
            permit: self.permit,
            will: self.will,
            session_expiry: self.session_expiry,
            confirmations: self.confirmations,
            unflushed: self.unflushed,
        };
        (self.t, s)
    }

    /// The keep-alive period enforced (1.5 × the one in force), if any.
    pub(super) fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive_ms > 0).then(|| Duration::from_millis(u64::from(self.keep_alive_ms)))
    }
}

impl<T: Transport> Connection<T> {
    pub(super) fn data(&self) -> std::sync::MutexGuard<'_, SessionData> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn send(&mut self, o: Out) -> Result<(), End> {
        self.t.feed(o).await.map_err(|e| End {
            code: None,
            reason: format!("write failed: {e}"),
            will: true,
        })
    }

    /// Asks for what was fed to be written. The write happens when the serve loop has
    /// nothing else ready, so a burst of packets (acknowledgements, deliveries) goes out
    /// in one system call instead of one each; at the latest after `FLUSH_EVERY` asks.
    pub(super) async fn flush(&mut self) -> Result<(), End> {
        self.unflushed += 1;
        if self.unflushed >= FLUSH_EVERY {
            return self.flush_now().await;
        }
        Ok(())
    }

    pub(super) async fn flush_now(&mut self) -> Result<(), End> {
        self.unflushed = 0;
        self.t.flush().await.map_err(|e| End {
            code: None,
            reason: format!("write failed: {e}"),
            will: true,
        })
    }

    async fn serve(&mut self) -> Stop {
        if let Err(e) = Box::pin(self.deliver()).await {
            return Stop::End(e);
        }
        self.last_active = Stamp::now();
        if let Some(at) = self.next_deadline() {
            self.timer = Some(Box::pin(sleep_until(at)));
        }
        loop {
            // Told to leave (takeover or shutdown) through the notifier: checked on every
            // turn, since a wake-up may have been taken by the flow-gate wait in `publish`.
            match self.handoff.leave() {
                None => {}
                Some(Leave::Shutdown) => {
                    return Stop::End(end(
                        reason_code::SERVER_SHUTTING_DOWN,
                        "server shutting down",
                    ));
                }
                Some(Leave::TakenOver) => {
                    return Stop::End(end(
                        reason_code::SESSION_TAKEN_OVER,
                        "session taken over by a new connection",
                    ));
                }
                // As a network drop for the session (kept, will published: MQTT 5
                // §3.1.2.5, only a DISCONNECT 0x00 from the client discards the will).
                Some(Leave::Administrative) => {
                    return Stop::End(end(
                        reason_code::ADMINISTRATIVE_ACTION,
                        "closed by an operator",
                    ));
                }
            }
            let event = self.next_event().await;
            let r = match event {
                Event::End(e) => return Stop::End(e),
                Event::Timer => match self.timer_check() {
                    Ok(true) => {
                        self.timer = None;
                        return Stop::Park;
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                // `on_event` boxes each handler's future on its own: this loop's state is
                // what an idle connection's task carries.
                event => {
                    self.last_active = Stamp::now();
                    self.on_event(event).await
                }
            };
            if let Err(e) = r {
                return Stop::End(e);
            }
        }
    }

    /// Does what an event from [`Connection::next_event`] asks. Each handler's future is
    /// boxed on its own, sized for what that event needs: a future is moved into its box
    /// whole, so one box sized for the largest handler (36 KiB) cost every delivery and
    /// acknowledgement a 36 KiB allocation and copy (12 % of the router's CPU at 5,000
    /// QoS 1 messages/s).
    async fn on_event(&mut self, event: Event) -> Result<(), End> {
        match event {
            Event::End(e) => Err(e),
            Event::Timer => self.timer_check().map(|_| ()),
            Event::Confirmed(u, r) => Box::pin(self.confirmed(u, r)).await,
            Event::Deliver => Box::pin(self.deliver()).await,
            Event::Flush => Box::pin(self.flush_now()).await,
            Event::Packet(p) => Box::pin(self.handle_from(p)).await,
        }
    }

    /// Waits for the next thing the serve loop must do.
    async fn next_event(&mut self) -> Event {
        // The select only picks what happened; the work is done after it, so the
        // connection's task does not keep the select's futures and a handler's state
        // side by side (it is sized for the largest of them while idle).
        tokio::select! {
            biased;
            // The session keeps reading while acknowledgements wait for the store, so a
            // client with many messages in flight shares fsyncs instead of waiting for one
            // each.
            Some((u, r)) = self.confirmations.next(), if !self.confirmations.is_empty() => {
                Event::Confirmed(u, r)
            }
            p = self.t.next(), if !self.confirmations.is_full() => match p {
                None => Event::End(End { code: None, reason: "connection closed by the client".into(), will: true }),
                Some(Err(e)) => Event::End(read_failed(e)),
                Some(Ok(p)) => {
                    self.last_recv = Stamp::now();
                    Event::Packet(p)
                }
            },
            _ = self.notify.notified() => Event::Deliver,
            // A `poll_fn` rather than an `async fn`: it keeps only a reference.
            _ = poll_fn(|cx| match self.timer.as_mut() {
                Some(timer) => timer.as_mut().poll(cx),
                None => Poll::Pending,
            }) => Event::Timer,
            // Last (biased): only when nothing else is ready.
            _ = std::future::ready(()), if self.unflushed > 0 => Event::Flush,
        }
    }

    /// The timer fired: the connection ends if nothing arrived for the keep-alive
    /// period (1.5 × what the client asked); `Ok(true)` if it has been idle long enough
    /// to be parked and nothing is in the way; else the timer is re-armed.
    fn timer_check(&mut self) -> Result<bool, End> {
        let now = Instant::now();
        if let Some(k) = self.keep_alive()
            && now >= self.last_recv.instant() + k
        {
            return Err(end(reason_code::KEEP_ALIVE_TIMEOUT, "keep-alive timeout"));
        }
        if let Some(after) = self.park_after()
            && now >= self.last_active.instant() + after
        {
            // Parked, it waits for its socket, its notifier and its keep-alive deadline
            // only: nothing may be owed to the client or waiting for the store.
            if self.confirmations.is_empty() && self.unflushed == 0 && self.t.park_fd().is_some() {
                return Ok(true);
            }
            self.last_active = Stamp::of(now);
        }
        if let (Some(at), Some(timer)) = (self.next_deadline(), self.timer.as_mut()) {
            timer.as_mut().reset(at);
        }
        Ok(false)
    }

    /// How long this connection may be idle before it is parked (`None`: never).
    fn park_after(&self) -> Option<Duration> {
        self.state
            .settings
            .park_idle_after
            .filter(|_| T::PARKS && self.state.parker().is_some())
    }

    /// The earliest of the keep-alive and park deadlines.
    fn next_deadline(&self) -> Option<Instant> {
        let ka = self.keep_alive().map(|k| self.last_recv.instant() + k);
        let park = self.park_after().map(|p| self.last_active.instant() + p);
        match (ka, park) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does what a packet asks and, when it starts a run of QoS 0 PUBLISHes, what the
    /// packet that ended the run asks, and so on.
    async fn handle_from(&mut self, p: In) -> Result<(), End> {
        let mut next = Some(p);
        while let Some(p) = next {
            next = match p {
                In::Publish(p) if p.qos == 0 => Box::pin(self.on_publish_qos0(p)).await?,
                p => {
                    self.handle(p).await?;
                    None
                }
            };
        }
        Ok(())
    }

    /// Does what a packet from the client asks.
    async fn handle(&mut self, p: In) -> Result<(), End> {
        match p {
            // The larger handlers boxed apart (see `on_event`).
            In::Publish(p) => Box::pin(self.on_publish(*p)).await,
            In::PubAck(pid) => {
                self.settle(pid);
                self.deliver().await
            }
            In::PubRec(pid) if self.settle_at_pubcomp(pid) => {
                self.data().flows_mut().pending_rel.insert(pid);
                self.release(pid).await?;
                self.deliver().await
            }
            In::PubRec(pid) => {
                // The client has the message: done with the core; finish the handshake.
                let durable = self.settle(pid);
                self.data().flows_mut().pending_rel.insert(pid);
                // Once it has the PUBREL the client forgets the packet id, so it could
                // not tell the message from a new one if it came back: PUBREL goes out
                // once the acknowledgement is durable (one group commit, shared).
                let confirmation = if durable {
                    self.state.router.core().settlements_durable()
                } else {
                    Confirmation::default()
                };
                if self.confirmations.must_wait(&confirmation) {
                    let answer = Unconfirmed {
                        packet_id: pid,
                        qos: 2,
                        reached: 1,
                        release: true,
                    };
                    self.confirmations.push(answer, confirmation);
                } else {
                    self.release(pid).await?;
                }
                self.deliver().await
            }
            In::PubComp(pid) => {
                self.complete(pid);
                // A delivery settled now made room in the in-flight window.
                self.deliver().await
            }
            In::PubRel(pid) => {
                let known = self.data().flows_mut().incoming_qos2.remove(&pid);
                let code = if known {
                    reason_code::SUCCESS
                } else {
                    reason_code::PACKET_ID_NOT_FOUND
                };
                self.send(Out::PubComp {
                    packet_id: pid,
                    code,
                })
                .await?;
                self.flush().await
            }
            In::Subscribe {
                packet_id,
                subscription_id,
                filters,
            } => Box::pin(self.on_subscribe(packet_id, subscription_id, filters)).await,
            In::Unsubscribe { packet_id, filters } => {
                Box::pin(self.on_unsubscribe(packet_id, filters)).await
            }
            In::PingReq => {
                self.send(Out::PingResp).await?;
                self.flush().await
            }
            In::Disconnect {
                reason,
                session_expiry,
            } => {
                if let Some(e) = session_expiry {
                    if self.session_expiry == 0 && e > 0 {
                        return Err(end(
                            reason_code::PROTOCOL_ERROR,
                            "session expiry set on DISCONNECT after 0 on CONNECT",
                        ));
                    }
                    self.session_expiry = e;
                }
                Err(End {
                    code: None,
                    reason: "client disconnected".into(),
                    will: reason == reason_code::DISCONNECT_WITH_WILL,
                })
            }
            In::Connect(_) => Err(end(reason_code::PROTOCOL_ERROR, "second CONNECT")),
            In::Unexpected(what) => Err(end(
                reason_code::PROTOCOL_ERROR,
                format!("{what} is a server packet"),
            )),
        }
    }
}
