//! One connected session of an AMQP link: the connection's events (blocked, unblocked,
//! lost), the routes' topology, the outbound publisher and one consumer per source the
//! route table names — kept in step with the table as it changes.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use lapin::{Connection, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::link::{Connections, LinkCtx};
use super::{inbound, outbound, topology};
use crate::link::LinkState;
use crate::routes::AmqpSourceKey;

/// How often a session checks that its connection is still alive.
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(1);

/// One connected session; returns why it ended.
pub(super) async fn session(
    ctx: &Arc<LinkCtx>,
    conns: &Connections,
    routes_changed: &mut watch::Receiver<u64>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> String {
    let session_cancel = cancel.child_token();
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::channel::<String>(8);

    for conn in [&conns.consume, &conns.publish] {
        watch_events(ctx, conn, &fail_tx, &session_cancel, tracker);
    }

    let conn = &conns.consume;
    topology::declare_all(ctx, conn).await;
    tracker.spawn(
        outbound::run(
            Arc::clone(ctx),
            Arc::clone(&conns.publish),
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

    // lapin can report a dead connection before it marks it so (the error event then
    // looks like a channel's, and no event follows): the state is looked at again every
    // second, so a reset connection ends the session even then. Seen in a full test run
    // (2026-12-05): a link still "connected" 25 s after RabbitMQ reset its connection.
    let mut watchdog = tokio::time::interval(WATCHDOG);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        tokio::select! {
            _ = cancel.cancelled() => break "shutdown".to_owned(),
            Some(r) = fail_rx.recv() => break r,
            _ = watchdog.tick() => {
                if !conns.connected() {
                    break "connection lost".to_owned();
                }
            }
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

/// Follows one connection's events: blocked / unblocked for status; an error on a dead
/// connection ends the session through `fail`.
fn watch_events(
    ctx: &Arc<LinkCtx>,
    conn: &Arc<Connection>,
    fail: &tokio::sync::mpsc::Sender<String>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) {
    let mut events = conn.events_listener();
    let status = Arc::clone(&ctx.status);
    let conn = Arc::clone(conn);
    let fail = fail.clone();
    let stop = stop.clone();
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
                        // RabbitMQ closed); only a dead connection ends the session. An
                        // I/O error is one even while lapin still calls the connection
                        // connected (it marks it later, or, seen in a full test run with
                        // RabbitMQ restarting, not within 25 s).
                        if conn.status().connected() && !e.is_io_error() {
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
