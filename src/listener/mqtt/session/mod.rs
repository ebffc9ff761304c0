//! One MQTT connection: CONNECT (version, auth, session takeover and resumption), then
//! PUBLISH flows at QoS 0/1/2 in both directions, SUBSCRIBE/UNSUBSCRIBE (wildcards,
//! shared subscriptions, retained messages), keep-alive, will, DISCONNECT.
//!
//! Inbound, an acknowledgement (PUBACK, PUBREC) is sent only after the router accepted
//! the message. Outbound, a message is acknowledged to the core when the client
//! acknowledged it (PUBACK; PUBREC for QoS 2, after which the PUBREL/PUBCOMP exchange is
//! tracked in the session), so a connection lost mid-flight gives the message back to
//! the session queue, redelivered with DUP on the next connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Sink, SinkExt, Stream, StreamExt};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use crate::listener::confirm::Confirmations;
use crate::listener::limit::ConnSlot;

use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::codec::{Codec, CodecError, Connect, In, Out, Publish, SubOpts, Version};
use super::state::{Handoff, Holder, Leave, MqttState, SessionData, Sub};
use crate::auth::{AuthError, Kind, Principal};
use crate::core::{
    ConsumeOptions, Consumer, Delivery, Destination, Message, Origin, Pattern, QueueOptions,
};
use crate::listener::mqtt::convert::{
    RETAIN_HEADER, RETAINED_HEADER, delivery_topic, message_to_publish, publish_destination,
    publish_to_message,
};
use crate::listener::packet_io::PacketIo;
use crate::translate::mqtt_names::{self, QUEUE_PREFIX, session_queue, shared_queue};

/// A bidirectional MQTT packet stream (TCP `PacketIo` or a WebSocket adapter).
pub trait Transport:
    Stream<Item = Result<In, CodecError>> + Sink<Out, Error = CodecError> + Unpin + Send
{
    /// Whether a connection on this transport can wait in the [`park`] poller while
    /// idle: a plain TCP socket can; TLS and WebSocket keep state outside the socket.
    const PARKS: bool = false;

    /// Limits outbound packets to the client's Maximum Packet Size.
    fn set_max_outbound(&mut self, max: u32);

    /// The socket, when the connection can be parked right now (nothing buffered).
    fn park_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Gives the socket and codec up for parking; only called after `park_fd` said yes.
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

    fn park_fd(&self) -> Option<std::os::fd::RawFd> {
        (S::PARKS && self.is_idle()).then(|| self.get_ref().raw_fd())
    }

    fn detach(self) -> std::io::Result<park::Detached> {
        let (io, codec) = self.into_parts();
        Ok(park::Detached {
            stream: io.into_std()?,
            codec,
        })
    }
}

impl Transport for crate::listener::ws::WsFramed<Codec> {
    fn set_max_outbound(&mut self, max: u32) {
        self.codec.set_max_outbound(max);
    }
}

/// Reason codes used here (MQTT 5 §2.4).
/// Retained publishes refused or not retained for lack of room (see [`crate::ratelog`]).
static RETAINED_FULL: crate::ratelog::Cause = crate::ratelog::Cause::new("mqtt.retained_full");

mod rc {
    pub const SUCCESS: u8 = 0x00;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const UNSPECIFIED: u8 = 0x80;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const CLIENT_ID_INVALID: u8 = 0x85;
    pub const BAD_CREDENTIALS: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAX_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const SHARED_NOT_SUPPORTED: u8 = 0x9E;
}

/// Why the connection ends.
#[derive(Debug)]
struct End {
    /// DISCONNECT reason code sent to a 5.0 client (None: send nothing).
    code: Option<u8>,
    reason: String,
    /// Publish the will.
    will: bool,
}

fn end(code: u8, reason: impl Into<String>) -> End {
    End {
        code: Some(code),
        reason: reason.into(),
        will: true,
    }
}

enum Source {
    Session,
    Shared(String),
}

/// A QoS 1/2 delivery awaiting the client's acknowledgement. The consumer is named by
/// its queue, not by position: subscriptions come and go while messages are in flight.
struct Inflight {
    queue: Arc<str>,
    tag: u64,
}

/// `T` is the transport: a live connection's ([`Transport`]), or [`park::Detached`]
/// while it waits in the poller.
struct Session<T> {
    t: T,
    state: Arc<MqttState>,
    conn: u64,
    version: Version,
    /// Shared with the session registry's key: one allocation, not two.
    client_id: Arc<str>,
    principal: Principal,
    data: Arc<Mutex<SessionData>>,
    /// Whether the session outlives the connection (session expiry > 0 at CONNECT):
    /// decides the session queue's options. The queue's name and options are derived
    /// when needed rather than kept: every idle connection would carry them.
    persistent: bool,
    /// Index 0: the session queue; then shared / `$queue/` subscriptions.
    consumers: Vec<(Source, Consumer)>,
    notify: Arc<Notify>,
    inflight: BTreeMap<u16, Inflight>,
    next_pid: u16,
    client_receive_max: u16,
    client_max_packet: Option<u32>,
    /// A BTreeMap, not a HashMap: empty, it costs no allocation and no hasher state.
    aliases: BTreeMap<u16, String>,
    /// Topic aliases towards the client (5.0 clients that accept them only).
    out_aliases: Option<Box<alias::OutAliases>>,
    /// 1.5 × the keep-alive in force, in milliseconds; 0: none. Not a `Duration`: with
    /// the other small fields it packs into what one would take.
    keep_alive_ms: u32,
    last_recv: Instant,
    /// When the serve loop last had something to do: idle for `mqtt.park_idle_after`,
    /// a plain TCP connection is parked (see [`park`]).
    last_active: Instant,
    /// Fires at the earliest the keep-alive could expire or the connection could be
    /// parked; re-armed then, not on every packet. Boxed: only connections with a
    /// keep-alive or that can be parked carry it, and a parked one carries none.
    timer: Option<Pin<Box<Sleep>>>,
    handoff: Arc<Handoff>,
    /// The connection's admission slot (listener and peer-address counts; 8 bytes),
    /// held while the connection lives (parked or not).
    permit: Option<ConnSlot>,
    will: Option<Box<super::codec::Will>>,
    session_expiry: u32,
    /// Acknowledgements of QoS 1/2 PUBLISHes whose messages are not durable yet (and
    /// PUBRELs waiting for a settlement to be), in arrival order (MQTT §4.6).
    confirmations: Confirmations<Unconfirmed>,
    /// Flushes asked for since the last write (see [`Session::flush`]).
    unflushed: u32,
}

/// Most flushes put off while more work is ready.
const FLUSH_EVERY: u32 = 64;

/// What a QoS 1/2 PUBLISH whose message is not durable yet is answered with (its
/// PUBACK/PUBREC), or (with `release`) the PUBREL of an outbound QoS 2 delivery that
/// waits for its acknowledgement to be durable.
struct Unconfirmed {
    packet_id: u16,
    qos: u8,
    /// Queues reached (0: no matching subscribers).
    reached: usize,
    /// A PUBREL owed to the client, not an acknowledgement of its PUBLISH.
    release: bool,
}

/// What woke the serve loop.
enum Event {
    Packet(In),
    Confirmed(Unconfirmed, Result<(), crate::core::PublishError>),
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

/// Serves one connection until it ends.
///
/// Not an `async fn`: its arguments would stay in the connection's task for its whole
/// life. Everything before the serve loop runs once, in a boxed future freed when the
/// session starts, so an idle connection's task holds little more than its `Session`.
///
/// `permit` (the connection's admission slot) stays with the session, parked or not; a
/// caller holding the permit itself passes `None`.
pub fn run<T: Transport + 'static>(
    t: T,
    state: Arc<MqttState>,
    conn: u64,
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
async fn live<T: Transport + 'static>(mut s: Session<T>) {
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
                    s.last_active = Instant::now();
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
async fn start<T: Transport>(
    t: T,
    state: Arc<MqttState>,
    conn: u64,
    loopback: bool,
    cancel: CancellationToken,
    permit: Option<ConnSlot>,
) -> Option<Session<T>> {
    let (t, connect) = read_connect(t, &state, &cancel).await?;
    let s = connect_session(t, &state, conn, connect, loopback, permit).await?;
    // Registered as the holder before this check: a shutdown from now on kicks it.
    if cancel.is_cancelled() {
        s.handoff.set_gone(&state);
        return None;
    }
    Some(s)
}

/// Options of a session's queue: bounded by `mqtt.max_queued`, oldest dropped first;
/// durable for a persistent session, deleted with the last consumer for a clean one.
fn session_queue_options(state: &MqttState, persistent: bool) -> QueueOptions {
    QueueOptions {
        max_length: state.settings.max_queued,
        overflow: crate::core::Overflow::DropHead,
        durable: persistent,
        auto_delete: !persistent,
        ..state.router.core().config().default_subscription.clone()
    }
}

/// Waits for the first packet, which must be CONNECT; refuses anything else.
async fn read_connect<T: Transport>(
    mut t: T,
    state: &Arc<MqttState>,
    cancel: &CancellationToken,
) -> Option<(T, Connect)> {
    let first = tokio::select! {
        _ = cancel.cancelled() => return None,
        r = tokio::time::timeout(state.settings.connect_timeout, t.next()) => r,
    };
    let connect = match first {
        Ok(Some(Ok(In::Connect(c)))) => *c,
        Ok(Some(Ok(other))) => {
            tracing::warn!(packet = ?std::mem::discriminant(&other), "first packet is not CONNECT; closing");
            return None;
        }
        Ok(Some(Err(e))) => {
            tracing::warn!(error = %e, "bad CONNECT; closing");
            // An unknown protocol level: CONNACK "unacceptable protocol level" in the
            // 3.1.1 format, the one every client version understands (3.1.1 §3.2.2.3).
            if let CodecError::Protocol(_) = e {
                let _ = t
                    .send(Out::Raw(bytes::Bytes::from_static(&[
                        0x20, 0x02, 0x00, 0x01,
                    ])))
                    .await;
            }
            // The version is known by now, so the refusal can be said in it.
            if let CodecError::ClientId = e {
                let _ = t
                    .send(Out::ConnAck {
                        session_present: false,
                        code: e.reason_code(),
                        assigned_client_id: None,
                        server_keep_alive: None,
                        receive_max: 0,
                        max_packet_size: None,
                        session_expiry: None,
                        reason: Some(e.to_string()),
                    })
                    .await;
            }
            return None;
        }
        Ok(None) | Err(_) => return None,
    };
    Some((t, connect))
}

async fn connect_session<T: Transport>(
    mut t: T,
    state: &Arc<MqttState>,
    conn: u64,
    c: Connect,
    loopback: bool,
    permit: Option<ConnSlot>,
) -> Option<Session<T>> {
    let v5 = c.version == Version::V5;
    let connack = |code: u8, reason: Option<String>| Out::ConnAck {
        session_present: false,
        code,
        assigned_client_id: None,
        server_keep_alive: None,
        receive_max: 0,
        max_packet_size: None,
        session_expiry: None,
        reason,
    };
    // Client id: an empty one is assigned (3.1.1 only with a clean session).
    let mut assigned = None;
    let client_id: Arc<str> = if c.client_id.is_empty() {
        if !v5 && !c.clean_start {
            let _ = t.send(connack(rc::CLIENT_ID_INVALID, None)).await;
            tracing::info!("empty client id with a persistent session refused");
            return None;
        }
        // `sb-` and 96 random bits, not a counter: a persistent session outlives the
        // daemon's counters, and an id another client could predict is one it could take.
        let id = match crate::random::hex_token(12) {
            Ok(token) => format!("sb-{token}"),
            Err(e) => {
                tracing::error!(error = %e, "no randomness for an assigned client id");
                let _ = t.send(connack(rc::UNSPECIFIED, None)).await;
                return None;
            }
        };
        assigned = Some(id.clone());
        id.into()
    } else {
        c.client_id.as_str().into()
    };
    tracing::Span::current().record("client_id", &*client_id);
    let password = c
        .password
        .as_ref()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let principal = match state
        .auth
        .login(c.username.as_deref(), password.as_deref(), loopback)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(client_id = &*client_id, user = c.username.as_deref().unwrap_or(""), error = %e, "login refused");
            let code = match e {
                AuthError::BadCredentials => rc::BAD_CREDENTIALS,
                AuthError::AnonymousRefused => rc::NOT_AUTHORIZED,
            };
            let _ = t.send(connack(code, Some(e.to_string()))).await;
            return None;
        }
    };
    tracing::Span::current().record("user", principal.name());
    if let Some(w) = &c.will
        && !principal.can_publish(&publish_destination(&w.publish.topic))
    {
        tracing::warn!(client_id = &*client_id, topic = %w.publish.topic, "will topic not allowed");
        let _ = t
            .send(connack(
                rc::NOT_AUTHORIZED,
                Some("not allowed to publish the will topic".into()),
            ))
            .await;
        return None;
    }

    // Keep-alive: a 5.0 client asking for more than `mqtt.max_keep_alive` (or for none)
    // is told the server's value in the CONNACK; a 3.1.1 client cannot be told, so one
    // asking for more is refused, as Mosquitto does. A 3.1.1 client asking for none is
    // refused only under a maximum the operator lowered from the default (65535 s).
    let max_ka = state.settings.max_keep_alive;
    let keep_alive = if max_ka > 0 && (c.keep_alive == 0 || c.keep_alive > max_ka) {
        if !v5 && c.keep_alive == 0 && max_ka == u16::MAX {
            0
        } else if !v5 {
            tracing::info!(
                client_id = &*client_id,
                keep_alive = c.keep_alive,
                max = max_ka,
                "keep-alive above the maximum refused"
            );
            let _ = t.send(connack(rc::CLIENT_ID_INVALID, None)).await;
            return None;
        } else {
            max_ka
        }
    } else {
        c.keep_alive
    };
    // ---- Client-id ownership (issue 19) ----
    // A client id whose session belongs to another user is refused before anything of
    // that session is touched: not taken over, not drained, not discarded.
    if let Err(owner) = state.claim_client_id(&client_id, &principal.owner_id()) {
        tracing::warn!(
            client_id = &*client_id,
            owner = &*owner,
            "client id belongs to another user: connection refused"
        );
        let _ = t
            .send(connack(
                rc::NOT_AUTHORIZED,
                Some("this client id belongs to another user".into()),
            ))
            .await;
        return None;
    }
    // ---- end of client-id ownership ----

    // Take the session over: make any current holder leave and wait until it has.
    let (data, session_present, wait_gone) = {
        let mut sessions = state.sessions();
        let entry = sessions.entry(client_id.clone()).or_default();
        // Claimed above; set again in case the entry went and came back in between.
        entry.owner.get_or_insert_with(|| principal.owner_id());
        let wait_gone = entry.holder.take().map(|h| {
            h.kick(Leave::TakenOver);
            h.handoff
        });
        if let Some(p) = entry.pending.take() {
            p.cancel();
        }
        let present = !c.clean_start
            && state
                .router
                .core()
                .queue(&session_queue(&client_id))
                .is_some();
        if c.clean_start {
            let old = std::mem::replace(
                &mut entry.data,
                Arc::new(Mutex::new(SessionData::default())),
            );
            state.release_session(&old.lock().unwrap_or_else(PoisonError::into_inner));
        }
        (Arc::clone(&entry.data), present, wait_gone)
    };
    if let Some(gone) = wait_gone {
        tracing::info!(
            client_id = &*client_id,
            "session taken over from an earlier connection"
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), state.wait_gone(&gone)).await;
    }
    let core = state.router.core().clone();
    let queue = session_queue(&client_id);
    if c.clean_start {
        // A clean start discards the previous session's queue (its shared and queue
        // subscriptions were per-session consumers, gone with the old connection).
        core.delete_queue(&queue);
        super::persist::forget_session(state, &client_id);
    }
    let persistent = c.session_expiry > 0;
    if persistent {
        // Online now: the stored session no longer carries an expiry deadline.
        let d = data.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = super::persist::save_session(
            state,
            &client_id,
            principal.name(),
            &d,
            c.session_expiry,
            None,
        );
    }
    // The session queue is attached now when the session outlives this connection, and
    // also when an earlier session is resumed: a client that resumes without a Session
    // Expiry Interval (MQTT 5: 0, the session ends with this connection) still gets what
    // was queued and what its subscriptions bring while it is connected.
    let attach_now = persistent || session_present;
    let opts = session_queue_options(state, persistent);
    let receive_max = c.receive_max.clamp(1, state.settings.max_inflight.max(1));
    let notify = Arc::new(Notify::new());
    let attach = |name: &str, opts: Option<QueueOptions>| -> Result<Consumer, String> {
        core.declare_queue(name, opts).map_err(|e| e.to_string())?;
        core.consume(
            name,
            ConsumeOptions::manual(usize::from(receive_max)).with_notify(Arc::clone(&notify)),
        )
        .map_err(|e| e.to_string())
    };
    // A clean session gets its queue at its first subscription (a publish-only client,
    // the common IoT case, then costs no queue at all); a persistent one needs it now.
    let mut consumers = Vec::new();
    if attach_now {
        match attach(&queue, Some(opts.clone())) {
            Ok(c) => consumers.push((Source::Session, c)),
            Err(e) => {
                tracing::error!(client_id = &*client_id, error = %e, "cannot attach the session queue");
                let _ = t.send(connack(rc::UNSPECIFIED, Some(e))).await;
                return None;
            }
        }
    }
    // Resume shared and queue subscriptions of a persistent session.
    let shared: Vec<String> = data
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .subs
        .values()
        .filter_map(|s| s.shared_queue.clone())
        .collect();
    for q in shared {
        match attach(&q, None) {
            Ok(c) => consumers.push((Source::Shared(q), c)),
            Err(e) => {
                tracing::warn!(client_id = &*client_id, queue = %q, error = %e, "cannot resume a shared subscription")
            }
        }
    }
    let handoff = Arc::new(Handoff::default());
    state
        .sessions()
        .entry(client_id.clone())
        .or_default()
        .holder = Some(Holder {
        conn,
        notify: Arc::clone(&notify),
        handoff: Arc::clone(&handoff),
    });
    let ack = Out::ConnAck {
        session_present,
        code: rc::SUCCESS,
        assigned_client_id: assigned.filter(|_| v5),
        // Announced to every 5.0 client (what it must use), not only when lowered.
        server_keep_alive: Some(keep_alive),
        receive_max: state.settings.max_inflight,
        max_packet_size: Some(state.settings.max_packet_size),
        session_expiry: None,
        reason: None,
    };
    if t.send(ack).await.is_err() {
        handoff.set_gone(state);
        return None;
    }
    if let Some(max) = c.max_packet_size {
        t.set_max_outbound(max);
    }
    tracing::debug!(client_id = &*client_id, version = ?c.version, session_present, persistent, "connected");
    let mut s = Session {
        t,
        state: Arc::clone(state),
        conn,
        version: c.version,
        client_id,
        principal,
        data,
        persistent,
        consumers,
        notify,
        inflight: BTreeMap::new(),
        next_pid: 1,
        client_receive_max: receive_max,
        client_max_packet: c.max_packet_size,
        aliases: BTreeMap::new(),
        out_aliases: if v5 {
            alias::OutAliases::new(c.topic_alias_max)
        } else {
            None
        },
        keep_alive_ms: u32::from(keep_alive) * 1500,
        last_recv: Instant::now(),
        last_active: Instant::now(),
        timer: None,
        handoff,
        permit,
        will: c.will.map(Box::new),
        session_expiry: c.session_expiry,
        confirmations: Confirmations::default(),
        unflushed: 0,
    };
    // Finish QoS 2 deliveries the previous connection left half done.
    let rel: Vec<u16> = s.data().pending_rel.iter().copied().collect();
    for pid in rel {
        if s.t
            .feed(Out::PubRel {
                packet_id: pid,
                code: 0,
            })
            .await
            .is_err()
        {
            return None;
        }
    }
    if s.t.flush().await.is_err() {
        return None;
    }
    Some(s)
}

pub mod alias;
mod outbound;
pub use outbound::oversize_dropped;
pub mod park;
mod subscribe;

impl<T> Session<T> {
    /// The same session on another transport (parking and reviving it), and the one
    /// it had.
    fn swap_transport<U>(self, t: U) -> (T, Session<U>) {
        let s = Session {
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
            out_aliases: self.out_aliases,
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
    fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive_ms > 0).then(|| Duration::from_millis(u64::from(self.keep_alive_ms)))
    }
}

impl<T: Transport> Session<T> {
    fn data(&self) -> std::sync::MutexGuard<'_, SessionData> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn send(&mut self, o: Out) -> Result<(), End> {
        self.t.feed(o).await.map_err(|e| End {
            code: None,
            reason: format!("write failed: {e}"),
            will: true,
        })
    }

    /// Asks for what was fed to be written. The write happens when the serve loop has
    /// nothing else ready, so a burst of packets (acknowledgements, deliveries) goes out
    /// in one system call instead of one each; at the latest after `FLUSH_EVERY` asks.
    async fn flush(&mut self) -> Result<(), End> {
        self.unflushed += 1;
        if self.unflushed >= FLUSH_EVERY {
            return self.flush_now().await;
        }
        Ok(())
    }

    async fn flush_now(&mut self) -> Result<(), End> {
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
        self.last_active = Instant::now();
        if let Some(at) = self.next_deadline() {
            self.timer = Some(Box::pin(sleep_until(at)));
        }
        loop {
            // Told to leave (takeover or shutdown) through the notifier: checked on every
            // turn, since a wake-up may have been taken by the flow-gate wait in `publish`.
            match self.handoff.leave() {
                None => {}
                Some(Leave::Shutdown) => {
                    return Stop::End(end(rc::SERVER_SHUTTING_DOWN, "server shutting down"));
                }
                Some(Leave::TakenOver) => {
                    return Stop::End(end(
                        rc::SESSION_TAKEN_OVER,
                        "session taken over by a new connection",
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
                // Boxed: the handlers' futures are large and this loop's state is what an
                // idle connection's task carries. One allocation per event, as before.
                event => {
                    self.last_active = Instant::now();
                    Box::pin(self.on_event(event)).await
                }
            };
            if let Err(e) = r {
                return Stop::End(e);
            }
        }
    }

    /// Does what an event from [`Session::next_event`] asks.
    async fn on_event(&mut self, event: Event) -> Result<(), End> {
        match event {
            Event::End(e) => Err(e),
            Event::Timer => self.timer_check().map(|_| ()),
            Event::Confirmed(u, r) => self.confirmed(u, r).await,
            Event::Deliver => self.deliver().await,
            Event::Flush => self.flush_now().await,
            Event::Packet(p) => self.handle(p).await,
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
                Some(Err(CodecError::Io(e))) => Event::End(End { code: None, reason: format!("read error: {e}"), will: true }),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "malformed packet");
                    Event::End(end(e.reason_code(), e.to_string()))
                }
                Some(Ok(p)) => {
                    self.last_recv = Instant::now();
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
            && now >= self.last_recv + k
        {
            return Err(end(rc::KEEP_ALIVE_TIMEOUT, "keep-alive timeout"));
        }
        if let Some(after) = self.park_after()
            && now >= self.last_active + after
        {
            // Parked, it waits for its socket, its notifier and its keep-alive deadline
            // only: nothing may be owed to the client or waiting for the store.
            if self.confirmations.is_empty() && self.unflushed == 0 && self.t.park_fd().is_some() {
                return Ok(true);
            }
            self.last_active = now;
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
        let ka = self.keep_alive().map(|k| self.last_recv + k);
        let park = self.park_after().map(|p| self.last_active + p);
        match (ka, park) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn finish(mut self, ended: End) {
        tracing::info!(client_id = %self.client_id, reason = %ended.reason, "disconnected");
        if let (Some(code), Version::V5) = (ended.code, self.version) {
            let _ = self
                .t
                .send(Out::Disconnect {
                    code,
                    reason: Some(ended.reason.clone()),
                })
                .await;
        }
        let _ = self.t.close().await;
        // Give the core back what the client did not acknowledge.
        self.consumers.clear();
        let taken_over = ended.code == Some(rc::SESSION_TAKEN_OVER);
        // MQTT 5 §3.1.2.8: a new connection to the session before the will delay has
        // passed means no will; with no delay the will goes out at once.
        let will = match self.will.take() {
            Some(w) if ended.will && !(taken_over && w.delay > 0) => Some(w),
            _ => None,
        };
        let state = Arc::clone(&self.state);
        let client_id = self.client_id.clone();
        let queue = session_queue(&self.client_id);
        let expiry = self.session_expiry;
        let pending = CancellationToken::new();
        {
            let mut sessions = state.sessions();
            if let Some(entry) = sessions.get_mut(&client_id)
                && entry.holder.as_ref().is_some_and(|h| h.conn == self.conn)
            {
                entry.holder = None;
                if expiry == 0 {
                    if let Some(e) = sessions.remove(&client_id) {
                        state.release_session(
                            &e.data.lock().unwrap_or_else(PoisonError::into_inner),
                        );
                    }
                    // A session that was persistent and now ends with expiry 0 goes too.
                    state.router.core().delete_queue(&queue);
                    super::persist::forget_session(&state, &client_id);
                } else {
                    entry.pending = Some(pending.clone());
                    let d = entry.data.lock().unwrap_or_else(PoisonError::into_inner);
                    let _ = super::persist::save_session(
                        &state,
                        &client_id,
                        self.principal.name(),
                        &d,
                        expiry,
                        Some(std::time::SystemTime::now()),
                    );
                }
            }
        }
        self.handoff.set_gone(&state);
        if let Some(w) = will {
            let delay = Duration::from_secs(u64::from(w.delay.min(expiry)));
            let st = Arc::clone(&state);
            let p = pending.clone();
            let principal = self.principal.clone();
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::select! {
                        _ = p.cancelled() => {
                            tracing::debug!("delayed will cancelled: the client came back");
                            return;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                publish_will(&st, &principal, w.publish).await;
            });
        }
        if expiry != 0 && expiry != u32::MAX {
            spawn_expiry(
                state,
                client_id,
                queue,
                pending,
                Duration::from_secs(u64::from(expiry)),
            );
        }
    }

    // ---- inbound ---------------------------------------------------------------------

    async fn handle(&mut self, p: In) -> Result<(), End> {
        match p {
            In::Publish(p) => self.on_publish(*p).await,
            In::PubAck(pid) => {
                self.settle(pid);
                self.deliver().await
            }
            In::PubRec(pid) => {
                // The client has the message: done with the core; finish the handshake.
                let durable = self.settle(pid);
                self.data().pending_rel.insert(pid);
                // Once it has the PUBREL the client forgets the packet id, so it could
                // not tell the message from a new one if it came back: PUBREL goes out
                // once the acknowledgement is durable (one group commit, shared).
                let confirmation = if durable {
                    self.state.router.core().settlements_durable()
                } else {
                    crate::core::Confirmation::default()
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
                self.data().pending_rel.remove(&pid);
                Ok(())
            }
            In::PubRel(pid) => {
                let known = self.data().incoming_qos2.remove(&pid);
                let code = if known {
                    rc::SUCCESS
                } else {
                    rc::PACKET_ID_NOT_FOUND
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
            } => self.on_subscribe(packet_id, subscription_id, filters).await,
            In::Unsubscribe { packet_id, filters } => self.on_unsubscribe(packet_id, filters).await,
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
                            rc::PROTOCOL_ERROR,
                            "session expiry set on DISCONNECT after 0 on CONNECT",
                        ));
                    }
                    self.session_expiry = e;
                }
                Err(End {
                    code: None,
                    reason: "client disconnected".into(),
                    will: reason == rc::DISCONNECT_WITH_WILL,
                })
            }
            In::Connect(_) => Err(end(rc::PROTOCOL_ERROR, "second CONNECT")),
            In::Unexpected(what) => Err(end(
                rc::PROTOCOL_ERROR,
                format!("{what} is a server packet"),
            )),
        }
    }

    /// Acknowledges the delivery sent as `pid`. True when that may have written to the
    /// store (its queue is durable).
    fn settle(&mut self, pid: u16) -> bool {
        self.data().sent_pids.retain(|_, p| *p != pid);
        if let Some(f) = self.inflight.remove(&pid)
            && let Some((_, c)) = self
                .consumers
                .iter()
                .find(|(_, c)| c.queue_name() == &*f.queue)
        {
            return c.ack(f.tag) && c.is_durable();
        }
        false
    }

    /// Sends the PUBREL of an outbound QoS 2 delivery the client has received.
    async fn release(&mut self, pid: u16) -> Result<(), End> {
        self.send(Out::PubRel {
            packet_id: pid,
            code: 0,
        })
        .await?;
        self.flush().await
    }

    async fn on_publish(&mut self, mut p: Publish) -> Result<(), End> {
        // Topic aliases (5.0).
        if let Some(alias) = p.props.topic_alias.take() {
            if alias == 0 || alias > self.state.settings.topic_alias_max {
                return Err(end(
                    rc::TOPIC_ALIAS_INVALID,
                    format!("topic alias {alias} out of range"),
                ));
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Err(end(
                            rc::PROTOCOL_ERROR,
                            format!("unknown topic alias {alias}"),
                        ));
                    }
                }
            } else {
                self.aliases.insert(alias, p.topic.clone());
            }
        }
        if let Err(e) = mqtt_names::validate_topic(&p.topic) {
            return Err(end(rc::TOPIC_NAME_INVALID, e));
        }
        let pid = p.packet_id.unwrap_or(0);
        if p.qos == 2 && self.data().incoming_qos2.contains(&pid) {
            // A resent QoS 2 PUBLISH we already have: acknowledge again, publish nothing.
            self.send(Out::PubRec {
                packet_id: pid,
                code: rc::SUCCESS,
            })
            .await?;
            return self.flush().await;
        }
        if p.qos == 2
            && self.data().incoming_qos2.len() >= usize::from(self.state.settings.max_inflight)
        {
            return Err(end(
                rc::RECEIVE_MAX_EXCEEDED,
                "too many QoS 2 messages in flight",
            ));
        }
        let dest = publish_destination(&p.topic);
        // Replies to a STOMP temporary queue are allowed to whoever was handed its
        // address (`can_publish` says so); other owned queues only to their owner.
        let code = if !self.principal.can_publish(&dest) {
            crate::rate_warn!(PUBLISH_DENIED, topic = %p.topic, "publish refused by permissions");
            rc::NOT_AUTHORIZED
        } else {
            let message =
                publish_to_message(&p, Origin::shared("mqtt", Arc::clone(&self.client_id)));
            // A retained publish the retained store has no room for is refused whole
            // (not delivered either): 0x97 in MQTT 5; a 3.1.1 connection is closed.
            let over = match (&dest, p.retain) {
                (Destination::Topic(t), true) => self.state.retained_fits(t, &message).err(),
                _ => None,
            };
            let retained = p.retain.then(|| Arc::new(message.clone()));
            if let Some(full) = over {
                crate::rate_warn!(RETAINED_FULL, topic = %p.topic, limit = ?full, "retained publish refused: the retained store is at its limit (mqtt.max_retained / mqtt.max_retained_bytes)");
                return self.acknowledge(pid, p.qos, rc::QUOTA_EXCEEDED).await;
            }
            match self.publish(dest.clone(), message).await {
                Ok((n, mut confirmation)) => {
                    if let (Some(m), Destination::Topic(t)) = (retained, &dest) {
                        match self.state.retain(t, m) {
                            Err(full) => {
                                crate::rate_warn!(RETAINED_FULL, topic = %p.topic, limit = ?full, "retained store full: message delivered but not retained")
                            }
                            Ok(Some(w)) if p.qos > 0 => confirmation.push(w),
                            Ok(_) => {}
                        }
                    }
                    if p.qos > 0 && self.confirmations.must_wait(&confirmation) {
                        if p.qos == 2 {
                            // Known from now on: a resent PUBLISH is not published twice.
                            self.data().incoming_qos2.insert(pid);
                        }
                        let answer = Unconfirmed {
                            packet_id: pid,
                            qos: p.qos,
                            reached: n,
                            release: false,
                        };
                        self.confirmations.push(answer, confirmation);
                        return Ok(());
                    }
                    if n == 0 {
                        rc::NO_MATCHING_SUBSCRIBERS
                    } else {
                        rc::SUCCESS
                    }
                }
                Err(code) => code,
            }
        };
        self.acknowledge(pid, p.qos, code).await
    }

    /// A QoS 1/2 PUBLISH's message is durable (or could not be made so): acknowledge.
    async fn confirmed(
        &mut self,
        u: Unconfirmed,
        r: Result<(), crate::core::PublishError>,
    ) -> Result<(), End> {
        if u.release {
            if let Err(e) = r {
                // Withholding it would not make the acknowledgement durable: the client
                // has the message either way. After a restart it may come back (DUP).
                tracing::warn!(error = %e, "acknowledgement of a QoS 2 delivery not stored");
            }
            return self.release(u.packet_id).await;
        }
        let code = match r {
            Ok(()) if u.reached == 0 => rc::NO_MATCHING_SUBSCRIBERS,
            Ok(()) => rc::SUCCESS,
            Err(e) => {
                crate::rate_warn!(PUBLISH_REFUSED, error = %e, "publish refused");
                if u.qos == 2 {
                    self.data().incoming_qos2.remove(&u.packet_id);
                }
                rc::UNSPECIFIED
            }
        };
        self.acknowledge(u.packet_id, u.qos, code).await
    }

    /// Sends a PUBLISH's acknowledgement (none for QoS 0), or ends a 3.1.1 connection
    /// that cannot be told of a refusal.
    async fn acknowledge(&mut self, pid: u16, qos: u8, code: u8) -> Result<(), End> {
        match (qos, self.version) {
            (0, _) => Ok(()),
            // 3.1.1 cannot refuse a message: dropping the connection makes the client
            // resend it later rather than believe it delivered.
            // A message a 3.1.1 client may not publish is acknowledged and dropped (as
            // Mosquitto does; logged above): closing would only make the client resend it.
            (1, Version::V3) if code == rc::NOT_AUTHORIZED => {
                self.send(Out::PubAck {
                    packet_id: pid,
                    code,
                })
                .await?;
                self.flush().await
            }
            (_, Version::V3) if code >= 0x80 && code != rc::NOT_AUTHORIZED => Err(End {
                code: None,
                reason: "publish refused".into(),
                will: true,
            }),
            (1, _) => {
                self.send(Out::PubAck {
                    packet_id: pid,
                    code,
                })
                .await?;
                self.flush().await
            }
            _ => {
                if code < 0x80 {
                    self.data().incoming_qos2.insert(pid);
                }
                self.send(Out::PubRec {
                    packet_id: pid,
                    code,
                })
                .await?;
                self.flush().await
            }
        }
    }

    /// Publishes through the router, delivering meanwhile; maps refusals to reason codes.
    /// Returns what the acknowledgement must wait for.
    async fn publish(
        &mut self,
        dest: Destination,
        m: Message,
    ) -> Result<(usize, crate::core::Confirmation), u8> {
        let router = self.state.router.clone();
        let fut = router.publish_unconfirmed(dest, m);
        tokio::pin!(fut);
        let notify = Arc::clone(&self.notify);
        loop {
            tokio::select! {
                biased;
                r = &mut fut => {
                    return r.map_err(|e| {
                        crate::rate_warn!(PUBLISH_REFUSED, error = %e, "publish refused");
                        match e {
                            crate::router::RouterError::Publish(crate::core::PublishError::Full(_)) => rc::QUOTA_EXCEEDED,
                            _ => rc::UNSPECIFIED,
                        }
                    });
                }
                _ = notify.notified() => {
                    if self.deliver().await.is_err() {
                        return Err(rc::UNSPECIFIED);
                    }
                }
                // Waiting at the flow gate: what is owed to the client goes out meanwhile.
                _ = std::future::ready(()), if self.unflushed > 0 => {
                    if self.flush_now().await.is_err() {
                        return Err(rc::UNSPECIFIED);
                    }
                }
            }
        }
    }
}

/// Ends an offline session after `after` unless a client takes it first (`pending`
/// cancelled).
pub(in crate::listener::mqtt) fn spawn_expiry(
    state: Arc<MqttState>,
    client_id: Arc<str>,
    queue: String,
    pending: CancellationToken,
    after: Duration,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = pending.cancelled() => {}
            _ = tokio::time::sleep(after) => {
                let mut sessions = state.sessions();
                if sessions.get(&*client_id).is_some_and(|e| e.holder.is_none()) {
                    let gone = sessions.remove(&*client_id);
                    drop(sessions);
                    if let Some(e) = gone {
                        state.release_session(&e.data.lock().unwrap_or_else(PoisonError::into_inner));
                    }
                    state.router.core().delete_queue(&queue);
                    super::persist::forget_session(&state, &client_id);
                    tracing::info!(client_id = &*client_id, "session expired");
                }
            }
        }
    });
}

async fn publish_will(state: &Arc<MqttState>, principal: &Principal, w: Publish) {
    let dest = publish_destination(&w.topic);
    if !principal.can_publish(&dest) {
        return;
    }
    let m = publish_to_message(&w, Origin::new("mqtt", principal.name()));
    let retained = w.retain.then(|| Arc::new(m.clone()));
    match state.router.publish(dest.clone(), m).await {
        Ok(n) => {
            tracing::info!(topic = %w.topic, subscribers = n, "will published");
            if let (Some(m), Destination::Topic(t)) = (retained, &dest) {
                let _ = state.retain(t, m);
            }
        }
        Err(e) => tracing::warn!(topic = %w.topic, error = %e, "will could not be published"),
    }
}

/// Publishes refused, counted and logged at most once a second (see [`crate::ratelog`]).
static PUBLISH_DENIED: crate::ratelog::Cause = crate::ratelog::Cause::new("mqtt.publish_denied");
static PUBLISH_REFUSED: crate::ratelog::Cause = crate::ratelog::Cause::new("mqtt.publish_refused");
