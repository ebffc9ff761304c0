//! Internal names and their owners: session, subscription and temporary queues.
//!
//! Each test runs a scenario of `tests/py/abuse_ownership.py` (stomp.py and paho-mqtt
//! against the real daemon) in which a hostile user tries another user's names and the
//! honest client keeps being served.

use std::path::Path;

use crate::common::{Daemon, daemon_with_config, password_hash, python_scenario};

/// The users of every scenario (password `pw`): alice and root have no rules (the
/// built-in "everything", `$` names included), mallory has `#` (every queue and topic
/// but `$` names), sys may only read `$SYS.#`. Rejected and forbidden messages of
/// subscriptions and sessions go to the queue `dlq`.
fn config(alice_subscribe: Option<&str>) -> String {
    let h = password_hash("pw");
    let alice_rules = alice_subscribe
        .map(|r| format!("      subscribe: [\"{r}\"]\n"))
        .unwrap_or_default();
    format!(
        "auth:
  users:
    alice:
      password_hash: \"{h}\"
{alice_rules}    root:
      password_hash: \"{h}\"
    mallory:
      password_hash: \"{h}\"
      publish: [\"#\"]
      subscribe: [\"#\"]
    sys:
      password_hash: \"{h}\"
      publish: []
      subscribe: [\"$SYS.#\"]
queues:
  subscription_defaults:
    dead_letter: queue:dlq
"
    )
}

fn scenario(d: &Daemon, name: &str) {
    let mqtt = d.addr("mqtt").port().to_string();
    python_scenario(
        d,
        "abuse_ownership.py",
        "stomp",
        name,
        &["--mqtt-port", &mqtt],
    );
}

/// STOMP and MQTT clients of other users, even allowed everything, can neither consume
/// nor write an MQTT session's queue or its shared group's queue.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn mqtt_session_queues_belong_to_their_session() {
    let d = daemon_with_config(&config(None));
    scenario(&d, "session_queues");
}

/// `/queue/stomp.alice.NAME` is alice's durable subscription: nobody else's.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn durable_subscriptions_belong_to_their_user() {
    let d = daemon_with_config(&config(None));
    scenario(&d, "durable_subscriptions");
}

/// A configured `#` does not cover `$SYS…`, over STOMP as over MQTT.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn hash_rule_does_not_cover_dollar_names() {
    let d = daemon_with_config(&config(None));
    scenario(&d, "dollar_topics");
}

/// Temporary queues get ≥ 96 random bits in their names; only their connection
/// consumes them, whoever holds the address may reply.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn temporary_queues_are_unguessable_and_private() {
    let d = daemon_with_config(&config(None));
    scenario(&d, "temp_queues");
}

/// The router's own queues (links, subscriptions, XMPP push) are nobody's to use.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn router_queues_are_nobodys() {
    let d = daemon_with_config(&config(None));
    scenario(&d, "link_queues");
}

/// Another user connecting with alice's client id is refused (CONNACK 0x87 / 5), and
/// alice's queued messages are all still there for her.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn mqtt_client_id_belongs_to_its_user() {
    let d = daemon_with_config(&config(None));
    scenario(&d, "client_id_takeover");
    assert!(
        d.log().contains("client id belongs to another user"),
        "the refusal is logged"
    );
}

/// alice's rights are narrowed across a restart: what waits for her in her MQTT session
/// and her durable STOMP subscription, on topics she may no longer read, is
/// dead-lettered with reason `forbidden` (never delivered, never counted as
/// acknowledged); what she may read still reaches her.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn deliveries_refused_by_permissions_are_dead_lettered() {
    let d = daemon_with_config(&config(None));
    scenario(&d, "narrow_setup");
    let cfg = d.dir.path().join("switchboard.yaml");
    let arg = cfg.display().to_string();
    let d = d.kill_change_restart(
        |dir: &Path| {
            std::fs::write(dir.join("switchboard.yaml"), config(Some("topic:public.#"))).unwrap()
        },
        &["--config", &arg],
    );
    scenario(&d, "narrow_check");
}
