//! Topic rules: fan-out, wildcard subscriptions, durable vs non-durable subscriptions.

use std::time::Duration;

use tokio::time::timeout;

use switchboard::core::{
    ConsumeOptions, Consumer, Core, CoreConfig, Delivery, Destination, Message, Overflow,
    QueueOptions,
};

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

/// A full `block` subscription: a publisher that is confirmed waits for room in it; one
/// that never waits (`try_publish`) leaves the message to the others, and the full
/// subscription's loss goes to its dead-letter queue.
#[tokio::test(start_paused = true)]
async fn a_full_subscription_makes_a_publish_wait_and_a_try_publish_lose_it_there() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "slow".into(),
        QueueOptions {
            max_length: 1,
            overflow: Overflow::Block,
            dead_letter: Some(Destination::queue("slow.dlq")),
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    core.declare_queue("slow", None).unwrap();
    core.bind("slow", "x").unwrap();
    let fast = core
        .subscribe(&["x"], ConsumeOptions::auto_ack(100))
        .unwrap();
    assert_eq!(core.publish(&t("x"), Message::new("1")).await.unwrap(), 2);
    assert_eq!(core.try_publish(&t("x"), Message::new("2")).unwrap(), 1);
    let dlq = core
        .consume("slow.dlq", ConsumeOptions::auto_ack(10))
        .unwrap();
    let dead = drain(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].message.headers.get("x-death-reason"),
        Some("overflow")
    );
    assert_eq!(dead[0].destination, Destination::queue("slow.dlq"));
    assert_eq!(
        dead[0].message.headers.get("x-death-destination"),
        Some("topic:x")
    );

    let x = t("x");
    let mut publish = Box::pin(core.publish(&x, Message::new("3")));
    assert!(
        timeout(Duration::from_secs(60), &mut publish)
            .await
            .is_err(),
        "waits while the slow subscription is full"
    );
    let slow = core.consume("slow", ConsumeOptions::auto_ack(10)).unwrap();
    assert_eq!(bodies(&slow), ["1"]);
    assert_eq!(publish.await.unwrap(), 2, "room made: both got it");
    assert_eq!(bodies(&slow), ["3"]);
    assert_eq!(bodies(&fast), ["1", "2", "3"]);
}

/// A dead-letter destination that is a topic reaches its subscribers; with none, the
/// dead letter counts as dead-lettered, not as an unrouted publish.
#[tokio::test]
async fn a_dead_letter_topic_fans_out_to_its_subscribers() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "work".into(),
        QueueOptions {
            dead_letter: Some(t("dead.work")),
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    let watchers: Vec<_> = (0..2)
        .map(|_| {
            core.subscribe(&["dead.#"], ConsumeOptions::auto_ack(10))
                .unwrap()
        })
        .collect();
    let work = Destination::queue("work");
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    core.publish(&work, Message::new("bad")).await.unwrap();
    assert!(c.nack(drain(&c)[0].tag, false));
    for w in &watchers {
        let got = drain(w);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].destination, t("dead.work"));
        assert_eq!(
            got[0].message.headers.get("x-death-reason"),
            Some("rejected")
        );
        assert_eq!(got[0].message.headers.get("x-death-queue"), Some("work"));
    }
    drop(watchers);
    core.publish(&work, Message::new("worse")).await.unwrap();
    assert!(c.nack(drain(&c)[0].tag, false));
    let stats = core.queue("work").unwrap().stats();
    assert_eq!((stats.dead_lettered, stats.dropped), (2, 0));
    assert_eq!(core.stats().unrouted, 0);
}
