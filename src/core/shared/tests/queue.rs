//! A shared queue as the core runs it: publishes go to its log, what the log fetches is
//! delivered, and every way a message leaves is an ack or a release to the cluster.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;

use super::fake::FakeCluster;
use crate::core::{
    ByteBudget, ConsumeOptions, Consumer, Core, CoreConfig, Delivery, Destination, ExpiredAction,
    Message, PublishError, QueueOptions,
};
use crate::ratelog::Cause;
use crate::store::StoreError;

fn body(d: &Delivery) -> String {
    String::from_utf8(d.message.body.to_vec()).unwrap()
}

fn drain(c: &Consumer) -> Vec<Delivery> {
    let mut out = Vec::new();
    while c.try_recv_many(1000, &mut out).unwrap() > 0 {}
    out
}

/// Takes a pending wake-up of the queue's `wants`, if any (true when there was one).
fn woken(core: &Core, queue: &str) -> bool {
    core.queue(queue)
        .unwrap()
        .wants()
        .notified()
        .now_or_never()
        .is_some()
}

/// A core whose queue `work` dead-letters to `dlq`, both shared, with `options` for `work`.
fn with_dead_letter(options: QueueOptions) -> (Core, FakeCluster) {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "work".into(),
        QueueOptions {
            dead_letter: Some(Destination::queue("dlq")),
            ..options
        },
    );
    FakeCluster::core_with(config)
}

#[tokio::test]
async fn a_publish_goes_to_the_log_and_not_into_ready() {
    let (core, cluster) = FakeCluster::core();
    let dest = Destination::queue("work");
    // A consumer with credit: a message in `ready` would be assigned to it at once.
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    let mut m = Message::new("hello").with_header("k", "v");
    m.persistent = true;
    assert_eq!(core.publish(&dest, m).await.unwrap(), 1);
    core.publish(&dest, Message::new("fleeting")).await.unwrap();

    let sent = cluster.publishes_to("work");
    assert_eq!(sent.len(), 2);
    let (to, got) = sent[0].decoded();
    assert_eq!(to, dest, "encoded with the destination its consumer sees");
    assert_eq!(&got.body[..], b"hello");
    assert_eq!(got.headers.get("k"), Some("v"));
    assert!(sent[0].persistent && got.persistent);
    assert!(
        !sent[1].persistent,
        "a non-persistent message goes to the log too, flagged so"
    );
    let q = core.queue("work").unwrap();
    assert!(q.is_shared());
    assert_eq!(q.len(), 0, "nothing enters the local ready list");
    assert!(
        drain(&c).is_empty(),
        "nor reaches a local consumer directly"
    );
    assert_eq!(q.stats().published, 2);
    assert!(cluster.calls().topic_publishes.is_empty());
}

#[tokio::test]
async fn a_publish_is_confirmed_when_the_log_stored_it() {
    let (core, cluster) = FakeCluster::core();
    cluster.hold_confirms();
    let dest = Destination::queue("work");
    let m = Arc::new(Message::new("a"));

    let (n, stored) = core
        .publish_unconfirmed(&dest, Arc::clone(&m))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        !stored.is_ready(),
        "not confirmed before the cluster stored it"
    );
    cluster.confirm(Ok(()));
    stored.wait().await.unwrap();

    let (_, refused) = core.publish_unconfirmed(&dest, m).await.unwrap();
    cluster.confirm(Err(StoreError::Unavailable("no quorum".into())));
    assert!(matches!(refused.wait().await, Err(PublishError::Store(e)) if e.contains("no quorum")));

    // `publish` awaits the same confirmation.
    let publish = core.publish(&dest, Message::new("b"));
    tokio::pin!(publish);
    assert!(futures::poll!(publish.as_mut()).is_pending());
    cluster.confirm(Err(StoreError::Write("full".into())));
    assert!(matches!(publish.await, Err(PublishError::Store(_))));
    assert_eq!(cluster.publishes_to("work").len(), 3);
}

#[tokio::test]
async fn wanted_is_the_free_credit_less_what_is_ready() {
    let (core, cluster) = FakeCluster::core();
    let q = core.declare_queue("work", None).unwrap();
    assert_eq!(q.wanted(), 0, "no consumers, nothing wanted");

    woken(&core, "work");
    let a = core.consume("work", ConsumeOptions::manual(5)).unwrap();
    assert!(woken(&core, "work"), "a consumer attaching wakes the log");
    assert_eq!(q.wanted(), 5);
    assert!(cluster.arrive("work", Message::new("m"), 1, 0));
    assert_eq!(q.wanted(), 4, "the message went to `a`: 4 of its 5 left");
    assert_eq!(drain(&a).len(), 1);
    assert_eq!(q.wanted(), 4, "taken but not acknowledged still counts");
    let _b = core.consume("work", ConsumeOptions::manual(3)).unwrap();
    assert_eq!(q.wanted(), 7);

    // A budget that holds one message back keeps the next ones ready: they count
    // against what is wanted.
    static CAUSE: Cause = Cause::new("test.shared.budget");
    let budget = ByteBudget::new(1, &CAUSE);
    let (core, cluster) = FakeCluster::core();
    let q = core.declare_queue("work", None).unwrap();
    let _c = core
        .consume("work", ConsumeOptions::manual(5).with_budget(budget))
        .unwrap();
    for t in 1..=3 {
        cluster.arrive("work", Message::new("m"), t, 0);
    }
    assert_eq!(q.len(), 2);
    assert_eq!(q.wanted(), 5 - 1 - 2);
}

#[tokio::test]
async fn an_ack_wakes_the_log_for_more() {
    let (core, cluster) = FakeCluster::core();
    let c = core.consume("work", ConsumeOptions::manual(1)).unwrap();
    let q = core.queue("work").unwrap();
    cluster.arrive("work", Message::new("a"), 7, 0);
    let d = drain(&c);
    assert_eq!(q.wanted(), 0, "the only credit is taken");
    woken(&core, "work");
    assert!(c.ack(d[0].tag));
    assert!(
        woken(&core, "work"),
        "settling frees credit: the log may fetch"
    );
    assert_eq!(q.wanted(), 1);
}

#[tokio::test]
async fn arrivals_are_delivered_in_order_with_the_cluster_s_delivery_counts() {
    let (core, cluster) = FakeCluster::core();
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    let feed = cluster.feed("work");
    // What a durable subscription's log fetches keeps the topic it was published to.
    let topic = Destination::topic("news.eu");
    assert!(feed.arrive(topic.clone(), Message::new("a"), 10, 0));
    assert!(feed.arrive(Destination::queue("work"), Message::new("b"), 11, 2));
    assert!(feed.arrive(Destination::queue("work"), Message::new("c"), 12, 0));

    let got = drain(&c);
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(
        got.iter()
            .map(|d| (d.redelivered, d.delivery_count))
            .collect::<Vec<_>>(),
        [(false, 1), (true, 3), (false, 1)]
    );
    assert_eq!(got[0].destination, topic);
    assert_eq!(core.queue("work").unwrap().stats().delivered, 3);
}

#[tokio::test]
async fn what_is_handed_out_while_the_hold_may_have_lapsed_is_flagged_redelivered() {
    let (core, cluster) = FakeCluster::core();
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    let feed = cluster.feed("work");
    let mut got = Vec::new();
    for (b, overdue) in [("a", false), ("b", true), ("c", false)] {
        cluster.calls().overdue = overdue;
        assert!(feed.arrive(
            Destination::queue("work"),
            Message::new(b),
            got.len() as u64 + 1,
            0
        ));
        got.extend(drain(&c));
    }
    assert_eq!(
        got.iter()
            .map(|d| (body(d), d.redelivered))
            .collect::<Vec<_>>(),
        [("a".into(), false), ("b".into(), true), ("c".into(), false)],
        "another router may have been given `b` while this one's hold had lapsed"
    );
}

#[tokio::test]
async fn an_ack_acknowledges_the_token_in_the_cluster_once() {
    let (core, cluster) = FakeCluster::core();
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    for t in [21, 22, 23, 24] {
        cluster.arrive("work", Message::new("m"), t, 0);
    }
    let got = drain(&c);
    assert!(
        cluster.acks("work").is_empty(),
        "delivering is not settling"
    );

    assert!(c.ack(got[1].tag));
    assert!(
        !c.ack(got[1].tag),
        "a second ack of the same tag is unknown"
    );
    assert_eq!(cluster.acks("work"), [22]);
    assert_eq!(c.ack_many(&[got[3].tag]), 1);
    assert!(
        c.ack_through(got[2].tag),
        "cumulative: what is left up to it"
    );
    assert_eq!(cluster.acks("work"), [22, 24, 21, 23]);
    assert!(cluster.releases("work").is_empty());
    assert_eq!(core.queue("work").unwrap().stats().acked, 4);
}

#[tokio::test]
async fn a_requeueing_nack_releases_to_the_cluster_instead_of_requeueing() {
    let (core, cluster) = FakeCluster::core();
    let c = core.consume("work", ConsumeOptions::manual(2)).unwrap();
    let q = core.queue("work").unwrap();
    cluster.arrive("work", Message::new("a"), 5, 0);
    cluster.arrive("work", Message::new("b"), 6, 0);
    let got = drain(&c);

    assert!(c.nack(got[0].tag, true));
    assert_eq!(cluster.releases("work"), [5]);
    assert_eq!(q.len(), 0, "not back in the local ready list");
    assert!(drain(&c).is_empty(), "not redelivered locally");
    assert_eq!(
        q.wanted(),
        1,
        "its credit is free for whatever the cluster sends"
    );
    assert!(c.nack_through(got[1].tag, true));
    assert_eq!(cluster.releases("work"), [5, 6]);
    assert!(cluster.acks("work").is_empty());
    assert_eq!(q.stats().redelivered, 2);
}

#[tokio::test]
async fn a_consumer_going_away_releases_what_it_held() {
    let (core, cluster) = FakeCluster::core();
    let c = core.consume("work", ConsumeOptions::manual(3)).unwrap();
    let q = core.queue("work").unwrap();
    for t in [1, 2, 3] {
        cluster.arrive("work", Message::new("m"), t, 0);
    }
    let mut taken = Vec::new();
    c.try_recv_many(1, &mut taken).unwrap();
    assert_eq!(
        q.stats().unacked,
        3,
        "one delivered unacked, two assigned pending"
    );

    drop(c);
    let mut released = cluster.releases("work");
    released.sort_unstable();
    assert_eq!(released, [1, 2, 3]);
    assert_eq!(q.len(), 0, "nothing kept locally");
    assert!(cluster.acks("work").is_empty());
    assert!(cluster.calls().closed.is_empty(), "the queue itself stays");
}

#[tokio::test]
async fn a_retired_consumer_keeps_only_what_it_was_told_and_takes_nothing_more() {
    let (core, cluster) = FakeCluster::core();
    let c = core.consume("work", ConsumeOptions::manual(4)).unwrap();
    let q = core.queue("work").unwrap();
    for t in 1..=4 {
        cluster.arrive("work", Message::new(format!("m{t}")), t, 0);
    }
    let mut taken = Vec::new();
    c.try_recv_many(3, &mut taken).unwrap();
    let keep = [taken[0].tag, taken[2].tag];

    assert_eq!(c.retire(&keep), 2);
    let mut released = cluster.releases("work");
    released.sort_unstable();
    assert_eq!(
        released,
        [2, 4],
        "the other delivery and the one assigned go back"
    );
    assert_eq!(q.stats().unacked, 2);
    assert_eq!(q.wanted(), 0, "a retired consumer has no credit");
    cluster.arrive("work", Message::new("m5"), 5, 0);
    assert!(drain(&c).is_empty(), "nothing new is assigned to it");

    let other = core.consume("work", ConsumeOptions::manual(4)).unwrap();
    assert_eq!(drain(&other).len(), 1, "a new consumer takes what arrives");
    assert!(c.ack(keep[0]));
    assert_eq!(cluster.acks("work"), [1]);
    drop(c);
    assert!(
        cluster.releases("work").contains(&3),
        "dropped, it gives back the rest"
    );
}

#[tokio::test]
async fn an_auto_ack_consumer_acknowledges_as_it_takes() {
    let (core, cluster) = FakeCluster::core();
    let c = core.consume("work", ConsumeOptions::auto_ack(10)).unwrap();
    cluster.arrive("work", Message::new("a"), 3, 0);
    cluster.arrive("work", Message::new("b"), 4, 0);
    assert!(cluster.acks("work").is_empty(), "assigned is not yet taken");
    assert_eq!(drain(&c).len(), 2);
    assert_eq!(cluster.acks("work"), [3, 4]);
    drop(c);
    assert!(cluster.releases("work").is_empty());
}

fn expired(body: &str) -> Message {
    let mut m = Message::new(body.to_owned());
    m.expiry = Some(SystemTime::now() - Duration::from_secs(1));
    m
}

#[tokio::test]
async fn a_message_arriving_expired_is_dropped_and_acked() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "work".into(),
        QueueOptions {
            expired: ExpiredAction::Drop,
            dead_letter: Some(Destination::queue("dlq")),
            ..QueueOptions::default()
        },
    );
    let (core, cluster) = FakeCluster::core_with(config);
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    cluster.arrive("work", expired("old"), 9, 0);
    assert!(drain(&c).is_empty());
    assert_eq!(cluster.acks("work"), [9]);
    let stats = core.queue("work").unwrap().stats();
    assert_eq!((stats.expired, stats.dropped), (1, 1));
    assert!(core.queue("dlq").is_none(), "dropped, not dead-lettered");
}

#[tokio::test]
async fn a_message_arriving_expired_goes_to_the_dead_letter_destination() {
    let mut config = CoreConfig::default();
    // A local dead-letter queue this time, to see the copy land in it.
    config.queues.insert(
        "dlq".into(),
        QueueOptions {
            durable: false,
            ..QueueOptions::default()
        },
    );
    config.queues.insert(
        "work".into(),
        QueueOptions {
            dead_letter: Some(Destination::queue("dlq")),
            ..QueueOptions::default()
        },
    );
    let (core, cluster) = FakeCluster::core_with(config);
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    cluster.arrive("work", expired("old"), 9, 0);
    assert!(drain(&c).is_empty());
    assert_eq!(cluster.acks("work"), [9]);
    assert!(cluster.releases("work").is_empty());
    let dlq = core.queue("dlq").unwrap();
    assert!(!dlq.is_shared());
    let dead = drain(&core.consume("dlq", ConsumeOptions::manual(10)).unwrap());
    assert_eq!(dead.len(), 1);
    assert_eq!(body(&dead[0]), "old");
    assert_eq!(
        dead[0].message.headers.get("x-death-reason"),
        Some("expired")
    );
    assert_eq!(dead[0].message.headers.get("x-death-queue"), Some("work"));
    assert_eq!(core.queue("work").unwrap().stats().dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn what_expires_while_ready_is_acked_by_the_sweep() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "work".into(),
        QueueOptions {
            ttl: Some(Duration::from_secs(5)),
            expired: ExpiredAction::Drop,
            ..QueueOptions::default()
        },
    );
    let (core, cluster) = FakeCluster::core_with(config);
    // A budget holds the second message back in `ready`; the first is assigned.
    static CAUSE: Cause = Cause::new("test.shared.budget_ttl");
    let budget = ByteBudget::new(1, &CAUSE);
    let _c = core
        .consume("work", ConsumeOptions::manual(5).with_budget(budget))
        .unwrap();
    cluster.arrive("work", Message::new("m"), 4, 0);
    cluster.arrive("work", Message::new("m"), 5, 0);
    let q = core.queue("work").unwrap();
    assert_eq!((q.len(), q.stats().unacked), (1, 1));
    core.sweep_expired();
    assert!(cluster.acks("work").is_empty(), "not yet expired");
    tokio::time::advance(Duration::from_secs(6)).await;
    core.sweep_expired();
    let mut acked = cluster.acks("work");
    acked.sort_unstable();
    assert_eq!(acked, [4, 5]);
    assert_eq!((q.len(), q.stats().unacked), (0, 0));
    assert_eq!(q.stats().expired, 2);
    assert!(cluster.releases("work").is_empty());
}

#[tokio::test]
async fn too_many_deliveries_dead_letter_and_ack() {
    let (core, cluster) = with_dead_letter(QueueOptions {
        max_deliveries: Some(2),
        ..QueueOptions::default()
    });
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    // Delivered once before, elsewhere; once more here reaches the limit.
    cluster.arrive("work", Message::new("poison"), 40, 1);
    // Delivered for the first time: a NACK may still requeue it.
    cluster.arrive("work", Message::new("fresh"), 41, 0);
    let got = drain(&c);
    assert_eq!(got[0].delivery_count, 2);
    assert!(c.nack(got[0].tag, true));
    assert!(c.nack(got[1].tag, true));

    assert_eq!(cluster.acks("work"), [40]);
    assert_eq!(cluster.releases("work"), [41]);
    let dead = cluster.publishes_to("dlq");
    assert_eq!(
        dead.len(),
        1,
        "the dead-letter queue is shared: its copy goes to its log"
    );
    let (to, m) = dead[0].decoded();
    assert_eq!(to, Destination::queue("dlq"));
    assert_eq!(&m.body[..], b"poison");
    assert_eq!(m.headers.get("x-death-reason"), Some("max-deliveries"));
    assert_eq!(m.headers.get("x-death-deliveries"), Some("2"));

    // The same when its consumer goes away holding it.
    cluster.arrive("work", Message::new("again"), 42, 1);
    assert_eq!(drain(&c).len(), 1);
    drop(c);
    assert_eq!(cluster.acks("work"), [40, 42]);
    assert_eq!(cluster.releases("work"), [41]);
    assert_eq!(cluster.publishes_to("dlq").len(), 2);
}

#[tokio::test]
async fn a_rejected_message_is_dead_lettered_and_acked() {
    let (core, cluster) = with_dead_letter(QueueOptions::default());
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    cluster.arrive("work", Message::new("bad"), 8, 0);
    let got = drain(&c);
    assert!(c.nack(got[0].tag, false));
    assert_eq!(cluster.acks("work"), [8]);
    assert!(cluster.releases("work").is_empty());
    let dead = cluster.publishes_to("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].decoded().1.headers.get("x-death-reason"),
        Some("rejected")
    );
}

#[tokio::test]
async fn deleting_a_shared_queue_releases_what_is_ready_and_closes_its_log() {
    let (core, cluster) = FakeCluster::core();
    let q = core.declare_queue("work", None).unwrap();
    // A budget holds two of the three back in `ready`; the first is assigned.
    static CAUSE: Cause = Cause::new("test.shared.budget_delete");
    let budget = ByteBudget::new(1, &CAUSE);
    let c = core
        .consume("work", ConsumeOptions::manual(5).with_budget(budget))
        .unwrap();
    for t in 1..=3 {
        cluster.arrive("work", Message::new("m"), t, 0);
    }

    assert_eq!(core.delete_queue("work"), Some(2));
    assert_eq!(cluster.releases("work"), [2, 3]);
    assert_eq!(cluster.calls().closed, ["work"]);
    assert_eq!(q.wanted(), 0);
    let feed = cluster.feed("work");
    assert!(
        feed.queue().is_none(),
        "the log stops feeding a deleted queue"
    );

    // Fetched just before it learned: given back at once.
    assert!(feed.arrive(Destination::queue("work"), Message::new("late"), 4, 0));
    assert_eq!(cluster.releases("work"), [2, 3, 4]);
    assert_eq!(q.len(), 0);
    // What its consumer held goes back when the consumer goes.
    drop(c);
    assert_eq!(cluster.releases("work"), [2, 3, 4, 1]);
    assert!(cluster.acks("work").is_empty());
    // Once nothing holds the queue any more, the caller releases it itself.
    drop(q);
    assert!(!feed.arrive(Destination::queue("work"), Message::new("later"), 5, 0));
    assert_eq!(cluster.releases("work").len(), 4);
    assert_eq!(cluster.calls().closed, ["work"], "closed once");
}

#[tokio::test]
async fn what_arrives_for_consumers_that_left_goes_back_to_the_cluster() {
    let (core, cluster) = FakeCluster::core();
    let q = core.declare_queue("work", None).unwrap();
    let c = core.consume("work", ConsumeOptions::manual(2)).unwrap();
    assert_eq!(q.wanted(), 2, "the log fetches two");
    // ... but the consumer leaves before they come in.
    drop(c);
    assert!(cluster.arrive("work", Message::new("a"), 1, 0));
    assert!(cluster.arrive("work", Message::new("b"), 2, 0));
    assert_eq!(
        cluster.releases("work"),
        [1, 2],
        "not held here while consumers of other routers may wait for them"
    );
    assert_eq!(q.len(), 0);

    // Held back in `ready` by a byte budget when the last consumer leaves.
    static CAUSE: Cause = Cause::new("test.shared.budget_left");
    let budget = ByteBudget::new(1, &CAUSE);
    let c = core
        .consume("work", ConsumeOptions::manual(5).with_budget(budget))
        .unwrap();
    for t in 3..=5 {
        cluster.arrive("work", Message::new("m"), t, 0);
    }
    assert_eq!(q.len(), 2, "two wait for room in the budget");
    drop(c);
    let mut released = cluster.releases("work");
    released.sort_unstable();
    assert_eq!(released, [1, 2, 3, 4, 5]);
    assert_eq!(q.len(), 0);
    assert!(cluster.acks("work").is_empty());
}

#[tokio::test]
async fn local_queues_of_a_clustered_core_stay_local() {
    let mut config = CoreConfig::default();
    config
        .queues
        .insert("configured".into(), QueueOptions::default());
    config.queues.insert(
        "scratch".into(),
        QueueOptions {
            durable: false,
            ..QueueOptions::default()
        },
    );
    let (core, cluster) = FakeCluster::core_with(config);
    // A configured queue is opened in the cluster and fed from the start.
    assert_eq!(cluster.calls().opened, ["configured"]);
    assert!(cluster.feed("configured").queue().is_some());

    core.publish(&Destination::queue("scratch"), Message::new("x"))
        .await
        .unwrap();
    let q = core.queue("scratch").unwrap();
    assert!(!q.is_shared());
    assert_eq!(q.len(), 1);
    let c = core.consume("scratch", ConsumeOptions::manual(10)).unwrap();
    let got = drain(&c);
    assert!(c.nack(got[0].tag, true));
    let again = drain(&c);
    assert!(again[0].redelivered, "a local queue requeues locally");
    assert!(cluster.calls().publishes.is_empty());
    assert!(cluster.calls().releases.is_empty());
}

/// The cluster does not order a publish before another message's acknowledgement as
/// the journal does: a dead letter's original is acknowledged only once its copy is
/// confirmed, and given back when the copy is refused.
#[tokio::test]
async fn a_dead_letter_is_acked_only_once_its_copy_is_confirmed() {
    let (core, cluster) = with_dead_letter(QueueOptions::default());
    let c = core.consume("work", ConsumeOptions::manual(10)).unwrap();
    cluster.arrive("work", Message::new("kept"), 1, 0);
    cluster.arrive("work", Message::new("refused"), 2, 0);
    let got = drain(&c);
    cluster.hold_confirms();
    assert!(c.nack(got[0].tag, false));
    assert!(c.nack(got[1].tag, false));
    tokio::task::yield_now().await;
    assert!(cluster.acks("work").is_empty(), "copies not confirmed yet");
    cluster.confirm(Ok(()));
    cluster.confirm(Err(StoreError::Unavailable("no quorum".into())));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(cluster.acks("work"), [1]);
    assert_eq!(cluster.releases("work"), [2]);
}

#[tokio::test]
async fn unloading_a_shared_queue_releases_and_detaches_without_deleting() {
    let (core, cluster) = FakeCluster::core();
    let q = core.declare_queue("work", None).unwrap();
    core.bind("work", "a.*").unwrap();
    let c = core.consume("work", ConsumeOptions::manual(5)).unwrap();
    assert!(!core.unload_queue("work"), "not while a consumer is here");
    drop(c);
    for t in 1..=2 {
        cluster.arrive("work", Message::new("m"), t, 0);
    }
    assert!(core.unload_queue("work"));
    assert!(core.queue("work").is_none(), "gone from this router");
    assert_eq!(cluster.releases("work"), [1, 2]);
    assert_eq!(cluster.calls().detached, ["work"]);
    assert!(
        cluster.calls().closed.is_empty(),
        "the cluster keeps the queue"
    );
    assert!(core.bindings("work").is_empty());
    assert!(cluster.feed("work").queue().is_none());
    drop(q);
    assert!(!core.unload_queue("work"));
    // A local queue is never unloaded.
    core.declare_queue("$local", None).unwrap();
    assert!(!core.unload_queue("$local"));
}
