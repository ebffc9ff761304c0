//! Answering a publisher once its message is durable, in the order it published, while
//! the session goes on reading.
//!
//! A persistent publish is confirmed to the client (a STOMP RECEIPT, an MQTT PUBACK or
//! PUBREC) only after the store has it. Waiting for each write in turn would give every
//! message an fsync of its own; instead a session hands the [`Confirmation`] and what it
//! owes the client to [`Confirmations`] and reads the next frame, so a pipelining
//! client's messages share fsyncs. The session takes the answers back, in the order they
//! were pushed, from [`Confirmations::next`] in its serve loop, each with the store's
//! verdict: it sends the answer, or says the write failed in its protocol's way.
//!
//! Answers stay in order across frames answered at once too: while anything is waiting
//! here, a new answer goes behind it even if its own confirmation is ready
//! ([`Confirmations::must_wait`]). At most [`MAX_WAITING`] wait at once; beyond, the
//! session stops reading ([`Confirmations::is_full`]), which holds the client back.
//!
//! Protocol-free: `A`, what is sent when confirmed, is the session's own type.

use std::future::poll_fn;
use std::task::{Context, Poll};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;

use crate::core::{Confirmation, PublishError};

/// Most answers waiting for the store per connection before the session stops reading.
pub const MAX_WAITING: usize = 4096;

/// What a waiting answer resolves to: the answer, and whether its writes are durable.
pub type Confirmed<A> = (A, Result<(), PublishError>);

/// A session's answers waiting for the store, in the order they are owed.
pub struct Confirmations<A> {
    /// Created when needed and dropped when drained: an empty `FuturesOrdered` still
    /// holds a ~0.5 KiB allocation, which every idle connection would carry.
    waiting: Option<Box<FuturesOrdered<BoxFuture<'static, Confirmed<A>>>>>,
}

impl<A> Default for Confirmations<A> {
    fn default() -> Self {
        Self { waiting: None }
    }
}

impl<A: Send + 'static> Confirmations<A> {
    /// How many answers are waiting.
    fn len(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| w.len())
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_none()
    }

    /// Too many answers wait: the session stops reading until some are sent.
    pub fn is_full(&self) -> bool {
        self.len() >= MAX_WAITING
    }

    /// Whether an answer owed once `confirmation` is durable must go through here: its
    /// writes are not durable yet, or earlier answers are still waiting (it goes behind
    /// them). If not, the session answers at once.
    pub fn must_wait(&self, confirmation: &Confirmation) -> bool {
        !confirmation.is_ready() || !self.is_empty()
    }

    /// Queues `answer` until `confirmation` is durable, behind every earlier answer.
    pub fn push(&mut self, answer: A, confirmation: Confirmation) {
        let waiting = self.waiting.get_or_insert_with(Default::default);
        waiting.push_back(Box::pin(async move { (answer, confirmation.wait().await) }));
    }

    /// The next answer in order, once its writes are durable or failed; `None` when
    /// nothing waits.
    pub async fn next(&mut self) -> Option<Confirmed<A>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Confirmed<A>>> {
        let Some(waiting) = self.waiting.as_mut() else {
            return Poll::Ready(None);
        };
        let next = waiting.poll_next_unpin(cx);
        if waiting.is_empty() {
            self.waiting = None;
        }
        next
    }
}
