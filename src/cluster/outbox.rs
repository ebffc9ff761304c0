//! Publishing into JetStream in order, confirming each persistent publish once its
//! stream stored it.
//!
//! The core publishes synchronously (under a queue's lock); NATS is written
//! asynchronously. An [`Outbox`] is the hand-over: [`Outbox::send`] queues the message
//! and returns a [`StoreWait`] at once; one task writes the queue out in order (so a
//! publisher's messages reach the stream in the order it sent them) and, for a
//! persistent message, a small task per message awaits JetStream's acknowledgement,
//! the point where the publisher is confirmed.
//!
//! A publish JetStream did not answer (a node died, a stream leader is being elected,
//! the connection is being re-made) is sent again, under the same `Nats-Msg-Id`, so the
//! stream keeps it once (its duplicate window is two minutes), for up to
//! [`RETRY_FOR`]: a publisher rides out a NATS node's death. Past that (no quorum: two
//! of three nodes down) it is refused, never confirmed. A retried message may land
//! after messages sent later: order is kept except across such a retry.
//!
//! A non-persistent message is written as a plain NATS publish (the stream still
//! captures it) and resolves once written to the connection: no acknowledgement is
//! awaited, as no publisher is confirmed for it, but the session's window of
//! unresolved publishes still bounds what a fast publisher can queue here.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::ratelog::Cause;
use crate::store::{StoreError, StoreWait};

/// How long an unanswered persistent publish is sent again before it is refused.
pub const RETRY_FOR: Duration = Duration::from_secs(10);
/// Pause between two sends of an unanswered publish.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

static PUBLISH_RETRIED: Cause = Cause::new("cluster.publish_retried");
static PUBLISH_REFUSED: Cause = Cause::new("cluster.publish_refused");

/// One message to publish.
struct Outgoing {
    subject: String,
    payload: Bytes,
    headers: HeaderMap,
    id: String,
    persistent: bool,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The hand-over to one publishing task; see the module docs.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("subject", &self.subject)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Starts the publishing task on `runtime`. It holds what it is given until `ready`
    /// says true (the stream exists), then publishes in order until every [`Outbox`]
    /// handle is dropped.
    pub fn spawn(
        runtime: &tokio::runtime::Handle,
        js: jetstream::Context,
        ready: watch::Receiver<bool>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(rx, js, ready));
        Self { tx }
    }

    /// Queues a message for `subject`; see the module docs for when the result resolves.
    pub fn send(
        &self,
        subject: String,
        payload: Bytes,
        headers: HeaderMap,
        id: String,
        persistent: bool,
    ) -> StoreWait {
        let (done, rx) = oneshot::channel();
        let out = Outgoing {
            subject,
            payload,
            headers,
            id,
            persistent,
            done,
        };
        match self.tx.send(out) {
            Ok(()) => StoreWait::Pending(rx),
            Err(_) => StoreWait::Done(Err(StoreError::Unavailable(
                "cluster: the publishing task has stopped".into(),
            ))),
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    js: jetstream::Context,
    mut ready: watch::Receiver<bool>,
) {
    if ready.wait_for(|r| *r).await.is_err() {
        // The stream was never made (the queue went away first): refuse what waits.
        while let Ok(out) = rx.try_recv() {
            let _ = out.done.send(Err(StoreError::Unavailable(
                "cluster: the queue's stream does not exist".into(),
            )));
        }
        return;
    }
    while let Some(out) = rx.recv().await {
        let Outgoing {
            subject,
            payload,
            headers,
            id,
            persistent,
            done,
        } = out;
        if !persistent {
            let r = js
                .client()
                .publish_with_headers(subject, with_id(headers, &id), payload)
                .await
                .map_err(|e| StoreError::Unavailable(format!("cluster: {e}")));
            let _ = done.send(r);
            continue;
        }
        let publish = Publish::build()
            .payload(payload)
            .headers(headers)
            .message_id(&id);
        let first = js.send_publish(subject.clone(), publish.clone()).await;
        let js = js.clone();
        tokio::spawn(async move {
            let r = confirm(&js, subject, publish, first).await;
            let _ = done.send(r.map(|_| ()));
        });
    }
}

fn with_id(mut headers: HeaderMap, id: &str) -> HeaderMap {
    headers.insert("Nats-Msg-Id", id);
    headers
}

/// Awaits the stream's acknowledgement of a publish, sending it again while NATS does
/// not answer, for up to [`RETRY_FOR`]. Returns the stream sequence it was stored
/// under.
pub(super) async fn confirm(
    js: &jetstream::Context,
    subject: String,
    publish: Publish,
    first: Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError>,
) -> Result<u64, StoreError> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut attempt = first;
    loop {
        let e = match attempt {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => e,
            },
            Err(e) => e,
        };
        let retry = matches!(
            e.kind(),
            PublishErrorKind::TimedOut
                | PublishErrorKind::StreamNotFound
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::MaxAckPending
        );
        if !retry {
            crate::rate_warn!(PUBLISH_REFUSED, subject = %subject, error = %e, "cluster: publish refused");
            return Err(StoreError::Unavailable(format!("cluster: {e}")));
        }
        if Instant::now() >= deadline {
            crate::rate_warn!(PUBLISH_REFUSED, subject = %subject, error = %e, "cluster: publish refused");
            return Err(StoreError::Unavailable(format!(
                "cluster: JetStream did not store the message within {}s (no quorum, or the stream's leader is unreachable); last answer: {e}",
                RETRY_FOR.as_secs()
            )));
        }
        crate::rate_info!(PUBLISH_RETRIED, subject = %subject, error = %e, "cluster: publish not acknowledged; sending it again");
        tokio::time::sleep(RETRY_PAUSE).await;
        attempt = js.send_publish(subject.clone(), publish.clone()).await;
    }
}
