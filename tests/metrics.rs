//! The admin listener's `GET /metrics` and health checks (issue 23): the exposition parsed
//! by the Prometheus project's Python parser after real traffic
//! (tests/py/metrics_scenarios.py), readiness following an AMQP link, and the admin
//! API's access rules.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::forwarder::Forwarder;
use common::{Daemon, daemon_with_config, http, http_json, wait_until};

/// GET with an optional bearer token: (status, head, body).
fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// The value of the sample written exactly `series` (name and labels), if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The routes the traffic scenario's `routed` part counts (see its docstring).
const ROUTES: &str = r#"routes:
  - name: m-fanout
    from: {queue: metrics.in}
    to:
      - queue: metrics.out
      - mqtt: metrics/out
  - name: m-urgent
    from: {queue: metrics.in}
    when: {headers: {class: urgent}}
    to: [{queue: metrics.urgent}]
  - name: m-by-kind
    from: {queue: metrics.kind}
    to: [{queue: "metrics.k.{header:kind}"}]
"#;

/// Traffic by protocol, route matches and errors, queue counters, MQTT figures and the
/// journal histograms move exactly as stomp.py and paho traffic says.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn counters_move_as_the_traffic_says() {
    let d = Daemon::start(&[("metrics.yaml", ROUTES)], &[]);
    let admin = d.addr("admin").port().to_string();
    let mqtt = d.addr("mqtt").port().to_string();
    common::python_scenario(
        &d,
        "metrics_scenarios.py",
        "stomp",
        "traffic",
        &["--admin-port", &admin, "--mqtt-port", &mqtt],
    );
}

/// With an admin token configured, `/metrics` needs it like every admin read; the health
/// checks stay open. An admin's per-object scrape names the queues.
#[test]
fn metrics_need_admin_credentials_and_health_checks_are_open() {
    let token = "tok-metrics-3f9a1c7e5b";
    let d = daemon_with_config(&format!(
        "auth:\n  admin_tokens: [\"{}\"]\nqueues:\n  named:\n    orders: {{}}\n",
        switchboard::admin::token_digest(token)
    ));
    let a = d.addr("admin");
    let (status, _, _) = get(a, "/metrics", None);
    assert_eq!(status, 401);
    assert_eq!(get(a, "/metrics", Some("tok-wrong")).0, 401);
    let (status, head, body) = get(a, "/metrics", Some(token));
    assert_eq!(status, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let version = format!(
        "switchboard_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&body, &version), Some(1.0), "{body}");
    assert!(
        body.contains("# TYPE switchboard_connections_accepted_total counter"),
        "{body}"
    );
    assert_eq!(sample(&body, "switchboard_queue_messages_ready"), Some(0.0));
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.md")).unwrap();
    for family in body.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap();
        assert!(
            docs.contains(&format!("`{name}`")) || docs.contains(&format!("`{name}{{")),
            "docs/admin-api.md does not list {name}"
        );
    }
    assert_eq!(
        sample(&body, "switchboard_queue_messages_ready{queue=\"orders\"}"),
        None,
        "no per-queue series without per_object"
    );
    let (_, _, body) = get(a, "/metrics?per_object=1", Some(token));
    assert_eq!(
        sample(&body, "switchboard_queue_messages_ready{queue=\"orders\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(sample(&body, "switchboard_queue_messages_ready"), None);

    assert_eq!(http(a, "GET", "/health"), (200, "ok".into()));
    assert_eq!(http(a, "GET", "/health/live"), (200, "ok".into()));
    let (status, v) = http_json(a, "GET", "/health/ready");
    assert_eq!(
        (status, &v["ready"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );
    let checks = v["checks"].as_array().unwrap();
    let listeners = checks.iter().find(|c| c["check"] == "listeners").unwrap();
    assert_eq!(
        listeners["detail"], "bound: admin, mqtt, mqtt-ws, stomp, stomp-ws",
        "{v}"
    );
    assert!(checks.iter().any(|c| c["check"] == "store"), "{v}");
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon with one AMQP link `rabbit` to `127.0.0.1:port` (guest/guest), quick to retry.
fn with_link(port: u16) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("amqp.pw"), "guest\n").unwrap();
    let config = format!(
        "links:\n  rabbit:\n    amqp:\n      uri: \"amqp://127.0.0.1:{port}/%2f\"\n      username: guest\n      password_file: amqp.pw\n      reconnect_initial: 100ms\n      reconnect_max: 500ms\n"
    );
    std::fs::write(dir.path().join("switchboard.yaml"), config).unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    Daemon::start_in(dir, &["--config", &cfg])
}

fn ready(d: &Daemon) -> (u16, serde_json::Value) {
    http_json(d.addr("admin"), "GET", "/health/ready")
}

fn link_check(v: &serde_json::Value) -> serde_json::Value {
    v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == "link rabbit"))
        .cloned()
        .unwrap_or_else(|| panic!("no check of the link: {v}"))
}

fn metrics(d: &Daemon) -> String {
    http(d.addr("admin"), "GET", "/metrics").1
}

const RETRYING: &str =
    "switchboard_link_state{link=\"rabbit\",protocol=\"amqp\",state=\"retrying\"}";
const CONNECTED: &str =
    "switchboard_link_state{link=\"rabbit\",protocol=\"amqp\",state=\"connected\"}";
const RECONNECTS: &str = "switchboard_link_reconnects_total{link=\"rabbit\",protocol=\"amqp\"}";

/// Readiness is 503 while a configured link cannot connect, naming the link; the process
/// is live all the same, and the link's state shows in the metrics.
#[test]
fn not_ready_while_a_link_cannot_connect() {
    let d = with_link(closed_port());
    wait_until(Duration::from_secs(20), "the link retrying", || {
        (sample(&metrics(&d), RETRYING) == Some(1.0)).then_some(())
    });
    let (status, v) = ready(&d);
    assert_eq!(
        (status, &v["ready"]),
        (503, &serde_json::json!(false)),
        "{v}"
    );
    let link = link_check(&v);
    assert_eq!(link["ok"], false, "{v}");
    assert!(
        ["amqp link retrying", "amqp link connecting"].contains(&link["detail"].as_str().unwrap()),
        "{v}"
    );
    let others_ok = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] != "link rabbit")
        .all(|c| c["ok"] == true);
    assert!(others_ok, "only the link is not ready: {v}");
    assert_eq!(http(d.addr("admin"), "GET", "/health/live").0, 200);
    assert_eq!(sample(&metrics(&d), CONNECTED), Some(0.0));
}

/// Not ready while the link's peer is unreachable; ready once RabbitMQ answers through
/// the forwarder; after the connection is cut the link reconnects (counted once) and the
/// daemon is ready again.
#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ: run scripts/test")]
fn ready_once_the_link_is_up_and_again_after_it_reconnects() {
    let _l = common::peer_lock(
        "rabbitmq",
        false,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    );
    let port = closed_port();
    let d = with_link(port);
    wait_until(Duration::from_secs(20), "the link retrying", || {
        (sample(&metrics(&d), RETRYING) == Some(1.0)).then_some(())
    });
    assert_eq!(ready(&d).0, 503);
    let forwarder = Forwarder::start(port, "127.0.0.1:5672");
    wait_until(Duration::from_secs(20), "ready", || {
        (ready(&d).0 == 200).then_some(())
    });
    let m = metrics(&d);
    assert_eq!(sample(&m, CONNECTED), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, RECONNECTS),
        Some(0.0),
        "the first connection: {m}"
    );
    assert_eq!(link_check(&ready(&d).1)["detail"], "amqp link connected");

    forwarder.cut();
    wait_until(Duration::from_secs(20), "reconnected", || {
        let m = metrics(&d);
        (sample(&m, RECONNECTS) == Some(1.0) && sample(&m, CONNECTED) == Some(1.0)).then_some(())
    });
    let (status, v) = ready(&d);
    assert_eq!(status, 200, "{v}");
}

const RELOAD_FAILURES: &str = "switchboard_route_reload_failures_total";

/// A reload that fails counts once in `route_reload_failures_total` and leaves the table
/// in force. The route file is a link to one outside the watched directory, so rewriting
/// it triggers no reload of the watcher's: only the admin API's.
#[test]
fn a_failed_reload_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let target = dir.path().join("b.yaml");
    std::fs::write(&target, "routes: []\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("routes/b.yaml")).unwrap();
    let d = Daemon::start_in(dir, &[]);
    let m = metrics(&d);
    assert_eq!(sample(&m, RELOAD_FAILURES), Some(0.0), "{m}");

    std::fs::write(&target, "routes:\n  - name: b\n    form: {}\n").unwrap();
    let (status, v) = http_json(d.addr("admin"), "POST", "/routes/reload");
    assert_eq!(status, 422, "{v}");
    let m = metrics(&d);
    assert_eq!(sample(&m, RELOAD_FAILURES), Some(1.0), "{m}");
    assert_eq!(sample(&m, "switchboard_route_reloads_total"), Some(1.0));
    assert_eq!(
        sample(&m, "switchboard_route_last_reload_success"),
        Some(0.0)
    );
}

/// docs/operations.md (alert rules, graphs) names only metrics docs/admin-api.md lists,
/// which the scrape test above ties to the real output: a renamed metric cannot leave a
/// silent alert behind. (The rules were also checked with `promtool check rules` when
/// written.)
#[test]
fn the_operations_guide_names_only_real_metrics() {
    let read =
        |f: &str| std::fs::read_to_string(format!("{}/docs/{f}", env!("CARGO_MANIFEST_DIR")));
    let (ops, api) = (
        read("operations.md").unwrap(),
        read("admin-api.md").unwrap(),
    );
    let mut named = 0;
    for (at, _) in ops.match_indices("switchboard_") {
        let name: String = ops[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            api.contains(&format!("`{family}`")) || api.contains(&format!("`{family}{{")),
            "docs/operations.md names {name}, which docs/admin-api.md does not list"
        );
        named += 1;
    }
    assert!(
        named > 20,
        "the guide's alerts name metrics ({named} found)"
    );
}

/// examples/grafana/switchboard-dashboard.json queries only metrics a real scrape has:
/// every `switchboard_…` name in it (PromQL and variables) has samples in
/// `/metrics?per_object=1` of a router with a data directory, a queue and a link (down,
/// so its state shows), as docs/operations.md tells operators to scrape it.
#[test]
fn the_grafana_dashboard_queries_only_real_metrics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("amqp.pw"), "guest\n").unwrap();
    let config = format!(
        "queues:\n  named:\n    orders: {{}}\nlinks:\n  rabbit:\n    amqp:\n      uri: \"amqp://127.0.0.1:{}/%2f\"\n      username: guest\n      password_file: amqp.pw\n      reconnect_initial: 100ms\n      reconnect_max: 500ms\n",
        closed_port()
    );
    std::fs::write(dir.path().join("switchboard.yaml"), config).unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    let scrape = wait_until(Duration::from_secs(20), "the link retrying", || {
        let body = http(d.addr("admin"), "GET", "/metrics?per_object=1").1;
        (sample(&body, RETRYING) == Some(1.0)).then_some(body)
    });
    let has_samples = |name: &str| {
        scrape.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
    };
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/grafana/switchboard-dashboard.json"
    ))
    .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for (at, _) in dashboard.match_indices("switchboard_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    // A cause of drops appears once it happened: the family is there, empty.
    let appears_later = ["switchboard_drops_and_refusals_total"];
    let missing: Vec<_> = names
        .iter()
        .filter(|n| {
            let empty_family = appears_later.contains(&n.as_str())
                && scrape.contains(&format!("# TYPE {n} counter"));
            !(has_samples(n) || empty_family)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which the scrape does not have:\n{scrape}"
    );
    // Every panel queries something, and the queue panels see per-queue series.
    let panels = parsed["panels"].as_array().unwrap();
    let queried = panels.iter().filter(|p| p["targets"].is_array()).count();
    assert!(
        queried >= 20 && names.len() >= 25,
        "{queried} panels, {} metrics",
        names.len()
    );
    assert!(has_samples(
        "switchboard_queue_messages_ready{queue=\"orders\"}"
    ));
}
