//! MQTT 3.1.1 and 5.0 with paho-mqtt (PyPI, independent client) and raw sockets, plus
//! the mosquitto command-line clients.

mod common;

use std::process::Command;

use common::{Daemon, daemon_with_config, password_hash, python_scenario};

macro_rules! mqtt_scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        #[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
        fn $name() {
            scenario_with_admin(stringify!($name));
        }
    )*};
}

/// Runs scenario `name` on a fresh daemon, telling it the admin port; returns the daemon.
fn scenario_with_admin(name: &str) -> Daemon {
    let d = Daemon::start(&[], &[]);
    let admin = d.addr("admin").port().to_string();
    python_scenario(
        &d,
        "mqtt_scenarios.py",
        "mqtt",
        name,
        &["--admin-port", &admin],
    );
    d
}

/// QoS 0 publishes arriving as back-to-back WebSocket messages are published as runs
/// (`WsFramed::decode_buffered`) with the same order and answers as over TCP.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn batched_publishes_ws() {
    let d = Daemon::start(&[], &[]);
    let ws = d.addr("mqtt-ws").port().to_string();
    python_scenario(
        &d,
        "mqtt_scenarios.py",
        "mqtt",
        "batched_publishes_ws",
        &["--ws-port", &ws],
    );
}

mqtt_scenarios!(
    qos_levels,
    retained,
    persistent_session,
    qos2_across_reconnect,
    shared_subscriptions,
    takeover,
    v5_properties,
    topic_alias_no_local_and_dollar,
    keepalive_and_bad_input,
    private_queues,
    retained_tracked,
    batched_publishes,
);

/// Runs a will scenario (with the admin port) and returns the daemon's log, in which
/// exactly one will was published.
fn will_scenario(name: &str) -> String {
    let log = scenario_with_admin(name).log();
    assert_eq!(log.matches("will published").count(), 1, "{log}");
    log
}

/// The will goes out when a client vanishes, once; not on a clean DISCONNECT.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn will() {
    will_scenario("will");
}

/// MQTT 5 will delay: the will waits; a client back in time cancels its will.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn will_delay() {
    let log = will_scenario("will_delay");
    assert!(
        log.contains("delayed will cancelled: the client came back"),
        "{log}"
    );
}

/// Idle connections parked in the shared poller (after 300 ms) behave as live ones.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn parked_connections() {
    let d = daemon_with_config("mqtt:\n  park_idle_after: 300ms\n");
    let admin = d.addr("admin").port().to_string();
    python_scenario(
        &d,
        "mqtt_scenarios.py",
        "mqtt",
        "parked",
        &["--admin-port", &admin],
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn cross_protocol() {
    let d = Daemon::start(&[], &[]);
    let stomp = d.addr("stomp").port().to_string();
    python_scenario(
        &d,
        "mqtt_scenarios.py",
        "mqtt",
        "cross_protocol",
        &["--stomp-port", &stomp],
    );
}

/// Request/reply STOMP → MQTT 5 and MQTT 5 → MQTT 5 (MQTT 5 → STOMP is in
/// `cross_protocol`; STOMP → STOMP in tests/stomp.rs).
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn request_reply_with_mqtt5_responders() {
    let d = Daemon::start(&[], &[]);
    let stomp = d.addr("stomp").port().to_string();
    for name in ["rpc_stomp_to_mqtt5", "rpc_mqtt5_to_mqtt5"] {
        python_scenario(
            &d,
            "mqtt_scenarios.py",
            "mqtt",
            name,
            &["--stomp-port", &stomp],
        );
    }
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn auth() {
    let hash = password_hash("pw");
    let d = daemon_with_config(&format!(
        "auth:\n  anonymous: never\n  users:\n    dev:\n      password_hash: \"{hash}\"\n      publish: [\"topic:allowed.#\"]\n      subscribe: [\"topic:allowed.#\"]\n"
    ));
    python_scenario(
        &d,
        "mqtt_scenarios.py",
        "mqtt",
        "auth",
        &["--user", "dev", "--password", "pw"],
    );
    assert!(d.log().contains("publish refused by permissions"));
}

/// guest/guest on a loopback router without users: anonymous, logged once per connection
/// (issue 24); with users configured an unknown user still gets "bad user name or
/// password" (the `auth` test above).
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn guest_login_without_users() {
    let d = Daemon::start(&[], &[]);
    python_scenario(&d, "mqtt_scenarios.py", "mqtt", "guest_login", &[]);
    let log = d.log();
    assert_eq!(
        log.matches("no users are configured").count(),
        2,
        "one INFO line per connection:\n{log}"
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Mosquitto clients: run scripts/test")]
fn mosquitto_clients_both_versions() {
    let d = Daemon::start(&[], &[]);
    let port = d.addr("mqtt").port().to_string();
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("cli/{version}");
        let sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-q",
                "1",
                "-t",
                &format!("{topic}/#"),
                "-C",
                "3",
                "-W",
                "10",
                "-v",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (scripts/setup mosquitto)");
        // The subscriber is up once its session queue exists (created at its SUBSCRIBE).
        common::wait_until(
            std::time::Duration::from_secs(10),
            "mosquitto_sub subscribed",
            || {
                let (_, v) = common::http_json(d.addr("admin"), "GET", "/queues");
                v["queues"]
                    .as_array()?
                    .iter()
                    .any(|q| {
                        q["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("$mqtt.s."))
                            && q["consumers"] == 1
                    })
                    .then_some(())
            },
        );
        for i in 0..3 {
            let ok = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-V",
                    version,
                    "-q",
                    &format!("{}", i % 3),
                    "-t",
                    &format!("{topic}/{i}"),
                    "-m",
                    &format!("hello {i}"),
                ])
                .status()
                .unwrap()
                .success();
            assert!(ok, "mosquitto_pub {version} qos {}", i % 3);
        }
        let out = sub.wait_with_output().unwrap();
        assert!(out.status.success(), "{version}: {}", d.log());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{topic}/0 hello 0\n{topic}/1 hello 1\n{topic}/2 hello 2\n"),
            "{version}"
        );
    }
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn server_keep_alive() {
    let d = daemon_with_config("mqtt:\n  max_keep_alive: 5\n");
    python_scenario(&d, "mqtt_scenarios.py", "mqtt", "server_keep_alive", &[]);
}

/// MQTT 5 conformance (issue 24): session resume without a Session Expiry Interval,
/// exact Maximum Packet Size, outbound topic aliases, assigned client ids, Server Keep
/// Alive by default.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn mqtt5_conformance() {
    for name in [
        "resume_without_expiry",
        "max_packet_size_exact",
        "outbound_topic_aliases",
        "assigned_client_id",
        "server_keep_alive_default",
    ] {
        scenario_with_admin(name);
    }
}
