//! One STOMP connection: the protocol state machine between a frame transport and the
//! router/core.
//!
//! Flow: wait for CONNECT/STOMP (negotiate version, authenticate, agree heart-beats),
//! then serve frames and push deliveries until DISCONNECT, an error, a heart-beat
//! timeout or shutdown. Every subscription is a core [`Consumer`]; they share one
//! [`Notify`], so the session waits on one thing and drains every consumer when woken.
//! Dropping the session drops the consumers: whatever was delivered and not acknowledged
//! goes back to its queue, marked redelivered.
//!
//! Publishing waits for the core (backpressure) but keeps delivering meanwhile, so a
//! client that publishes into a full queue it also consumes from cannot deadlock itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::codec::{CodecError, Incoming, Limits, Outgoing, StompCodec};
use super::frame::{Command, Frame, Version};
use crate::auth::{Auth, Kind, Principal};
use crate::core::{
    ByteBudget, ConsumeOptions, Consumer, DeadReason, Destination, Held, Message, MessageId,
    Origin, PRIVATE_PREFIX, Pattern, QueueOptions,
};
use crate::listener::confirm::Confirmations;
use crate::listener::stomp::convert::{
    MessageFrameInfo, SendError, delivery_to_frame, error_frame, parse_bool, send_to_message,
};
use crate::ratelog::Cause;
use crate::router::Router;
use crate::translate::stomp_names::{self, StompDest, TEMP_PREFIX, durable_queue};

/// A bidirectional STOMP frame stream (TCP `Framed` or a WebSocket adapter).
pub trait Transport:
    Stream<Item = Result<Incoming, CodecError>> + Sink<Outgoing, Error = CodecError> + Unpin + Send
{
    /// Switches header escaping to the negotiated version.
    fn set_version(&mut self, v: Version);
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for Framed<T, StompCodec> {
    fn set_version(&mut self, v: Version) {
        self.codec_mut().set_version(v);
    }
}

impl Transport for crate::listener::ws::WsFramed<StompCodec> {
    fn set_version(&mut self, v: Version) {
        self.codec.set_version(v);
    }
}

/// STOMP listener settings.
#[derive(Debug, Clone)]
pub struct StompSettings {
    /// What the server offers: (can send every ms, wants to receive every ms).
    pub heart_beat: (u64, u64),
    pub limits: Limits,
    pub max_subscriptions: usize,
    pub max_connections: usize,
    /// Prefetch of a subscription without a `prefetch-count` header.
    pub default_prefetch: usize,
    /// Most frames buffered in one transaction.
    pub max_transaction_frames: usize,
    /// Most open transactions per connection.
    pub max_transactions: usize,
    /// Most bytes buffered in the open transactions of one connection (all together).
    pub max_transaction_bytes: usize,
    /// Most bytes of messages delivered (or assigned) to one connection and not yet
    /// acknowledged, over all its subscriptions; beyond it deliveries are withheld.
    pub max_unacked_bytes: usize,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// How long a connection that sends no heart-beats may stay without traffic either way
    /// before it is closed (`None`: forever). Without it, connections that negotiated
    /// `heart-beat:0,0` hold listener slots for good.
    pub idle_timeout: Option<Duration>,
}

impl Default for StompSettings {
    fn default() -> Self {
        Self {
            heart_beat: (10_000, 10_000),
            limits: Limits::default(),
            max_subscriptions: 1024,
            max_connections: 10_000,
            default_prefetch: 100,
            max_transaction_frames: 10_000,
            max_transactions: 64,
            max_transaction_bytes: 16 * 1024 * 1024,
            max_unacked_bytes: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// What every session of one listener shares.
#[derive(Debug)]
pub struct Shared {
    pub router: Router,
    pub auth: Arc<Auth>,
    pub settings: StompSettings,
    /// The listener is bound to loopback (anonymous policy).
    pub loopback: bool,
}

/// How the client acknowledges a subscription's deliveries: its `ack` header. Not the
/// core's `AckMode` (how the session consumes the queue): a SUBSCRIBE with `ack:auto`
/// still consumes in manual mode, to check read rights first (see `on_subscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckPolicy {
    /// `auto`: a delivery is done once written.
    Auto,
    /// `client`: an ACK or NACK settles every earlier delivery of the subscription too.
    Client,
    /// `client-individual` (1.1+): an ACK or NACK settles its own delivery only.
    ClientIndividual,
}

struct Sub {
    /// The destination as the client wrote it (MESSAGE `destination` for temp queues).
    dest: String,
    consumer: Consumer,
    ack: AckPolicy,
    temp: bool,
    durable: Option<String>,
}

struct Outstanding {
    sub: String,
    tag: u64,
    message_id: MessageId,
}

enum TxOp {
    Send(Destination, Message, String),
    /// An ACK or NACK, with its `requeue` read when it arrived.
    Ack(Frame, bool),
}

/// Counted, rate-limited causes of this listener (see [`crate::ratelog`]).
static UNACKED_BYTES: Cause = Cause::new("stomp.unacked_bytes");
static TRANSACTION_BYTES: Cause = Cause::new("stomp.transaction_bytes");
static REPLY_DROPPED: Cause = Cause::new("stomp.reply_to_gone");
static READ_DENIED: Cause = Cause::new("stomp.delivery_forbidden");

/// The bytes buffered in a connection's open transactions, reported to the core (the
/// memory watermark counts them) and given back when the transactions end, however the
/// connection ends.
struct TxBytes {
    core: crate::core::Core,
    bytes: usize,
}

impl TxBytes {
    fn add(&mut self, n: usize) {
        self.bytes += n;
        Held::add(&self.core.held().transactions, n);
    }

    fn sub(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        Held::sub(&self.core.held().transactions, n);
    }
}

impl Drop for TxBytes {
    fn drop(&mut self) {
        Held::sub(&self.core.held().transactions, self.bytes);
    }
}

/// An open transaction: its frames and their size.
#[derive(Default)]
struct Tx {
    ops: Vec<TxOp>,
    bytes: usize,
}

/// Approximate bytes a buffered frame holds.
fn frame_bytes(f: &Frame) -> usize {
    f.body.len()
        + f.headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum::<usize>()
        + 64
}

/// A fatal protocol error: sent as ERROR, then the connection closes.
#[derive(Debug)]
struct Fatal {
    message: String,
    detail: String,
    /// The `receipt` of the frame that failed, echoed as `receipt-id`.
    receipt: Option<String>,
    /// Extra headers for the ERROR frame.
    headers: Vec<(String, String)>,
}

fn fatal(message: impl Into<String>, detail: impl Into<String>) -> Fatal {
    Fatal {
        message: message.into(),
        detail: detail.into(),
        receipt: None,
        headers: Vec::new(),
    }
}

/// A header the session interprets has a value it cannot read: ERROR `message` naming the
/// header and the value, and one log line. Never a silent default: a client that wrote
/// `requeue:maybe` or `durable:yes` meant something, and guessing loses messages.
fn invalid_header(message: &str, header: &str, value: &str, expected: &str) -> Fatal {
    tracing::warn!(header, %value, "invalid header value");
    fatal(
        message,
        format!("invalid `{header}` header `{value}`: {expected}"),
    )
}

/// A boolean header: `true`/`false` in any case, `default` when absent, ERROR otherwise.
fn bool_header(f: &Frame, name: &str, default: bool) -> Result<bool, Fatal> {
    match f.header(name) {
        None => Ok(default),
        Some(v) => parse_bool(v)
            .ok_or_else(|| invalid_header("invalid header", name, v, "expected true or false")),
    }
}

/// Whether a SUBSCRIBE or UNSUBSCRIBE asks for a durable subscription (`durable` or
/// `persistent`); both headers are read, so a bad value in either is an ERROR.
fn durable_header(f: &Frame) -> Result<bool, Fatal> {
    let durable = bool_header(f, "durable", false)?;
    let persistent = bool_header(f, "persistent", false)?;
    Ok(durable || persistent)
}

/// What becomes of the connection once a frame is handled.
enum AfterFrame {
    Continue,
    /// DISCONNECT: close (its RECEIPT, if asked for, is sent).
    Close,
}

struct Session<T: Transport> {
    t: T,
    shared: Arc<Shared>,
    id: String,
    peer: String,
    version: Version,
    principal: Option<Principal>,
    subs: BTreeMap<String, Sub>,
    notify: Arc<Notify>,
    outstanding: BTreeMap<u64, Outstanding>,
    next_ack: u64,
    txs: HashMap<String, Tx>,
    tx_bytes: TxBytes,
    /// Caps the unacknowledged bytes of every subscription of this connection.
    budget: Arc<ByteBudget>,
    temp: HashMap<String, String>,
    send_every: Option<Duration>,
    recv_within: Option<Duration>,
    last_sent: Instant,
    last_recv: Instant,
    /// Last frame or EOL received, or frame sent (heart-beats sent do not count): what
    /// `idle_timeout` measures.
    last_active: Instant,
    /// Receipts of SENDs whose messages, and of ACKs and NACKs whose settlements, are
    /// not durable yet, in arrival order.
    confirmations: Confirmations<Unconfirmed>,
    /// An ACK or NACK settled a delivery of a durable queue since the last RECEIPT: the
    /// next RECEIPT waits until what it wrote to the store (a removal, a dead-letter
    /// copy) is durable, so a RECEIPT confirms every earlier settlement.
    settled_durable: bool,
}

/// What a SEND whose message, or an ACK/NACK whose settlement, is not durable yet is
/// answered with: its RECEIPT, or the ERROR should the store fail.
struct Unconfirmed {
    receipt: Option<String>,
    /// What the ERROR says when it cannot be made durable.
    refused: &'static str,
    /// The destination (SEND) or the message (ACK/NACK), for the ERROR and the log.
    dest_text: String,
}

/// The ERROR title of a settlement that could not be made durable.
const SETTLE_REFUSED: &str = "acknowledgement not stored";

/// Serves one connection until it ends.
pub async fn run<T: Transport>(
    t: T,
    shared: Arc<Shared>,
    conn_id: u64,
    peer: String,
    cancel: CancellationToken,
) {
    let tx_bytes = TxBytes {
        core: shared.router.core().clone(),
        bytes: 0,
    };
    let budget = ByteBudget::new(shared.settings.max_unacked_bytes, &UNACKED_BYTES);
    let mut s = Session {
        t,
        shared,
        id: format!("sb-{conn_id}"),
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
        last_recv: Instant::now(),
        last_active: Instant::now(),
        confirmations: Confirmations::default(),
        settled_durable: false,
    };
    let result = s.serve(&cancel).await;
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

impl<T: Transport> Session<T> {
    async fn serve(&mut self, cancel: &CancellationToken) -> Result<(), Fatal> {
        let first = tokio::select! {
            _ = cancel.cancelled() => return Err(fatal("server shutting down", "the server is shutting down")),
            r = tokio::time::timeout(self.shared.settings.connect_timeout, next_frame(&mut self.t, &mut self.last_recv, &mut self.last_active)) => match r {
                Err(_) => return Err(fatal("no CONNECT", "no CONNECT frame within the connect timeout")),
                Ok(None) => return Ok(()),
                Ok(Some(f)) => f?,
            },
        };
        self.connect(first).await?;
        loop {
            let hb_send = self.send_every.map(|d| self.last_sent + d);
            let hb_recv = self.recv_within.map(|d| self.last_recv + d * 2);
            // Only connections the heart-beat check does not cover.
            let idle = self
                .shared
                .settings
                .idle_timeout
                .filter(|_| self.recv_within.is_none());
            let idle_at = idle.map(|d| self.last_active + d);
            let notify = Arc::clone(&self.notify);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    return Err(fatal("server shutting down", "the server is shutting down; unacknowledged messages are returned to their queues"));
                }
                // The session keeps reading while receipts wait for the store, so a
                // pipelining client's messages share fsyncs.
                Some((u, r)) = self.confirmations.next(), if !self.confirmations.is_empty() => {
                    self.confirmed(u, r).await?;
                }
                frame = next_frame(&mut self.t, &mut self.last_recv, &mut self.last_active), if !self.confirmations.is_full() => {
                    let Some(frame) = frame else { return Ok(()) };
                    let frame = frame?;
                    if !matches!(frame.command, Command::Send | Command::Ack | Command::Nack) {
                        // Every earlier SEND, ACK and NACK is confirmed before any other
                        // frame is answered, so receipts come back in the order asked.
                        // SENDs, ACKs and NACKs queue their receipts behind the earlier
                        // ones instead (see `answer`).
                        while let Some((u, r)) = self.confirmations.next().await {
                            self.confirmed(u, r).await?;
                        }
                    }
                    let after = self.handle(frame).await?;
                    match after {
                        AfterFrame::Continue => {}
                        AfterFrame::Close => return Ok(()),
                    }
                }
                _ = notify.notified() => self.deliver().await?,
                _ = sleep_opt(hb_send) => {
                    self.write(Outgoing::HeartBeat).await?;
                    self.flush().await?;
                }
                _ = sleep_opt(hb_recv) => {
                    tracing::info!("heart-beat timeout: closing");
                    return Err(fatal("heart-beat timeout", "no frame or heart-beat received within the negotiated window"));
                }
                _ = sleep_opt(idle_at) => {
                    let after = idle.unwrap_or_default();
                    tracing::info!(?after, "idle timeout: closing a connection without heart-beats");
                    return Err(fatal(
                        "idle timeout",
                        format!("nothing received or sent for {after:?} on a connection without heart-beats; negotiate heart-beats (CONNECT heart-beat:CX,CY) to stay connected while idle"),
                    ));
                }
            }
        }
    }

    async fn write(&mut self, o: Outgoing) -> Result<(), Fatal> {
        self.last_sent = Instant::now();
        if matches!(o, Outgoing::Frame(_)) {
            self.last_active = self.last_sent;
        }
        self.t
            .feed(o)
            .await
            .map_err(|e| fatal("write failed", e.to_string()))
    }

    async fn flush(&mut self) -> Result<(), Fatal> {
        self.t
            .flush()
            .await
            .map_err(|e| fatal("write failed", e.to_string()))
    }

    /// A SEND's message, or an ACK/NACK's settlement, is durable (or could not be made so).
    async fn confirmed(
        &mut self,
        u: Unconfirmed,
        r: Result<(), crate::core::PublishError>,
    ) -> Result<(), Fatal> {
        match r {
            Ok(()) => {
                if let Some(r) = u.receipt {
                    let f = Frame::new(Command::Receipt).with_header("receipt-id", r);
                    self.write(Outgoing::Frame(f)).await?;
                    self.flush().await?;
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(what = %u.dest_text, error = %e, "{}", u.refused);
                let mut f = fatal(u.refused, format!("{}: {e}", u.dest_text));
                f.receipt = u.receipt;
                Err(f)
            }
        }
    }

    /// What a RECEIPT must wait for besides its own frame's work: the settlements since
    /// the last RECEIPT, when one of them wrote to the store.
    fn settlements_owed(&mut self) -> crate::core::Confirmation {
        if std::mem::take(&mut self.settled_durable) {
            self.shared.router.core().settlements_durable()
        } else {
            crate::core::Confirmation::default()
        }
    }

    /// Answers a frame handled at once (no pipelining): its RECEIPT, if it asked for
    /// one, once every earlier settlement is durable.
    async fn receipt(&mut self, frame: &Frame) -> Result<(), Fatal> {
        if let Some(r) = frame.header("receipt") {
            let owed = self.settlements_owed();
            if !owed.is_ready() {
                owed.wait().await.map_err(|e| {
                    tracing::warn!(error = %e, "{SETTLE_REFUSED}");
                    fatal(SETTLE_REFUSED, format!("earlier ACK or NACK frames: {e}"))
                })?;
            }
            let f = Frame::new(Command::Receipt).with_header("receipt-id", r);
            self.write(Outgoing::Frame(f)).await?;
            self.flush().await?;
        }
        Ok(())
    }

    // ---- CONNECT ---------------------------------------------------------------------

    async fn connect(&mut self, f: Frame) -> Result<(), Fatal> {
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

    // ---- frames ----------------------------------------------------------------------

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

    fn header<'a>(f: &'a Frame, name: &str) -> Result<&'a str, Fatal> {
        f.header(name).ok_or_else(|| {
            fatal(
                format!("missing {name} header"),
                format!("{} requires a `{name}` header", f.command.as_str()),
            )
        })
    }

    fn principal(&self) -> Result<&Principal, Fatal> {
        self.principal
            .as_ref()
            .ok_or_else(|| fatal("not connected", "not connected"))
    }

    /// Resolves a SEND destination to an internal one.
    async fn send_destination(&mut self, dest: &str) -> Result<Destination, Fatal> {
        match stomp_names::parse(dest, false)
            .map_err(|e| fatal("invalid destination", e.to_string()))?
        {
            StompDest::Queue(n) => Ok(Destination::queue(&n)),
            StompDest::Topic(n) => Ok(Destination::topic(&n)),
            StompDest::TempQueue(n) => Ok(Destination::queue(&self.ensure_temp(&n).await?)),
        }
    }

    async fn on_send(&mut self, f: Frame) -> Result<(), Fatal> {
        let dest_text = Self::header(&f, "destination")?.to_owned();
        let dest = self.send_destination(&dest_text).await?;
        // Replies to a temporary queue are allowed to whoever was handed its address
        // (`can_publish` says so); other owned queues only to their owner.
        if !self.principal()?.can_publish(&dest) {
            tracing::warn!(destination = %dest_text, "publish refused by permissions");
            return Err(fatal(
                "access refused",
                format!("not allowed to send to {dest_text}"),
            ));
        }
        let reply_to = match f.header("reply-to") {
            Some(r) => Some(
                self.send_destination(r)
                    .await
                    .map_err(|e| fatal("invalid reply-to", e.detail))?,
            ),
            None => None,
        };
        let origin = Origin::shared("stomp", self.principal()?.name_shared());
        let message = send_to_message(&f, origin, reply_to).map_err(|e| {
            let SendError::BadHeader { header, value, .. } = &e;
            tracing::warn!(header, %value, "invalid header value");
            fatal("invalid header", e.to_string())
        })?;
        if let Some(tx) = f.header("transaction") {
            let size = message.byte_size();
            self.buffer_tx(tx, size, TxOp::Send(dest, message, dest_text))?;
        } else {
            let mut confirmation = self.publish_unconfirmed(dest, message, &dest_text).await?;
            if f.header("receipt").is_some() {
                confirmation.extend(self.settlements_owed());
            }
            if self.confirmations.must_wait(&confirmation) {
                let answer = Unconfirmed {
                    receipt: f.header("receipt").map(str::to_owned),
                    refused: "message refused",
                    dest_text,
                };
                self.confirmations.push(answer, confirmation);
                return Ok(());
            }
            return self.receipt(&f).await;
        }
        self.answer(&f, crate::core::Confirmation::default(), String::new())
            .await
    }

    /// Answers a SEND, ACK or NACK: handled while earlier receipts may still be waiting,
    /// its RECEIPT goes behind them (in order), once `confirmation` and every earlier
    /// settlement are durable.
    async fn answer(
        &mut self,
        f: &Frame,
        mut confirmation: crate::core::Confirmation,
        what: String,
    ) -> Result<(), Fatal> {
        let Some(receipt) = f.header("receipt") else {
            return Ok(());
        };
        confirmation.extend(self.settlements_owed());
        if self.confirmations.must_wait(&confirmation) {
            let answer = Unconfirmed {
                receipt: Some(receipt.to_owned()),
                refused: SETTLE_REFUSED,
                dest_text: if what.is_empty() {
                    "earlier ACK or NACK frames".into()
                } else {
                    what
                },
            };
            self.confirmations.push(answer, confirmation);
            return Ok(());
        }
        self.receipt(f).await
    }

    /// Publishes and waits until the message is durable (transactions).
    async fn publish(
        &mut self,
        dest: Destination,
        message: Message,
        dest_text: &str,
    ) -> Result<(), Fatal> {
        let confirmation = self.publish_unconfirmed(dest, message, dest_text).await?;
        confirmation.wait().await.map_err(|e| {
            tracing::warn!(destination = %dest_text, error = %e, "publish refused");
            fatal("message refused", format!("{dest_text}: {e}"))
        })
    }

    /// Publishes; returns what the SEND's receipt must wait for.
    async fn publish_unconfirmed(
        &mut self,
        dest: Destination,
        message: Message,
        dest_text: &str,
    ) -> Result<crate::core::Confirmation, Fatal> {
        if let Destination::Queue(n) = &dest
            && n.starts_with(PRIVATE_PREFIX)
            && crate::router::reply_target(&dest).is_none()
            && self.shared.router.core().queue(n).is_none()
        {
            // A reply to a temporary queue whose owner has gone: nobody can receive it.
            crate::rate_warn!(REPLY_DROPPED, destination = %dest_text, message_id = %message.id, "reply to a temporary queue that no longer exists; message dropped");
            return Ok(crate::core::Confirmation::default());
        }
        let router = self.shared.router.clone();
        let fut = router.publish_unconfirmed(dest, message);
        tokio::pin!(fut);
        let notify = Arc::clone(&self.notify);
        loop {
            tokio::select! {
                r = &mut fut => {
                    return r.map(|(_, c)| c).map_err(|e| {
                        tracing::warn!(destination = %dest_text, error = %e, "publish refused");
                        fatal("message refused", format!("{dest_text}: {e}"))
                    });
                }
                // Keep delivering while the core holds us back.
                _ = notify.notified() => self.deliver().await?,
            }
        }
    }

    async fn ensure_temp(&mut self, name: &str) -> Result<String, Fatal> {
        if let Some(q) = self.temp.get(name) {
            return Ok(q.clone());
        }
        let core = self.shared.router.core().clone();
        // 128 random bits: a temporary queue's name cannot be guessed.
        let token = crate::random::hex_token(16).map_err(|e| {
            tracing::error!(error = %e, "no randomness for a temporary queue name");
            fatal(
                "temporary queue unavailable",
                "the server could not create a temporary queue",
            )
        })?;
        let internal = format!("{TEMP_PREFIX}{token}.{name}");
        let opts = QueueOptions {
            durable: false,
            auto_delete: true,
            ..core.config().default_queue.clone()
        };
        core.declare_queue(&internal, Some(opts))
            .map_err(|e| fatal("invalid destination", e.to_string()))?;
        let consumer = core
            .consume(
                &internal,
                ConsumeOptions::auto_ack(self.shared.settings.default_prefetch)
                    .with_notify(Arc::clone(&self.notify))
                    .with_budget(Arc::clone(&self.budget)),
            )
            .map_err(|e| fatal("invalid destination", e.to_string()))?;
        let sub_id = format!("/temp-queue/{name}");
        self.subs.insert(
            sub_id.clone(),
            Sub {
                dest: sub_id,
                consumer,
                ack: AckPolicy::Auto,
                temp: true,
                durable: None,
            },
        );
        self.temp.insert(name.to_owned(), internal.clone());
        Ok(internal)
    }

    async fn on_subscribe(&mut self, f: Frame) -> Result<(), Fatal> {
        let dest_text = Self::header(&f, "destination")?.to_owned();
        let id = match f.header("id") {
            Some(id) => id.to_owned(),
            None if self.version == Version::V1_0 => dest_text.clone(),
            None => {
                return Err(fatal(
                    "missing id header",
                    "SUBSCRIBE requires an `id` header",
                ));
            }
        };
        if self.subs.contains_key(&id) {
            return Err(fatal(
                "duplicate subscription id",
                format!("subscription `{id}` already exists"),
            ));
        }
        if self.subs.values().filter(|s| !s.temp).count() >= self.shared.settings.max_subscriptions
        {
            return Err(fatal(
                "too many subscriptions",
                format!(
                    "at most {} subscriptions per connection",
                    self.shared.settings.max_subscriptions
                ),
            ));
        }
        let ack = match f.header("ack").unwrap_or("auto") {
            "auto" => AckPolicy::Auto,
            "client" => AckPolicy::Client,
            "client-individual" if self.version >= Version::V1_1 => AckPolicy::ClientIndividual,
            other => {
                let expected = if self.version >= Version::V1_1 {
                    "expected auto, client or client-individual"
                } else {
                    "expected auto or client (STOMP 1.0)"
                };
                return Err(invalid_header("invalid ack mode", "ack", other, expected));
            }
        };
        let prefetch = match f.header("prefetch-count") {
            Some(p) => match p.parse::<usize>() {
                Ok(n) if (1..=65_535).contains(&n) => n,
                _ => {
                    return Err(invalid_header(
                        "invalid prefetch-count",
                        "prefetch-count",
                        p,
                        "expected 1 to 65535",
                    ));
                }
            },
            None => self.shared.settings.default_prefetch,
        };
        // Manual in the core even in `auto` mode: each delivery is checked against the
        // user's read rights first ([`Session::deliver`]), and one refused must be
        // dead-lettered, not counted as acknowledged; the allowed ones are acknowledged
        // once written.
        let opts = ConsumeOptions::manual(prefetch)
            .with_notify(Arc::clone(&self.notify))
            .with_budget(Arc::clone(&self.budget));
        let wants_durable = durable_header(&f)?;
        let core = self.shared.router.core().clone();
        let principal = self.principal()?.clone();
        let refused = || {
            fatal(
                "access refused",
                format!("not allowed to subscribe to {dest_text}"),
            )
        };
        let parsed = stomp_names::parse(&dest_text, true)
            .map_err(|e| fatal("invalid destination", e.to_string()))?;
        let mut durable = None;
        let consumer = match parsed {
            StompDest::Queue(n) => {
                let p =
                    Pattern::parse(&n).map_err(|e| fatal("invalid destination", e.to_string()))?;
                // Owned queues (sessions', users', the router's) too: Principal checks.
                if !principal.can_subscribe(Kind::Queue, &p) {
                    return Err(refused());
                }
                core.consume(&n, opts)
            }
            StompDest::Topic(p) => {
                let pat =
                    Pattern::parse(&p).map_err(|e| fatal("invalid destination", e.to_string()))?;
                if !principal.can_subscribe(Kind::Topic, &pat) {
                    return Err(refused());
                }
                if wants_durable {
                    let name = durable_queue(
                        principal.name(),
                        f.header("subscription-name").unwrap_or(&id),
                    );
                    durable = Some(name.clone());
                    core.subscribe_durable(&name, &[&p], opts)
                } else {
                    core.subscribe(&[&p], opts)
                }
            }
            StompDest::TempQueue(_) => {
                return Err(fatal(
                    "invalid destination",
                    "temporary queues are subscribed to automatically by using them in reply-to",
                ));
            }
        }
        .map_err(|e| fatal("invalid destination", e.to_string()))?;
        tracing::debug!(id = %id, destination = %dest_text, ?ack, prefetch, "subscribed");
        self.subs.insert(
            id,
            Sub {
                dest: dest_text,
                consumer,
                ack,
                temp: false,
                durable,
            },
        );
        self.receipt(&f).await?;
        self.deliver().await
    }

    async fn on_unsubscribe(&mut self, f: Frame) -> Result<(), Fatal> {
        let id = match f.header("id") {
            Some(id) => id.to_owned(),
            None if self.version == Version::V1_0 => Self::header(&f, "destination")?.to_owned(),
            None => {
                return Err(fatal(
                    "missing id header",
                    "UNSUBSCRIBE requires an `id` header",
                ));
            }
        };
        let delete_durable = durable_header(&f)?;
        let sub = self
            .subs
            .remove(&id)
            .ok_or_else(|| fatal("unknown subscription", format!("no subscription `{id}`")))?;
        self.outstanding.retain(|_, o| o.sub != id);
        let durable = sub.durable.clone();
        drop(sub);
        self.refill_if_starved();
        if let Some(name) = durable
            && delete_durable
        {
            self.shared.router.core().delete_queue(&name);
        }
        self.receipt(&f).await
    }

    /// Finds the delivery an ACK/NACK names, per the version's rules.
    fn find_ack(&self, f: &Frame) -> Result<u64, Fatal> {
        let unknown = |what: &str| {
            fatal(
                "unknown message",
                format!(
                    "{} for {what}: no such unacknowledged message",
                    f.command.as_str()
                ),
            )
        };
        if self.version >= Version::V1_2 {
            let id = Self::header(f, "id")?;
            let token: u64 = id.parse().map_err(|_| unknown(id))?;
            return self
                .outstanding
                .contains_key(&token)
                .then_some(token)
                .ok_or_else(|| unknown(id));
        }
        let mid = Self::header(f, "message-id")?;
        let sub = if self.version == Version::V1_1 {
            Some(Self::header(f, "subscription")?)
        } else {
            f.header("subscription")
        };
        self.outstanding
            .iter()
            .find(|(_, o)| o.message_id.matches(mid) && sub.is_none_or(|s| o.sub == s))
            .map(|(t, _)| *t)
            .ok_or_else(|| unknown(mid))
    }

    async fn on_ack(&mut self, f: Frame) -> Result<(), Fatal> {
        let token = self.find_ack(&f)?;
        // `requeue` means something on NACK only (RabbitMQ's extension; default requeue).
        let requeue = if f.command == Command::Nack {
            bool_header(&f, "requeue", true)?
        } else {
            true
        };
        if let Some(tx) = f.header("transaction") {
            self.buffer_tx(tx, frame_bytes(&f), TxOp::Ack(f.clone(), requeue))?;
            return self
                .answer(&f, crate::core::Confirmation::default(), String::new())
                .await;
        }
        // Named in the ERROR should it not be stored; only a frame with a receipt waits.
        let what = match (f.header("receipt"), self.outstanding.get(&token)) {
            (Some(_), Some(o)) => format!("{} of message {}", f.command.as_str(), o.message_id),
            _ => String::new(),
        };
        self.settle(token, f.command == Command::Ack, requeue);
        // Its RECEIPT waits until the settlement is durable: a message whose ACK was
        // receipted never comes back, even after a crash.
        self.answer(&f, crate::core::Confirmation::default(), what)
            .await
    }

    fn settle(&mut self, token: u64, ack: bool, requeue: bool) {
        let Some(o) = self.outstanding.get(&token) else {
            return;
        };
        let sub_id = o.sub.clone();
        let tag = o.tag;
        let Some(sub) = self.subs.get(&sub_id) else {
            return;
        };
        self.settled_durable |= sub.consumer.is_durable();
        // `client` mode is cumulative: it settles every earlier delivery of the subscription.
        let cumulative = sub.ack == AckPolicy::Client;
        match (ack, cumulative) {
            (true, true) => sub.consumer.ack_through(tag),
            (true, false) => sub.consumer.ack(tag),
            (false, true) => sub.consumer.nack_through(tag, requeue),
            (false, false) => sub.consumer.nack(tag, requeue),
        };
        if cumulative {
            self.outstanding
                .retain(|_, o| o.sub != sub_id || o.tag > tag);
        } else {
            self.outstanding.remove(&token);
        }
        self.refill_if_starved();
    }

    /// Room appeared in the connection's byte budget after a queue withheld deliveries
    /// for lack of it: let every subscription take what now fits (the room may have
    /// come from another subscription's queue).
    fn refill_if_starved(&self) {
        if self.budget.take_starved() {
            for sub in self.subs.values() {
                sub.consumer.refill();
            }
        }
    }

    /// Buffers one frame of transaction `tx`, within the frame and byte limits; over
    /// them, the connection ends with an ERROR (and its buffers are freed).
    fn buffer_tx(&mut self, tx: &str, size: usize, op: TxOp) -> Result<(), Fatal> {
        let settings = &self.shared.settings;
        let t = self.txs.get_mut(tx).ok_or_else(|| {
            fatal(
                "unknown transaction",
                format!("transaction `{tx}` was not begun"),
            )
        })?;
        if t.ops.len() >= settings.max_transaction_frames {
            return Err(fatal(
                "transaction too large",
                format!(
                    "more than {} frames in one transaction",
                    settings.max_transaction_frames
                ),
            ));
        }
        if self.tx_bytes.bytes + size > settings.max_transaction_bytes {
            crate::rate_warn!(
                TRANSACTION_BYTES,
                peer = %self.peer,
                limit = settings.max_transaction_bytes,
                "STOMP transactions over the byte limit: connection closed"
            );
            return Err(fatal(
                "transaction too large",
                format!(
                    "the open transactions of this connection would buffer more than {} bytes (stomp.max_transaction_bytes)",
                    settings.max_transaction_bytes
                ),
            ));
        }
        t.ops.push(op);
        t.bytes += size;
        self.tx_bytes.add(size);
        Ok(())
    }

    async fn on_tx(&mut self, f: Frame) -> Result<(), Fatal> {
        let tx = Self::header(&f, "transaction")?.to_owned();
        match f.command {
            Command::Begin => {
                if self.txs.contains_key(&tx) {
                    return Err(fatal(
                        "duplicate transaction",
                        format!("transaction `{tx}` is already open"),
                    ));
                }
                if self.txs.len() >= self.shared.settings.max_transactions {
                    return Err(fatal("too many transactions", "too many open transactions"));
                }
                self.txs.insert(tx, Tx::default());
            }
            Command::Commit => {
                let Tx { ops, bytes } = self.txs.remove(&tx).ok_or_else(|| {
                    fatal(
                        "unknown transaction",
                        format!("transaction `{tx}` was not begun"),
                    )
                })?;
                self.tx_bytes.sub(bytes);
                for op in ops {
                    match op {
                        TxOp::Send(dest, m, text) => self.publish(dest, m, &text).await?,
                        TxOp::Ack(a, requeue) => {
                            if let Ok(token) = self.find_ack(&a) {
                                self.settle(token, a.command == Command::Ack, requeue);
                            }
                        }
                    }
                }
            }
            _ => {
                let aborted = self.txs.remove(&tx).ok_or_else(|| {
                    fatal(
                        "unknown transaction",
                        format!("transaction `{tx}` was not begun"),
                    )
                })?;
                self.tx_bytes.sub(aborted.bytes);
            }
        }
        self.receipt(&f).await
    }

    // ---- deliveries ------------------------------------------------------------------

    /// Sends what the subscriptions have, a bounded batch per subscription; re-arms the
    /// wake-up when more is waiting so frames from the client are not starved.
    ///
    /// Every delivery is checked against the user's read rights first, as the MQTT
    /// listener does (the rules may have changed since the subscription was made, and a
    /// durable subscription keeps what it collected): one refused is dead-lettered with
    /// reason `forbidden`, never sent and never counted as acknowledged. A connection's
    /// own temporary queue needs no check. `auto` deliveries are acknowledged to the core
    /// once written.
    async fn deliver(&mut self) -> Result<(), Fatal> {
        const BATCH: usize = 256;
        let Some(principal) = self.principal.as_ref() else {
            return Ok(());
        };
        let mut frames = Vec::new();
        let mut more = false;
        let mut closed = Vec::new();
        let mut buf = Vec::new();
        let mut written: Vec<(String, Vec<u64>)> = Vec::new();
        let mut refused = 0usize;
        for (id, sub) in &self.subs {
            match sub.consumer.try_recv_many(BATCH, &mut buf) {
                Ok(n) => more |= n == BATCH,
                Err(_) => closed.push(id.clone()),
            }
            let mut auto_tags = Vec::new();
            for d in buf.drain(..) {
                if !sub.temp && !principal.can_read(&d.destination) {
                    refused += 1;
                    sub.consumer.dead_letter(d.tag, DeadReason::Forbidden);
                    continue;
                }
                if sub.ack == AckPolicy::Auto && !sub.temp {
                    auto_tags.push(d.tag);
                }
                let token = (sub.ack != AckPolicy::Auto).then(|| {
                    let t = self.next_ack;
                    self.next_ack += 1;
                    self.outstanding.insert(
                        t,
                        Outstanding {
                            sub: id.clone(),
                            tag: d.tag,
                            message_id: d.message.id.clone(),
                        },
                    );
                    t
                });
                let token_text = token.map(|t| t.to_string());
                let dest = if sub.temp {
                    sub.dest.clone()
                } else {
                    stomp_names::from_internal(&d.destination)
                };
                let reply_to = d.message.reply_to.as_ref().map(stomp_names::from_internal);
                let frame = delivery_to_frame(
                    &d,
                    MessageFrameInfo {
                        subscription: id,
                        ack: if self.version >= Version::V1_2 {
                            token_text.as_deref()
                        } else {
                            None
                        },
                        destination: &dest,
                        reply_to,
                    },
                );
                frames.push(frame);
            }
            if !auto_tags.is_empty() {
                written.push((id.clone(), auto_tags));
            }
        }
        if refused > 0 {
            crate::rate_warn!(
                READ_DENIED,
                refused,
                "deliveries refused by permissions: dead-lettered (reason `forbidden`)"
            );
        }
        for id in closed {
            tracing::info!(subscription = %id, "queue deleted under subscription");
            self.subs.remove(&id);
        }
        // Auto-acknowledged deliveries taken above released their bytes.
        self.refill_if_starved();
        if frames.is_empty() {
            return Ok(());
        }
        for f in frames {
            self.write(Outgoing::Frame(f)).await?;
        }
        self.flush().await?;
        // Written: `auto` deliveries are done. (Had the write failed, the session would
        // end and they would go back to their queues, marked redelivered.)
        for (id, tags) in written {
            if let Some(sub) = self.subs.get(&id) {
                sub.consumer.ack_many(&tags);
            }
        }
        if more {
            self.notify.notify_one();
        }
        Ok(())
    }
}

/// The next frame, skipping heart-beats; `None` at end of stream. Every frame or
/// heart-beat received sets `last_recv` and `last_active`. (Not a method: the serve loop
/// waits for it and for the session's confirmations at once.)
async fn next_frame<T: Transport>(
    t: &mut T,
    last_recv: &mut Instant,
    last_active: &mut Instant,
) -> Option<Result<Frame, Fatal>> {
    loop {
        let item = t.next().await?;
        *last_recv = Instant::now();
        *last_active = *last_recv;
        match item {
            Ok(Incoming::HeartBeat) => continue,
            Ok(Incoming::Frame(f)) => return Some(Ok(f)),
            Err(CodecError::Io(e)) => {
                tracing::debug!(error = %e, "read error");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "malformed frame");
                return Some(Err(fatal(e.to_string(), format!("malformed frame: {e}"))));
            }
        }
    }
}

/// `CX,CY` of a CONNECT `heart-beat` header.
fn parse_heart_beat(h: &str) -> Option<(u64, u64)> {
    let (a, b) = h.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
