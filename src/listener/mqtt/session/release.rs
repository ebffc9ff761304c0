//! Outbound QoS 2 deliveries of shared queues (clustered: the session queue and shared
//! subscriptions live in JetStream) are settled with the core at PUBCOMP, not PUBREC.
//!
//! A router settling at PUBREC is done with the message before the client has its
//! PUBREL. A client that hands messages to its application only at PUBREL (MQTT
//! "method B", paho) loses the message if the router dies in between: the PUBREL state
//! (`pending_rel`) is in that router's memory only, and the message was acknowledged
//! in the cluster. Held unacknowledged until PUBCOMP, it is delivered again by the
//! router the session resumes on (a new PUBLISH flagged DUP, with a new packet id): a
//! method-B client that never got the PUBREL hands the new copy over (the old one waits
//! for a PUBREL that never comes); a client that handed it over at PUBLISH gets a
//! duplicate. At least once, never lost.
//!
//! While the session stays on this router its PUBRELs are sent again on resumption
//! (takeover or a new connection), so those deliveries must not go back to the queue
//! when the connection ends (they would be sent again too): the connection's consumer
//! is retired into the session ([`Retired`]), holding them until their PUBCOMP. The
//! session leaving this router (claimed by another, unloaded) or ending drops it, and
//! they go back to the cluster.
//!
//! A local queue (one router, no cluster) keeps settling at PUBREC behind the journal
//! barrier (docs/durability.md): its `pending_rel` outlives the connection in the same
//! process that holds the queue.

use std::collections::BTreeMap;

use super::connection::Connection;
use super::transport::Transport;
use crate::listener::mqtt::state::Retired;

impl<T: Transport> Connection<T> {
    /// The client's PUBREC of `pid`: true when the delivery is a shared queue's, now
    /// marked to be settled at PUBCOMP (its PUBREL goes out at once: nothing to wait for).
    pub(super) fn settle_at_pubcomp(&mut self, pid: u16) -> bool {
        let Some(f) = self.inflight.get_mut(&pid) else {
            return false;
        };
        let shared = self
            .consumers
            .iter()
            .any(|(_, c)| c.queue_name() == &*f.queue && c.is_shared());
        if shared {
            f.released = true;
            // Once released, a copy delivered again is a new message to the client.
            self.data().flows_mut().sent_pids.retain(|_, p| *p != pid);
        }
        shared
    }

    /// The client's PUBCOMP of `pid`: the exchange is over; a delivery held for it
    /// (this connection's, or a retired consumer's) is acknowledged.
    pub(super) fn complete(&mut self, pid: u16) {
        if self.inflight.get(&pid).is_some_and(|f| f.released) {
            self.data().flows_mut().pending_rel.remove(&pid);
            self.settle(pid);
            return;
        }
        let emptied = {
            let mut data = self.data();
            data.flows_mut().pending_rel.remove(&pid);
            data.complete_retired(pid)
        };
        drop(emptied);
    }

    /// Takes the consumers matching `which` out of the connection: those holding
    /// released deliveries are retired (see the module docs) and returned, the others
    /// dropped (what they held goes back to the queue).
    pub(super) fn retire_consumers(
        &mut self,
        which: impl Fn(&super::connection::Source) -> bool,
    ) -> Vec<Retired> {
        let mut retired = Vec::new();
        let mut i = 0;
        while i < self.consumers.len() {
            if !which(&self.consumers[i].0) {
                i += 1;
                continue;
            }
            let (_, consumer) = self.consumers.remove(i);
            let name = consumer.queue_name().to_owned();
            let tags: BTreeMap<u16, u64> = self
                .inflight
                .iter()
                .filter(|(_, f)| f.released && *f.queue == *name)
                .map(|(pid, f)| (*pid, f.tag))
                .collect();
            // The others stay until the client answers them (their packet ids are
            // still in use), settling nothing: their consumer is gone.
            self.inflight
                .retain(|_, f| !(f.released && *f.queue == *name));
            if tags.is_empty() {
                continue;
            }
            let keep: Vec<u64> = tags.values().copied().collect();
            if consumer.retire(&keep) > 0 {
                retired.push(Retired { consumer, tags });
            }
        }
        retired
    }
}
