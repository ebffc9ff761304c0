//! The AMQP 0-9-1 link (RabbitMQ, via `lapin`).
//!
//! One supervisor task per link: connect, declare the routes' topology, run the
//! inbound consumers and the outbound publisher, and when anything fails at connection
//! level, tear the session down and reconnect with capped, jittered backoff. We do not
//! use lapin's own auto-recovery: one loop that rebuilds everything from the current
//! route table is easier to reason about, and it picks up route changes for free.
//!
//! Delivery guarantees (at least once both ways):
//! - inbound: `basic.ack` to RabbitMQ only after the core accepted the message; a
//!   message the route cannot translate is `basic.reject`ed without requeue (RabbitMQ
//!   dead-letters it where the queue has a dead-letter exchange);
//! - outbound: the core's link queue is consumed with manual acks; a message is acked
//!   in the core only after RabbitMQ's publisher confirm. Unconfirmed messages go back
//!   to the core queue when the connection drops and are published again (counted as
//!   `republished`).

pub mod convert;
mod inbound;
mod outbound;
pub mod settings;
mod topology;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use settings::{AmqpLinkSettings, RawAmqpLink};

use super::{Backoff, LinkState, LinkStatus, Links};
use crate::router::Router;
use crate::routes::AmqpSourceKey;

/// Everything a link's tasks share.
pub(crate) struct LinkCtx {
    pub settings: AmqpLinkSettings,
    pub router: Router,
    pub status: Arc<LinkStatus>,
}

/// Starts a link's supervisor. `routes_changed` fires on every route table swap.
pub fn spawn(
    settings: AmqpLinkSettings,
    router: Router,
    routes_changed: watch::Receiver<u64>,
    links: &Links,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let status = Arc::new(LinkStatus::new(
        &settings.name,
        "amqp",
        settings.shown_uri(),
    ));
    links.insert(Arc::clone(&status));
    super::declare_link_queues(
        router.core(),
        &settings.name,
        settings.max_pending,
        &settings.dead_letter,
    );
    let span = tracing::info_span!("amqp_link", link = %settings.name);
    let ctx = Arc::new(LinkCtx {
        settings,
        router,
        status,
    });
    let t = tracker.clone();
    tracker.spawn(supervise(ctx, routes_changed, cancel, t).instrument(span));
}

async fn supervise(
    ctx: Arc<LinkCtx>,
    mut routes_changed: watch::Receiver<u64>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let s = &ctx.settings;
    let mut backoff = Backoff::new(s.reconnect_initial, s.reconnect_max);
    let mut connected_before = false;
    loop {
        ctx.status.set_state(LinkState::Connecting);
        let attempt = tokio::select! {
            _ = cancel.cancelled() => break,
            c = connect(s) => c,
        };
        match attempt {
            Ok(conn) => {
                let conn = Arc::new(conn);
                backoff.reset();
                if connected_before {
                    LinkStatus::bump(&ctx.status.counters.reconnects);
                }
                connected_before = true;
                ctx.status.set_state(LinkState::Connected);
                tracing::info!(peer = %s.shown_uri(), "AMQP link connected");
                let reason = session(&ctx, &conn, &mut routes_changed, &cancel, &tracker).await;
                if cancel.is_cancelled() {
                    let _ = conn.close(200, "switchboard shutting down".into()).await;
                    break;
                }
                let _ = conn.close(320, "switchboard reconnecting".into()).await;
                tracing::warn!(reason = %reason, "AMQP link lost; reconnecting");
                ctx.status.set_error(reason);
            }
            Err(e) => {
                let e = format!("connect failed: {e}");
                tracing::warn!(peer = %s.shown_uri(), error = %e, "AMQP link cannot connect");
                ctx.status.set_error(e);
            }
        }
        if !super::retry_pause(&ctx.status, &mut backoff, &cancel).await {
            break;
        }
    }
    ctx.status.set_state(LinkState::Stopped);
    tracing::info!("AMQP link stopped");
}

async fn connect(s: &AmqpLinkSettings) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("switchboard link {}", s.name).into());
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: s.ca_pem.clone(),
    };
    Connection::connect_uri_with_config(
        s.uri.clone(),
        props,
        tls,
        lapin::runtime::default_runtime()?,
    )
    .await
}

/// One connected session; returns why it ended.
async fn session(
    ctx: &Arc<LinkCtx>,
    conn: &Arc<Connection>,
    routes_changed: &mut watch::Receiver<u64>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> String {
    let session_cancel = cancel.child_token();
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::channel::<String>(8);

    // Connection events: blocked / unblocked for status, errors end the session.
    let mut events = conn.events_listener();
    {
        let status = Arc::clone(&ctx.status);
        let conn = Arc::clone(conn);
        let fail = fail_tx.clone();
        let stop = session_cancel.clone();
        tracker.spawn(
            async move {
                loop {
                    let ev = tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = events.next() => ev,
                    };
                    match ev {
                        Some(Event::ConnectionBlocked(reason)) => {
                            tracing::warn!(%reason, "RabbitMQ blocked the connection: publishing paused, messages wait in the link queue");
                            status.set_state(LinkState::Blocked);
                        }
                        Some(Event::ConnectionUnblocked) => {
                            tracing::info!("RabbitMQ unblocked the connection");
                            status.set_state(LinkState::Connected);
                        }
                        Some(Event::Error(e)) => {
                            // lapin also reports channel-level trouble here (a channel
                            // RabbitMQ closed); only a dead connection ends the session.
                            if conn.status().connected() {
                                tracing::debug!(error = %e, "AMQP error event on a live connection");
                                continue;
                            }
                            let _ = fail.send(format!("connection error: {e}")).await;
                            return;
                        }
                        Some(_) => {}
                        None => {
                            let _ = fail.send("connection closed".into()).await;
                            return;
                        }
                    }
                }
            }
            .in_current_span(),
        );
    }

    topology::declare_all(ctx, conn).await;
    tracker.spawn(
        outbound::run(
            Arc::clone(ctx),
            Arc::clone(conn),
            session_cancel.clone(),
            fail_tx.clone(),
        )
        .in_current_span(),
    );
    let mut consumers: HashMap<AmqpSourceKey, CancellationToken> = HashMap::new();
    reconcile(
        ctx,
        conn,
        &mut consumers,
        &session_cancel,
        &fail_tx,
        tracker,
    );

    let reason = loop {
        tokio::select! {
            _ = cancel.cancelled() => break "shutdown".to_owned(),
            Some(r) = fail_rx.recv() => break r,
            changed = routes_changed.changed() => {
                if changed.is_err() {
                    continue;
                }
                tracing::info!("routes changed: re-declaring topology and consumers");
                topology::declare_all(ctx, conn).await;
                reconcile(ctx, conn, &mut consumers, &session_cancel, &fail_tx, tracker);
            }
        }
    };
    session_cancel.cancel();
    reason
}

/// Starts consumers for sources the table now has, stops those it no longer has.
fn reconcile(
    ctx: &Arc<LinkCtx>,
    conn: &Arc<Connection>,
    consumers: &mut HashMap<AmqpSourceKey, CancellationToken>,
    session_cancel: &CancellationToken,
    fail: &tokio::sync::mpsc::Sender<String>,
    tracker: &TaskTracker,
) {
    let wanted = ctx.router.table().amqp_sources(&ctx.settings.name);
    consumers.retain(|key, stop| {
        let keep = wanted.contains(key);
        if !keep {
            tracing::info!(source = %key, "no route consumes this any more: stopping its consumer");
            stop.cancel();
        }
        keep
    });
    for key in wanted {
        if consumers.contains_key(&key) {
            continue;
        }
        let stop = session_cancel.child_token();
        consumers.insert(key.clone(), stop.clone());
        let span = tracing::info_span!("amqp_consumer", source = %key);
        tracker.spawn(
            inbound::run(Arc::clone(ctx), Arc::clone(conn), key, stop, fail.clone())
                .instrument(span),
        );
    }
}
