//! `switchboard explain`: what the compiled routes do with a message sent to an address
//! of each protocol, printed from the same table and code the daemon routes with.

mod common;

use std::process::Command;

const SETTINGS: &str = r#"
links:
  rabbit:
    amqp:
      uri: "amqp://127.0.0.1:5672/%2f"
  im:
    xmpp:
      server: "127.0.0.1:5347"
      domain: bridge.localhost
      secret: s
"#;

const ROUTES: &str = r#"
routes:
  - name: sensors-to-amqp
    from: { mqtt: "sensors/+/temp" }
    when: { content_type: application/json }
    to:
      - { amqp: { link: rabbit, exchange: telemetry, routing_key: "sensor.{1}.temp" } }
      - { topic: "dash.{1}" }
    transform: { set_headers: { device: "{1}" }, rename_headers: { unit: x-unit } }
  - name: dash-to-chat
    from: { topic: "dash.*" }
    to: [ { xmpp: { link: im, to: "ops@localhost", from: "dash@bridge.localhost", type: headline } } ]
    loss: encode
  - name: chat-orders
    from: { xmpp: { link: im, jid: "orders@bridge.localhost" } }
    to: [ { stomp: /queue/orders } ]
  - name: amqp-events
    from: { amqp: { link: rabbit, exchange: events, binding_key: "order.#" } }
    to: [ { mqtt: "events/{1}" } ]
"#;

fn explain(args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("routes/r.yaml"), ROUTES).unwrap();
    std::fs::write(dir.path().join("sb.yaml"), SETTINGS).unwrap();
    let out = Command::new(common::BIN)
        .arg("explain")
        .arg("--config")
        .arg(dir.path().join("sb.yaml"))
        .arg("--routes")
        .arg(dir.path().join("routes"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn an_mqtt_publish_through_two_routes_to_amqp_and_xmpp() {
    let (code, out) = explain(&[
        "--content-type",
        "application/json",
        "--header",
        "unit=C",
        "mqtt",
        "sensors/k1/temp",
    ]);
    assert_eq!(code, 0, "{out}");
    for want in [
        "MQTT sensors/k1/temp is the internal topic:sensors.k1.temp",
        "route `sensors-to-amqp` (",
        "r.yaml:3:5) from mqtt sensors/+/temp",
        "captures: {1}=k1",
        "filter: passed",
        "header device: k1",
        "header x-unit: C",
        "header unit: removed",
        "→ AMQP link `rabbit`: exchange telemetry, routing key `sensor.k1.temp`",
        "→ topic:dash.k1   (STOMP /topic/dash.k1, MQTT dash/k1)",
        "route `dash-to-chat`",
        "→ XMPP link `im`: headline to ops@localhost from dash@bridge.localhost",
        "fields a target cannot carry: encode",
        "delivered to 2 destinations:",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
}

#[test]
fn a_filter_that_refuses_is_shown_and_the_message_goes_as_addressed() {
    let (code, out) = explain(&["mqtt", "sensors/k1/temp"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("route `sensors-to-amqp`") && out.contains("its filter refuses this message"),
        "{out}"
    );
    assert!(
        out.contains("no route takes topic:sensors.k1.temp: delivered to it as addressed"),
        "{out}"
    );
}

#[test]
fn xmpp_and_amqp_link_addresses() {
    let (code, out) = explain(&["xmpp", "im", "orders@bridge.localhost"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("route `chat-orders`")
            && out.contains("queue:orders   (STOMP /queue/orders, MQTT $queue/orders)"),
        "{out}"
    );
    let (_, out) = explain(&["xmpp", "im", "nobody@bridge.localhost"]);
    assert!(out.contains("no route of this table serves it"), "{out}");
    let (code, out) = explain(&["amqp", "rabbit", "exchange", "events", "order.created.eu"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("the link consumes exchange events key order.#")
            && out.contains("captures: {1}=created.eu")
            && out.contains("MQTT events/created/eu"),
        "{out}"
    );
    let (_, out) = explain(&["amqp", "rabbit", "exchange", "events", "invoice.paid"]);
    assert!(out.contains("no route of this table serves it"), "{out}");
}

#[test]
fn a_bad_address_says_what_is_expected() {
    let (code, out) = explain(&["mqtt", "sensors/+/temp"]);
    assert_eq!(code, 2);
    assert!(out.contains("not a filter"), "{out}");
    let (code, out) = explain(&["smtp", "x"]);
    assert_eq!(code, 2);
    assert!(out.contains("expected one of: stomp DESTINATION"), "{out}");
}
