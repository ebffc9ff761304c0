//! Route semantics through the router and core: diverts, passthrough, filters, templates
//! with captures across naming conventions, transforms, body conversion, chains.

use switchboard::core::{ConsumeOptions, Consumer, Core, Delivery, Destination, Message, Origin};
use switchboard::router::{LINK_QUEUE_PREFIX, LINK_TARGET_HEADER, Router};
use switchboard::routes::{CompileContext, LinkKind, Rendered, compile_sources};

fn router(yaml: &str) -> Router {
    router_ctx(yaml, CompileContext::default())
}

fn router_ctx(yaml: &str, ctx: CompileContext) -> Router {
    let table = compile_sources(&[("t.yaml".into(), yaml.into())], &ctx)
        .unwrap_or_else(|e| panic!("{e:?}"));
    Router::new(
        Core::default(),
        std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(table)),
    )
}

fn drain(c: &Consumer) -> Vec<Delivery> {
    let mut out = Vec::new();
    while c.try_recv_many(1000, &mut out).unwrap() > 0 {}
    out
}

fn text(d: &Delivery) -> String {
    String::from_utf8(d.message.body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_route_diverts_and_passthrough_keeps_the_original() {
    let r = router(
        "routes:
  - name: divert
    from: { queue: a }
    to: [ { queue: b }, { queue: c } ]
  - name: copy
    from: { queue: x }
    to: [ { queue: y } ]
    passthrough: true
",
    );
    assert_eq!(
        r.publish(Destination::queue("a"), Message::new("1"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        r.publish(Destination::queue("x"), Message::new("2"))
            .await
            .unwrap(),
        2
    );
    let core = r.core();
    assert!(
        core.queue("a").is_none(),
        "diverted: nothing lands in the source queue"
    );
    for q in ["b", "c", "x", "y"] {
        assert_eq!(core.queue(q).map(|q| q.len()), Some(1), "{q}");
    }
}

#[tokio::test]
async fn mqtt_captures_become_amqp_style_names_with_reversible_escape() {
    let ctx = CompileContext {
        links: [("rabbit".to_string(), LinkKind::Amqp)].into(),
        ..CompileContext::default()
    };
    let r = router_ctx(
        "routes:
  - name: sensors
    from: { mqtt: \"sensors/+/temp\" }
    to:
      - amqp: { link: rabbit, exchange: telemetry, routing_key: \"sensors.{1}.temp\" }
      - mqtt: \"archive/{1}\"
    transform:
      set_headers: { device: \"{1}\" }
",
        ctx,
    );
    let archive = r
        .core()
        .subscribe(&["archive.#"], ConsumeOptions::auto_ack(10))
        .unwrap();
    // The MQTT topic sensors/v1.2/temp, by the default convention:
    let internal = switchboard::translate::mqtt_names::topic_to_internal("sensors/v1.2/temp");
    assert_eq!(internal, "sensors.v1%2E2.temp");
    r.publish(Destination::topic(&internal), Message::new("21.5"))
        .await
        .unwrap();

    let link_q = r
        .core()
        .consume(
            &format!("{LINK_QUEUE_PREFIX}rabbit"),
            ConsumeOptions::auto_ack(10),
        )
        .unwrap();
    let to_amqp = drain(&link_q);
    assert_eq!(to_amqp.len(), 1);
    let target: serde_json::Value =
        serde_json::from_str(to_amqp[0].message.headers.get(LINK_TARGET_HEADER).unwrap()).unwrap();
    assert_eq!(
        target["routing_key"], "sensors.v1%2E2.temp",
        "the dot inside the level stays escaped"
    );
    assert_eq!(target["exchange"], "telemetry");
    assert_eq!(
        to_amqp[0].message.headers.get("device"),
        Some("v1.2"),
        "header values get the plain text"
    );

    let got = drain(&archive);
    assert_eq!(got.len(), 1);
    assert_eq!(
        switchboard::translate::mqtt_names::internal_to_topic(got[0].destination.name()),
        "archive/v1.2",
        "back in MQTT spelling the level is restored exactly"
    );
}

#[tokio::test]
async fn filters_on_headers_content_type_and_origin() {
    let r = router(
        "routes:
  - name: urgent
    from: { queue: in }
    when:
      headers: { class: urgent }
      content_type: application/json
      origin: mqtt
    to: [ { queue: urgent } ]
",
    );
    let m = |class: &str, ct: &str, proto: &str| {
        Message::new("{}")
            .with_header("class", class)
            .with_content_type(ct)
            .with_origin(Origin::new(proto, "p"))
    };
    r.publish(
        Destination::queue("in"),
        m("urgent", "application/json; charset=utf-8", "mqtt"),
    )
    .await
    .unwrap();
    r.publish(
        Destination::queue("in"),
        m("normal", "application/json", "mqtt"),
    )
    .await
    .unwrap();
    r.publish(Destination::queue("in"), m("urgent", "text/plain", "mqtt"))
        .await
        .unwrap();
    r.publish(
        Destination::queue("in"),
        m("urgent", "application/json", "stomp"),
    )
    .await
    .unwrap();
    assert_eq!(r.core().queue("urgent").unwrap().len(), 1);
    assert_eq!(
        r.core().queue("in").unwrap().len(),
        3,
        "unmatched messages go where addressed"
    );
}

#[tokio::test]
async fn header_transforms_and_body_conversion() {
    let r = router(
        "routes:
  - name: legacy
    from: { queue: in }
    to: [ { queue: out } ]
    transform:
      rename_headers: { customer: client }
      remove_headers: [ secret ]
      set_headers: { via: switchboard, copied: \"{header:customer}\" }
      body: xml
",
    );
    let m = Message::new(r#"{"order":{"id":7,"items":["a","b"]}}"#)
        .with_content_type("application/json")
        .with_header("customer", "acme")
        .with_header("secret", "s3")
        .with_header("keep", "k");
    r.publish(Destination::queue("in"), m).await.unwrap();
    let c = r
        .core()
        .consume("out", ConsumeOptions::auto_ack(10))
        .unwrap();
    let d = drain(&c);
    let h = &d[0].message.headers;
    assert_eq!(h.get("client"), Some("acme"));
    assert_eq!(h.get("customer"), None);
    assert_eq!(h.get("secret"), None);
    assert_eq!(h.get("keep"), Some("k"));
    assert_eq!(h.get("via"), Some("switchboard"));
    assert_eq!(
        h.get("copied"),
        Some("acme"),
        "templates read the headers as received"
    );
    assert_eq!(
        text(&d[0]),
        "<order><id>7</id><items>a</items><items>b</items></order>"
    );
    assert_eq!(
        d[0].message.content_type.as_deref(),
        Some("application/xml")
    );
}

#[tokio::test]
async fn a_failed_conversion_is_an_error_not_a_silent_change() {
    let r = router(
        "routes:
  - name: to-json
    from: { queue: in }
    to: [ { queue: out } ]
    transform: { body: json }
",
    );
    let err = r
        .publish(Destination::queue("in"), Message::new(vec![0xffu8, 0xfe]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route `to-json`: body conversion failed: body is not valid UTF-8"
    );
    assert!(r.core().queue("out").is_none());
}

#[tokio::test]
async fn routes_chain_and_destination_lists_fan_out() {
    let r = router(
        "routes:
  - name: first
    from: { stomp: /queue/intake }
    to: [ { topic: \"events.{header:kind}\" } ]
  - name: second
    from: { topic: \"events.*\" }
    to: [ { queue: \"all-events\" }, { stomp: \"/queue/by-kind.{1}\" } ]
",
    );
    r.publish(
        Destination::queue("intake"),
        Message::new("x").with_header("kind", "signup"),
    )
    .await
    .unwrap();
    assert_eq!(r.core().queue("all-events").unwrap().len(), 1);
    assert_eq!(r.core().queue("by-kind.signup").unwrap().len(), 1);
    // A header the template needs is missing: a clear error.
    let err = r
        .publish(Destination::queue("intake"), Message::new("y"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route `first`: template `events.{header:kind}` uses header `kind`, which the message does not have"
    );
}

#[test]
fn amqp_declarations_are_validated_with_their_route() {
    let ctx = CompileContext {
        links: [
            ("rabbit".to_string(), LinkKind::Amqp),
            ("other".to_string(), LinkKind::Amqp),
        ]
        .into(),
        ..CompileContext::default()
    };
    let bad = r#"
routes:
  - name: two-links
    from: {amqp: {link: rabbit, queue: a}}
    to: [{amqp: {link: other, routing_key: b}}]
    declare: {queues: [{name: a}]}
  - name: reserved
    from: {amqp: {link: rabbit, queue: q}}
    to: [{queue: out}]
    declare:
      exchanges: [{name: amq.direct, type: direct}]
      queues: [{name: q, arguments: {x-bad: [1, 2]}}]
      bindings: [{exchange: "", queue: q}]
  - name: default-exchange
    from: {amqp: {link: rabbit, exchange: "", binding_key: k}}
    to: [{queue: out}]
  - name: passthrough
    from: {amqp: {link: rabbit, queue: p}}
    to: [{queue: out}]
    passthrough: true
"#;
    let errors = compile_sources(&[("r.yaml".into(), bad.into())], &ctx).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let has = |route: &str, what: &str| {
        assert!(
            text.iter()
                .any(|e| e.contains(&format!("route `{route}`")) && e.contains(what)),
            "no `{what}` for {route} in {text:#?}"
        )
    };
    has("two-links", "`declare` needs `link:`");
    has("reserved", "`amq.` belong to RabbitMQ");
    has("reserved", "only strings, numbers and booleans");
    has("reserved", "the default exchange cannot be bound");
    has(
        "default-exchange",
        "cannot be bound: consume a queue instead",
    );
    has("passthrough", "an amqp or xmpp source has none");

    let good = r##"
routes:
  - name: sensors
    from: {amqp: {link: rabbit, exchange: telemetry, binding_key: "sensors.*.temp"}}
    to: [{topic: "temp.{1}"}]
    declare:
      exchanges: [{name: telemetry, type: topic}]
      queues: [{name: q1, arguments: {x-queue-type: quorum, x-message-ttl: 60000}}]
      bindings: [{exchange: telemetry, queue: q1, routing_key: "#"}]
"##;
    let table = compile_sources(&[("r.yaml".into(), good.into())], &ctx).unwrap();
    let decls: Vec<_> = table.amqp_declarations("rabbit").collect();
    assert_eq!(decls.len(), 1);
    assert_eq!(decls[0].0, "sensors");
    assert_eq!(decls[0].1.queues[0].arguments["x-message-ttl"], 60000);
    assert!(table.amqp_declarations("other").next().is_none());
    // The binding key's wildcard captures from the routing key.
    let key = switchboard::routes::AmqpSourceKey::Exchange {
        exchange: "telemetry".into(),
        binding_key: "sensors.*.temp".into(),
    };
    assert_eq!(table.amqp_sources("rabbit"), vec![key.clone()]);
    let legs = table
        .resolve_amqp("rabbit", &key, "sensors.k7.temp", Message::new("21.5"))
        .expect("the route consumes this source")
        .unwrap()
        .legs;
    assert_eq!(
        legs[0].target,
        switchboard::routes::Rendered::Internal(Destination::topic("temp.k7"))
    );
    assert!(
        table
            .resolve_amqp(
                "rabbit",
                &switchboard::routes::AmqpSourceKey::Queue("nope".into()),
                "",
                Message::new("x")
            )
            .is_none()
    );
}

#[test]
fn pubsub_sources_and_targets_are_validated_with_their_route() {
    let ctx = CompileContext {
        links: [
            ("im".to_string(), LinkKind::Xmpp),
            ("rabbit".to_string(), LinkKind::Amqp),
        ]
        .into(),
        ..CompileContext::default()
    };
    let bad = r#"
routes:
  - name: two-sources
    from: {xmpp: {link: im, jid: "a@b", pubsub: {service: pubsub.example.org, node: n}}}
    to: [{queue: out}]
  - name: bad-service
    from: {xmpp: {link: im, pubsub: {service: "pubsub.example.org/res", node: n}}}
    to: [{queue: out}]
  - name: empty-node
    from: {xmpp: {link: im, pubsub: {service: pubsub.example.org, node: ""}}}
    to: [{queue: out}]
  - name: wrong-link
    from: {xmpp: {link: rabbit, pubsub: {service: pubsub.example.org, node: n}}}
    to: [{queue: out}]
  - name: to-and-pubsub
    from: {queue: in1}
    to: [{xmpp: {link: im, to: "a@b", pubsub: {service: pubsub.example.org, node: n}}}]
  - name: neither
    from: {queue: in2}
    to: [{xmpp: {link: im}}]
  - name: pubsub-type
    from: {queue: in3}
    to: [{xmpp: {link: im, type: chat, pubsub: {service: pubsub.example.org, node: n}}}]
  - name: capture
    from: {queue: in4}
    to: [{xmpp: {link: im, pubsub: {service: pubsub.example.org, node: "n.{1}"}}}]
"#;
    let errors = compile_sources(&[("r.yaml".into(), bad.into())], &ctx).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let has = |at: &str, what: &str| {
        assert!(
            text.iter().any(|e| e.starts_with(at) && e.contains(what)),
            "no `{what}` at {at} in {text:#?}"
        )
    };
    has(
        "r.yaml:4:11: route `two-sources`",
        "one of `jid`, `presence` and `pubsub`",
    );
    has("r.yaml:7:11: route `bad-service`", "must be a bare JID");
    has("r.yaml:10:11: route `empty-node`", "cannot be empty");
    has("r.yaml:13:11: route `wrong-link`", "link `rabbit`");
    has(
        "r.yaml:17:10: route `to-and-pubsub`",
        "either `to` or `pubsub`",
    );
    has("r.yaml:20:10: route `neither`", "either `to` or `pubsub`");
    has(
        "r.yaml:23:10: route `pubsub-type`",
        "takes no `from` or `type`",
    );
    has("r.yaml:26:10: route `capture`", "uses {1}");
    let typo = "routes:\n  - name: typo\n    from: {queue: in5}\n    to: [{xmpp: {link: im, pubsub: {service: p.example.org, node: n, creat: true}}}]\n";
    let errors = compile_sources(&[("t.yaml".into(), typo.into())], &ctx).unwrap_err();
    assert!(
        errors[0].to_string().starts_with("t.yaml:4:")
            && errors[0].to_string().contains("unknown field `creat`"),
        "{errors:?}"
    );
    let greedy = "routes:\n  - name: greedy\n    from: {xmpp: {link: im, pubsub: {service: p.example.org, node: n, catch_up: 101}}}\n    to: [{queue: x}]\n";
    let errors = compile_sources(&[("g.yaml".into(), greedy.into())], &ctx).unwrap_err();
    assert!(
        errors[0].to_string().contains("`catch_up` is at most 100"),
        "{errors:?}"
    );

    let good = r#"
routes:
  - name: feed-in
    from: {xmpp: {link: im, pubsub: {service: PubSub.Example.org, node: sensors}}}
    to: [{queue: "from-feed"}]
  - name: feed-retractions
    from: {xmpp: {link: im, pubsub: {service: pubsub.example.org, node: sensors, catch_up: 5, retractions: true}}}
    to: [{queue: "feed-retractions"}]
  - name: feed-out
    from: {topic: "temp.*"}
    to: [{xmpp: {link: im, pubsub: {service: pubsub.example.org, node: "temp-{1}", create: true, item_id: "{header:sensor}"}}}]
"#;
    let table = compile_sources(&[("r.yaml".into(), good.into())], &ctx).unwrap();
    let node = switchboard::routes::PubsubNode {
        service: "pubsub.example.org".into(),
        node: "sensors".into(),
    };
    assert_eq!(table.pubsub_nodes("im"), vec![node.clone()]);
    assert!(table.pubsub_nodes("rabbit").is_empty());
    let routed = table
        .resolve_pubsub("im", &node, false, Message::new("x"))
        .unwrap()
        .unwrap();
    assert_eq!(routed.legs.len(), 2);
    // A retraction: only the route asking for them.
    let routed = table
        .resolve_pubsub("im", &node, true, Message::new(""))
        .unwrap()
        .unwrap();
    assert_eq!(routed.legs.len(), 1);
    assert_eq!(table.pubsub_catch_up("im", &node), 5);
    let other = switchboard::routes::PubsubNode {
        node: "other".into(),
        ..node
    };
    assert!(
        table
            .resolve_pubsub("im", &other, false, Message::new("x"))
            .is_none()
    );
    let out = table
        .resolve(
            Destination::topic("temp.kitchen"),
            Message::new("21").with_header("sensor", "s1"),
        )
        .unwrap();
    assert_eq!(
        out.legs[0].target,
        Rendered::XmppPubsub {
            link: "im".into(),
            service: "pubsub.example.org".into(),
            node: "temp-kitchen".into(),
            item_id: Some("s1".into()),
            create: true,
        }
    );
}
