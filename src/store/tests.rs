use super::*;

fn q(name: &str) -> Arc<str> {
    name.into()
}

fn enc(body: &str) -> Bytes {
    let d = crate::core::Destination::queue("q");
    codec::encode_queued(&d, &Message::new(body.to_owned())).into()
}

fn bodies(r: &Recovered, queue: &str) -> Vec<(u64, String)> {
    r.queues
        .get(queue)
        .map(|v| {
            v.iter()
                .map(|m| (m.seq, String::from_utf8(m.message.body.to_vec()).unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn appends_survive_reopening_in_order_and_removals_stick() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert!(r.queues.is_empty());
        for i in 0..10u64 {
            s.append(&q("orders"), i, enc(&format!("m{i}")))
                .wait()
                .await
                .unwrap();
        }
        s.append(&q("other"), 1, enc("x")).wait().await.unwrap();
        s.remove(&q("orders"), 3);
        s.remove(&q("orders"), 7);
        s.delivered(&q("orders"), 5, 2);
        // A later append is ordered after the removals: once it is durable, so are they.
        s.append(&q("other"), 2, enc("y")).wait().await.unwrap();
        s.close();
    }
    let (s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
    let want: Vec<(u64, String)> = (0..10u64)
        .filter(|i| *i != 3 && *i != 7)
        .map(|i| (i, format!("m{i}")))
        .collect();
    assert_eq!(bodies(&r, "orders"), want);
    assert_eq!(bodies(&r, "other").len(), 2);
    let five = r.queues["orders"].iter().find(|m| m.seq == 5).unwrap();
    assert_eq!(five.deliveries, 2);
    assert!(
        r.queues["orders"]
            .iter()
            .filter(|m| m.seq != 5)
            .all(|m| m.deliveries == 0)
    );
    assert!(r.repairs.is_empty());
    s.close();
}

#[tokio::test]
async fn dropped_queues_and_deleted_metadata_stay_gone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        s.append(&q("gone"), 1, enc("a")).wait().await.unwrap();
        s.drop_queue(&q("gone"));
        s.put(META_QUEUE, "kept", b"v1".to_vec())
            .wait()
            .await
            .unwrap();
        s.put(META_QUEUE, "kept", b"v2".to_vec())
            .wait()
            .await
            .unwrap();
        s.put(META_QUEUE, "deleted", b"x".to_vec())
            .wait()
            .await
            .unwrap();
        s.delete(META_QUEUE, "deleted");
        s.close();
    }
    let (_s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert!(!r.queues.contains_key("gone"));
    assert_eq!(r.meta[META_QUEUE].len(), 1);
    assert_eq!(r.meta[META_QUEUE]["kept"], b"v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
    let mut tasks = Vec::new();
    for p in 0..50u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                let body = enc(&"x".repeat(1024));
                s.append(&q("load"), p * 1000 + i, body)
                    .wait()
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 1000 durable appends from 50 publishers at once: far fewer than 1000 commits.
    assert!(s.commits() < 500, "commits: {}", s.commits());
    s.close();
    let (_s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(r.queues["load"].len(), 1000);
}

#[tokio::test]
async fn interval_policy_confirms_at_once_and_syncs_on_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) =
            Store::open(dir.path(), FsyncPolicy::Interval(Duration::from_millis(20))).unwrap();
        for i in 0..5u64 {
            s.append(&q("fast"), i, enc("f")).wait().await.unwrap();
        }
        s.close();
    }
    let (_s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert_eq!(r.queues["fast"].len(), 5);
}

/// Truncating the newest segment anywhere keeps every complete record before the cut,
/// reports the repair, and leaves a journal that takes new appends.
#[tokio::test]
async fn a_torn_tail_is_cut_back_to_the_last_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        for i in 0..20u64 {
            s.append(&q("t"), i, enc(&format!("m{i}")))
                .wait()
                .await
                .unwrap();
        }
        s.close();
    }
    let seg = journal::segment_path(dir.path(), 1);
    let full = std::fs::metadata(&seg).unwrap().len();
    // Cut 5 bytes into the last append (behind it: the 9-byte `Clean` record).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(full - 9 - 5)
        .unwrap();
    {
        let (s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(bodies(&r, "t").len(), 19);
        assert_eq!(r.repairs.len(), 1, "{:?}", r.repairs);
        assert!(r.repairs[0].contains("torn tail"), "{:?}", r.repairs);
        s.append(&q("t"), 100, enc("after")).wait().await.unwrap();
        s.close();
    }
    let (_s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
    let got = bodies(&r, "t");
    assert_eq!(got.len(), 20);
    assert_eq!(got.last().unwrap(), &(100, "after".to_owned()));
    assert!(r.repairs.is_empty(), "{:?}", r.repairs);
}

/// With small segments, acknowledged data is reclaimed (files deleted, live records
/// of an old segment moved to the head) and what is live survives it all.
#[tokio::test]
async fn segments_are_reclaimed_and_live_messages_survive_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let seg_max = 8 * 1024;
    {
        let (s, _) = Store::open_sized(dir.path(), FsyncPolicy::Always, seg_max).unwrap();
        // One message that stays, then lots of churn.
        s.append(&q("keep"), 0, enc("oldest")).wait().await.unwrap();
        s.delivered(&q("keep"), 0, 3);
        s.put(META_QUEUE, "keep", b"meta".to_vec())
            .wait()
            .await
            .unwrap();
        for i in 0..2000u64 {
            s.append(&q("churn"), i, enc(&"x".repeat(200)))
                .wait()
                .await
                .unwrap();
            s.remove(&q("churn"), i);
        }
        s.append(&q("keep"), 1, enc("newest")).wait().await.unwrap();
        s.close();
    }
    let files = journal::segment_ids(dir.path()).unwrap();
    assert!(files.len() < 10, "segments left: {}", files.len());
    assert!(files[0] > 1, "the first segment was reclaimed");
    let (_s, r) = Store::open_sized(dir.path(), FsyncPolicy::Always, seg_max).unwrap();
    assert_eq!(
        bodies(&r, "keep"),
        vec![(0, "oldest".to_owned()), (1, "newest".to_owned())]
    );
    assert_eq!(r.queues["keep"][0].deliveries, 3);
    assert!(!r.queues.contains_key("churn"));
    assert_eq!(r.meta[META_QUEUE]["keep"], b"meta");
}

/// Drops every handle without [`Store::close`], as a crash would leave the journal (the
/// writer stops without its `Clean` record).
fn crash(s: Store) {
    drop(s);
}

fn flags(r: &Recovered, queue: &str) -> Vec<(u64, u32, bool)> {
    r.queues[queue]
        .iter()
        .map(|m| (m.seq, m.deliveries, m.redelivered))
        .collect()
}

/// A barrier completes only once the removals sent before it are in the journal, under
/// either fsync policy: what an ACK's RECEIPT waits for.
#[tokio::test]
async fn a_barrier_completes_once_earlier_removals_are_durable() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_secs(3600)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(dir.path(), policy).unwrap();
            for i in 0..3u64 {
                s.append(&q("acks"), i, enc(&format!("m{i}")))
                    .wait()
                    .await
                    .unwrap();
            }
            s.remove(&q("acks"), 0);
            s.remove(&q("acks"), 2);
            s.barrier().wait().await.unwrap();
            crash(s);
        }
        let (s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(bodies(&r, "acks"), vec![(1, "m1".to_owned())], "{policy:?}");
        s.close();
        assert!(matches!(s.barrier().wait().await, Err(StoreError::Closed)));
    }
}

/// After an orderly close the delivery marks are exact; after a crash they may be
/// missing (written behind the delivery), so every recovered message is flagged.
#[tokio::test]
async fn only_an_orderly_close_keeps_delivery_marks_exact() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert!(r.clean, "an empty journal is clean");
        for i in 0..3u64 {
            s.append(&q("d"), i, enc("x")).wait().await.unwrap();
        }
        s.delivered(&q("d"), 1, 1);
        s.close();
    }
    {
        let (s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert!(r.clean);
        assert_eq!(
            flags(&r, "d"),
            vec![(0, 0, false), (1, 1, true), (2, 0, false)]
        );
        // Opened again: a crash now, even with nothing else written, is a crash.
        crash(s);
    }
    let (s, r) = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
    assert!(!r.clean);
    assert_eq!(
        flags(&r, "d"),
        vec![(0, 0, true), (1, 1, true), (2, 0, true)],
        "the recorded counts are kept; only the flag is conservative"
    );
    s.close();
}
