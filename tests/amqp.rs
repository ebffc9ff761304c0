//! The AMQP link against a real RabbitMQ on 127.0.0.1:5672 (scripts/setup rabbitmq starts
//! one), with pika as the independent AMQP peer and stomp.py on the router's side
//! (tests/py/amqp_scenarios.py). Every name in RabbitMQ carries a per-test prefix.
//!
//! Tests that disturb RabbitMQ itself (restart, memory alarm) hold an exclusive lock;
//! the others a shared one, so they never overlap with a disturbance (works under
//! cargo-nextest's process-per-test and under cargo test's threads alike).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, http_json, python, wait_until};

const CTL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/rabbitmq-ctl.sh");

/// Shared, or exclusive for tests that restart RabbitMQ or raise its memory alarm.
fn rabbit(exclusive: bool) -> common::PeerLock {
    common::peer_lock(
        "rabbitmq",
        exclusive,
        "127.0.0.1:5672",
        "scripts/setup rabbitmq",
    )
}

fn prefix(name: &str) -> String {
    common::unique_prefix(name)
}

/// Starts the router with one AMQP link `rabbit` (password from a file) and `routes`
/// (`P` replaced by the prefix).
fn router(p: &str, routes: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("amqp.pw"), "guest\n").unwrap();
    let config = format!(
        r#"
links:
  rabbit:
    amqp:
      uri: "amqp://127.0.0.1:5672/%2f"
      username: guest
      password_file: amqp.pw
      dead_letter: "{p}.dead"
      reconnect_initial: 100ms
      reconnect_max: 1s
"#
    );
    std::fs::write(dir.path().join("switchboard.yaml"), config).unwrap();
    std::fs::write(dir.path().join("routes/amqp.yaml"), routes.replace('P', p)).unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    wait_until(Duration::from_secs(20), "AMQP link connected", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    d
}

fn scenario(d: &Daemon, p: &str, name: &str) {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/amqp_scenarios.py"
        ))
        .args(["--port", &d.addr("stomp").port().to_string()])
        .args(["--admin-port", &d.addr("admin").port().to_string()])
        .args(["--mqtt-port", &d.addr("mqtt").port().to_string()])
        .args(["--prefix", p, "--ctl", CTL, "--timeout", "20", name])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "scenario {name} failed\nstdout:\n{stdout}\nstderr:\n{stderr}\ndaemon log:\n{}",
        d.log()
    );
    if !stderr.is_empty() {
        eprintln!("{name}: {stderr}");
    }
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn inbound_acks_after_the_core_and_rejects_what_it_cannot_route() {
    let _l = rabbit(false);
    let p = prefix("in");
    let d = router(
        &p,
        r#"
routes:
  - name: P-in
    from: {amqp: {link: rabbit, queue: P.in}}
    to: [{stomp: /queue/P.out}]
    transform: {set_headers: {x-region: "{header:region}"}}
    declare:
      exchanges:
        - {name: P.x, type: topic, durable: false, auto_delete: true}
        - {name: P.dlx, type: fanout, durable: false, auto_delete: true}
      queues:
        - {name: P.in, durable: false, arguments: {x-dead-letter-exchange: P.dlx, x-expires: 600000}}
        - {name: P.dlq, durable: false, arguments: {x-expires: 600000}}
      bindings:
        - {exchange: P.x, queue: P.in, routing_key: "order.#"}
        - {exchange: P.dlx, queue: P.dlq}
"#,
    );
    scenario(&d, &p, "inbound");
    assert!(d.log().contains("rejected without requeue"), "{}", d.log());
}

/// The link acks a consumed persistent message only once it is in the router's journal:
/// kill -9 after RabbitMQ's queue drained, restart, and every persistent message is there.
#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn persistent_messages_acked_by_the_link_survive_kill_9() {
    let _l = rabbit(false);
    let p = prefix("dur");
    let routes = r#"
routes:
  - name: P-in
    from: {amqp: {link: rabbit, queue: P.in}}
    to: [{stomp: /queue/P.out}]
    declare:
      exchanges:
        - {name: P.x, type: topic, durable: false, auto_delete: true}
      queues:
        - {name: P.in, durable: false, arguments: {x-expires: 600000}}
      bindings:
        - {exchange: P.x, queue: P.in, routing_key: "order.#"}
"#;
    let d = router(&p, routes);
    scenario(&d, &p, "durable_before");
    let cfg = d.dir.path().join("switchboard.yaml").display().to_string();
    let d = d.kill_and_restart(&["--config", &cfg]);
    scenario(&d, &p, "durable_after");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn outbound_confirms_and_dead_letters_what_rabbitmq_cannot_route() {
    let _l = rabbit(false);
    let p = prefix("out");
    let d = router(
        &p,
        r#"
routes:
  - name: P-out
    from: {stomp: /queue/P.send}
    to: [{amqp: {link: rabbit, exchange: P.x2, routing_key: "ev.{header:kind}"}}]
    declare:
      exchanges: [{name: P.x2, type: topic, durable: false}]
      queues: [{name: P.q2, durable: false, arguments: {x-expires: 600000}}]
      bindings: [{exchange: P.x2, queue: P.q2, routing_key: ev.created}]
  - name: P-nox
    from: {stomp: /queue/P.nox}
    to: [{amqp: {link: rabbit, exchange: P.nope, routing_key: k}}]
"#,
    );
    scenario(&d, &p, "outbound");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn publishes_rabbitmq_nacks_are_retried_then_dead_lettered() {
    let _l = rabbit(false);
    let p = prefix("nk");
    let d = router(
        &p,
        r#"
routes:
  - name: P-fill
    from: {stomp: /queue/P.fill}
    to: [{amqp: {link: rabbit, routing_key: P.full}}]
    declare:
      queues: [{name: P.full, durable: false, arguments: {x-max-length: 1, x-overflow: reject-publish, x-expires: 600000}}]
"#,
    );
    scenario(&d, &p, "nacked");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn properties_and_typed_headers_survive_amqp_to_amqp() {
    let _l = rabbit(false);
    let p = prefix("rt");
    let d = router(
        &p,
        r#"
routes:
  - name: P-rt
    from: {amqp: {link: rabbit, queue: P.rt_in}}
    to: [{amqp: {link: rabbit, routing_key: P.rt_out}}]
    declare:
      queues:
        - {name: P.rt_in, durable: false, arguments: {x-expires: 600000}}
        - {name: P.rt_out, durable: false, arguments: {x-expires: 600000}}
"#,
    );
    scenario(&d, &p, "roundtrip");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn stomp_requester_gets_the_reply_of_an_amqp_worker() {
    let _l = rabbit(false);
    let p = prefix("rpc");
    let d = router(
        &p,
        r#"
routes:
  - name: P-ask
    from: {stomp: /queue/P.ask}
    to: [{amqp: {link: rabbit, routing_key: P.work}}]
    declare:
      queues: [{name: P.work, durable: false, arguments: {x-expires: 600000}}]
"#,
    );
    scenario(&d, &p, "rpc_stomp_to_amqp");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn mqtt5_requester_gets_the_reply_of_an_amqp_worker() {
    let _l = rabbit(false);
    let p = prefix("rpm");
    let d = router(
        &p,
        r#"
routes:
  - name: P-ask5
    from: {mqtt: P/ask}
    to: [{amqp: {link: rabbit, routing_key: P.work5}}]
    declare:
      queues: [{name: P.work5, durable: false, arguments: {x-expires: 600000}}]
"#,
    );
    scenario(&d, &p, "rpc_mqtt5_to_amqp");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn amqp_requester_with_direct_reply_to_gets_replies_from_stomp_and_mqtt5_responders() {
    let _l = rabbit(false);
    let p = prefix("rpa");
    let d = router(
        &p,
        r#"
routes:
  - name: P-req
    from: {amqp: {link: rabbit, queue: P.req}}
    to: [{stomp: /queue/P.jobs}]
    declare:
      queues: [{name: P.req, durable: false, arguments: {x-expires: 600000}}]
"#,
    );
    scenario(&d, &p, "rpc_amqp_to_stomp");
    scenario(&d, &p, "rpc_amqp_to_mqtt5");
}

/// AMQP requester → router → AMQP worker on another queue → reply back through the
/// router to the requester's direct reply-to.
#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn amqp_requester_gets_the_reply_of_an_amqp_worker_through_the_router() {
    let _l = rabbit(false);
    let p = prefix("raa");
    let d = router(
        &p,
        r#"
routes:
  - name: P-req
    from: {amqp: {link: rabbit, queue: P.req}}
    to: [{amqp: {link: rabbit, routing_key: P.work}}]
    declare:
      queues:
        - {name: P.req, durable: false, arguments: {x-expires: 600000}}
        - {name: P.work, durable: false, arguments: {x-expires: 600000}}
"#,
    );
    scenario(&d, &p, "rpc_amqp_to_amqp");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn a_topology_conflict_costs_only_its_route_and_reload_declares_new_topology() {
    let _l = rabbit(false);
    let p = prefix("top");
    let d = router(
        &p,
        r#"
routes:
  - name: P-first
    from: {amqp: {link: rabbit, queue: P.ok}}
    to: [{stomp: /queue/P.ok_out}]
    declare:
      queues:
        - {name: P.ok, durable: false, arguments: {x-expires: 600000}}
        - {name: P.conf, durable: false, arguments: {x-message-ttl: 1000, x-expires: 600000}}
  - name: P-conflict
    from: {stomp: /queue/P.never}
    to: [{amqp: {link: rabbit, routing_key: P.conf}}]
    declare:
      queues: [{name: P.conf, durable: false, arguments: {x-message-ttl: 2000, x-expires: 600000}}]
"#,
    );
    scenario(&d, &p, "topology");
    let late = r##"
routes:
  - name: P-late
    from: {amqp: {link: rabbit, exchange: P.late_x, binding_key: "#"}}
    to: [{stomp: /queue/P.late_out}]
    declare:
      exchanges: [{name: P.late_x, type: topic, durable: false}]
      queues: [{name: P.late, durable: false, arguments: {x-expires: 600000}}]
      bindings: [{exchange: P.late_x, queue: P.late, routing_key: "#"}]
"##
    .replace('P', &p);
    common::write_atomic(&d.routes_dir().join("late.yaml"), &late);
    let (status, _) = http_json(d.addr("admin"), "POST", "/routes/reload");
    assert_eq!(status, 200);
    scenario(&d, &p, "after_reload");
    let (_, links) = http_json(d.addr("admin"), "GET", "/links");
    assert!(
        links[0]["topology_errors"][format!("{p}-conflict")].is_string(),
        "the conflict is still reported after the reload: {links}"
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn rabbitmq_restart_under_load_loses_nothing() {
    let _l = rabbit(true);
    let p = prefix("rs");
    let d = router(
        &p,
        r#"
routes:
  - name: P-fi
    from: {amqp: {link: rabbit, queue: P.fi}}
    to: [{stomp: /queue/P.fi_out}]
    declare:
      queues:
        - {name: P.fi, durable: true, arguments: {x-expires: 600000}}
        - {name: P.fo, durable: true, arguments: {x-expires: 600000}}
  - name: P-fo
    from: {stomp: /queue/P.fo_in}
    to: [{amqp: {link: rabbit, routing_key: P.fo}}]
"#,
    );
    scenario(&d, &p, "restart_under_load");
    let log = d.log();
    assert!(log.contains("AMQP link lost; reconnecting"), "{log}");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn a_memory_alarm_holds_messages_instead_of_losing_them() {
    let _l = rabbit(true);
    let p = prefix("bl");
    let d = router(
        &p,
        r#"
routes:
  - name: P-b
    from: {stomp: /queue/P.b_in}
    to: [{amqp: {link: rabbit, routing_key: P.bq}}]
    declare:
      queues: [{name: P.bq, durable: false, arguments: {x-expires: 600000}}]
"#,
    );
    scenario(&d, &p, "blocked");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn a_source_feeding_a_stuck_link_leaves_the_backlog_in_rabbitmq() {
    let _l = rabbit(false);
    let p = prefix("pc");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    // Link `down` never connects: what is routed to it waits in its link queue.
    let config = r#"
links:
  rabbit:
    amqp: {uri: "amqp://guest:guest@127.0.0.1:5672/%2f"}
  down:
    amqp: {uri: "amqp://guest:guest@127.0.0.1:1/%2f", reconnect_max: 1s}
"#;
    std::fs::write(dir.path().join("switchboard.yaml"), config).unwrap();
    let routes = r#"
routes:
  - name: P-pace
    from: {amqp: {link: rabbit, queue: P.pace}}
    to: [{amqp: {link: down, routing_key: anywhere}}]
    declare:
      link: rabbit
      queues: [{name: P.pace, durable: false, arguments: {x-expires: 600000}}]
  - name: P-other
    from: {amqp: {link: rabbit, queue: P.other}}
    to: [{stomp: /queue/P.out}]
    declare:
      queues: [{name: P.other, durable: false, arguments: {x-expires: 600000}}]
"#;
    std::fs::write(dir.path().join("routes/amqp.yaml"), routes.replace('P', &p)).unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    scenario(&d, &p, "paced");
}

#[test]
fn a_link_that_cannot_connect_retries_and_says_why() {
    // No RabbitMQ needed: a port nothing listens on.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        "links:\n  down:\n    amqp:\n      uri: \"amqp://u:topsecret@127.0.0.1:1/%2f\"\n      reconnect_initial: 50ms\n      reconnect_max: 200ms\n",
    )
    .unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    let v = wait_until(Duration::from_secs(10), "retrying with an error", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "retrying" && v[0]["last_error"].is_string()).then_some(v)
    });
    assert_eq!(v[0]["peer"], "amqp://u@127.0.0.1:1/%2f");
    let (_, log) = d.stop();
    assert!(log.contains("AMQP link cannot connect"), "{log}");
    assert!(
        !log.contains("topsecret"),
        "the password leaked into the log"
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs RabbitMQ and Python: run scripts/test")]
fn an_amqps_link_verifies_the_broker_against_the_configured_ca() {
    let _l = rabbit(false);
    let ca =
        std::env::var("RMQ_DIR").unwrap_or_else(|_| "/tmp/rabbitmq-test".into()) + "/tls/ca.pem";
    assert!(
        std::path::Path::new(&ca).exists(),
        "{ca} is missing: RabbitMQ was not started by scripts/peers/rabbitmq-ctl.sh (it makes the TLS listener)"
    );
    let p = prefix("tls");
    let start = |ca_line: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("routes")).unwrap();
        std::fs::write(
            dir.path().join("switchboard.yaml"),
            format!("links:\n  rabbit:\n    amqp:\n      uri: \"amqps://guest:guest@127.0.0.1:5671/%2f\"\n      reconnect_max: 500ms\n{ca_line}"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("routes/tls.yaml"),
            "routes:\n  - name: P-tls\n    from: {stomp: /queue/P.tls_in}\n    to: [{amqp: {link: rabbit, routing_key: P.tls}}]\n    declare:\n      queues: [{name: P.tls, durable: false, arguments: {x-expires: 600000}}]\n"
                .replace('P', &p),
        )
        .unwrap();
        let cfg = dir.path().join("switchboard.yaml").display().to_string();
        Daemon::start_in(dir, &["--config", &cfg])
    };
    // Without the CA the broker's certificate is not trusted: the link keeps retrying.
    let d = start("");
    let v = wait_until(Duration::from_secs(15), "a certificate error", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "retrying" && v[0]["last_error"].is_string()).then_some(v)
    });
    assert!(
        v[0]["last_error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("cert"),
        "{v}"
    );
    drop(d);
    // With it, the link connects over TLS, declares and publishes.
    let d = start(&format!("      ca_file: \"{ca}\"\n"));
    wait_until(Duration::from_secs(20), "AMQPS link connected", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    scenario(&d, &p, "tls_publish");
}
