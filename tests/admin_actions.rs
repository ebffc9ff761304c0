//! The admin API's operator actions (issue 23) with real clients
//! (tests/py/admin_actions.py, stomp.py): peek without consuming, dead letters listed,
//! replayed and deleted, purge, move, closing a connection, refusals for callers who are
//! not admins, and the journal agreeing with the actions after a kill -9.

mod common;

use common::{Daemon, http_json, password_hash};

const TOKEN: &str = "tok-actions-8b1e0c44d2";
const USER: &str = "viewer";
const PASSWORD: &str = "viewer-pass-41";

/// A daemon whose queue `work` dead-letters into `work.dlq` and `jobs` into `jobs.dlq`,
/// with an admin token and a user who is not an admin.
fn settings() -> String {
    format!(
        "auth:\n  admin_tokens: [\"{}\"]\n  users:\n    {USER}:\n      password_hash: \"{}\"\n\
         queues:\n  named:\n    work:\n      dead_letter: queue:work.dlq\n    jobs:\n      dead_letter: queue:jobs.dlq\n",
        switchboard::admin::token_digest(TOKEN),
        password_hash(PASSWORD),
    )
}

fn start() -> Daemon {
    common::daemon_with_config(&settings())
}

fn run(d: &Daemon, scenario: &str) {
    let admin = d.addr("admin").port().to_string();
    let mqtt = d.addr("mqtt").port().to_string();
    let mqtt_ws = d.addr("mqtt-ws").port().to_string();
    let user = format!("{USER}:{PASSWORD}");
    common::python_scenario(
        d,
        "admin_actions.py",
        "stomp",
        scenario,
        &[
            "--admin-port",
            &admin,
            "--token",
            TOKEN,
            "--user-auth",
            &user,
            "--mqtt-port",
            &mqtt,
            "--mqtt-ws-port",
            &mqtt_ws,
        ],
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn peek_leaves_messages_for_the_consumer_in_order() {
    run(&start(), "peek_does_not_consume");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn dead_letters_are_listed_replayed_and_deleted() {
    run(&start(), "dead_letters");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn purge_spares_what_is_in_flight_and_move_keeps_order() {
    run(&start(), "purge_and_move");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn callers_who_are_not_admins_are_refused_every_action() {
    run(&start(), "refused");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn a_closed_connection_is_seen_closed_by_its_client() {
    run(&start(), "close_connection");
}

/// MQTT connections (5.0 over TCP, parked when closed; 3.1.1 over WebSocket) listed
/// with their client ids and closed: 5.0 sees DISCONNECT 0x98, 3.1.1 the connection
/// closed; sessions kept and wills published, as on a network drop.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn closed_mqtt_connections_behave_as_a_network_drop() {
    run(&start(), "close_mqtt");
}

/// A delete, a move and a replay answered 200, then kill -9: after the restart the
/// journal agrees (the deleted message does not come back, the moved ones are where
/// they went, once).
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn actions_are_durable_across_a_kill() {
    let d = start();
    run(&d, "durable_before");
    let config = d.dir.path().join("switchboard.yaml").display().to_string();
    let d = d.kill_and_restart(&["--config", &config]);
    run(&d, "durable_after");
}

/// Without any admin configured, a loopback caller reads figures but may not act on
/// messages or see their contents.
#[test]
fn loopback_callers_without_credentials_may_not_act() {
    let d = Daemon::start(&[], &[]);
    let a = d.addr("admin");
    assert_eq!(http_json(a, "GET", "/queues").0, 200);
    for (method, path) in [
        ("GET", "/queues/orders/messages"),
        ("POST", "/queues/orders/purge"),
        ("DELETE", "/queues/orders/messages/x"),
        ("GET", "/dead-letters"),
        ("GET", "/connections"),
    ] {
        let (status, v) = http_json(a, method, path);
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("admin"), "{v}");
    }
}
