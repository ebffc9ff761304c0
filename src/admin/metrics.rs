//! `GET /metrics`: the router's figures in the Prometheus text format (0.0.4), gathered
//! at scrape time from the state the rest of the admin API shows. Two sets are counted
//! for the metrics alone, on the hot paths: traffic by protocol
//! ([`crate::translate::traffic`]) and per-route matches ([`crate::routes::RouteCounters`]),
//! both kept per thread so that workers never share a cache line (their cost:
//! docs/benchmarks.md, "Cost of the metrics").
//! docs/admin-api.md lists every metric.
//!
//! Names start with `switchboard_`, are in base units (bytes, seconds) and end in
//! `_total` when they are counters. Labels name listeners, links, causes and kinds,
//! never a client id or a topic. With `?per_object=1` the queue metrics come per queue
//! (label `queue`, client-owned names redacted for callers that are not admins, as in
//! `/queues`) instead of summed, and the route counters per route (label `route`), as
//! RabbitMQ's `/metrics/per-object` does: the same names, so `sum()` of the detailed
//! series is the plain one (less what removed queues and routes had counted).
//!
//! Gathering fills [`Families`], plain data, which [`super::families`] encodes through
//! the `prometheus-client` crate.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::MetricType;
use serde_json::Value;

use super::families::{Families, Labels};
use super::totals::{Counts, counts};
use super::{AdminState, Caller, process, redacted};
use crate::routes::Counts as RouteCounts;
use crate::store::Store as _;
use crate::translate::traffic::{self, Protocol, Totals};

/// The handler: `?per_object=1` (or `true`) for per-queue series.
pub(super) async fn metrics(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Response {
    let per_object = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "per_object=1" || p == "per_object=true")
    });
    match gather(&s, per_object, caller).into_text() {
        Ok(text) => (
            [(
                CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn gather(s: &AdminState, per_object: bool, caller: Caller) -> Families {
    let mut f = Families::default();
    f.gauge("build_info", "The running version (value 1).")
        .sample(vec![("version", env!("CARGO_PKG_VERSION").into())], 1);
    process_figures(&mut f);
    connections(&mut f, &s.gates.to_json());
    traffic(&mut f);
    queues(&mut f, s, per_object, caller);
    memory(&mut f, s);
    drops(&mut f);
    mqtt(&mut f);
    links(&mut f, &s.links.to_json());
    routes(&mut f, s, per_object);
    if let Some(journal) = &s.journal {
        f.counter(
            "journal_commits",
            "Group commits the journal wrote (each covers one or more appends).",
        )
        .value(journal.commits());
        f.histogram(
            "journal_fsync_seconds",
            "How long each fsync of written batches took (one per commit with fsync: always, one per interval otherwise).",
            &journal.fsync_micros(),
            1e6,
        );
        f.histogram(
            "journal_commit_batch_records",
            "Records (appends, removals, delivery marks, metadata) written per group commit.",
            &journal.batch_records(),
            1.0,
        );
        f.gauge(
            "store_writable",
            "1 while the store's writes succeed, 0 while they fail (persistent publishes are refused).",
        )
        .value(journal.check().is_ok().into());
    }
    f
}

fn process_figures(f: &mut Families) {
    if let Some(b) = process::resident_bytes() {
        f.gauge("process_resident_memory_bytes", "Resident set size.")
            .value(b);
    }
    if let Some(n) = process::open_fds() {
        f.gauge("process_open_fds", "Open file descriptors.")
            .value(n);
    }
    if let Some(n) = process::max_fds() {
        f.gauge(
            "process_max_fds",
            "The soft limit on open file descriptors (RLIMIT_NOFILE).",
        )
        .value(n);
    }
}

/// The protocol a listener speaks.
fn protocol(listener: &str) -> &str {
    match listener {
        "stomp" | "stomp-ws" => "stomp",
        "mqtt" | "mqtt-ws" => "mqtt",
        "admin" => "http",
        other => other,
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `GET /limits` figures per listener: (JSON field, metric name, help, type).
const LISTENER_FIGURES: [(&str, &str, &str, MetricType); 4] = [
    (
        "open",
        "connections",
        "Open connections (admitted, not yet closed).",
        MetricType::Gauge,
    ),
    (
        "max_connections",
        "connections_max",
        "The listener's max_connections.",
        MetricType::Gauge,
    ),
    (
        "peers_connected",
        "connected_peers",
        "Peer addresses (IPv6: /64 prefixes) with a connection open.",
        MetricType::Gauge,
    ),
    (
        "admitted",
        "connections_accepted",
        "Connections admitted.",
        MetricType::Counter,
    ),
];

/// From `GET /limits`: per listener.
fn connections(f: &mut Families, gates: &Value) {
    let gates = gates.as_object().into_iter().flatten();
    let labels = |listener: &str| {
        vec![
            ("listener", listener.to_owned()),
            ("protocol", protocol(listener).to_owned()),
        ]
    };
    for (field, name, help, kind) in LISTENER_FIGURES {
        f.family(name, help, kind).samples = gates
            .clone()
            .map(|(listener, g)| (labels(listener), n(&g[field])))
            .collect();
    }
    let refused = f.counter(
        "connections_refused",
        "Connections refused at accept time, by cause: listener_limit, per_ip, rate, out_of_files (the process at its open-file limit), origin (WebSocket upgrades).",
    );
    for (listener, g) in gates {
        for (cause, v) in g["refused"].as_object().into_iter().flatten() {
            let mut l = labels(listener);
            l.push(("cause", cause.clone()));
            refused.sample(l, n(v));
        }
    }
}

/// Which figure of a protocol's traffic totals a metric shows.
type Figure = fn(&Totals) -> u64;

/// Traffic by protocol: (metric name, help, figure).
const TRAFFIC: [(&str, &str, Figure); 4] = [
    (
        "messages_received",
        "Messages the edges published into the core, by protocol: SENDs and PUBLISHes of clients (MQTT wills included), deliveries taken from a link's peer, replies a link routed back.",
        |t| t.received,
    ),
    (
        "payload_received_bytes",
        "Payload (body) bytes of the messages received.",
        |t| t.received_bytes,
    ),
    (
        "messages_delivered",
        "Messages the edges delivered, by protocol: written to a client (redeliveries included), published to a link's peer (once the peer confirmed, for AMQP).",
        |t| t.delivered,
    ),
    (
        "payload_delivered_bytes",
        "Payload (body) bytes of the messages delivered, as sent (an MQTT 3.1.1 envelope included).",
        |t| t.delivered_bytes,
    ),
];

/// Messages and payload bytes in and out, per protocol (every protocol, moved or not).
fn traffic(f: &mut Families) {
    let totals = Protocol::ALL.map(|p| (p.name(), traffic::totals(p)));
    for (name, help, figure) in TRAFFIC {
        f.counter(name, help).samples = totals
            .iter()
            .map(|(p, t)| (vec![("protocol", (*p).to_owned())], figure(t)))
            .collect();
    }
}

/// Queue gauges: ready, unacked, consumers.
const QUEUE_GAUGES: [(&str, &str); 3] = [
    ("queue_messages_ready", "Messages waiting for a consumer."),
    (
        "queue_messages_unacked",
        "Messages assigned to consumers, not yet acknowledged.",
    ),
    ("queue_consumers", "Attached consumers."),
];

/// Queue counters, in the order of [`Counts`].
const QUEUE_COUNTERS: [(&str, &str); 7] = [
    ("queue_messages_published", "Messages that entered a queue."),
    (
        "queue_messages_delivered",
        "Deliveries to consumers, redeliveries included.",
    ),
    (
        "queue_messages_acked",
        "Deliveries acknowledged (auto-ack: handed over).",
    ),
    (
        "queue_messages_redelivered",
        "Messages put back for another delivery (requeued, consumer gone).",
    ),
    (
        "queue_messages_dead_lettered",
        "Messages sent to a dead-letter destination.",
    ),
    ("queue_messages_expired", "Messages whose TTL passed."),
    (
        "queue_messages_dropped",
        "Messages discarded (expired, rejected or overflowed with nowhere to dead-letter them).",
    ),
];

/// The queue families: summed (kept monotonic by [`super::totals`]) or per queue.
fn queues(f: &mut Families, s: &AdminState, per_object: bool, caller: Caller) {
    let stats = s.core.stats();
    f.gauge(
        "queues",
        "Queues, the private ones behind subscriptions and sessions included.",
    )
    .value(stats.queues.len() as u64);
    f.gauge("topic_bindings", "Topic bindings (pattern, queue).")
        .value(stats.bindings as u64);
    f.counter(
        "topic_unrouted_messages",
        "Topic publishes that matched no subscription.",
    )
    .value(stats.unrouted);
    // Per series: labels, [ready, unacked, consumers], counters.
    let rows: Vec<(Labels, [u64; 3], Counts)> = if per_object {
        stats
            .queues
            .iter()
            .map(|q| {
                let name = match caller {
                    Caller::Admin => q.name.clone(),
                    Caller::Local => redacted(&q.name).unwrap_or_else(|| q.name.clone()),
                };
                let gauges = [q.ready as u64, q.unacked as u64, q.consumers as u64];
                (vec![("queue", name)], gauges, counts(q))
            })
            .collect()
    } else {
        let sum = |g: fn(&crate::core::QueueStats) -> usize| {
            stats.queues.iter().map(|q| g(q) as u64).sum::<u64>()
        };
        let gauges = [sum(|q| q.ready), sum(|q| q.unacked), sum(|q| q.consumers)];
        let counts = s
            .totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(&stats.queues);
        vec![(Vec::new(), gauges, counts)]
    };
    for (i, (name, help)) in QUEUE_GAUGES.into_iter().enumerate() {
        f.gauge(name, help).samples = rows.iter().map(|(l, g, _)| (l.clone(), g[i])).collect();
    }
    for (i, (name, help)) in QUEUE_COUNTERS.into_iter().enumerate() {
        f.counter(name, help).samples = rows.iter().map(|(l, _, c)| (l.clone(), c[i])).collect();
    }
}

/// What the memory watermark counts (`GET /memory`), and both watermarks.
fn memory(f: &mut Families, s: &AdminState) {
    let (ready, unacked) = s.core.queue_bytes();
    let held = s.core.held();
    let kinds = [
        ("ready", ready),
        ("unacked", unacked),
        ("retained", held.retained.load(Ordering::Relaxed)),
        ("transactions", held.transactions.load(Ordering::Relaxed)),
    ];
    f.gauge(
        "memory_held_bytes",
        "Bytes the memory watermark counts, by kind: ready and unacked messages in queues, MQTT retained messages, open STOMP transactions.",
    )
    .samples = kinds
        .into_iter()
        .map(|(k, v)| (vec![("kind", k.to_owned())], v))
        .collect();
    f.gauge(
        "memory_high_watermark_bytes",
        "durability.memory_high_watermark (0: off).",
    )
    .value(s.watermarks.memory_high);
    if let Some(dir) = &s.watermarks.data_dir
        && let Ok(free) = crate::watermark::free_space(dir)
    {
        f.gauge(
            "disk_free_bytes",
            "Free bytes on the data directory's file system.",
        )
        .value(free);
        f.gauge(
            "disk_free_limit_bytes",
            "durability.disk_free_limit (0: off).",
        )
        .value(s.watermarks.disk_free_limit);
    }
    f.gauge(
        "publishers_blocked",
        "1 while a watermark holds every publisher back.",
    )
    .value(s.core.flow().blocked().is_some().into());
}

/// Counted causes (`GET /memory`'s `limits`) and lost fields (`GET /loss`).
fn drops(f: &mut Families) {
    f.counter(
        "drops_and_refusals",
        "Messages dropped or refused and limits hit, by cause (a cause appears once it happened).",
    )
    .samples = crate::ratelog::snapshot()
        .into_iter()
        .map(|(cause, v)| (vec![("cause", cause.to_owned())], v))
        .collect();
    let mut lost = Vec::new();
    if let Value::Object(outcomes) = crate::translate::loss::snapshot() {
        for (outcome, edges) in &outcomes {
            for (edge, fields) in edges.as_object().into_iter().flatten() {
                for (field, v) in fields.as_object().into_iter().flatten() {
                    let labels = vec![
                        ("edge", edge.clone()),
                        ("field", field.clone()),
                        ("outcome", outcome.clone()),
                    ];
                    lost.push((labels, n(v)));
                }
            }
        }
    }
    f.counter(
        "untranslatable_fields",
        "Message fields a target protocol cannot carry, by edge, field and what the route's loss policy did (dropped, encoded, rejected).",
    )
    .samples = lost;
}

/// From `GET /mqtt`.
fn mqtt(f: &mut Families) {
    use crate::listener::mqtt::session as mqtt;
    f.gauge(
        "mqtt_parked_connections",
        "Idle MQTT connections waiting in the poller.",
    )
    .value(mqtt::park::parked_now() as u64);
    f.counter(
        "mqtt_oversize_dropped",
        "Deliveries not sent for exceeding the client's Maximum Packet Size.",
    )
    .value(mqtt::oversize_dropped());
    f.counter(
        "mqtt_topic_alias_saved_bytes",
        "Topic bytes not sent thanks to outbound topic aliases.",
    )
    .value(mqtt::alias::bytes_saved());
}

/// Link states, each a 0/1 series.
const LINK_STATES: [&str; 6] = [
    "connecting",
    "connected",
    "blocked",
    "retrying",
    "standby",
    "stopped",
];

/// `GET /links` counters: (JSON field, metric name, help).
const LINK_COUNTERS: [(&str, &str, &str); 9] = [
    (
        "received",
        "link_messages_received",
        "Messages taken from the peer and accepted by the core.",
    ),
    (
        "published",
        "link_messages_published",
        "Messages published to the peer and confirmed.",
    ),
    (
        "rejected",
        "link_messages_rejected",
        "Messages refused on the way in.",
    ),
    (
        "redelivered",
        "link_messages_redelivered",
        "Deliveries the peer marked as redelivered.",
    ),
    (
        "publish_failures",
        "link_publish_failures",
        "Publishes the peer returned or nacked (each attempt).",
    ),
    (
        "republished",
        "link_messages_republished",
        "Messages published again after a connection loss left them unconfirmed.",
    ),
    (
        "dead_lettered",
        "link_messages_dead_lettered",
        "Messages given up on and sent to the link's dead-letter queue.",
    ),
    (
        "replies",
        "link_replies",
        "Replies routed back to requesters.",
    ),
    (
        "reconnects",
        "link_reconnects",
        "Successful connections after the first.",
    ),
];

/// From `GET /links`: per link.
fn links(f: &mut Families, links: &Value) {
    let links = links.as_array().map(Vec::as_slice).unwrap_or_default();
    let labels = |l: &Value| {
        vec![
            ("link", l["name"].as_str().unwrap_or_default().to_owned()),
            (
                "protocol",
                l["kind"].as_str().unwrap_or_default().to_owned(),
            ),
        ]
    };
    let state = f.gauge(
        "link_state",
        "1 for the state each link is in, 0 for the others.",
    );
    for l in links {
        let now = l["state"].as_str().unwrap_or_default();
        let mut states = LINK_STATES.to_vec();
        if !states.contains(&now) {
            states.push(now);
        }
        for st in states {
            let mut labels = labels(l);
            labels.push(("state", st.to_owned()));
            state.sample(labels, (st == now).into());
        }
    }
    for (field, name, help) in LINK_COUNTERS {
        f.counter(name, help).samples = links
            .iter()
            .map(|l| (labels(l), n(&l["counters"][field])))
            .collect();
    }
}

/// From `GET /routes`: the table in force and its reloads; what the routes did, summed
/// (removed routes included) or per route in force.
fn routes(f: &mut Families, s: &AdminState, per_object: bool) {
    let table = s.routes.table().load_full();
    let rows: Vec<(Labels, RouteCounts)> = if per_object {
        table
            .routes
            .iter()
            .map(|r| (vec![("route", r.name.clone())], r.counters.counts()))
            .collect()
    } else {
        let sum = table
            .routes
            .iter()
            .fold(s.routes.retired_counts(), |sum, r| {
                sum + r.counters.counts()
            });
        vec![(Vec::new(), sum)]
    };
    let series = |f: fn(&RouteCounts) -> u64| -> Vec<(Labels, u64)> {
        rows.iter().map(|(l, c)| (l.clone(), f(c))).collect()
    };
    f.counter(
        "route_matches",
        "Messages a route took: its source matched and its filter accepted them (a message several routes take counts once per route). Per route with per_object=1; the sum includes removed routes.",
    )
    .samples = series(|c| c.matched);
    f.counter(
        "route_errors",
        "Messages a route took and could not route (a target or header template did not render, a body did not convert); their publish was refused.",
    )
    .samples = series(|c| c.failed);
    f.counter(
        "route_schema_invalid",
        "Messages a route's schema (when.schema) found invalid: dead-lettered with invalid.dead_letter, else not taken by the route.",
    )
    .samples = series(|c| c.invalid);
    f.counter(
        "route_rate_held",
        "Messages a route's rate limit held back (over: hold): delivered late, their publisher waited.",
    )
    .samples = series(|c| c.held);
    f.counter(
        "route_rate_dropped",
        "Messages a route's rate limit dropped (over: drop).",
    )
    .samples = series(|c| c.rate_dropped);
    let st = s.routes.status();
    f.gauge("routes", "Routes in the table in force.")
        .value(st.routes as u64);
    f.gauge(
        "route_table_version",
        "Version of the table in force (1 at start, +1 per reload that changed it).",
    )
    .value(st.version);
    f.counter(
        "route_reloads",
        "Reload attempts since start (file change, SIGHUP, admin API), successful or not.",
    )
    .value(st.attempts.saturating_sub(1));
    f.counter(
        "route_reload_failures",
        "Reload attempts that failed; the previous table stayed in force.",
    )
    .value(s.routes.failures());
    f.gauge(
        "route_last_reload_success",
        "1 if the latest load or reload succeeded; 0 if it failed (the previous table stays).",
    )
    .value(st.ok.into());
    f.gauge(
        "route_last_reload_timestamp_seconds",
        "When the latest load or reload ran (Unix time).",
    )
    .value(st.at_unix_ms / 1000);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_states_are_one_hot_and_counters_named() {
        let mut f = Families::default();
        links(
            &mut f,
            &serde_json::json!([{"name": "rabbit", "kind": "amqp", "state": "retrying",
                "counters": {"received": 4, "reconnects": 2}}]),
        );
        let text = f.into_text().unwrap();
        for (line, present) in [
            (
                "switchboard_link_state{link=\"rabbit\",protocol=\"amqp\",state=\"retrying\"} 1",
                true,
            ),
            (
                "switchboard_link_state{link=\"rabbit\",protocol=\"amqp\",state=\"connected\"} 0",
                true,
            ),
            (
                "switchboard_link_messages_received_total{link=\"rabbit\",protocol=\"amqp\"} 4",
                true,
            ),
            (
                "switchboard_link_reconnects_total{link=\"rabbit\",protocol=\"amqp\"} 2",
                true,
            ),
            (
                "switchboard_link_replies_total{link=\"rabbit\",protocol=\"amqp\"} 0",
                true,
            ),
        ] {
            assert_eq!(text.lines().any(|l| l == line), present, "{line}\n{text}");
        }
    }
}
