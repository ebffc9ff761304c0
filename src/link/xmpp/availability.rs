//! Which users are online, per resource: the state presence events and push follow.
//!
//! A user is online while at least one of their resources (full JIDs) is available. The
//! server's presences are not all transitions of that state: Prosody sends an
//! `unavailable` from the user's bare JID during a subscription handshake although the
//! user is online, an answer to a probe repeats what is known, a user subscribed to
//! several of our JIDs sends each change to each of them. So the link keeps the
//! resources it has seen available, and an event is a change of that set or of one
//! resource's presence: "offline" only when the last resource goes, never for a user
//! the link does not know as online.
//!
//! A new session of a bot learns from its server who is online, not who left while it
//! had no session: [`Availability::after`] remembers who was online, with their
//! resources, and the new session asks about each (see [`super::session`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use xmpp_parsers::jid::Jid;

/// One resource's presence, as events show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shown {
    /// `available`, `away`, `chat`, `dnd`, `xa`; `unavailable` for a resource that left.
    pub show: &'static str,
    pub status: Option<String>,
    pub priority: i8,
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    /// The JID whose presence changed (a full JID, or the bare JID when the server
    /// speaks for the user as a whole).
    pub jid: String,
    /// The user's bare JID.
    pub user: String,
    /// That JID's presence after the change.
    pub shown: Shown,
    /// Whether the user has an available resource after the change.
    pub available: bool,
    /// The user's available resources after the change, sorted.
    pub resources: Vec<String>,
}

/// Users' available resources in one session of the link.
#[derive(Debug, Default)]
pub(super) struct Availability {
    online: HashMap<String, BTreeMap<String, Shown>>,
    /// Users who were online when the previous session ended and of whom nothing has
    /// been heard since, with the resources they had that no answer said gone yet. An
    /// unavailable presence for one of them (the answer to the probe sent after the
    /// reconnect), or every resource gone ([`Self::gone`]), says they left meanwhile:
    /// that is "offline".
    unconfirmed: HashMap<String, BTreeSet<String>>,
}

impl Availability {
    /// The state for a new session after `previous` ended: nobody is known online (the
    /// server tells again, answering the probes), but who was is remembered.
    pub fn after(previous: Availability) -> Self {
        let mut unconfirmed = previous.unconfirmed;
        for (user, resources) in previous.online {
            unconfirmed.insert(user, resources.into_keys().collect());
        }
        Self {
            online: HashMap::new(),
            unconfirmed,
        }
    }

    /// The users who were online when an earlier session ended and of whom nothing has
    /// been heard since, with the resources (full JIDs) they had: those a new session
    /// asks about.
    pub fn unconfirmed(&self) -> impl Iterator<Item = (&String, &BTreeSet<String>)> {
        self.unconfirmed.iter()
    }

    /// The server says the resource `full` does not exist (any more): when it was the
    /// last of an unconfirmed user's, that user left while the link had no session —
    /// "offline", for the user as a whole (their bare JID).
    pub fn gone(&mut self, full: &Jid) -> Option<Change> {
        let user = full.to_bare().to_string();
        let resources = self.unconfirmed.get_mut(&user)?;
        resources.remove(&full.to_string());
        if !resources.is_empty() {
            return None;
        }
        self.unconfirmed.remove(&user);
        Some(Change {
            jid: user.clone(),
            user,
            shown: Shown {
                show: "unavailable",
                status: None,
                priority: 0,
            },
            available: false,
            resources: Vec::new(),
        })
    }

    /// Whether the user has an available resource.
    pub fn is_online(&self, user: &str) -> bool {
        self.online.contains_key(user)
    }

    /// An available presence from `from`; `None` when it repeats what is known.
    pub fn available(&mut self, from: &Jid, shown: Shown) -> Option<Change> {
        let user = from.to_bare().to_string();
        let jid = from.to_string();
        self.unconfirmed.remove(&user);
        let resources = self.online.entry(user.clone()).or_default();
        if resources.get(&jid) == Some(&shown) {
            return None;
        }
        resources.insert(jid.clone(), shown.clone());
        let resources = resources.keys().cloned().collect();
        Some(Change {
            jid,
            user,
            shown,
            available: true,
            resources,
        })
    }

    /// An unavailable presence from `from`; `None` when it changes nothing: a resource
    /// not known as available (one already gone, or the same presence sent to another
    /// of our JIDs), or the bare JID of a user who is not known online or still has
    /// resources online.
    pub fn unavailable(
        &mut self,
        from: &Jid,
        status: Option<String>,
        priority: i8,
    ) -> Option<Change> {
        let user = from.to_bare().to_string();
        let jid = from.to_string();
        let shown = Shown {
            show: "unavailable",
            status,
            priority,
        };
        let Some(resources) = self.online.get_mut(&user) else {
            // Not online in this session: "offline" only for someone who was online
            // before the reconnect and has not been heard of since.
            return self.unconfirmed.remove(&user).map(|_| Change {
                jid,
                user,
                shown,
                available: false,
                resources: Vec::new(),
            });
        };
        resources.remove(&jid)?;
        let left: Vec<String> = resources.keys().cloned().collect();
        if left.is_empty() {
            self.online.remove(&user);
        }
        Some(Change {
            jid,
            user,
            shown,
            available: !left.is_empty(),
            resources: left,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    fn shown(show: &'static str) -> Shown {
        Shown {
            show,
            status: None,
            priority: 0,
        }
    }

    fn brief(c: Option<Change>) -> Option<(String, bool, &'static str, usize)> {
        c.map(|c| (c.jid, c.available, c.shown.show, c.resources.len()))
    }

    #[test]
    fn a_bare_unavailable_is_not_offline_whether_or_not_resources_are_online() {
        let mut a = Availability::default();
        // Before the resource's available presence (Prosody's subscription handshake).
        assert_eq!(a.unavailable(&jid("al@x"), None, 0), None);
        let on = a.available(&jid("al@x/ph"), shown("available"));
        assert_eq!(brief(on), Some(("al@x/ph".into(), true, "available", 1)));
        // After it.
        assert_eq!(a.unavailable(&jid("al@x"), None, 0), None);
        assert!(a.is_online("al@x"));
    }

    #[test]
    fn offline_only_when_the_last_resource_goes() {
        let mut a = Availability::default();
        a.available(&jid("al@x/ph"), shown("available")).unwrap();
        let b = a.available(&jid("al@x/pc"), shown("dnd")).unwrap();
        assert_eq!(b.resources, ["al@x/pc", "al@x/ph"]);
        let left = a.unavailable(&jid("al@x/pc"), None, 0);
        assert_eq!(
            brief(left),
            Some(("al@x/pc".into(), true, "unavailable", 1))
        );
        // The same unavailable again (sent to another of our JIDs): nothing.
        assert_eq!(a.unavailable(&jid("al@x/pc"), None, 0), None);
        let last = a
            .unavailable(&jid("al@x/ph"), Some("bye".into()), 0)
            .unwrap();
        assert_eq!((last.available, last.resources.len()), (false, 0));
        assert_eq!(last.shown.status.as_deref(), Some("bye"));
        assert!(!a.is_online("al@x"));
        // A new resource: online again.
        let again = a.available(&jid("al@x/ph"), shown("away")).unwrap();
        assert_eq!(again.resources, ["al@x/ph"]);
    }

    #[test]
    fn a_repeated_presence_is_no_change_and_a_new_status_is() {
        let mut a = Availability::default();
        a.available(&jid("al@x/ph"), shown("available")).unwrap();
        assert_eq!(a.available(&jid("al@x/ph"), shown("available")), None);
        let away = a.available(&jid("al@x/ph"), shown("away")).unwrap();
        assert!(away.available && away.shown.show == "away");
    }

    #[test]
    fn after_a_reconnect_an_unavailable_for_a_user_who_was_online_is_offline_once() {
        let mut a = Availability::default();
        a.available(&jid("al@x/ph"), shown("available")).unwrap();
        a.available(&jid("bo@x/pc"), shown("available")).unwrap();
        let mut a = Availability::after(a);
        assert!(!a.is_online("al@x"));
        // al left meanwhile: the probe's answer is an unavailable from the bare JID.
        let off = a.unavailable(&jid("al@x"), None, 0);
        assert_eq!(brief(off), Some(("al@x".into(), false, "unavailable", 0)));
        assert_eq!(a.unavailable(&jid("al@x"), None, 0), None);
        // bo is still there: available again, then an unavailable bare JID is nothing.
        assert!(a.available(&jid("bo@x/pc"), shown("available")).is_some());
        assert_eq!(a.unavailable(&jid("bo@x"), None, 0), None);
        // Someone never seen: nothing.
        assert_eq!(a.unavailable(&jid("cy@x"), None, 0), None);
    }

    #[test]
    fn after_a_reconnect_a_user_whose_every_resource_is_gone_is_offline_once() {
        let mut a = Availability::default();
        a.available(&jid("al@x/ph"), shown("available")).unwrap();
        a.available(&jid("al@x/pc"), shown("available")).unwrap();
        a.available(&jid("bo@x/pc"), shown("available")).unwrap();
        let mut a = Availability::after(a);
        let mut asked: Vec<(String, Vec<String>)> = a
            .unconfirmed()
            .map(|(u, r)| (u.clone(), r.iter().cloned().collect()))
            .collect();
        asked.sort();
        assert_eq!(
            asked,
            [
                (
                    "al@x".to_owned(),
                    vec!["al@x/pc".to_owned(), "al@x/ph".to_owned()]
                ),
                ("bo@x".to_owned(), vec!["bo@x/pc".to_owned()]),
            ]
        );
        // One of al's resources gone: al may still be online.
        assert_eq!(a.gone(&jid("al@x/ph")), None);
        let off = a.gone(&jid("al@x/pc"));
        assert_eq!(brief(off), Some(("al@x".into(), false, "unavailable", 0)));
        assert_eq!(a.gone(&jid("al@x/pc")), None);
        // bo answered the probe (online): a resource gone later is not "offline".
        a.available(&jid("bo@x/tab"), shown("available")).unwrap();
        assert_eq!(a.gone(&jid("bo@x/pc")), None);
        assert!(a.is_online("bo@x"));
    }
}
