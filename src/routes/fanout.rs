//! Worst-case fan-out of a route table: how many legs (deliveries to a queue or topic,
//! AMQP publishes, XMPP stanzas) one publish can turn into, computed when the table is
//! compiled so that `switchboard check` and a reload refuse a table over
//! `routes.max_fanout` before it can turn one message into a million.
//!
//! The bound is an upper bound, never an underestimate:
//! - a route's internal target may feed every route whose source could match what the
//!   target renders to (a target whose name comes from a header could be anything);
//! - of the routes one concrete destination matches, each also matches every other
//!   (they all match that name), so the routes a publish can hit together lie among
//!   the neighbours (overlapping sources) of any one of them: the bound takes the
//!   largest neighbourhood sum;
//! - every destination resolved also counts one leg for itself (delivered as addressed
//!   when no route claims it, or by `passthrough`);
//! - chains stop at [`MAX_ROUTE_DEPTH`] as they do at run time;
//! - a route whose jq transform may split a message counts its legs `jq_max_outputs`
//!   times.

use super::template::Grammar;
use super::{CompiledRoute, MAX_ROUTE_DEPTH, Source, Target};
use crate::core::Pattern;
use crate::core::pattern::Level;
use crate::translate::mqtt_names;

/// Where an internal target can lead.
pub(super) enum Reach {
    /// An external leg (AMQP, XMPP): one delivery, no further routing.
    External,
    /// The routes whose source could match what the target renders to.
    Routes(Vec<usize>),
    /// The name comes from a header: any route with a source of this kind (queue:
    /// `true`, topic: `false`).
    Anything { queue: bool },
}

/// Above this many routes reachable from one target the bound sums them all instead of
/// comparing neighbourhoods (quadratic), which can only make it larger. (The routes a
/// publish enters by are always compared.)
const NEIGHBOURHOOD_MAX: usize = 1024;

/// Each route's source as a pattern, for [`reach`] (queue names parsed once, not once
/// per target): `(is a queue, pattern)`; `None` for link sources.
pub(super) fn source_patterns(routes: &[CompiledRoute]) -> Vec<Option<(bool, Pattern)>> {
    routes
        .iter()
        .map(|r| match &r.source {
            Source::Queue(q) => Pattern::parse(q).ok().map(|p| (true, p)),
            Source::Topic(p) => Some((false, p.clone())),
            _ => None,
        })
        .collect()
}

/// Where target `t` of route `r` can lead, among the routes whose
/// [`source_patterns`] are `sources`.
pub(super) fn reach(r: &CompiledRoute, t: &Target, sources: &[Option<(bool, Pattern)>]) -> Reach {
    let many = |k: usize| match &r.source {
        Source::Topic(p) => p
            .levels()
            .iter()
            .filter(|l| !matches!(l, Level::Literal(_)))
            .nth(k - 1)
            .is_some_and(|l| *l == Level::Many),
        _ => false,
    };
    let (is_queue, pat) = match t {
        Target::Queue(tpl) if tpl.uses_headers() => return Reach::Anything { queue: true },
        Target::Topic(tpl) | Target::Mqtt(tpl) if tpl.uses_headers() => {
            return Reach::Anything { queue: false };
        }
        Target::Queue(tpl) => (true, tpl.as_pattern(&many, Grammar::Dot)),
        Target::Topic(tpl) => (false, tpl.as_pattern(&many, Grammar::Dot)),
        Target::Mqtt(tpl) => (
            false,
            mqtt_names::filter_to_internal(&tpl.as_pattern(&many, Grammar::Slash)),
        ),
        Target::Amqp { .. } | Target::Xmpp { .. } | Target::XmppPubsub { .. } => {
            return Reach::External;
        }
    };
    let Ok(tp) = Pattern::parse(&pat) else {
        return Reach::Routes(Vec::new());
    };
    Reach::Routes(
        sources
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.as_ref()
                    .is_some_and(|(q, p)| *q == is_queue && tp.overlaps(p))
            })
            .map(|(j, _)| j)
            .collect(),
    )
}

/// Could one message match both routes' sources?
fn sources_overlap(a: &Source, b: &Source) -> bool {
    match (a, b) {
        (Source::Queue(x), Source::Queue(y)) => x == y,
        (Source::Topic(x), Source::Topic(y)) => x.overlaps(y),
        (Source::Amqp { link: x, .. }, Source::Amqp { link: y, .. })
        | (Source::Xmpp { link: x, .. }, Source::Xmpp { link: y, .. }) => x == y,
        _ => false,
    }
}

/// A set of routes one destination may hit, prepared for the bound: for each member,
/// its neighbours in the set (or `None`: sum them all).
struct Group {
    members: Vec<usize>,
    neighbours: Option<Vec<Vec<usize>>>,
}

impl Group {
    fn new(members: Vec<usize>, routes: &[CompiledRoute], cap: usize) -> Self {
        let neighbours = (members.len() <= cap).then(|| {
            members
                .iter()
                .map(|&j| {
                    members
                        .iter()
                        .copied()
                        .filter(|&k| sources_overlap(&routes[j].source, &routes[k].source))
                        .collect()
                })
                .collect()
        });
        Self {
            members,
            neighbours,
        }
    }

    /// The most legs the routes of this group can make together, each at `legs[k]`.
    fn bound(&self, legs: &[u64]) -> u64 {
        let sum = |ks: &[usize]| ks.iter().fold(0u64, |a, &k| a.saturating_add(legs[k]));
        match &self.neighbours {
            Some(n) => n.iter().map(|ks| sum(ks)).max().unwrap_or(0),
            None => sum(&self.members),
        }
    }

    /// The member whose neighbourhood gives the bound (to point an error at).
    fn worst(&self, legs: &[u64]) -> Option<usize> {
        let sum = |ks: &[usize]| ks.iter().fold(0u64, |a, &k| a.saturating_add(legs[k]));
        match &self.neighbours {
            Some(n) => n
                .iter()
                .enumerate()
                .max_by_key(|(_, ks)| sum(ks))
                .map(|(i, _)| self.members[i]),
            None => self.members.first().copied(),
        }
    }
}

/// The worst case of the table: (legs, the route a publish that reaches it starts at).
/// `None` for a table without routes.
pub(super) fn worst_case(routes: &[CompiledRoute]) -> Option<(u64, usize)> {
    let n = routes.len();
    if n == 0 {
        return None;
    }
    // Per route, per target: what it reaches, as a group.
    let any_queue: Vec<usize> = (0..n)
        .filter(|&j| matches!(routes[j].source, Source::Queue(_)))
        .collect();
    let any_topic: Vec<usize> = (0..n)
        .filter(|&j| matches!(routes[j].source, Source::Topic(_)))
        .collect();
    let sources = source_patterns(routes);
    let targets: Vec<Vec<Option<Group>>> = routes
        .iter()
        .map(|r| {
            r.targets
                .iter()
                .map(|t| match reach(r, t, &sources) {
                    Reach::External => None,
                    Reach::Routes(v) => Some(Group::new(v, routes, NEIGHBOURHOOD_MAX)),
                    Reach::Anything { queue: true } => {
                        Some(Group::new(any_queue.clone(), routes, NEIGHBOURHOOD_MAX))
                    }
                    Reach::Anything { queue: false } => {
                        Some(Group::new(any_topic.clone(), routes, NEIGHBOURHOOD_MAX))
                    }
                })
                .collect()
        })
        .collect();
    // legs[i] at depth d: route i applied at depth d. Its internal targets resolve at
    // d + 1, where routes are applied only below MAX_ROUTE_DEPTH.
    let mut next = vec![0u64; n];
    for d in (0..MAX_ROUTE_DEPTH).rev() {
        let mut cur = vec![0u64; n];
        for i in 0..n {
            let per_copy = targets[i].iter().fold(0u64, |acc, g| {
                let legs = match g {
                    None => 1,
                    Some(g) if g.members.is_empty() || d + 1 >= MAX_ROUTE_DEPTH => 1,
                    Some(g) => g.bound(&next).saturating_add(1),
                };
                acc.saturating_add(legs)
            });
            // A jq transform may split the message: every copy goes to every target.
            cur[i] = per_copy.saturating_mul(routes[i].transform.max_copies() as u64);
        }
        next = cur;
    }
    // A publish into the table: the routes its destination matches, plus itself.
    let all = Group::new((0..n).collect(), routes, usize::MAX);
    let legs = all.bound(&next).saturating_add(1);
    Some((legs, all.worst(&next).unwrap_or(0)))
}
