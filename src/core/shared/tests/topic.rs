//! Topics of a clustered core: a publish goes to the cluster once, another router's
//! publish reaches only local subscriptions, a durable subscription is fed by the
//! cluster alone, and local bindings are declared as interest.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::fake::FakeCluster;
use crate::core::{ConsumeOptions, Consumer, Core, Delivery, Destination, Message, PublishError};
use crate::store::StoreError;

fn body(d: &Delivery) -> String {
    String::from_utf8(d.message.body.to_vec()).unwrap()
}

fn drain(c: &Consumer) -> Vec<Delivery> {
    let mut out = Vec::new();
    while c.try_recv_many(1000, &mut out).unwrap() > 0 {}
    out
}

fn topic(name: &str) -> Destination {
    Destination::topic(name)
}

#[tokio::test]
async fn each_topic_publish_goes_to_the_cluster_once() {
    let (core, cluster) = FakeCluster::core();
    let sub = core
        .subscribe(&["news.*", "news.#"], ConsumeOptions::manual(100))
        .unwrap();
    let mut m = Message::new("one");
    m.persistent = true;
    // Reached: the local subscription, and the cluster (other routers may have
    // subscribers; an MQTT 5 publisher must not be told there are none).
    assert_eq!(core.publish(&topic("news.eu"), m).await.unwrap(), 2);
    assert_eq!(
        core.try_publish(&topic("news.us"), Message::new("two"))
            .unwrap(),
        2
    );
    let batch = vec![Message::new("three"), Message::new("four")];
    assert_eq!(
        core.publish_batch(&topic("news.eu"), batch).await.unwrap(),
        4
    );
    // Nobody here subscribes to it: the cluster still gets it, for other routers.
    assert_eq!(
        core.publish(&topic("sport"), Message::new("five"))
            .await
            .unwrap(),
        1
    );

    let sent = cluster.calls().topic_publishes.clone();
    let got: Vec<(String, String)> = sent.iter().map(|p| (p.to.clone(), p.body())).collect();
    assert_eq!(
        got,
        [
            ("news.eu".into(), "one".into()),
            ("news.us".into(), "two".into()),
            ("news.eu".into(), "three".into()),
            ("news.eu".into(), "four".into()),
            ("sport".into(), "five".into()),
        ]
    );
    assert_eq!(
        sent[0].decoded().0,
        topic("news.eu"),
        "encoded with its topic"
    );
    assert!(sent[0].persistent && !sent[1].persistent);
    assert!(
        cluster.calls().publishes.is_empty(),
        "no shared queue involved"
    );
    // Local subscriptions get it from the local fan-out, once each.
    assert_eq!(
        drain(&sub).iter().map(body).collect::<Vec<_>>(),
        ["one", "two", "three", "four"]
    );
}

#[tokio::test]
async fn a_topic_publish_is_confirmed_by_the_cluster() {
    let (core, cluster) = FakeCluster::core();
    cluster.hold_confirms();
    let m = Arc::new(Message::new("x"));
    let (_, ok) = core
        .publish_unconfirmed(&topic("t"), Arc::clone(&m))
        .await
        .unwrap();
    assert!(!ok.is_ready());
    cluster.confirm(Ok(()));
    ok.wait().await.unwrap();
    let (_, refused) = core.publish_unconfirmed(&topic("t"), m).await.unwrap();
    cluster.confirm(Err(StoreError::Unavailable("down".into())));
    assert!(matches!(refused.wait().await, Err(PublishError::Store(_))));
}

#[tokio::test]
async fn another_router_s_publish_reaches_local_subscriptions_only() {
    let (core, cluster) = FakeCluster::core();
    let local = core
        .subscribe(&["news.*"], ConsumeOptions::manual(10))
        .unwrap();
    let durable = core
        .subscribe_durable("dur", &["news.*"], ConsumeOptions::manual(10))
        .unwrap();

    assert_eq!(core.deliver_remote(&topic("news.eu"), Message::new("r")), 1);
    assert_eq!(drain(&local).iter().map(body).collect::<Vec<_>>(), ["r"]);
    assert_eq!(drain(&local).len(), 0);
    assert!(
        drain(&durable).is_empty(),
        "the cluster feeds the durable one itself"
    );
    assert_eq!(
        core.deliver_remote(&Destination::queue("dur"), Message::new("q")),
        0
    );
    let calls = cluster.calls();
    assert!(calls.topic_publishes.is_empty(), "never shared again");
    assert!(calls.publishes.is_empty());
}

#[tokio::test]
async fn a_shared_durable_subscription_is_fed_by_the_cluster_and_told_its_bindings() {
    let (core, cluster) = FakeCluster::core();
    let sub = core
        .subscribe_durable("dur", &["a.*", "b.#"], ConsumeOptions::manual(10))
        .unwrap();
    assert!(core.queue("dur").unwrap().is_shared());
    assert_eq!(cluster.binds("dur"), [vec!["a.*"], vec!["a.*", "b.#"]]);
    assert_eq!(
        core.subscriber_count("a.x"),
        0,
        "not in the local topic trie"
    );
    assert_eq!(core.bindings("dur"), ["a.*", "b.#"]);

    core.publish(&topic("a.x"), Message::new("m"))
        .await
        .unwrap();
    assert!(drain(&sub).is_empty(), "no local fan-out into it");
    assert!(cluster.publishes_to("dur").is_empty());
    assert_eq!(cluster.calls().topic_publishes.len(), 1);
    // What the cluster captured for it arrives through its log, under the topic.
    cluster
        .feed("dur")
        .arrive(topic("a.x"), Message::new("m"), 1, 0);
    let got = drain(&sub);
    assert_eq!(got[0].destination, topic("a.x"));
    assert!(sub.ack(got[0].tag));
    assert_eq!(cluster.acks("dur"), [1]);

    // Subscribing again with other patterns: each change sends the whole new set.
    drop(sub);
    let sub = core
        .subscribe_durable("dur", &["b.#", "c"], ConsumeOptions::manual(10))
        .unwrap();
    assert_eq!(cluster.binds("dur")[2..], [vec!["b.#"], vec!["b.#", "c"]]);
    core.unbind("dur", "c").unwrap();
    assert_eq!(cluster.binds("dur").last().unwrap(), &["b.#"]);
    assert!(
        cluster.calls().interest.is_empty(),
        "a shared queue is no local interest"
    );

    drop(sub);
    core.delete_queue("dur").unwrap();
    assert_eq!(cluster.calls().closed, ["dur"]);
    assert!(cluster.calls().interest.is_empty());
}

/// Bindings per pattern from the interest calls so far; panics if one went below zero.
fn interest(cluster: &FakeCluster) -> BTreeMap<String, i32> {
    let mut count = BTreeMap::new();
    for (p, bound) in &cluster.calls().interest {
        let n = count.entry(p.clone()).or_insert(0);
        *n += if *bound { 1 } else { -1 };
        assert!(*n >= 0, "{p} unbound more often than bound");
    }
    count.retain(|_, n| *n != 0);
    count
}

#[tokio::test]
async fn local_bindings_are_counted_as_interest_and_balanced() {
    let (core, cluster) = FakeCluster::core();
    let a = core
        .subscribe(&["x.*", "y"], ConsumeOptions::manual(10))
        .unwrap();
    let b = core
        .subscribe(&["x.*"], ConsumeOptions::manual(10))
        .unwrap();
    assert_eq!(
        interest(&cluster),
        BTreeMap::from([("x.*".into(), 2), ("y".into(), 1)])
    );

    // A binding that already exists, or an unbinding that does not, is no change.
    core.bind(a.queue_name(), "y").unwrap();
    assert!(!core.unbind(b.queue_name(), "y").unwrap());
    assert_eq!(cluster.calls().interest.len(), 3);

    assert!(core.unbind(a.queue_name(), "y").unwrap());
    assert_eq!(interest(&cluster), BTreeMap::from([("x.*".into(), 2)]));
    // The subscription's queue goes with its consumer, and its bindings with it.
    drop(a);
    assert_eq!(interest(&cluster), BTreeMap::from([("x.*".into(), 1)]));

    // A local named queue bound to a topic, then deleted.
    let mut options = core.config().default_queue.clone();
    options.durable = false;
    core.declare_queue("local", Some(options)).unwrap();
    core.bind("local", "z.#").unwrap();
    assert_eq!(
        interest(&cluster),
        BTreeMap::from([("x.*".into(), 1), ("z.#".into(), 1)])
    );
    core.delete_queue("local").unwrap();
    drop(b);
    assert_eq!(interest(&cluster), BTreeMap::new(), "every binding undone");
    assert_eq!(cluster.calls().interest.len(), 8);
}

#[tokio::test]
async fn a_topic_nobody_here_subscribes_to_is_not_unrouted_when_clustered() {
    let (core, _cluster) = FakeCluster::core();
    core.publish(&topic("nobody"), Message::new("m"))
        .await
        .unwrap();
    core.try_publish(&topic("nobody"), Message::new("m"))
        .unwrap();
    assert_eq!(core.stats().unrouted, 0);

    let alone = Core::default();
    alone
        .publish(&topic("nobody"), Message::new("m"))
        .await
        .unwrap();
    assert_eq!(alone.stats().unrouted, 1, "a single router counts it");
}
