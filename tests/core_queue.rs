//! The queue rules of the core: order, exactly-one-consumer, fair dispatch, redelivery,
//! dead-lettering, TTL (on tokio's paused clock) and overflow policies.

use std::time::Duration;

use tokio::time::{advance, timeout};
use tokio_util::sync::CancellationToken;

use switchboard::core::{
    AckMode, ConsumeOptions, Core, CoreConfig, Delivery, Destination, Message, Overflow,
    PublishError, QueueOptions,
};

fn q(name: &str) -> Destination {
    Destination::queue(name)
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.message.body.to_vec()).unwrap()
}

async fn publish_n(core: &Core, dest: &Destination, n: usize) {
    for i in 0..n {
        core.publish(dest, Message::new(format!("m{i}")))
            .await
            .unwrap();
    }
}

fn drain(c: &switchboard::core::Consumer) -> Vec<Delivery> {
    let mut out = Vec::new();
    while c.try_recv_many(1000, &mut out).unwrap() > 0 {}
    out
}

#[tokio::test]
async fn fifo_order_and_messages_wait_for_a_consumer() {
    let core = Core::default();
    publish_n(&core, &q("orders"), 100).await;
    assert_eq!(
        core.queue("orders").unwrap().len(),
        100,
        "messages wait while nobody consumes"
    );
    let c = core
        .consume("orders", ConsumeOptions::auto_ack(1000))
        .unwrap();
    let got: Vec<String> = drain(&c).iter().map(body).collect();
    let want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn each_message_goes_to_exactly_one_consumer_fairly() {
    let core = Core::default();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            core.consume("work", ConsumeOptions::manual(10_000))
                .unwrap()
        })
        .collect();
    publish_n(&core, &q("work"), 400).await;
    let mut all = Vec::new();
    for c in &consumers {
        let got = drain(c);
        assert_eq!(
            got.len(),
            100,
            "round-robin gives each of 4 consumers a quarter"
        );
        all.extend(got.iter().map(body));
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 400, "no message delivered twice, none lost");
}

#[tokio::test]
async fn prefetch_limits_unacked_and_ack_frees_credit() {
    let core = Core::default();
    let fast = core.consume("p", ConsumeOptions::manual(2)).unwrap();
    publish_n(&core, &q("p"), 10).await;
    let first = drain(&fast);
    assert_eq!(first.len(), 2, "no more than the prefetch is outstanding");
    assert!(drain(&fast).is_empty());
    assert!(fast.ack(first[0].tag));
    assert!(!fast.ack(first[0].tag), "a tag acks once");
    let next = drain(&fast);
    assert_eq!(next.len(), 1);
    assert_eq!(body(&next[0]), "m2");
    // Cumulative ack (STOMP client mode) settles everything up to the tag.
    assert!(fast.ack_through(next[0].tag));
    assert_eq!(drain(&fast).len(), 2);
}

#[tokio::test]
async fn acking_a_batch_settles_each_tag_once_and_refills() {
    let core = Core::default();
    let c = core
        .consume("batch-ack", ConsumeOptions::manual(4))
        .unwrap();
    publish_n(&core, &q("batch-ack"), 10).await;
    let first = drain(&c);
    assert_eq!(first.len(), 4);
    let tags: Vec<u64> = first.iter().map(|d| d.tag).collect();
    // Three of the four, one twice, and a tag never handed out.
    assert_eq!(c.ack_many(&[tags[0], tags[2], tags[2], tags[3], 999]), 3);
    assert_eq!(c.ack_many(&[]), 0);
    let next: Vec<String> = drain(&c).iter().map(body).collect();
    assert_eq!(
        next,
        ["m4", "m5", "m6"],
        "credit freed by the batch refills at once"
    );
    let stats = core.queue("batch-ack").unwrap().stats();
    assert_eq!((stats.acked, stats.unacked), (3, 4));
    // The one left unacknowledged comes back first when the consumer goes.
    drop(c);
    let again = core
        .consume("batch-ack", ConsumeOptions::auto_ack(100))
        .unwrap();
    let rest: Vec<String> = drain(&again).iter().map(body).collect();
    assert_eq!(rest, ["m1", "m4", "m5", "m6", "m7", "m8", "m9"]);
}

#[tokio::test]
async fn a_busy_consumer_does_not_get_more_than_its_credit() {
    let core = Core::default();
    let slow = core.consume("fair", ConsumeOptions::manual(1)).unwrap();
    let quick = core.consume("fair", ConsumeOptions::manual(100)).unwrap();
    publish_n(&core, &q("fair"), 20).await;
    assert_eq!(drain(&slow).len(), 1);
    assert_eq!(drain(&quick).len(), 19);
}

#[tokio::test]
async fn consumer_loss_redelivers_in_order_with_flag_and_count() {
    let core = Core::default();
    let c1 = core.consume("r", ConsumeOptions::manual(10)).unwrap();
    publish_n(&core, &q("r"), 5).await;
    let got = drain(&c1);
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|d| !d.redelivered && d.delivery_count == 1));
    c1.ack(got[1].tag);
    drop(c1);
    let c2 = core.consume("r", ConsumeOptions::manual(10)).unwrap();
    let again = drain(&c2);
    assert_eq!(
        again.iter().map(body).collect::<Vec<_>>(),
        ["m0", "m2", "m3", "m4"]
    );
    assert!(again.iter().all(|d| d.redelivered && d.delivery_count == 2));
}

#[tokio::test]
async fn nack_requeue_keeps_position_and_reject_dead_letters() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "jobs".into(),
        QueueOptions {
            dead_letter: Some(q("jobs.dlq")),
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    let c = core.consume("jobs", ConsumeOptions::manual(1)).unwrap();
    publish_n(&core, &q("jobs"), 3).await;
    let d = drain(&c);
    assert_eq!(body(&d[0]), "m0");
    assert!(c.nack(d[0].tag, true));
    let d = drain(&c);
    assert_eq!(body(&d[0]), "m0", "requeued message goes back to the head");
    assert!(d[0].redelivered);
    assert!(c.nack(d[0].tag, false));
    let dlq = core
        .consume("jobs.dlq", ConsumeOptions::auto_ack(10))
        .unwrap();
    let dead = drain(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(body(&dead[0]), "m0");
    assert_eq!(
        dead[0].message.headers.get("x-death-reason"),
        Some("rejected")
    );
    assert_eq!(dead[0].message.headers.get("x-death-queue"), Some("jobs"));
    assert_eq!(core.queue("jobs").unwrap().stats().dead_lettered, 1);
}

#[tokio::test]
async fn max_deliveries_sends_to_dead_letter() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "poison".into(),
        QueueOptions {
            dead_letter: Some(q("poison.dlq")),
            max_deliveries: Some(3),
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    publish_n(&core, &q("poison"), 1).await;
    for attempt in 1..=3 {
        let c = core.consume("poison", ConsumeOptions::manual(1)).unwrap();
        let d = drain(&c);
        assert_eq!(d.len(), 1, "attempt {attempt}");
        assert_eq!(d[0].delivery_count, attempt);
        if attempt % 2 == 0 {
            c.nack(d[0].tag, true);
        } // else: consumer dropped without ack
    }
    assert_eq!(core.queue("poison").unwrap().len(), 0);
    let dlq = core
        .consume("poison.dlq", ConsumeOptions::auto_ack(10))
        .unwrap();
    let dead = drain(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].message.headers.get("x-death-reason"),
        Some("max-deliveries")
    );
    assert_eq!(dead[0].message.headers.get("x-death-deliveries"), Some("3"));
}

/// On tokio's paused clock: a queue turns a message's own expiry (wall-clock, as
/// publishers send it) into a deadline on the tokio clock as it admits it, so
/// `advance` drives both TTLs and the checks sit at the deadlines.
#[tokio::test(start_paused = true)]
async fn per_message_and_per_queue_ttl() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "ttl".into(),
        QueueOptions {
            ttl: Some(Duration::from_secs(10)),
            dead_letter: Some(q("ttl.dlq")),
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    core.publish(
        &q("ttl"),
        Message::new("short").with_ttl(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    core.publish(&q("ttl"), Message::new("queue-ttl"))
        .await
        .unwrap();
    core.publish(&q("other"), Message::new("forever"))
        .await
        .unwrap();
    // The message's second counts from its creation, a moment of real time before the
    // queue admitted it: half a second of margin for that.
    advance(Duration::from_millis(500)).await;
    core.sweep_expired();
    assert_eq!(core.queue("ttl").unwrap().len(), 2, "nothing expired yet");
    advance(Duration::from_millis(1000)).await;
    core.sweep_expired();
    assert_eq!(
        core.queue("ttl").unwrap().len(),
        1,
        "the 1 s message expired"
    );
    // The queue's TTL counts from admission on the paused clock: exact.
    advance(Duration::from_millis(8_499)).await;
    core.sweep_expired();
    assert_eq!(
        core.queue("ttl").unwrap().len(),
        1,
        "1 ms before the 10 s queue TTL"
    );
    advance(Duration::from_millis(1)).await;
    let c = core.consume("ttl", ConsumeOptions::auto_ack(10)).unwrap();
    assert!(
        drain(&c).is_empty(),
        "the 10 s queue TTL expired the other at dispatch"
    );
    let dlq = core
        .consume("ttl.dlq", ConsumeOptions::auto_ack(10))
        .unwrap();
    let dead: Vec<String> = drain(&dlq).iter().map(body).collect();
    assert_eq!(dead, ["short", "queue-ttl"]);
    let other = core.consume("other", ConsumeOptions::auto_ack(10)).unwrap();
    assert_eq!(drain(&other).len(), 1, "no TTL, no expiry");
    assert_eq!(core.queue("ttl").unwrap().stats().expired, 2);
}

/// The sweeper expires what nobody consumes on its own tick. On the paused clock a
/// sleep runs every timer due before it, the sweeper's ticks included, at once.
#[tokio::test(start_paused = true)]
async fn the_sweeper_expires_what_nobody_consumes() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "idle".into(),
        QueueOptions {
            ttl: Some(Duration::from_secs(5)),
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    core.publish(&q("idle"), Message::new("stale"))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let sweeper = core.spawn_sweeper(Duration::from_secs(1), cancel.clone());
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let idle = core.queue("idle").unwrap();
    assert_eq!((idle.len(), idle.stats().expired), (1, 0), "swept at 1-4 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = idle.stats();
    assert_eq!(
        (idle.len(), stats.expired, stats.dropped),
        (0, 1, 1),
        "the tick at 5 s expired it (no dead-letter queue: dropped)"
    );
    cancel.cancel();
    sweeper.await.unwrap();
}

#[tokio::test]
async fn overflow_reject_publish() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "small".into(),
        QueueOptions {
            max_length: 3,
            overflow: Overflow::RejectPublish,
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    publish_n(&core, &q("small"), 3).await;
    let err = core
        .publish(&q("small"), Message::new("x"))
        .await
        .unwrap_err();
    assert_eq!(err, PublishError::Full(q("small")));
    assert_eq!(err.to_string(), "queue:small is full");
    assert_eq!(core.queue("small").unwrap().len(), 3);
}

#[tokio::test]
async fn overflow_drop_head_dead_letters_the_oldest() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "ring".into(),
        QueueOptions {
            max_length: 3,
            overflow: Overflow::DropHead,
            dead_letter: Some(q("ring.dlq")),
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    publish_n(&core, &q("ring"), 5).await;
    let c = core.consume("ring", ConsumeOptions::auto_ack(10)).unwrap();
    assert_eq!(
        drain(&c).iter().map(body).collect::<Vec<_>>(),
        ["m2", "m3", "m4"]
    );
    let dlq = core
        .consume("ring.dlq", ConsumeOptions::auto_ack(10))
        .unwrap();
    let dead = drain(&dlq);
    assert_eq!(dead.iter().map(body).collect::<Vec<_>>(), ["m0", "m1"]);
    assert_eq!(
        dead[0].message.headers.get("x-death-reason"),
        Some("overflow")
    );
}

/// On the paused clock, so the absence of progress is shown without waiting: the
/// timeout fires as soon as nothing else can run.
#[tokio::test(start_paused = true)]
async fn overflow_block_applies_backpressure_until_consumed() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "bp".into(),
        QueueOptions {
            max_length: 2,
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    publish_n(&core, &q("bp"), 2).await;
    let mut publisher = {
        let core = core.clone();
        tokio::spawn(async move { core.publish(&q("bp"), Message::new("m2")).await })
    };
    // The publisher must be parked, not done: assert an absence.
    assert!(
        timeout(Duration::from_secs(60), &mut publisher)
            .await
            .is_err(),
        "a full block queue holds its publisher"
    );
    assert!(matches!(
        core.try_publish(&q("bp"), Message::new("x")),
        Err(PublishError::Full(_))
    ));
    let c = core.consume("bp", ConsumeOptions::auto_ack(1)).unwrap();
    let first = c.recv().await.unwrap();
    assert_eq!(body(&first), "m0");
    publisher.await.unwrap().unwrap();
    let mut rest = Vec::new();
    for _ in 0..2 {
        rest.push(body(&c.recv().await.unwrap()));
    }
    assert_eq!(rest, ["m1", "m2"], "the blocked message kept its place");
}

#[tokio::test]
async fn max_bytes_limit_and_oversize_message() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "bytes".into(),
        QueueOptions {
            max_bytes: 4096,
            overflow: Overflow::RejectPublish,
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    let big = Message::new(vec![0u8; 5000]);
    assert!(matches!(
        core.publish(&q("bytes"), big).await,
        Err(PublishError::TooLarge { max: 4096, .. })
    ));
    let mut n = 0;
    while core
        .try_publish(&q("bytes"), Message::new(vec![1u8; 1000]))
        .is_ok()
    {
        n += 1;
    }
    assert!(
        (2..=4).contains(&n),
        "byte limit bounds the queue ({n} accepted)"
    );
}

#[tokio::test]
async fn destination_lists_deliver_to_each() {
    let core = Core::default();
    let sub = core
        .subscribe(&["audit.#"], ConsumeOptions::auto_ack(10))
        .unwrap();
    let n = core
        .publish_all(
            &[q("a"), q("b"), Destination::topic("audit.orders")],
            Message::new("x"),
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(core.queue("a").unwrap().len(), 1);
    assert_eq!(core.queue("b").unwrap().len(), 1);
    assert_eq!(drain(&sub).len(), 1);
}

#[tokio::test]
async fn recv_wakes_on_publish_and_ends_on_delete() {
    let core = Core::default();
    let c = core.consume("wake", ConsumeOptions::auto_ack(10)).unwrap();
    let (first, got_first) = tokio::sync::oneshot::channel();
    let waiter = tokio::spawn(async move {
        let _ = first.send(c.recv().await.map(|d| body(&d)));
        c.recv().await.is_none()
    });
    tokio::task::yield_now().await;
    core.publish(&q("wake"), Message::new("hello"))
        .await
        .unwrap();
    assert_eq!(got_first.await.unwrap().as_deref(), Some("hello"));
    assert_eq!(core.delete_queue("wake"), Some(0));
    assert!(
        waiter.await.unwrap(),
        "deleting the queue ends its consumers"
    );
}

#[test]
fn ack_modes_are_distinct() {
    assert!(AckMode::Manual.is_manual());
    assert!(!AckMode::Auto.is_manual());
}

#[tokio::test]
async fn batch_publish_keeps_order_and_applies_backpressure_past_the_limit() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "batch".into(),
        QueueOptions {
            max_length: 5,
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    let c = core.consume("batch", ConsumeOptions::auto_ack(2)).unwrap();
    let publisher = {
        let core = core.clone();
        tokio::spawn(async move {
            let msgs = (0..20).map(|i| Message::new(format!("m{i}"))).collect();
            core.publish_batch(&q("batch"), msgs).await
        })
    };
    let mut got = Vec::new();
    while got.len() < 20 {
        got.push(body(&c.recv().await.unwrap()));
    }
    assert_eq!(publisher.await.unwrap().unwrap(), 20);
    assert_eq!(
        got,
        (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>(),
        "in order, none lost past the limit"
    );
}

/// Issue 19: what consumers hold unacknowledged counts for the queue's byte limit, and
/// acknowledging it makes room (waking a blocked publisher).
#[tokio::test]
async fn unacknowledged_bytes_count_for_max_bytes_until_acked() {
    let mut config = CoreConfig::default();
    config.queues.insert(
        "held".into(),
        QueueOptions {
            max_bytes: 8 * 1024,
            ..QueueOptions::default()
        },
    );
    let core = Core::new(config);
    let c = core
        .consume("held", ConsumeOptions::manual(10_000))
        .unwrap();
    let mut n = 0;
    while core
        .try_publish(&q("held"), Message::new(vec![1u8; 1000]))
        .is_ok()
    {
        n += 1;
        assert!(n < 100, "a consumer that never acks must not make room");
    }
    let held = drain(&c);
    assert_eq!(held.len(), n);
    let (ready, unacked) = core.queue_bytes();
    assert_eq!(ready, 0);
    assert!(unacked > 0 && unacked <= 8 * 1024, "{unacked}");
    assert_eq!(core.queued_bytes(), unacked, "the watermark counts them");
    let publisher = {
        let core = core.clone();
        tokio::spawn(async move {
            core.publish(&q("held"), Message::new(vec![2u8; 1000]))
                .await
        })
    };
    tokio::task::yield_now().await;
    assert!(!publisher.is_finished(), "full: the publisher waits");
    assert!(c.ack(held[0].tag));
    publisher.await.unwrap().unwrap();
}

/// Issue 19: consumers of several queues sharing a byte budget hold at most its limit
/// (one message past it never: an oversized one only alone), and settling on one
/// queue lets another queue's consumer take more after a refill.
#[tokio::test]
async fn a_byte_budget_shared_by_consumers_of_two_queues() {
    static CAUSE: switchboard::ratelog::Cause = switchboard::ratelog::Cause::new("test.budget2");
    let core = Core::default();
    let budget = switchboard::core::ByteBudget::new(4096, &CAUSE);
    let a = core
        .consume(
            "ba",
            ConsumeOptions::manual(1000).with_budget(budget.clone()),
        )
        .unwrap();
    let b = core
        .consume(
            "bb",
            ConsumeOptions::manual(1000).with_budget(budget.clone()),
        )
        .unwrap();
    for _ in 0..3 {
        core.publish(&q("ba"), Message::new(vec![0u8; 1000]))
            .await
            .unwrap();
    }
    for _ in 0..10 {
        core.publish(&q("bb"), Message::new(vec![0u8; 1000]))
            .await
            .unwrap();
    }
    let got_a = drain(&a);
    let got_b = drain(&b);
    assert!(budget.held() <= 4096, "{}", budget.held());
    assert_eq!(got_a.len(), 3);
    assert!(
        got_a.len() + got_b.len() <= 4,
        "{} + {}",
        got_a.len(),
        got_b.len()
    );
    assert!(budget.hits() >= 1);
    let before_b = got_b.len();
    // Room made on queue `ba` goes to `bb` once its consumer is refilled.
    assert_eq!(
        a.ack_many(&got_a.iter().map(|d| d.tag).collect::<Vec<_>>()),
        got_a.len()
    );
    assert!(budget.take_starved());
    b.refill();
    assert!(
        !drain(&b).is_empty(),
        "had {before_b}; more after the refill"
    );
}
