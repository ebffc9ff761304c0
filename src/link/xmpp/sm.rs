//! Stream management (XEP-0198) state of a client stream: the counters, and the
//! stanzas the server has not acknowledged yet.
//!
//! Every stanza sent after `<enabled/>` is kept here, with what to settle once the
//! server has it (`S`: a delivery of the link queue, a push waiting for its turn, or
//! nothing), until an `<a h='…'/>` covers it. `h` counts stanzas modulo 2³², so the
//! oldest kept stanza is number `acked + 1`. After a dropped connection the state
//! outlives the stream: a resumed stream (`<resumed h='…'/>`) drops what the server
//! says it got and sends the rest again, in order; when the server cannot resume, what
//! is left is handed back unsettled, to be sent again on a new session.
//!
//! The inbound counter is the other direction: stanzas from the server this side has
//! taken, reported in `<a/>` and in `<resume/>`.

use std::collections::VecDeque;

use tokio_xmpp::Stanza;
use xmpp_parsers::sm;

#[derive(Debug)]
pub(super) struct Sm<S> {
    /// The server's id for resuming this stream; `None` when it does not allow it.
    resume_id: Option<String>,
    /// Stanzas from the server taken so far.
    inbound: u32,
    /// Stanzas of ours the server has acknowledged so far (its last `h`).
    acked: u32,
    /// Sent and not acknowledged, oldest first.
    unacked: VecDeque<(Stanza, S)>,
    /// An `<r/>` is out and its `<a/>` has not come back.
    pub requested: bool,
}

impl<S> Sm<S> {
    /// The state of a stream the server just enabled stream management on.
    pub fn enabled(e: &sm::Enabled) -> Self {
        Self {
            resume_id: e.id.as_ref().filter(|_| e.resume).map(|id| id.0.clone()),
            inbound: 0,
            acked: 0,
            unacked: VecDeque::new(),
            requested: false,
        }
    }

    /// What to send to resume this stream on a new connection, if the server allows it.
    pub fn resume(&self) -> Option<sm::Resume> {
        self.resume_id.as_ref().map(|id| sm::Resume {
            h: self.inbound,
            previd: sm::StreamId(id.clone()),
        })
    }

    pub fn resumable(&self) -> bool {
        self.resume_id.is_some()
    }

    /// One more stanza taken from the server.
    pub fn received(&mut self) {
        self.inbound = self.inbound.wrapping_add(1);
    }

    pub fn inbound(&self) -> u32 {
        self.inbound
    }

    /// A stanza written (or about to be): kept until acknowledged.
    pub fn sent(&mut self, stanza: Stanza, settle: S) {
        self.unacked.push_back((stanza, settle));
    }

    /// The server has `h` stanzas of ours: returns what that settles, oldest first.
    /// An `h` beyond what was sent, or behind an earlier one, is a protocol error.
    pub fn acked(&mut self, h: u32) -> Result<Vec<S>, String> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.unacked.len() {
            return Err(format!(
                "the server acknowledged stanza {h}, but only {} were sent",
                self.acked.wrapping_add(self.unacked.len() as u32)
            ));
        }
        self.acked = h;
        Ok(self.unacked.drain(..n).map(|(_, s)| s).collect())
    }

    /// Stanzas not acknowledged yet.
    pub fn pending(&self) -> usize {
        self.unacked.len()
    }

    /// The stanzas not acknowledged yet, oldest first: what a resumed stream sends again.
    pub fn unacked(&self) -> impl Iterator<Item = &Stanza> {
        self.unacked.iter().map(|(s, _)| s)
    }

    /// Ends the state: what was never acknowledged, to be settled as not delivered.
    pub fn into_unsettled(self) -> Vec<S> {
        self.unacked.into_iter().map(|(_, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::message::Message;

    fn enabled(resume: bool) -> sm::Enabled {
        sm::Enabled {
            id: Some(sm::StreamId("s1".into())),
            location: None,
            max: None,
            resume,
        }
    }

    fn stanza(n: u32) -> Stanza {
        let mut m = Message::new(None);
        m.id = Some(xmpp_parsers::message::Id(n.to_string()));
        Stanza::Message(m)
    }

    #[test]
    fn acks_settle_in_order_and_the_rest_is_sent_again() {
        let mut s = Sm::enabled(&enabled(true));
        for n in 1..=5 {
            s.sent(stanza(n), n);
        }
        assert_eq!(s.acked(2).unwrap(), vec![1, 2]);
        assert_eq!(s.acked(2).unwrap(), Vec::<u32>::new(), "the same h again");
        assert_eq!(s.pending(), 3);
        let ids: Vec<_> = s
            .unacked()
            .map(|st| match st {
                Stanza::Message(m) => m.id.clone().unwrap().0,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(ids, ["3", "4", "5"]);
        assert!(s.acked(9).is_err(), "more than was sent");
        assert_eq!(s.into_unsettled(), vec![3, 4, 5]);
    }

    #[test]
    fn counters_wrap_around() {
        let mut s: Sm<u32> = Sm::enabled(&enabled(true));
        s.acked = u32::MAX - 1;
        for n in 0..4 {
            s.sent(stanza(n), n);
        }
        assert_eq!(s.acked(1).unwrap(), vec![0, 1, 2]);
        s.inbound = u32::MAX;
        s.received();
        assert_eq!(s.resume().unwrap().h, 0);
    }

    #[test]
    fn resumption_needs_the_servers_consent() {
        assert!(Sm::<()>::enabled(&enabled(true)).resume().is_some());
        assert!(Sm::<()>::enabled(&enabled(false)).resume().is_none());
    }
}
