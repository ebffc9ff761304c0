//! What an operator does to a queue's ready messages (the admin API's actions): look at
//! them without taking them, remove them, or take some out for the time it takes to copy
//! them elsewhere, then remove them for good or put them back where they were.
//!
//! Only `ready` is touched: what consumers hold stays theirs until they settle it, so an
//! action never redelivers, reorders or races a consumer's acknowledgement. A message
//! taken out for a copy ([`Queue::withdraw`]) is in none of the queue's places
//! meanwhile, so no consumer can receive it and its copy too; it leaves for good
//! ([`Queue::settle_withdrawn`], journaled for a durable queue) only once its copy is
//! confirmed, or goes back to its sequence position ([`Queue::put_back`]), unmarked.
//! A shared queue's `ready` holds only what this router fetched for its consumers, so
//! these are refused for it by [`crate::core::Core`]'s actions.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{Entry, Queue};
use crate::core::destination::Destination;
use crate::core::message::Message;

/// A ready message as an operator sees it: the queue keeps it, this holds a reference.
#[derive(Debug, Clone)]
pub struct Peeked {
    /// Its position in the queue (its journal sequence on a durable queue): with the id,
    /// names one message among several that share an id.
    pub seq: u64,
    pub message: Arc<Message>,
    /// Where it was published.
    pub destination: Destination,
    pub redelivered: bool,
    /// How many times it was handed to a consumer.
    pub deliveries: u32,
}

/// Which ready messages an action takes.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// The message whose id renders as `id`; `seq` chooses among several with that id.
    One { id: &'a str, seq: Option<u64> },
    /// The first `max` ready messages whose sequence is at most `through` (those ready
    /// when the action began, so one that feeds the queue cannot make it run for ever;
    /// [`crate::core::Core::transfer`] sets `through` itself).
    First { max: usize, through: u64 },
}

/// Why [`Pick::One`] took nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PickError {
    NotFound,
    /// Several ready messages carry the id: their sequences.
    Ambiguous(Vec<u64>),
}

impl Entry {
    /// What an operator sees of it.
    pub(crate) fn peeked(&self) -> Peeked {
        Peeked {
            seq: self.seq,
            message: Arc::clone(&self.message),
            destination: self.destination.clone(),
            redelivered: self.redelivered,
            deliveries: self.deliveries,
        }
    }
}

impl Queue {
    /// The first `max` ready messages, in order, left where they are.
    pub fn peek(&self, max: usize) -> Vec<Peeked> {
        self.lock()
            .ready
            .iter()
            .take(max)
            .map(Entry::peeked)
            .collect()
    }

    /// The ready message with id `id` (and sequence `seq`, when given), left where it is.
    pub(crate) fn find(&self, id: &str, seq: Option<u64>) -> Result<Peeked, PickError> {
        let st = self.lock();
        let i = Self::position(&st.ready, id, seq)?;
        Ok(st.ready[i].peeked())
    }

    fn position(
        ready: &std::collections::VecDeque<Entry>,
        id: &str,
        seq: Option<u64>,
    ) -> Result<usize, PickError> {
        let matching: Vec<usize> = ready
            .iter()
            .enumerate()
            .filter(|(_, e)| seq.is_none_or(|s| e.seq == s) && e.message.id.matches(id))
            .map(|(i, _)| i)
            .collect();
        match matching[..] {
            [] => Err(PickError::NotFound),
            [i] => Ok(i),
            _ => Err(PickError::Ambiguous(
                matching.iter().map(|&i| ready[i].seq).collect(),
            )),
        }
    }

    /// The sequence of the newest ready message (the bound of an action on "all").
    pub(crate) fn last_ready_seq(&self) -> Option<u64> {
        self.lock().ready.back().map(|e| e.seq)
    }

    /// Removes every ready message (journaled for a durable queue); what consumers hold
    /// is left to them. Returns how many were removed.
    pub(crate) fn purge(&self) -> usize {
        let mut st = self.lock();
        let ready = std::mem::take(&mut st.ready);
        st.ready_bytes = 0;
        for e in &ready {
            self.forget_entry(e);
        }
        if st.publisher_waiting && !ready.is_empty() {
            st.publisher_waiting = false;
            self.space.notify_waiters();
        }
        self.counters
            .purged
            .fetch_add(ready.len() as u64, Ordering::Relaxed);
        ready.len()
    }

    /// Takes the ready messages `pick` names out of the queue, in order, until
    /// [`Queue::settle_withdrawn`] or [`Queue::put_back`].
    pub(crate) fn withdraw(&self, pick: Pick<'_>) -> Result<Vec<Entry>, PickError> {
        let mut st = self.lock();
        let out: Vec<Entry> = match pick {
            Pick::One { id, seq } => {
                let i = Self::position(&st.ready, id, seq)?;
                st.ready.remove(i).into_iter().collect()
            }
            Pick::First { max, through } => {
                let n = st
                    .ready
                    .iter()
                    .take(max)
                    .take_while(|e| e.seq <= through)
                    .count();
                st.ready.drain(..n).collect()
            }
        };
        st.ready_bytes -= out.iter().map(|e| e.size).sum::<usize>();
        Ok(out)
    }

    /// Withdrawn messages whose copies are confirmed elsewhere, or that an operator
    /// deleted: removed for good (from the journal too).
    pub(crate) fn settle_withdrawn(&self, entries: Vec<Entry>, counted_as_purged: bool) {
        for e in &entries {
            self.forget_entry(e);
        }
        if counted_as_purged {
            self.counters
                .purged
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
        }
        let mut st = self.lock();
        if st.publisher_waiting && !entries.is_empty() {
            st.publisher_waiting = false;
            self.space.notify_waiters();
        }
    }

    /// Withdrawn messages back at their sequence positions, as they were (not marked
    /// redelivered); offered to the consumers again. Dropped if the queue was deleted.
    pub(crate) fn put_back(&self, entries: Vec<Entry>) -> Vec<super::DeadLetter> {
        let mut dead = Vec::new();
        let mut st = self.lock();
        if st.deleted || entries.is_empty() {
            return dead;
        }
        self.requeue_locked(&mut st, entries);
        self.dispatch(&mut st, Instant::now(), &mut dead);
        dead
    }
}
