//! What a consumer holds unacknowledged, by delivery tag.
//!
//! A consumer's tags only grow (`ConsumerSlot::next_tag`) and a delivery goes in as it
//! is handed over, so a deque kept in tag order does what a `BTreeMap` did without a
//! node allocation per delivery; acknowledgements in delivery order (MQTT QoS 0 settled
//! after each batch, most clients' acks) take from the front. The MQTT QoS 0 1→1
//! profile spent 14 % of the router's CPU inserting into and removing from the map.
//! Out-of-order acknowledgements find their entry by binary search; removing one from
//! the middle moves at most the consumer's prefetch of entries.

use std::collections::VecDeque;

use super::Entry;

#[derive(Debug, Default)]
pub(super) struct Unacked(VecDeque<(u64, Entry)>);

impl Unacked {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Gives its allocation back when it holds nothing (see `Queue::release_idle`).
    pub(super) fn release_if_empty(&mut self) {
        if self.0.is_empty() {
            self.0 = VecDeque::new();
        }
    }

    /// Holds `e` as delivery `tag`. Tags arrive in increasing order; one that does not
    /// (never the case today) still goes in its place.
    pub(super) fn insert(&mut self, tag: u64, e: Entry) {
        match self.0.back() {
            Some((last, _)) if *last >= tag => {
                let at = self.0.partition_point(|(t, _)| *t < tag);
                if self.0.get(at).is_some_and(|(t, _)| *t == tag) {
                    self.0[at].1 = e;
                } else {
                    self.0.insert(at, (tag, e));
                }
            }
            _ => self.0.push_back((tag, e)),
        }
    }

    /// Takes delivery `tag` out, if held.
    pub(super) fn remove(&mut self, tag: u64) -> Option<Entry> {
        if self.0.front().is_some_and(|(t, _)| *t == tag) {
            return self.0.pop_front().map(|(_, e)| e);
        }
        let at = self.0.binary_search_by_key(&tag, |(t, _)| *t).ok()?;
        self.0.remove(at).map(|(_, e)| e)
    }

    /// Takes out every delivery up to and including `tag` (a cumulative ack), in order.
    pub(super) fn remove_through(&mut self, tag: u64) -> Vec<Entry> {
        let n = self.0.partition_point(|(t, _)| *t <= tag);
        self.0.drain(..n).map(|(_, e)| e).collect()
    }

    /// Keeps only the deliveries whose tags are in `keep`; returns the others, in order.
    pub(super) fn keep_only(&mut self, keep: &[u64]) -> Vec<Entry> {
        let mut gone = Vec::new();
        self.0 = std::mem::take(&mut self.0)
            .into_iter()
            .filter_map(|(tag, e)| {
                if keep.contains(&tag) {
                    return Some((tag, e));
                }
                gone.push(e);
                None
            })
            .collect();
        gone
    }

    /// Every delivery held, in tag order.
    pub(super) fn into_entries(self) -> impl Iterator<Item = Entry> {
        self.0.into_iter().map(|(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::{Destination, Message};

    fn entry(body: &str) -> Entry {
        Entry::new(
            Arc::new(Message::new(body.to_owned())),
            Destination::queue("q"),
            None,
        )
    }

    fn bodies(v: &[Entry]) -> Vec<String> {
        v.iter()
            .map(|e| String::from_utf8_lossy(&e.message.body).into_owned())
            .collect()
    }

    #[test]
    fn removes_in_any_order_and_through_a_tag() {
        let mut u = Unacked::default();
        for t in 1..=6 {
            u.insert(t, entry(&t.to_string()));
        }
        assert!(u.remove(3).is_some(), "from the middle");
        assert!(u.remove(3).is_none(), "only once");
        assert!(u.remove(1).is_some(), "from the front");
        assert!(u.remove(9).is_none(), "never delivered");
        assert_eq!(bodies(&u.remove_through(4)), ["2", "4"]);
        assert_eq!(u.len(), 2);
        assert_eq!(bodies(&u.keep_only(&[6])), ["5"]);
        assert_eq!(bodies(&u.into_entries().collect::<Vec<_>>()), ["6"]);
    }

    #[test]
    fn a_tag_out_of_order_still_goes_in_its_place() {
        let mut u = Unacked::default();
        u.insert(5, entry("5"));
        u.insert(2, entry("2"));
        u.insert(7, entry("7"));
        assert_eq!(bodies(&u.remove_through(5)), ["2", "5"]);
        assert!(u.remove(7).is_some());
        assert_eq!(u.len(), 0);
    }
}
