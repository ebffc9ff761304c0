//! The durable store: the bytes of persistent messages of durable queues, written before
//! their publisher is confirmed and forgotten once acknowledged, and small metadata
//! values by namespace and key (durable queue options and bindings, MQTT sessions and
//! retained messages: each kept by the layer that owns it, under its own namespace).
//!
//! # The seam
//!
//! The store is the lowest layer: it imports nothing from the crate, knows no message
//! type and none of its users. The core encodes a persistent message as it enters a
//! durable queue and hands the store opaque bytes under the queue's name and a sequence
//! number; at start-up it decodes what the store recovered, batch by batch as the store
//! reads it back ([`Store::recover`]). Users hold the store as an
//! `Arc<dyn Store>` ([`Store`]) and each durable queue keeps its own [`QueueLog`], so a
//! backend is free to give every queue a log of its own (a stream per queue).
//! [`FileJournal`], a journal of segment files in the data directory, is the backend
//! today; a replicated one is meant to plug in here.
//!
//! A trait object rather than a type parameter: the backend is chosen at start-up from
//! the settings, and the core, every queue and the edges hold it; a generic would run
//! through all of their types for the price of one indirect call next to an I/O.
//!
//! What a backend guarantees, and what relies on it:
//!
//! - **Durable before confirmed.** The [`StoreWait`] of an append or a put resolves `Ok`
//!   only once the write survives a crash of the process (and, where the backend
//!   promises it, of the machine). Publishers are confirmed on it.
//! - **In issue order.** Operations become durable in the order they were issued,
//!   across queues and handles: what a crash leaves is everything up to some point
//!   (delivery marks excepted, below). A removal never outlives the append it cancels;
//!   a dead-lettered message is appended to its dead-letter queue before it is removed
//!   from its queue, so a crash leaves it in both, never in neither; a queue's metadata
//!   is written before its messages.
//! - **Barrier.** [`Store::barrier`] resolves once everything issued before it, through
//!   any handle, is as durable as a confirmed append. Removals and delivery marks are
//!   not awaited one by one: what confirms them (a STOMP RECEIPT for an ACK) awaits a
//!   barrier, which should share the commit of whatever else is being written.
//! - **Delivery marks may be lost.** They are issued after the delivery may already be
//!   on the wire. A backend that cannot show its marks complete (the previous run did
//!   not end with [`Store::close`]) recovers with [`Recovered::clean`] false, and every
//!   message flagged [`StoredMessage::redelivered`].
//! - **Recovery gives back the bytes as appended**, with the last delivery count
//!   recorded, and the last value of each metadata key. The messages are lent to a
//!   visitor in batches ([`Store::recover`]), each batch one queue's, in sequence order
//!   within it; a queue may come in several batches, not necessarily in order between
//!   them (a backend reads where it keeps them: the file journal segment by segment, and
//!   compaction moves older messages into newer segments). A backend whose queues live
//!   elsewhere (a server's streams) visits nothing.
//! - **Health is cheap.** [`Store::check`] answers without I/O, so a persistent publish
//!   is refused up front while writes fail instead of waiting for its own error.
//!
//! Namespaces are `&'static str`: names fixed in the code of the layer that owns them
//! (the core's queue metadata, the MQTT listener's sessions and retained messages),
//! never data from a client. The store takes any such name and keeps it as given.

pub mod codec;
mod commit_stats;
mod file_journal;
mod health;
pub(crate) mod journal;
mod lock;
mod recovery;
mod segments;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use tokio::sync::oneshot;

pub use commit_stats::{BATCH_BOUNDS_RECORDS, FSYNC_BOUNDS_MICROS, HistogramSnapshot};
pub use file_journal::{FileJournal, FsyncPolicy};

/// The durable store as its users see it: one per process, shared as `Arc<dyn Store>`.
/// See the module docs for what an implementation guarantees.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The log of queue `name`'s messages; the queue keeps it for its life.
    fn queue(&self, name: &str) -> Box<dyn QueueLog>;

    /// Stores a metadata value (replacing the key's earlier one).
    fn put(&self, ns: &'static str, key: &str, value: Vec<u8>) -> StoreWait;

    /// Forgets a metadata key.
    fn delete(&self, ns: &'static str, key: &str);

    /// Resolves once every operation issued before it (through any handle) is durable.
    /// It writes nothing of its own.
    fn barrier(&self) -> StoreWait;

    /// What the store held when it was opened, for whoever puts it back (the core, at
    /// start-up): the messages are handed to `visit` one batch at a time (a queue's name
    /// and some of its messages, see the module docs), then the rest is returned. The
    /// batch borrows the backend's read buffer, which is reused for the next one: the
    /// visitor copies what it keeps, so recovery holds no second copy of the journal
    /// next to what it restores. Taken once: a later call visits and finds nothing.
    fn recover(
        &self,
        visit: &mut dyn FnMut(&str, &[StoredMessage<'_>]),
    ) -> Result<Recovered, StoreError>;

    /// Ok while writes succeed; the last write error otherwise.
    fn check(&self) -> Result<(), StoreError>;

    /// Makes everything issued before it durable, records that the store was closed
    /// cleanly, and stops: later operations through any handle fail with
    /// [`StoreError::Closed`]. Blocks until done.
    fn close(&self);
}

/// One durable queue's messages in the [`Store`]. Its operations are ordered with every
/// other operation on the store.
pub trait QueueLog: Send + Sync + std::fmt::Debug {
    /// Stores an encoded message under `seq`.
    fn append(&self, seq: u64, bytes: Bytes) -> StoreWait;

    /// Forgets a message that left for good (acknowledged, dead-lettered, expired,
    /// dropped).
    fn remove(&self, seq: u64);

    /// Records that a message was handed to a consumer `count` times, so a restart
    /// brings it back flagged redelivered.
    fn delivered(&self, seq: u64, count: u32);

    /// Forgets every message of the queue (it was deleted).
    fn drop_queue(&self);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("store write failed: {0}")]
    Write(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store is closed")]
    Closed,
}

/// The outcome of an append or put, to await before confirming a publisher.
#[derive(Debug)]
pub enum StoreWait {
    Done(Result<(), StoreError>),
    Pending(oneshot::Receiver<Result<(), StoreError>>),
}

impl StoreWait {
    pub async fn wait(self) -> Result<(), StoreError> {
        match self {
            Self::Done(r) => r,
            Self::Pending(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
        }
    }

    /// True when it needs no waiting and succeeded.
    pub fn is_done_ok(&self) -> bool {
        matches!(self, Self::Done(Ok(())))
    }
}

/// A stored message as recovered, lent to the visitor of [`Store::recover`]: the bytes
/// it was appended with (empty when the backend could not read them back: the visitor
/// finds them unreadable).
#[derive(Debug, Clone, Copy)]
pub struct StoredMessage<'a> {
    pub seq: u64,
    pub bytes: &'a [u8],
    /// Times it was handed to a consumer without being acknowledged, as recorded (0:
    /// none recorded).
    pub deliveries: u32,
    /// It may have been handed to a consumer before: a delivery was recorded, or the
    /// store was not closed cleanly (a crash can lose delivery marks, so every message
    /// is then assumed delivered).
    pub redelivered: bool,
}

/// What a start-up replay found besides the messages (which went to the visitor of
/// [`Store::recover`]).
#[derive(Debug, Default)]
pub struct Recovered {
    /// Metadata by namespace and key.
    pub meta: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Torn or corrupt ends found (and cut off), one line each.
    pub repairs: Vec<String>,
    /// Bytes read.
    pub bytes: u64,
    /// The store was closed in order last time (or was empty): its delivery marks are
    /// complete.
    pub clean: bool,
}

#[cfg(test)]
mod tests;
