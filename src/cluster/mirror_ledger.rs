//! Which values a mirror of a KV bucket applies ([`super::replicated`]), given what
//! the watch brings and this router's own writes. Pure bookkeeping, so that the
//! interleavings of a watch and writes in flight are tested here.
//!
//! The owner applies its own writes when it makes them. So while a key has writes of
//! this router in flight, what the watch brings for it is held back; once they have
//! settled, the value of the highest revision known for the key (this router's write,
//! or another router's later one) is applied, and the echo of this router's write is
//! skipped when the watch brings it. Applying this router's own value again at that
//! point is deliberate: another router's older value may have been applied while the
//! write was being made (the watch and the owner run apart), and this undoes it.
//! A write that failed leaves the outcome unknown: the key is read back (again and
//! again while NATS does not answer), its changes held back meanwhile.

use std::collections::HashMap;

use bytes::Bytes;

/// A key's value: `None` once deleted.
pub type Value = Option<Bytes>;

/// What the mirror must do after a write settled.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Apply this value.
    Apply(Value),
    /// Read the key back and report it with [`Ledger::read_back`].
    ReadBack,
    /// Nothing yet (other writes to the key are still in flight).
    Wait,
}

/// A key this router wrote whose outcome is not settled, or whose echo the watch has
/// not brought yet.
#[derive(Debug, Default)]
struct KeyState {
    /// Writes (and read-backs) in flight.
    pending: u32,
    /// The highest revision known for the key, with its value.
    best: Option<(u64, Value)>,
}

impl KeyState {
    fn offer(&mut self, revision: u64, value: Value) {
        if self.best.as_ref().is_none_or(|(r, _)| revision > *r) {
            self.best = Some((revision, value));
        }
    }
}

/// See the module docs. Keys are the bucket's (escaped) keys.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Only keys this router wrote recently: see [`KeyState`].
    keys: HashMap<String, KeyState>,
    /// The last revision the watch brought.
    seen: u64,
}

impl Ledger {
    /// The last revision the watch brought (0: none yet).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// This router started a write to `key`: announced before the watch can echo it.
    pub fn begin(&mut self, key: String) {
        self.keys.entry(key).or_default().pending += 1;
    }

    /// The watch brought `value` for `key` under `revision`: `Some` when the mirror
    /// applies it.
    pub fn entry(&mut self, key: &str, revision: u64, value: Value) -> Option<Value> {
        self.seen = revision;
        let Some(st) = self.keys.get_mut(key) else {
            return Some(value);
        };
        if st.pending > 0 {
            st.offer(revision, value);
            return None;
        }
        let best = st.best.as_ref().map_or(0, |(r, _)| *r);
        if revision >= best {
            // The echo of this router's last write, or newer: nothing more to skip.
            self.keys.remove(key);
        }
        (revision > best).then_some(value)
    }

    /// This router's write to `key` was stored under a revision with its value, or
    /// failed (`None`).
    pub fn end(&mut self, key: &str, stored: Option<(u64, Value)>) -> Settled {
        let st = self.keys.entry(key.to_owned()).or_default();
        st.pending = st.pending.saturating_sub(1);
        match stored {
            Some((revision, value)) => st.offer(revision, value),
            None => {
                // The read-back counts as a write in flight: the watch is held back.
                st.pending += 1;
                return Settled::ReadBack;
            }
        }
        self.settle(key)
    }

    /// The key as read back after a failed write (`Ok(None)`: absent), or `Err` when it
    /// could not be read: then it is read again (NATS is unreachable; the key's
    /// changes are held back until it answers).
    pub fn read_back(&mut self, key: &str, read: Result<Option<(u64, Value)>, ()>) -> Settled {
        let st = self.keys.entry(key.to_owned()).or_default();
        match read {
            Ok(Some((revision, value))) => st.offer(revision, value),
            Ok(None) => st.offer(0, None),
            Err(()) => return Settled::ReadBack,
        }
        st.pending = st.pending.saturating_sub(1);
        self.settle(key)
    }

    fn settle(&mut self, key: &str) -> Settled {
        let Some(st) = self.keys.get_mut(key) else {
            return Settled::Wait;
        };
        if st.pending > 0 {
            return Settled::Wait;
        }
        match st.best.clone() {
            Some((revision, value)) => {
                if revision <= self.seen {
                    // The watch has passed it: no echo to skip any more.
                    self.keys.remove(key);
                }
                Settled::Apply(value)
            }
            None => {
                self.keys.remove(key);
                Settled::Wait
            }
        }
    }

    /// Keys with something not settled (bounded by the writes in flight).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &'static str) -> Value {
        Some(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn other_routers_values_are_applied() {
        let mut l = Ledger::default();
        assert_eq!(l.entry("k", 1, v("a")), Some(v("a")));
        assert_eq!(l.entry("k", 2, None), Some(None));
        assert_eq!(l.seen(), 2);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn own_write_is_not_echoed() {
        // Acknowledged first, echoed after.
        let mut l = Ledger::default();
        l.begin("k".into());
        assert_eq!(l.end("k", Some((5, v("mine")))), Settled::Apply(v("mine")));
        assert_eq!(l.entry("k", 5, v("mine")), None);
        assert_eq!(l.tracked(), 0);
        // Echoed first, acknowledged after.
        l.begin("k".into());
        assert_eq!(l.entry("k", 6, v("again")), None);
        assert_eq!(
            l.end("k", Some((6, v("again")))),
            Settled::Apply(v("again"))
        );
        assert_eq!(l.tracked(), 0);
        assert_eq!(l.entry("k", 7, v("other")), Some(v("other")));
    }

    #[test]
    fn a_later_write_elsewhere_wins_over_mine() {
        let mut l = Ledger::default();
        l.begin("k".into());
        assert_eq!(l.entry("k", 5, v("mine")), None);
        assert_eq!(
            l.entry("k", 6, v("theirs")),
            None,
            "held back while mine is in flight"
        );
        assert_eq!(
            l.end("k", Some((5, v("mine")))),
            Settled::Apply(v("theirs"))
        );
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn an_earlier_write_elsewhere_is_undone_by_mine() {
        let mut l = Ledger::default();
        // Theirs came before mine was announced (applied: the watch runs apart).
        assert_eq!(l.entry("k", 4, v("theirs")), Some(v("theirs")));
        l.begin("k".into());
        assert_eq!(l.end("k", Some((5, v("mine")))), Settled::Apply(v("mine")));
        assert_eq!(l.entry("k", 5, v("mine")), None);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn several_writes_settle_once_on_the_last() {
        let mut l = Ledger::default();
        l.begin("k".into());
        l.begin("k".into());
        assert_eq!(l.end("k", Some((5, v("one")))), Settled::Wait);
        assert_eq!(l.end("k", Some((6, None))), Settled::Apply(None));
        assert_eq!(l.entry("k", 5, v("one")), None);
        assert_eq!(l.entry("k", 6, None), None);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn a_failed_write_is_read_back() {
        let mut l = Ledger::default();
        l.begin("k".into());
        assert_eq!(l.end("k", None), Settled::ReadBack);
        assert_eq!(
            l.entry("k", 3, v("theirs")),
            None,
            "held back during the read"
        );
        assert_eq!(
            l.read_back("k", Ok(Some((3, v("theirs"))))),
            Settled::Apply(v("theirs"))
        );
        assert_eq!(l.tracked(), 0);
        // Absent: the mirror drops what it set.
        l.begin("j".into());
        assert_eq!(l.end("j", None), Settled::ReadBack);
        assert_eq!(l.read_back("j", Ok(None)), Settled::Apply(None));
        // Unreadable: read again, the watch held back meanwhile.
        l.begin("i".into());
        assert_eq!(l.end("i", None), Settled::ReadBack);
        assert_eq!(l.read_back("i", Err(())), Settled::ReadBack);
        assert_eq!(l.entry("i", 9, v("later")), None);
        assert_eq!(
            l.read_back("i", Ok(Some((9, v("later"))))),
            Settled::Apply(v("later"))
        );
        assert_eq!(l.tracked(), 0);
    }
}
