//! Operator actions on a queue's ready messages, for the admin API: peek, purge, delete
//! one, and transfer (move elsewhere, or replay a dead letter to where it came from).
//!
//! A transfer is at-least-once and never loses a message: each message is taken out of
//! the queue ([`Queue::withdraw`]), its copy put into the target, and the original
//! removed (journaled) only once the copy is confirmed (in the target's store when
//! it is durable); a refused or unconfirmed copy puts the original back in its place. A
//! crash in between leaves it in both places, never in neither. Every action answers
//! once its removals are durable ([`Core::settlements_durable`]).
//!
//! Messages go into internal queues and topics directly, as dead letters do: routes do
//! not apply. A shared (clustered) queue is refused ([`ActionError::Shared`]): its
//! `ready` holds only what this router fetched for its own consumers, not the queue.

use std::sync::Arc;

use super::destination::Destination;
use super::durable::confirm;
use super::fanout::{Sender, Targets};
use super::message::Message;
use super::queue::{Entry, Peeked, Pick, PickError, Queue};
use super::{Core, PublishError};

/// Messages a transfer copies before awaiting their confirmations together (so they
/// share the store's group commits) and removing the originals.
const TRANSFER_BATCH: usize = 256;

/// Why an operator action was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("queue `{0}` does not exist")]
    NoSuchQueue(String),
    #[error(
        "queue `{0}` is shared in the cluster: this router holds only the messages it fetched for its own consumers, so it cannot peek, purge or move the queue's messages"
    )]
    Shared(String),
    #[error("no ready message with id `{0}` (delivered and not yet acknowledged, or gone)")]
    NoSuchMessage(String),
    #[error("{} ready messages carry id `{id}`: name one with `seq` (one of {seqs:?})", seqs.len())]
    Ambiguous { id: String, seqs: Vec<u64> },
    #[error("the target is the queue the messages are in")]
    SameQueue,
    /// The store did not confirm the removals (disk full, read-only data directory).
    #[error("{0}")]
    Store(String),
}

impl From<PublishError> for ActionError {
    fn from(e: PublishError) -> Self {
        ActionError::Store(e.to_string())
    }
}

/// What a transfer did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Transferred {
    /// Messages copied, confirmed and removed from the source.
    pub moved: usize,
    /// Where each went (`queue:NAME` / `topic:NAME`), counted.
    pub to: std::collections::BTreeMap<String, usize>,
    /// The message that could not be transferred (left in its place) and why; the
    /// transfer stops there.
    pub failed: Option<TransferFailure>,
}

/// A message left in its queue by a transfer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TransferFailure {
    pub id: String,
    pub seq: u64,
    pub error: String,
}

/// Where a transfer sends each message.
#[derive(Debug, Clone, Copy)]
pub enum Transfer<'a> {
    /// To `to`, unchanged (headers and id kept).
    Move { to: &'a Destination },
    /// A dead letter back to where it died (`x-death-queue`, or `x-death-destination`
    /// when that is a queue and the first is gone), or to `to`; its `x-death-*` headers
    /// removed, its id kept.
    Replay { to: Option<&'a Destination> },
}

/// The headers [`super::dead_letter`] adds.
const DEATH_HEADERS: [&str; 4] = [
    "x-death-reason",
    "x-death-queue",
    "x-death-destination",
    "x-death-deliveries",
];

/// A copy's target: the queues, and the destination its consumers see it came from.
struct Aim {
    targets: Targets,
    label: Destination,
}

impl Core {
    /// The queue `name`, if an operator may act on its messages.
    fn operable(&self, name: &str) -> Result<Arc<Queue>, ActionError> {
        let q = self
            .queue(name)
            .ok_or_else(|| ActionError::NoSuchQueue(name.to_owned()))?;
        if q.is_shared() {
            return Err(ActionError::Shared(name.to_owned()));
        }
        Ok(q)
    }

    /// The first `max` ready messages of `queue`, in order; nothing consumed, redelivered
    /// or moved.
    pub fn peek(&self, queue: &str, max: usize) -> Result<Vec<Peeked>, ActionError> {
        Ok(self.operable(queue)?.peek(max))
    }

    /// The queues messages are dead-lettered into, each with the queues that send there
    /// now. A dead-letter queue configured (as a default or for a named queue) is listed
    /// even before it exists.
    pub fn dead_letter_queues(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let config = self.config();
        let defaults = [&config.default_queue, &config.default_subscription];
        for o in defaults.into_iter().chain(config.queues.values()) {
            if let Some(Destination::Queue(n)) = &o.dead_letter {
                out.entry(n.to_string()).or_default();
            }
        }
        for q in self.all_queues() {
            if let Some(Destination::Queue(n)) = &q.options().dead_letter
                && **n != *q.name()
            {
                out.entry(n.to_string())
                    .or_default()
                    .push(q.name().to_owned());
            }
        }
        for sources in out.values_mut() {
            sources.sort();
        }
        out
    }

    /// One ready message of `queue` by id (and sequence, among several with that id).
    pub fn peek_one(&self, queue: &str, id: &str, seq: Option<u64>) -> Result<Peeked, ActionError> {
        self.operable(queue)?
            .find(id, seq)
            .map_err(|e| pick_error(e, id))
    }

    /// Removes every ready message of `queue` (not what consumers hold); answers once the
    /// removals are durable. Returns how many.
    pub async fn purge(&self, queue: &str) -> Result<usize, ActionError> {
        let n = self.operable(queue)?.purge();
        self.settlements_durable().wait().await?;
        Ok(n)
    }

    /// Deletes one ready message; answers once the removal is durable.
    pub async fn delete_message(
        &self,
        queue: &str,
        id: &str,
        seq: Option<u64>,
    ) -> Result<Peeked, ActionError> {
        let q = self.operable(queue)?;
        let taken = q
            .withdraw(Pick::One { id, seq })
            .map_err(|e| pick_error(e, id))?;
        let peeked = taken
            .first()
            .map(Entry::peeked)
            .ok_or_else(|| ActionError::NoSuchMessage(id.to_owned()))?;
        q.settle_withdrawn(taken, true);
        self.settlements_durable().wait().await?;
        Ok(peeked)
    }

    /// Transfers the ready messages `pick` names (see the module docs): one by id, or
    /// the first `max` (those ready now). Stops at the first message that cannot go.
    pub async fn transfer(
        &self,
        queue: &str,
        pick: Pick<'_>,
        how: Transfer<'_>,
    ) -> Result<Transferred, ActionError> {
        let q = self.operable(queue)?;
        if let Transfer::Move { to } | Transfer::Replay { to: Some(to) } = how
            && matches!(to, Destination::Queue(n) if **n == *q.name())
        {
            return Err(ActionError::SameQueue);
        }
        let mut done = Transferred::default();
        let (mut left, through) = match pick {
            Pick::One { .. } => (1, 0),
            Pick::First { max, .. } => match q.last_ready_seq() {
                Some(last) => (max, last),
                None => (0, 0),
            },
        };
        while left > 0 && done.failed.is_none() {
            let batch = match pick {
                Pick::One { id, .. } => q.withdraw(pick).map_err(|e| pick_error(e, id))?,
                Pick::First { .. } => q
                    .withdraw(Pick::First {
                        max: left.min(TRANSFER_BATCH),
                        through,
                    })
                    .unwrap_or_default(),
            };
            if batch.is_empty() {
                break;
            }
            left -= batch.len();
            self.transfer_batch(&q, batch, how, &mut done).await;
        }
        self.settlements_durable().wait().await?;
        Ok(done)
    }

    /// Copies `batch` in order, awaits the copies' confirmations, removes the confirmed
    /// originals and puts the others back.
    async fn transfer_batch(
        &self,
        q: &Arc<Queue>,
        batch: Vec<Entry>,
        how: Transfer<'_>,
        done: &mut Transferred,
    ) {
        let mut copied = Vec::new();
        let mut back = Vec::new();
        let mut entries = batch.into_iter();
        for e in entries.by_ref() {
            match self.copy_out(q, &e, how) {
                Ok((label, waits)) => copied.push((e, label, waits)),
                Err(error) => {
                    done.failed = Some(failure(&e, error));
                    back.push(e);
                    break;
                }
            }
        }
        // Once one could not go, the rest stay too (a transfer keeps their order).
        back.extend(entries);
        let mut settled = Vec::new();
        for (e, label, waits) in copied {
            match confirm(waits).await {
                Ok(()) => {
                    done.moved += 1;
                    *done.to.entry(label).or_default() += 1;
                    settled.push(e);
                }
                Err(error) => {
                    if done.failed.is_none() {
                        done.failed = Some(failure(&e, error.to_string()));
                    }
                    back.push(e);
                }
            }
        }
        q.settle_withdrawn(settled, false);
        let dead = q.put_back(back);
        self.forward_dead(q, dead);
    }

    /// Puts the copy of `e` into its target without waiting; returns the target's name
    /// and the store writes that confirm it.
    fn copy_out(
        &self,
        q: &Queue,
        e: &Entry,
        how: Transfer<'_>,
    ) -> Result<(String, Vec<crate::store::StoreWait>), String> {
        let mut m: Message = (**e.message()).clone();
        let aim = match how {
            Transfer::Move { to } => Aim {
                targets: self.targets(to).map_err(|e| e.to_string())?,
                label: to.clone(),
            },
            Transfer::Replay { to } => {
                let aim = match to {
                    Some(to) => Aim {
                        targets: self.targets(to).map_err(|e| e.to_string())?,
                        label: to.clone(),
                    },
                    None => self.replay_aim(&m)?,
                };
                for h in DEATH_HEADERS {
                    m.headers.remove(h);
                }
                aim
            }
        };
        if let Targets::Queue(t) = &aim.targets
            && t.name() == q.name()
        {
            return Err(ActionError::SameQueue.to_string());
        }
        let name = match &aim.targets {
            Targets::Queue(t) => Destination::queue(t.name()).to_string(),
            _ => aim.label.to_string(),
        };
        let reached = self
            .fan_out_now(
                &aim.targets,
                &aim.label,
                &[Arc::new(m)],
                Sender::Unconfirmed,
            )
            .map_err(|e| e.to_string())?;
        if reached.deliveries == 0 {
            return Err(format!("{name} has no subscriber: the copy would be lost"));
        }
        Ok((name, reached.waits))
    }

    /// Where a dead letter is replayed by default: the queue it died in, labelled with
    /// the destination it was published to (a subscription's consumer sees its topic);
    /// else, that queue gone, the destination it was published to when that is a queue.
    fn replay_aim(&self, m: &Message) -> Result<Aim, String> {
        let published = m
            .headers
            .get("x-death-destination")
            .and_then(|d| Destination::parse(d).ok());
        if let Some(q) = m.headers.get("x-death-queue").and_then(|n| self.queue(n)) {
            let label = published.unwrap_or_else(|| Destination::queue(q.name()));
            return Ok(Aim {
                targets: Targets::Queue(q),
                label,
            });
        }
        match published {
            Some(d @ Destination::Queue(_)) => Ok(Aim {
                targets: self.targets(&d).map_err(|e| e.to_string())?,
                label: d,
            }),
            Some(Destination::Topic(t)) => Err(format!(
                "the subscription it died in is gone; replaying to topic:{t} would reach every subscriber: name a target"
            )),
            None => Err("no x-death-queue or x-death-destination header: name a target".into()),
        }
    }
}

fn failure(e: &Entry, error: String) -> TransferFailure {
    let p = e.peeked();
    TransferFailure {
        id: p.message.id.to_string(),
        seq: p.seq,
        error,
    }
}

fn pick_error(e: PickError, id: &str) -> ActionError {
    match e {
        PickError::NotFound => ActionError::NoSuchMessage(id.to_owned()),
        PickError::Ambiguous(seqs) => ActionError::Ambiguous {
            id: id.to_owned(),
            seqs,
        },
    }
}
