//! Messages and payload bytes each edge moved, by protocol: received = published by the
//! edge into the core (a client's SEND or PUBLISH, a link's delivery from its peer, a
//! reply, an MQTT will), delivered = handed by the edge to a client or written to a
//! link's peer (redeliveries count again). `GET /metrics` exposes them as
//! `switchboard_messages_{received,delivered}_total` and
//! `switchboard_payload_{received,delivered}_bytes_total`.
//!
//! The edges count on their hot paths, so the counters are [`PerThread`]: each worker
//! thread adds to its own row with a plain store. Deliveries are counted once per
//! written batch.

use crate::counter::{PerThread, Row};

/// An edge's protocol, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Stomp = 0,
    Mqtt = 1,
    Amqp = 2,
    Xmpp = 3,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Self::Stomp, Self::Mqtt, Self::Amqp, Self::Xmpp];

    pub fn name(self) -> &'static str {
        match self {
            Self::Stomp => "stomp",
            Self::Mqtt => "mqtt",
            Self::Amqp => "amqp",
            Self::Xmpp => "xmpp",
        }
    }
}

/// Per protocol: received messages, received bytes, delivered messages, delivered bytes.
const PER_PROTOCOL: usize = 4;

const COUNTERS: usize = 4 * PER_PROTOCOL;

static COUNTS: PerThread<COUNTERS> = PerThread::new();

thread_local! {
    static MINE: Row<COUNTERS> = COUNTS.row();
}

fn add(p: Protocol, at: usize, messages: u64, bytes: u64) {
    let i = p as usize * PER_PROTOCOL + at;
    // No row while this thread's locals are being destroyed: such late counts are lost
    // (no edge counts from a thread-local destructor).
    let _ = MINE.try_with(|r| {
        r.add(i, messages);
        r.add(i + 1, bytes);
    });
}

/// `messages` carrying `bytes` of payload were published into the core by a `p` edge.
#[inline]
pub fn received(p: Protocol, messages: u64, bytes: u64) {
    add(p, 0, messages, bytes);
}

/// `messages` carrying `bytes` of payload were delivered by a `p` edge.
#[inline]
pub fn delivered(p: Protocol, messages: u64, bytes: u64) {
    add(p, 2, messages, bytes);
}

/// Takes back a delivery counted too early (an AMQP publish confirmed, then returned).
pub fn undelivered(p: Protocol, messages: u64, bytes: u64) {
    add(p, 2, messages.wrapping_neg(), bytes.wrapping_neg());
}

/// What one protocol's edges moved since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub received: u64,
    pub received_bytes: u64,
    pub delivered: u64,
    pub delivered_bytes: u64,
}

pub fn totals(p: Protocol) -> Totals {
    let at = |k| COUNTS.get(p as usize * PER_PROTOCOL + k);
    Totals {
        received: at(0),
        received_bytes: at(1),
        delivered: at(2),
        delivered_bytes: at(3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_count_apart() {
        // The counters are global: compare deltas, on a protocol no other unit test moves.
        let before = totals(Protocol::Xmpp);
        received(Protocol::Xmpp, 1, 10);
        delivered(Protocol::Xmpp, 2, 30);
        undelivered(Protocol::Xmpp, 1, 5);
        let after = totals(Protocol::Xmpp);
        assert_eq!(
            (
                after.received - before.received,
                after.received_bytes - before.received_bytes,
                after.delivered - before.delivered,
                after.delivered_bytes - before.delivered_bytes,
            ),
            (1, 10, 1, 25)
        );
    }
}
