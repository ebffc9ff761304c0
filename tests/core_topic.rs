//! Topic rules: fan-out, wildcard subscriptions, durable vs non-durable subscriptions.

use switchboard::core::{ConsumeOptions, Consumer, Core, Delivery, Destination, Message};

fn t(name: &str) -> Destination {
    Destination::topic(name)
}

fn drain(c: &Consumer) -> Vec<Delivery> {
    let mut out = Vec::new();
    while c.try_recv_many(1000, &mut out).unwrap() > 0 {}
    out
}

fn bodies(c: &Consumer) -> Vec<String> {
    drain(c)
        .iter()
        .map(|d| String::from_utf8(d.message.body.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn every_subscriber_gets_a_copy() {
    let core = Core::default();
    let subs: Vec<_> = (0..10)
        .map(|_| {
            core.subscribe(&["news"], ConsumeOptions::auto_ack(100))
                .unwrap()
        })
        .collect();
    for i in 0..5 {
        let n = core
            .publish(&t("news"), Message::new(format!("n{i}")))
            .await
            .unwrap();
        assert_eq!(n, 10);
    }
    for s in &subs {
        assert_eq!(bodies(s), ["n0", "n1", "n2", "n3", "n4"]);
    }
}

#[tokio::test]
async fn wildcards_match_per_the_internal_grammar() {
    let core = Core::default();
    let one = core
        .subscribe(&["sensors.*.temp"], ConsumeOptions::auto_ack(100))
        .unwrap();
    let many = core
        .subscribe(&["sensors.#"], ConsumeOptions::auto_ack(100))
        .unwrap();
    let all = core
        .subscribe(&["#"], ConsumeOptions::auto_ack(100))
        .unwrap();
    for name in [
        "sensors.k1.temp",
        "sensors.k1.hum",
        "sensors",
        "other",
        "$SYS.load",
    ] {
        core.publish(&t(name), Message::new(name)).await.unwrap();
    }
    assert_eq!(bodies(&one), ["sensors.k1.temp"]);
    assert_eq!(
        bodies(&many),
        ["sensors.k1.temp", "sensors.k1.hum", "sensors"]
    );
    assert_eq!(
        bodies(&all),
        ["sensors.k1.temp", "sensors.k1.hum", "sensors", "other"],
        "# skips $ topics"
    );
}

#[tokio::test]
async fn overlapping_patterns_deliver_once_and_keep_the_topic_name() {
    let core = Core::default();
    let s = core
        .subscribe(&["a.*", "a.#", "a.b"], ConsumeOptions::auto_ack(100))
        .unwrap();
    core.publish(&t("a.b"), Message::new("x")).await.unwrap();
    let got = drain(&s);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].destination, t("a.b"));
}

#[tokio::test]
async fn non_durable_subscription_holds_nothing_once_gone() {
    let core = Core::default();
    let s = core
        .subscribe(&["ev"], ConsumeOptions::auto_ack(100))
        .unwrap();
    let name = s.queue_name().to_owned();
    drop(s);
    assert!(
        core.queue(&name).is_none(),
        "private queue deleted with its consumer"
    );
    assert_eq!(
        core.publish(&t("ev"), Message::new("lost")).await.unwrap(),
        0
    );
    assert_eq!(core.stats().unrouted, 1);
    let s = core
        .subscribe(&["ev"], ConsumeOptions::auto_ack(100))
        .unwrap();
    assert!(drain(&s).is_empty());
}

#[tokio::test]
async fn durable_subscription_holds_messages_while_away() {
    let core = Core::default();
    let s = core
        .subscribe_durable("audit-sub", &["orders.#"], ConsumeOptions::manual(100))
        .unwrap();
    core.publish(&t("orders.new"), Message::new("o1"))
        .await
        .unwrap();
    let got = drain(&s);
    assert_eq!(got.len(), 1);
    drop(s); // unacked o1 goes back
    core.publish(&t("orders.paid"), Message::new("o2"))
        .await
        .unwrap();
    core.publish(&t("invoices.x"), Message::new("not-matching"))
        .await
        .unwrap();
    let s = core
        .subscribe_durable("audit-sub", &["orders.#"], ConsumeOptions::manual(100))
        .unwrap();
    let got = drain(&s);
    let b: Vec<_> = got
        .iter()
        .map(|d| String::from_utf8(d.message.body.to_vec()).unwrap())
        .collect();
    assert_eq!(b, ["o1", "o2"]);
    assert!(got[0].redelivered && !got[1].redelivered);
    assert_eq!(core.delete_queue("audit-sub"), Some(0));
    assert_eq!(
        core.subscriber_count("orders.x"),
        0,
        "deleting ends the subscription"
    );
}

#[tokio::test]
async fn durable_resubscribe_replaces_patterns() {
    let core = Core::default();
    drop(
        core.subscribe_durable("d", &["a", "b"], ConsumeOptions::auto_ack(10))
            .unwrap(),
    );
    assert_eq!(core.bindings("d"), ["a", "b"]);
    let s = core
        .subscribe_durable("d", &["b", "c"], ConsumeOptions::auto_ack(10))
        .unwrap();
    assert_eq!(core.bindings("d"), ["b", "c"]);
    core.publish(&t("a"), Message::new("a")).await.unwrap();
    core.publish(&t("c"), Message::new("c")).await.unwrap();
    assert_eq!(bodies(&s), ["c"]);
}

#[tokio::test]
async fn slow_subscriber_with_full_buffer_does_not_block_others_when_dropping() {
    use switchboard::core::{CoreConfig, Overflow, QueueOptions};
    let config = CoreConfig {
        default_subscription: QueueOptions {
            max_length: 5,
            overflow: Overflow::DropHead,
            durable: false,
            auto_delete: true,
            ..QueueOptions::default()
        },
        ..CoreConfig::default()
    };
    let core = Core::new(config);
    let slow = core.subscribe(&["x"], ConsumeOptions::manual(1)).unwrap();
    let fast = core
        .subscribe(&["x"], ConsumeOptions::auto_ack(1000))
        .unwrap();
    let mut got_fast = 0;
    for i in 0..50 {
        core.publish(&t("x"), Message::new(format!("{i}")))
            .await
            .unwrap();
        got_fast += drain(&fast).len();
    }
    assert_eq!(got_fast, 50);
    let q = core.queue(slow.queue_name()).unwrap();
    let st = q.stats();
    assert_eq!(st.ready, 5, "the slow subscriber's buffer stayed bounded");
    assert_eq!(st.dropped, 44, "and every dropped message was counted");
}

#[tokio::test]
async fn batch_publish_fans_out_like_single_publishes() {
    let core = Core::default();
    let subs: Vec<_> = (0..3)
        .map(|_| {
            core.subscribe(&["b.*"], ConsumeOptions::auto_ack(100))
                .unwrap()
        })
        .collect();
    let n = core
        .publish_batch(
            &t("b.x"),
            (0..4).map(|i| Message::new(format!("{i}"))).collect(),
        )
        .await
        .unwrap();
    assert_eq!(n, 12);
    for s in &subs {
        assert_eq!(bodies(s), ["0", "1", "2", "3"]);
    }
    assert_eq!(
        core.publish_batch(&t("nobody"), vec![Message::new("x")])
            .await
            .unwrap(),
        0
    );
}
