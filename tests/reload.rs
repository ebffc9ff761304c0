//! Live reload under load: a publisher runs continuously while the route file is
//! rewritten (and sometimes broken) over a hundred times; every message must arrive at
//! the far side exactly once, each routed wholly by one table version.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use switchboard::core::{ConsumeOptions, Core, Destination, Message};
use switchboard::router::Router;
use switchboard::routes::CompileContext;
use switchboard::routes::reload::LiveRoutes;
use tokio_util::sync::CancellationToken;

fn table_text(rev: u64) -> String {
    if rev.is_multiple_of(2) {
        format!(
            "routes:\n  - name: intake\n    from: {{ queue: in }}\n    to: [ {{ queue: out }} ]\n    transform: {{ set_headers: {{ rev: \"{rev}\" }} }}\n"
        )
    } else {
        // Odd revisions take a two-hop path through a topic: both hops are in the same
        // table, so a message never sees half of it.
        format!(
            "routes:\n  - name: intake\n    from: {{ queue: in }}\n    to: [ {{ topic: \"mid.r{rev}\" }} ]\n    transform: {{ set_headers: {{ rev: \"{rev}\" }} }}\n  - name: hop\n    from: {{ topic: \"mid.*\" }}\n    to: [ {{ queue: out }} ]\n"
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_lost_or_duplicated_across_100_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, table_text(0)).unwrap();
    let routes = Arc::new(LiveRoutes::load(dir.path(), CompileContext::default()).unwrap());
    let cancel = CancellationToken::new();
    let _watcher = routes
        .spawn_watcher(Duration::from_millis(10), cancel.clone())
        .unwrap();
    let router = Router::new(Core::default(), routes.table());
    let first_version = routes.status().version;

    let stop = Arc::new(AtomicBool::new(false));
    // The far side consumes all along (the queue is bounded: without a consumer the
    // publisher would rightly be held by backpressure).
    let out = router
        .core()
        .consume("out", ConsumeOptions::auto_ack(10_000))
        .unwrap();
    // The table revision of the newest message the far side has seen.
    let newest_rev = Arc::new(AtomicU64::new(0));
    let collector = {
        let newest_rev = Arc::clone(&newest_rev);
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match tokio::time::timeout(Duration::from_secs(2), out.recv_many(10_000, &mut got))
                    .await
                {
                    Ok(Ok(_)) => {
                        if let Some(r) = got.last().and_then(|d| d.message.headers.get("rev")) {
                            newest_rev.store(r.parse().unwrap(), Ordering::Relaxed);
                        }
                    }
                    _ => return got,
                }
            }
        })
    };
    let publisher = {
        let router = router.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = Message::new(seq.to_string()).with_header("seq", &seq.to_string());
                router.publish(Destination::queue("in"), m).await.unwrap();
                seq += 1;
                if seq.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            seq
        })
    };

    let mut swaps = 0;
    let mut rejected = 0;
    let mut rev = 0;
    while swaps < 110 {
        rev += 1;
        let before = routes.status();
        if rev % 10 == 5 {
            // A broken edit: the running table must stay in force.
            common::write_atomic(
                &file,
                "routes:\n  - name: intake\n    from: { queue: in }\n    to: [ { queue: \"bad name\" } ]\n",
            );
            let st = wait_status(&routes, |s| s.attempts > before.attempts && !s.ok).await;
            assert_eq!(
                st.version, before.version,
                "a failed reload keeps the version in force"
            );
            assert_eq!(st.errors.len(), 1, "{:?}", st.errors);
            rejected += 1;
            continue;
        }
        common::write_atomic(&file, &table_text(rev));
        wait_status(&routes, |s| s.version > before.version).await;
        swaps += 1;
    }
    // Publish on until the last table has routed a message, then stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while newest_rev.load(Ordering::Relaxed) != rev {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message routed by the last table (rev {rev})"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.unwrap();
    cancel.cancel();

    let got = collector.await.unwrap();
    assert!(
        published > 1000,
        "the publisher kept publishing ({published})"
    );
    assert_eq!(got.len() as u64, published, "every message arrived once");
    let mut last_rev = 0u64;
    for (i, d) in got.iter().enumerate() {
        let seq: u64 = d.message.headers.get("seq").unwrap().parse().unwrap();
        assert_eq!(seq, i as u64, "in order, no gap, no duplicate");
        let r: u64 = d.message.headers.get("rev").unwrap().parse().unwrap();
        assert!(r >= last_rev, "a later message never sees an older table");
        last_rev = r;
    }
    assert!(
        router.core().queue("in").is_none(),
        "nothing took the unrouted path"
    );
    // The live routes' own bookkeeping: every good edit swapped the table exactly once, no
    // broken one did, and each edit was an attempt of its own.
    let st = routes.status();
    assert_eq!(st.version, first_version + swaps, "{st:?}");
    assert!(st.attempts > swaps + rejected, "{st:?}");
    eprintln!("published {published} messages across {swaps} swaps and {rejected} rejected edits");
}

async fn wait_status(
    routes: &LiveRoutes,
    pred: impl Fn(&switchboard::routes::reload::ReloadStatus) -> bool,
) -> switchboard::routes::reload::ReloadStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = routes.status();
        if pred(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reload did not happen: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
