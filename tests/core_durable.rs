//! The core over the durable store, restarted in-process: what a restart puts back
//! (order, redelivered flags, durable subscriptions and their bindings, dead letters)
//! and what it must not (acknowledged, non-persistent, non-durable). The daemon-level
//! proofs with real clients and kill -9 are in `tests/durability.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard::core::{
    ConsumeOptions, Core, CoreConfig, Delivery, Destination, Message, QueueOptions,
};
use switchboard::store::{FileJournal, FsyncPolicy, Store};

fn open(dir: &Path) -> (Core, Arc<dyn Store>) {
    open_with(dir, CoreConfig::default())
}

fn open_with(dir: &Path, config: CoreConfig) -> (Core, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(FileJournal::open(dir, FsyncPolicy::Always).unwrap());
    (Core::with_store(config, Arc::clone(&store)).unwrap(), store)
}

fn persistent(body: &str) -> Message {
    let mut m = Message::new(body.to_owned());
    m.persistent = true;
    m
}

fn body(d: &Delivery) -> String {
    String::from_utf8(d.message.body.to_vec()).unwrap()
}

fn drain(c: &switchboard::core::Consumer) -> Vec<Delivery> {
    let mut out = Vec::new();
    while c.try_recv_many(1000, &mut out).unwrap() > 0 {}
    out
}

#[tokio::test]
async fn a_restart_keeps_unacked_and_undelivered_in_order_and_flags_the_delivered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (core, store) = open(dir.path());
        let dest = Destination::queue("orders");
        for i in 0..6 {
            core.publish(&dest, persistent(&format!("p{i}")))
                .await
                .unwrap();
        }
        // Not persistent: memory only.
        core.publish(&dest, Message::new("transient"))
            .await
            .unwrap();
        let c = core.consume("orders", ConsumeOptions::manual(3)).unwrap();
        let got = drain(&c);
        assert_eq!(got.len(), 3);
        // p0 acked, p1 and p2 delivered and unacknowledged, p3.. never delivered.
        assert!(c.ack(got[0].tag));
        store.close();
    }
    let (core, store) = open(dir.path());
    let c = core.consume("orders", ConsumeOptions::manual(100)).unwrap();
    let got = drain(&c);
    let seen: Vec<(String, bool)> = got.iter().map(|d| (body(d), d.redelivered)).collect();
    assert_eq!(
        seen,
        vec![
            ("p1".to_owned(), true),
            ("p2".to_owned(), true),
            ("p3".to_owned(), false),
            ("p4".to_owned(), false),
            ("p5".to_owned(), false),
        ]
    );
    assert_eq!(got[0].delivery_count, 2, "the count carries over");
    for d in &got {
        assert!(c.ack(d.tag));
    }
    // New publishes after recovery go after the recovered ones.
    core.publish(&Destination::queue("orders"), persistent("later"))
        .await
        .unwrap();
    store.close();
    drop(c);
    let (core, _store) = open(dir.path());
    let c = core.consume("orders", ConsumeOptions::manual(100)).unwrap();
    let bodies: Vec<String> = drain(&c).iter().map(body).collect();
    assert_eq!(bodies, vec!["later".to_owned()]);
}

#[tokio::test]
async fn durable_subscriptions_keep_their_bindings_and_collect_while_nobody_listens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (core, store) = open(dir.path());
        let c = core
            .subscribe_durable("alerts-sub", &["alerts.#"], ConsumeOptions::manual(10))
            .unwrap();
        // A non-durable subscription is not kept.
        let _ = core
            .subscribe(&["alerts.#"], ConsumeOptions::manual(10))
            .unwrap();
        drop(c);
        core.publish(&Destination::topic("alerts.disk"), persistent("a1"))
            .await
            .unwrap();
        store.close();
    }
    let (core, store) = open(dir.path());
    assert_eq!(core.bindings("alerts-sub"), vec!["alerts.#".to_owned()]);
    // Still bound before its subscriber returns: collects what is published now.
    core.publish(&Destination::topic("alerts.cpu"), persistent("a2"))
        .await
        .unwrap();
    let private: Vec<String> = core
        .queue_names()
        .into_iter()
        .filter(|n| n.starts_with("$sb.sub."))
        .collect();
    assert!(private.is_empty(), "{private:?}");
    let c = core
        .subscribe_durable("alerts-sub", &["alerts.#"], ConsumeOptions::manual(10))
        .unwrap();
    let got = drain(&c);
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|d| (body(d), d.destination.to_string()))
        .collect();
    assert_eq!(seen[0].0, "a1");
    assert_eq!(seen[1].0, "a2");
    assert_eq!(seen[1].1, "topic:alerts.cpu");
    store.close();
}

#[tokio::test]
async fn dead_letters_move_in_the_store_and_deleted_queues_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoreConfig::default();
    config.queues.insert(
        "work".into(),
        QueueOptions {
            dead_letter: Some(Destination::queue("work.dead")),
            ..QueueOptions::default()
        },
    );
    {
        let (core, store) = open_with(dir.path(), config.clone());
        core.publish(&Destination::queue("work"), persistent("bad"))
            .await
            .unwrap();
        core.publish(&Destination::queue("scratch"), persistent("x"))
            .await
            .unwrap();
        let c = core.consume("work", ConsumeOptions::manual(1)).unwrap();
        let d = drain(&c);
        assert!(c.nack(d[0].tag, false));
        core.delete_queue("scratch");
        store.close();
    }
    let (core, _store) = open_with(dir.path(), config);
    assert!(core.queue("work").unwrap().is_empty());
    let dead = core.queue("work.dead").unwrap();
    assert_eq!(dead.len(), 1);
    let c = core
        .consume("work.dead", ConsumeOptions::manual(1))
        .unwrap();
    let d = drain(&c);
    assert_eq!(d[0].message.headers.get("x-death-reason"), Some("rejected"));
    assert!(
        core.queue("scratch").is_none(),
        "a deleted queue is not recreated"
    );
}

#[tokio::test]
async fn non_durable_queues_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoreConfig::default();
    config.queues.insert(
        "volatile".into(),
        QueueOptions {
            durable: false,
            ..QueueOptions::default()
        },
    );
    {
        let (core, store) = open_with(dir.path(), config.clone());
        core.publish(&Destination::queue("volatile"), persistent("v"))
            .await
            .unwrap();
        store.close();
    }
    let (core, _store) = open_with(dir.path(), config);
    assert!(core.queue("volatile").unwrap().is_empty());
}

/// Without an orderly close (a crash), delivery marks may be missing, so everything
/// recovered comes back flagged redelivered; an acknowledgement confirmed through
/// `settlements_durable` stays acknowledged, dead-lettering included.
#[tokio::test]
async fn after_a_crash_confirmed_settlements_stick_and_everything_else_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoreConfig::default();
    config.queues.insert(
        "jobs".into(),
        QueueOptions {
            dead_letter: Some(Destination::queue("jobs.dead")),
            ..QueueOptions::default()
        },
    );
    {
        let (core, store) = open_with(dir.path(), config.clone());
        for i in 0..5 {
            core.publish(&Destination::queue("jobs"), persistent(&format!("j{i}")))
                .await
                .unwrap();
        }
        let c = core.consume("jobs", ConsumeOptions::manual(2)).unwrap();
        let got = drain(&c);
        assert!(c.is_durable());
        // j0 acked, j1 rejected (dead-lettered); j2.. were never delivered.
        assert!(c.ack(got[0].tag));
        assert!(c.nack(got[1].tag, false));
        core.settlements_durable().wait().await.unwrap();
        // The crash: the store is not closed (detaching writes nothing).
        drop(c);
        drop(store);
        drop(core);
    }
    let (core, store) = open_with(dir.path(), config);
    let c = core.consume("jobs", ConsumeOptions::manual(100)).unwrap();
    let seen: Vec<(String, bool)> = drain(&c).iter().map(|d| (body(d), d.redelivered)).collect();
    assert_eq!(
        seen,
        vec![
            ("j2".to_owned(), true),
            ("j3".to_owned(), true),
            ("j4".to_owned(), true),
        ]
    );
    let dead = core
        .consume("jobs.dead", ConsumeOptions::manual(10))
        .unwrap();
    let dead: Vec<String> = drain(&dead).iter().map(body).collect();
    assert_eq!(dead, vec!["j1".to_owned()]);
    store.close();
}

/// The store keeps a message's expiry as wall-clock time; after a restart the queue
/// gives it what is left of it as a deadline on the tokio clock (paused here).
#[tokio::test(start_paused = true)]
async fn a_message_expiry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hour = Duration::from_secs(3600);
    {
        let (core, store) = open(dir.path());
        let dest = Destination::queue("ttl");
        core.publish(&dest, persistent("one hour").with_ttl(hour))
            .await
            .unwrap();
        core.publish(&dest, persistent("three hours").with_ttl(3 * hour))
            .await
            .unwrap();
        store.close();
    }
    let (core, _store) = open(dir.path());
    core.sweep_expired();
    assert_eq!(core.queue("ttl").unwrap().len(), 2, "both still live");
    tokio::time::advance(2 * hour).await;
    core.sweep_expired();
    let c = core.consume("ttl", ConsumeOptions::auto_ack(10)).unwrap();
    let left: Vec<String> = drain(&c).iter().map(body).collect();
    assert_eq!(left, ["three hours"]);
    assert_eq!(core.queue("ttl").unwrap().stats().expired, 1);
}
