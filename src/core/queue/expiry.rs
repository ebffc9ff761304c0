//! TTL: the deadline a message gets when a queue admits it, and removing what passed it
//! (lazily at dispatch and admission, and by the core's periodic sweep).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{DeadLetter, DeadReason, Entry, ExpiredAction, Queue, State, release_slot};
use crate::core::message::Message;

impl Queue {
    /// The deadline for a message enqueued now: the shorter of its own expiry and the
    /// queue's TTL.
    pub(crate) fn deadline_for(&self, message: &Message, now: Instant) -> Option<Instant> {
        let own = message.expiry.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            now + left
        });
        let queue = self.options.ttl.map(|t| now + t);
        match (own, queue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn expire_one(&self, entry: Entry, dead: &mut Vec<DeadLetter>) {
        self.counters.expired.fetch_add(1, Ordering::Relaxed);
        match self.options.expired {
            ExpiredAction::DeadLetter => dead.push(entry.into_dead(DeadReason::Expired)),
            ExpiredAction::Drop => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.forget_entry(&entry);
            }
        }
    }

    pub(super) fn expire_locked(&self, st: &mut State, now: Instant, dead: &mut Vec<DeadLetter>) {
        let mut freed = false;
        if st.ready.iter().any(|e| e.expired(now)) {
            let ready = std::mem::take(&mut st.ready);
            for e in ready {
                if e.expired(now) {
                    st.ready_bytes -= e.size;
                    self.expire_one(e, dead);
                    freed = true;
                } else {
                    st.ready.push_back(e);
                }
            }
        }
        for i in 0..st.consumers.len() {
            if st.consumers[i].pending.iter().any(|e| e.expired(now)) {
                let pending = std::mem::take(&mut st.consumers[i].pending);
                for e in pending {
                    if e.expired(now) {
                        release_slot(&mut st.consumers[i], e.size);
                        st.held_bytes -= e.size;
                        freed = true;
                        self.expire_one(e, dead);
                    } else {
                        st.consumers[i].pending.push_back(e);
                    }
                }
            }
        }
        if freed && st.publisher_waiting {
            st.publisher_waiting = false;
            self.space.notify_waiters();
        }
    }

    /// Removes every expired message that is not yet handed to a consumer.
    pub(crate) fn expire(&self, now: Instant, dead: &mut Vec<DeadLetter>) {
        let mut st = self.lock();
        self.expire_locked(&mut st, now, dead);
        self.dispatch(&mut st, now, dead);
    }
}
