//! SENDs that arrive together: a SEND to a topic that asks for no receipt, with the
//! SENDs to the same destination that the same read brought after it, is published as
//! one batch ([`crate::router::Router::publish_batch_unconfirmed`]): one lock and one
//! wake-up per subscriber for the run instead of per message, which is most of what a
//! fan-out to many subscribers costs.
//!
//! Only what answers nothing per frame joins a run: no `receipt`, no `transaction`, no
//! `reply-to` (a temporary queue may have to be made for it). The frame that ends a run
//! is answered next, in order. A refusal ends the connection with an ERROR as for one
//! SEND, once the run is out.

use std::sync::Arc;

use super::connection::{Connection, read_failed};
use super::fatal::{Fatal, fatal};
use super::receipt::Unconfirmed;
use super::transport::Transport;
use crate::core::{Message, Origin};
use crate::listener::stomp::convert::{SendError, send_to_message};
use crate::listener::stomp::frame::{Command, Frame};
use crate::translate::stomp_names::{self, StompDest};
use crate::translate::traffic::{self, Protocol};

/// Most SENDs published as one batch.
const MAX_RUN: usize = 64;

impl<T: Transport> Connection<T> {
    /// Whether `f` may start a run: a SEND to a topic that asks for nothing back.
    pub(super) fn starts_run(f: &Frame) -> bool {
        joins_run(f)
            && f.header("destination")
                .is_some_and(|d| matches!(stomp_names::parse(d, false), Ok(StompDest::Topic(_))))
    }

    /// A SEND that starts a run (see the module docs). Returns the frame that ended the
    /// run, for the caller to answer next.
    pub(super) async fn on_send_run(&mut self, first: Frame) -> Result<Option<Frame>, Fatal> {
        let mut run = vec![first];
        let mut after = None;
        while run.len() < MAX_RUN {
            match self.buffered_frame() {
                Some(Ok(f)) if joins_run(&f) && same_destination(&f, &run[0]) => run.push(f),
                Some(other) => {
                    after = Some(other);
                    break;
                }
                None => break,
            }
        }
        if run.len() == 1 {
            self.on_send(run.remove(0)).await?;
        } else {
            self.send_run(run).await?;
        }
        match after {
            None => Ok(None),
            Some(Ok(f)) => Ok(Some(f)),
            // A read error: the serve loop sees the end of the stream on its next read.
            Some(Err(e)) => match read_failed(e) {
                Some(f) => Err(f),
                None => Ok(None),
            },
        }
    }

    /// Publishes a run of SENDs to one topic as one batch.
    async fn send_run(&mut self, run: Vec<Frame>) -> Result<(), Fatal> {
        let dest_text = run[0].header("destination").unwrap_or_default().to_owned();
        let dest = match stomp_names::parse(&dest_text, false) {
            Ok(StompDest::Topic(n)) => crate::core::Destination::topic(&n),
            _ => unreachable!("a run starts with a SEND to a topic"),
        };
        if !self.principal()?.can_publish(&dest) {
            tracing::warn!(destination = %dest_text, "publish refused by permissions");
            return Err(fatal(
                "access refused",
                format!("not allowed to send to {dest_text}"),
            ));
        }
        let origin = Origin::shared("stomp", self.principal()?.name_shared());
        // A frame with a bad header ends the run: those before it are published, then
        // the connection ends with its ERROR, as when each is sent on its own.
        let mut messages: Vec<Message> = Vec::with_capacity(run.len());
        let mut bad = None;
        for f in &run {
            match send_to_message(f, origin.clone(), None) {
                Ok(m) => messages.push(m),
                Err(e) => {
                    let SendError::BadHeader { header, value, .. } = &e;
                    tracing::warn!(header, %value, "invalid header value");
                    bad = Some(fatal("invalid header", e.to_string()));
                    break;
                }
            }
        }
        drop(run);
        let n = messages.len() as u64;
        let bytes: u64 = messages.iter().map(|m| m.body.len() as u64).sum();
        let router = self.shared.router.clone();
        let fut = router.publish_batch_unconfirmed(dest, messages);
        tokio::pin!(fut);
        let notify = Arc::clone(&self.notify);
        let batch = loop {
            tokio::select! {
                b = &mut fut => break b,
                // Keep delivering while the core holds us back.
                _ = notify.notified() => self.deliver().await?,
            }
        };
        if let Some(e) = batch.errors.first() {
            tracing::warn!(destination = %dest_text, error = %e, "publish refused");
            return Err(fatal("message refused", format!("{dest_text}: {e}")));
        }
        traffic::received(Protocol::Stomp, n, bytes);
        if self.confirmations.must_wait(&batch.confirmation) {
            let answer = Unconfirmed {
                receipt: None,
                refused: "message refused",
                dest_text,
            };
            self.confirmations.push(answer, batch.confirmation);
        }
        match bad {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

/// Whether a frame may join a run: a SEND that asks for nothing back.
fn joins_run(f: &Frame) -> bool {
    f.command == Command::Send
        && f.header("receipt").is_none()
        && f.header("transaction").is_none()
        && f.header("reply-to").is_none()
}

fn same_destination(a: &Frame, b: &Frame) -> bool {
    a.header("destination") == b.header("destination")
}
