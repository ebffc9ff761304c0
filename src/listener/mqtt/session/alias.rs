//! Outbound topic aliases (MQTT 5 §3.3.2.3.4): a 5.0 client that announces a Topic Alias
//! Maximum lets the server replace a topic it sent before by a two-byte number. For the
//! small messages of IoT traffic the topic is often most of the packet.
//!
//! Each connection keeps at most [`MAX_ALIASES`] (or the client's maximum, if lower)
//! topics, replacing the least recently used one when full, so a client announcing
//! 65535 cannot make the router hold 65535 topic names for it. Topics of three bytes or
//! fewer are never aliased: the alias property itself takes three.

use std::sync::atomic::{AtomicU64, Ordering};

/// Most aliases one connection uses, whatever the client allows.
pub const MAX_ALIASES: u16 = 64;

/// Bytes of topic names not sent thanks to aliases (net of the alias properties), since
/// start: `GET /mqtt` shows it.
static BYTES_SAVED: AtomicU64 = AtomicU64::new(0);

pub fn bytes_saved() -> u64 {
    BYTES_SAVED.load(Ordering::Relaxed)
}

/// A 5.0 connection's topic aliases both ways, in one box: most connections never
/// have any, and an idle one carries 8 bytes for them instead of 32.
#[derive(Debug, Default)]
pub struct Aliases {
    /// Set by the client's PUBLISHes.
    pub inbound: std::collections::BTreeMap<u16, String>,
    /// Ours towards a client that accepts them.
    pub outbound: Option<OutAliases>,
}

/// One connection's outbound aliases: slot `i` holds alias `i + 1`.
#[derive(Debug)]
pub struct OutAliases {
    max: u16,
    /// Topic and when it was last sent (a counter of sends).
    slots: Vec<(Box<str>, u64)>,
    clock: u64,
}

/// What a PUBLISH to a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No alias: the topic as it is.
    Topic,
    /// The topic with a new (or reassigned) alias, which the client learns from it.
    Assign(u16),
    /// An empty topic and an alias the client already knows.
    Known(u16),
}

impl OutAliases {
    /// `None` when the client accepts no aliases.
    pub fn new(client_max: u16) -> Option<Self> {
        (client_max > 0).then(|| Self {
            max: client_max.min(MAX_ALIASES),
            slots: Vec::new(),
            clock: 0,
        })
    }

    /// How a PUBLISH to `topic` should name it; changes nothing until [`Self::sent`].
    pub fn plan(&self, topic: &str) -> Plan {
        if topic.len() <= 3 {
            return Plan::Topic;
        }
        if let Some(i) = self.slots.iter().position(|(t, _)| &**t == topic) {
            return Plan::Known(i as u16 + 1);
        }
        if self.slots.len() < usize::from(self.max) {
            return Plan::Assign(self.slots.len() as u16 + 1);
        }
        let lru = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, used))| *used)
            .map_or(0, |(i, _)| i);
        Plan::Assign(lru as u16 + 1)
    }

    /// The PUBLISH planned for `topic` went out: the client now knows the alias.
    pub fn sent(&mut self, topic: &str, plan: Plan) {
        self.clock += 1;
        let (alias, saved) = match plan {
            Plan::Topic => return,
            Plan::Known(a) => (a, topic.len() as i64 - 3),
            Plan::Assign(a) => (a, -3),
        };
        let i = usize::from(alias - 1);
        if i == self.slots.len() {
            self.slots.push((topic.into(), self.clock));
        } else if let Some(slot) = self.slots.get_mut(i) {
            if &*slot.0 != topic {
                slot.0 = topic.into();
            }
            slot.1 = self.clock;
        }
        if saved >= 0 {
            BYTES_SAVED.fetch_add(saved as u64, Ordering::Relaxed);
        } else {
            BYTES_SAVED.fetch_sub(saved.unsigned_abs(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(a: &mut OutAliases, topic: &str) -> Plan {
        let p = a.plan(topic);
        a.sent(topic, p);
        p
    }

    #[test]
    fn least_recently_used_alias_is_reassigned() {
        let mut a = OutAliases::new(2).unwrap();
        assert_eq!(send(&mut a, "t/aa"), Plan::Assign(1));
        assert_eq!(send(&mut a, "t/aa"), Plan::Known(1));
        assert_eq!(send(&mut a, "t/bb"), Plan::Assign(2));
        // Full: t/aa was used before t/bb, so its alias goes to t/cc.
        assert_eq!(send(&mut a, "t/cc"), Plan::Assign(1));
        assert_eq!(send(&mut a, "t/bb"), Plan::Known(2));
        assert_eq!(send(&mut a, "t/aa"), Plan::Assign(1));
        assert_eq!(send(&mut a, "t/aa"), Plan::Known(1));
    }

    #[test]
    fn a_plan_not_sent_changes_nothing_and_short_topics_keep_their_name() {
        let mut a = OutAliases::new(5).unwrap();
        assert_eq!(a.plan("t/aa"), Plan::Assign(1));
        assert_eq!(a.plan("t/aa"), Plan::Assign(1));
        assert_eq!(send(&mut a, "abc"), Plan::Topic);
        assert!(OutAliases::new(0).is_none());
        assert_eq!(OutAliases::new(u16::MAX).unwrap().max, MAX_ALIASES);
    }
}
