//! Rate limits in routes (`rate_limit`) with real clients (tests/py/guard_scenarios.py):
//! a paho publisher over a `hold` limit gets its QoS 1 PUBACKs at the rate and loses
//! nothing while another client is served; over a `drop` limit messages are dropped and
//! counted.

mod common;

use common::{Daemon, http_json, python_scenario};

fn scenario(d: &Daemon, name: &str) -> String {
    let mqtt = d.addr("mqtt").port().to_string();
    python_scenario(
        d,
        "guard_scenarios.py",
        "stomp",
        name,
        &["--mqtt-port", &mqtt, "--timeout", "20"],
    )
}

/// A route's entry in `GET /routes`.
fn route(d: &Daemon, name: &str) -> serde_json::Value {
    let (_, v) = http_json(d.addr("admin"), "GET", "/routes");
    v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name}: {v}"))
        .clone()
}

#[test]
fn a_publisher_over_a_hold_limit_is_held_back_and_loses_nothing() {
    let d = Daemon::start(
        &[(
            "rate.yaml",
            r#"
routes:
  - name: limited
    from: { mqtt: "t/limited/+" }
    rate_limit: { rate: 5, burst: 2 }
    to: [ { queue: t.limited } ]
"#,
        )],
        &[],
    );
    let out = scenario(&d, "rate_hold");
    eprintln!("{out}");
    let r = route(&d, "limited");
    assert_eq!(r["matches"], 14, "{r}");
    assert_eq!(r["rate_dropped"], 0, "{r}");
    let held = r["rate_held"].as_u64().unwrap();
    // The greedy client's messages beyond its burst; the honest one's two were not.
    assert!((1..=10).contains(&held), "{r}");
}

#[test]
fn messages_over_a_drop_limit_are_dropped_and_counted() {
    let d = Daemon::start(
        &[(
            "rate.yaml",
            r#"
routes:
  - name: dropped
    from: { mqtt: "t/dropped/+" }
    rate_limit: { rate: 1, burst: 3, over: drop }
    to: [ { queue: t.dropped } ]
"#,
        )],
        &[],
    );
    let out = scenario(&d, "rate_drop");
    let delivered: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("delivered="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {out}"));
    let r = route(&d, "dropped");
    assert_eq!(r["matches"], 10, "{r}");
    assert_eq!(r["rate_dropped"], 10 - delivered, "{r}");
    let (_, m) = common::http(d.addr("admin"), "GET", "/metrics");
    assert!(
        m.lines()
            .any(|l| l == format!("switchboard_route_rate_dropped_total {}", 10 - delivered)),
        "{m}"
    );
}
