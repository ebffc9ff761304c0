//! Reply addresses across routers: a STOMP temporary queue (or a link's reply queue)
//! lives on the router its client is connected to, but the request carrying its
//! address may be answered by a client of another router.
//!
//! The router holding such a queue subscribes to `<root>.r.<queue>` while the queue
//! exists. A router asked to publish to a reply address it does not hold sends the
//! encoded message there as a NATS request; the holder puts it into the queue and
//! answers `ok` (or why not), which confirms the publisher. No holder (the client
//! left, its router died): NATS answers "no responders" at once and the reply is
//! dropped with a log line, as on one router. A reply is never stored in JetStream: the queue it goes to is as
//! short-lived as on one router.
//!
//! "No responders" comes only from the NATS server the sender is connected to. When
//! the holder's server has just dropped the subscription (its client left as the reply
//! was sent) but the sender's server has not heard yet, the message is routed there and
//! silently discarded: no answer ever comes. So a forward left unanswered sends a
//! [probe](PROBE), which nothing enqueues: "no responders" to it means the holder is gone
//! and the reply is dropped as above; an answer means the holder is alive and did not
//! answer, and the publisher is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::names;
use crate::auth::owner::{Owner, owner_of};
use crate::core::{Core, PublishError, persist};
use crate::store::{StoreError, StoreWait};

static REPLY_GONE: crate::ratelog::Cause = crate::ratelog::Cause::new("cluster.reply_to_gone");

/// The holder's answer when the queue was deleted as the reply arrived.
const GONE: &str = "gone";

/// How long "no responders" must last before a reply's holder is believed gone.
const GONE_AFTER: Duration = Duration::from_secs(2);

/// How long a forwarded reply waits for the holder's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a router sends to ask whether a reply address is still held (see the module
/// docs): an empty payload, which no encoded message is. The holder answers `ok`.
const PROBE: Bytes = Bytes::new();

/// How long a probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `name` is a reply address other routers may send to.
pub fn is_reply_address(name: &str) -> bool {
    matches!(owner_of(name), Some(Owner::TempQueue | Owner::ReplyAddress))
}

/// The subject a reply address is reached on.
pub fn subject(root: &str, name: &str) -> String {
    format!("{root}.r.{}", names::token(name))
}

/// Sends `encoded` to the router holding reply address `name`.
pub fn forward(
    runtime: &tokio::runtime::Handle,
    client: async_nats::Client,
    root: &str,
    name: &str,
    encoded: Bytes,
) -> StoreWait {
    let (tx, rx) = oneshot::channel();
    let subject = subject(root, name);
    let name = name.to_owned();
    runtime.spawn(async move {
        // The holder subscribes as its queue is made, asynchronously: a reply that
        // follows the request closely may find no subscriber yet. "No responders" is
        // believed only once it persists for `GONE_AFTER`.
        let gone_after = tokio::time::Instant::now() + GONE_AFTER;
        let answer = loop {
            let a = tokio::time::timeout(
                ANSWER_TIMEOUT,
                client.request(subject.clone(), encoded.clone()),
            )
            .await;
            match &a {
                Ok(Err(e))
                    if e.kind() == async_nats::RequestErrorKind::NoResponders
                        && tokio::time::Instant::now() < gone_after =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => break a,
            }
        };
        let r = match answer {
            Ok(Ok(m)) if &m.payload[..] == b"ok" => Ok(()),
            Ok(Ok(m)) if m.payload == GONE.as_bytes() => {
                crate::rate_warn!(REPLY_GONE, queue = %name, "cluster: reply to a queue whose client has gone; message dropped");
                Ok(())
            }
            Ok(Ok(m)) => Err(StoreError::Unavailable(format!(
                "queue {name}: {}",
                String::from_utf8_lossy(&m.payload)
            ))),
            // As on one router: a reply to a temporary queue whose client has gone
            // reaches nobody; it is dropped with a log line, the responder not failed.
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                crate::rate_warn!(REPLY_GONE, queue = %name, "cluster: reply to a queue no router holds (its client is gone); message dropped");
                Ok(())
            }
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("queue {name}: {e}"))),
            Err(_) => {
                let probe =
                    tokio::time::timeout(PROBE_TIMEOUT, client.request(subject, PROBE)).await;
                match probe {
                    Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                        crate::rate_warn!(REPLY_GONE, queue = %name, "cluster: reply to a queue whose router stopped holding it as the reply was sent (its client is gone); message dropped");
                        Ok(())
                    }
                    _ => Err(StoreError::Unavailable(format!(
                        "queue {name}: its router did not answer within {}s",
                        ANSWER_TIMEOUT.as_secs()
                    ))),
                }
            }
        };
        let _ = tx.send(r);
    });
    StoreWait::Pending(rx)
}

/// Keeps one NATS subscription per local reply address, as queues come and go, and
/// puts what arrives there into the queue.
pub async fn serve(
    client: async_nats::Client,
    root: String,
    core: Core,
    mut rx: mpsc::UnboundedReceiver<(String, bool)>,
) {
    let mut held: HashMap<String, oneshot::Sender<()>> = HashMap::new();
    while let Some((name, exists)) = rx.recv().await {
        if !exists {
            // Drained, not dropped: what already reached the subscription is answered.
            if let Some(close) = held.remove(&name) {
                let _ = close.send(());
            }
            continue;
        }
        if held.contains_key(&name) {
            continue;
        }
        match client.subscribe(subject(&root, &name)).await {
            Ok(sub) => {
                let (close, closed) = oneshot::channel();
                tokio::spawn(answer(
                    sub,
                    closed,
                    client.clone(),
                    core.clone(),
                    Arc::from(name.as_str()),
                ));
                held.insert(name, close);
            }
            Err(e) => {
                tracing::warn!(queue = %name, error = %e, "cluster: reply address not reachable from other routers")
            }
        }
    }
}

/// Answers what arrives for reply address `name` until `closed` fires (its queue was
/// deleted); then unsubscribes and answers what was already on its way.
async fn answer(
    mut sub: async_nats::Subscriber,
    mut closed: oneshot::Receiver<()>,
    client: async_nats::Client,
    core: Core,
    name: Arc<str>,
) {
    let mut draining = false;
    loop {
        let m = tokio::select! {
            m = sub.next() => m,
            _ = &mut closed, if !draining => {
                draining = true;
                let _ = sub.drain().await;
                continue;
            }
        };
        let Some(m) = m else { return };
        let outcome = if m.payload == PROBE {
            Ok(()) // still held
        } else {
            match persist::decode_queued(&m.payload) {
                Ok((destination, message)) => {
                    match core.enqueue(&name, &destination, Arc::new(message)) {
                        Ok(()) => Ok(()),
                        // Its client left meanwhile: the reply reaches nobody, as on one router.
                        Err(PublishError::NotFound(_) | PublishError::Closed(_)) => {
                            Err(GONE.into())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(format!("unreadable message: {e}")),
            }
        };
        if let Some(reply) = m.reply {
            let body = match outcome {
                Ok(()) => Bytes::from_static(b"ok"),
                Err(e) => Bytes::from(e),
            };
            let _ = client.publish(reply, body).await;
        }
    }
}
