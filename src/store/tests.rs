use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::journal::{self, Record};
use super::*;

/// A namespace as a user of the store would have one.
const NS: &str = "queue";

/// A stored message as a test keeps it from the visitor.
struct Owned {
    seq: u64,
    bytes: Vec<u8>,
    deliveries: u32,
    redelivered: bool,
}

/// What [`Store::recover`] handed over, its messages collected by queue in sequence order.
struct Got {
    queues: BTreeMap<String, Vec<Owned>>,
    meta: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    repairs: Vec<String>,
    clean: bool,
}

fn recover(s: &FileJournal) -> Got {
    let mut queues: BTreeMap<String, Vec<Owned>> = BTreeMap::new();
    let r = s
        .recover(&mut |queue, batch| {
            let list = queues.entry(queue.to_owned()).or_default();
            list.extend(batch.iter().map(|m| Owned {
                seq: m.seq,
                bytes: m.bytes.to_vec(),
                deliveries: m.deliveries,
                redelivered: m.redelivered,
            }));
        })
        .unwrap();
    for list in queues.values_mut() {
        list.sort_by_key(|m| m.seq);
    }
    Got {
        queues,
        meta: r.meta,
        repairs: r.repairs,
        clean: r.clean,
    }
}

fn open(dir: &Path, policy: FsyncPolicy) -> (FileJournal, Got) {
    let s = FileJournal::open(dir, policy).unwrap();
    let r = recover(&s);
    (s, r)
}

fn enc(body: &str) -> Bytes {
    Bytes::copy_from_slice(body.as_bytes())
}

fn bodies(r: &Got, queue: &str) -> Vec<(u64, String)> {
    r.queues
        .get(queue)
        .map(|v| {
            v.iter()
                .map(|m| (m.seq, String::from_utf8(m.bytes.to_vec()).unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn appends_survive_reopening_in_order_and_removals_stick() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, r) = open(dir.path(), FsyncPolicy::Always);
        assert!(r.queues.is_empty());
        let (orders, other) = (s.queue("orders"), s.queue("other"));
        for i in 0..10u64 {
            orders
                .append(i, enc(&format!("m{i}")))
                .wait()
                .await
                .unwrap();
        }
        other.append(1, enc("x")).wait().await.unwrap();
        orders.remove(3);
        orders.remove(7);
        orders.delivered(5, 2);
        // A later append is ordered after the removals: once it is durable, so are they.
        other.append(2, enc("y")).wait().await.unwrap();
        s.close();
    }
    let (s, r) = open(dir.path(), FsyncPolicy::Always);
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
    assert!(recover(&s).queues.is_empty(), "taken once");
    s.close();
}

#[tokio::test]
async fn dropped_queues_and_deleted_metadata_stay_gone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = open(dir.path(), FsyncPolicy::Always);
        let gone = s.queue("gone");
        gone.append(1, enc("a")).wait().await.unwrap();
        gone.drop_queue();
        s.put(NS, "kept", b"v1".to_vec()).wait().await.unwrap();
        s.put(NS, "kept", b"v2".to_vec()).wait().await.unwrap();
        s.put(NS, "deleted", b"x".to_vec()).wait().await.unwrap();
        s.delete(NS, "deleted");
        s.close();
    }
    let (_s, r) = open(dir.path(), FsyncPolicy::Always);
    assert!(!r.queues.contains_key("gone"));
    assert_eq!(r.meta[NS].len(), 1);
    assert_eq!(r.meta[NS]["kept"], b"v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path(), FsyncPolicy::Always);
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for p in 0..50u64 {
        let load = s.queue("load");
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                let body = enc(&"x".repeat(1024));
                load.append(p * 1000 + i, body).wait().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 1000 durable appends from 50 publishers at once: far fewer than 1000 commits.
    assert!(s.commits() < 500, "commits: {}", s.commits());
    s.close();
    let (_s, r) = open(dir.path(), FsyncPolicy::Always);
    assert_eq!(r.queues["load"].len(), 1000);
}

/// Whether the segment files of `dir` hold an append of `queue`/`seq`: what a reader
/// sees once the writer's `write()` returned, fsynced or not.
fn in_files(dir: &Path, queue: &str, seq: u64) -> bool {
    let mut found = false;
    for id in journal::segment_ids(dir).unwrap() {
        let bytes = std::fs::read(journal::segment_path(dir, id)).unwrap();
        journal::scan(&bytes, |r, _, _| {
            found |= matches!(r, Record::Append { queue: q, seq: s, .. } if q == queue && s == seq);
        });
    }
    found
}

/// With `fsync: interval` an append (and a put) is confirmed once the writer has
/// written it, not before (the fsync comes later, on the timer): a crash of the process
/// loses nothing confirmed.
#[tokio::test]
async fn interval_policy_confirms_once_written_not_at_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        // An interval that never comes during the test: nothing is fsynced but at close.
        let (s, _) = open(dir.path(), FsyncPolicy::Interval(Duration::from_secs(3600)));
        let fast = s.queue("fast");
        for i in 0..5u64 {
            let wait = fast.append(i, enc("f"));
            assert!(!wait.is_done_ok(), "confirmed before the writer wrote it");
            wait.wait().await.unwrap();
            assert!(in_files(dir.path(), "fast", i), "confirmed, not written");
        }
        let put = s.put(NS, "k", b"v".to_vec());
        assert!(!put.is_done_ok(), "confirmed before the writer wrote it");
        put.wait().await.unwrap();
        drop(fast);
        crash(s);
    }
    let (_s, r) = open(dir.path(), FsyncPolicy::Always);
    assert_eq!(r.queues["fast"].len(), 5);
    assert_eq!(r.meta[NS]["k"], b"v");
}

/// Truncating the newest segment anywhere keeps every complete record before the cut,
/// reports the repair, and leaves a journal that takes new appends.
#[tokio::test]
async fn a_torn_tail_is_cut_back_to_the_last_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = open(dir.path(), FsyncPolicy::Always);
        let t = s.queue("t");
        for i in 0..20u64 {
            t.append(i, enc(&format!("m{i}"))).wait().await.unwrap();
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
        let (s, r) = open(dir.path(), FsyncPolicy::Always);
        assert_eq!(bodies(&r, "t").len(), 19);
        assert_eq!(r.repairs.len(), 1, "{:?}", r.repairs);
        assert!(r.repairs[0].contains("torn tail"), "{:?}", r.repairs);
        s.queue("t").append(100, enc("after")).wait().await.unwrap();
        s.close();
    }
    let (_s, r) = open(dir.path(), FsyncPolicy::Always);
    let got = bodies(&r, "t");
    assert_eq!(got.len(), 20);
    assert_eq!(got.last().unwrap(), &(100, "after".to_owned()));
    assert!(r.repairs.is_empty(), "{:?}", r.repairs);
}

/// A segment another version wrote (its header says so) is not repaired away: opening
/// the journal fails, and the segment keeps its bytes.
#[tokio::test]
async fn a_segment_of_another_format_version_refuses_to_open_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = open(dir.path(), FsyncPolicy::Always);
        s.queue("t").append(1, enc("kept")).wait().await.unwrap();
        s.close();
    }
    let seg = journal::segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[6..8].copy_from_slice(b"99");
    std::fs::write(&seg, &bytes).unwrap();
    let e = FileJournal::open(dir.path(), FsyncPolicy::Always)
        .and_then(|s| s.recover(&mut |_, _| {}).map(|_| ()))
        .expect_err("a foreign segment must not be opened");
    assert!(e.to_string().contains("not this version's"), "{e}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "the segment is untouched"
    );
}

/// With small segments, acknowledged data is reclaimed (files deleted, live records
/// of an old segment moved to the head) and what is live survives it all.
#[tokio::test]
async fn segments_are_reclaimed_and_live_messages_survive_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let seg_max = 8 * 1024;
    {
        let s = FileJournal::open_sized(dir.path(), FsyncPolicy::Always, seg_max).unwrap();
        let (keep, churn) = (s.queue("keep"), s.queue("churn"));
        // One message that stays, then lots of churn.
        keep.append(0, enc("oldest")).wait().await.unwrap();
        keep.delivered(0, 3);
        s.put(NS, "keep", b"meta".to_vec()).wait().await.unwrap();
        s.put("another", "keep", b"other".to_vec())
            .wait()
            .await
            .unwrap();
        for i in 0..2000u64 {
            churn.append(i, enc(&"x".repeat(200))).wait().await.unwrap();
            churn.remove(i);
        }
        keep.append(1, enc("newest")).wait().await.unwrap();
        s.close();
    }
    let files = journal::segment_ids(dir.path()).unwrap();
    assert!(files.len() < 10, "segments left: {}", files.len());
    assert!(files[0] > 1, "the first segment was reclaimed");
    let s = FileJournal::open_sized(dir.path(), FsyncPolicy::Always, seg_max).unwrap();
    let r = recover(&s);
    assert_eq!(
        bodies(&r, "keep"),
        vec![(0, "oldest".to_owned()), (1, "newest".to_owned())]
    );
    assert_eq!(r.queues["keep"][0].deliveries, 3);
    assert!(!r.queues.contains_key("churn"));
    // Compaction moved both values, each under the namespace it was put in.
    assert_eq!(r.meta[NS]["keep"], b"meta");
    assert_eq!(r.meta["another"]["keep"], b"other");
}

/// The writer may reclaim a segment between the open and the recovery (a write came
/// first): the messages it held, moved to the head, are still handed over once each.
#[tokio::test]
async fn a_segment_reclaimed_before_recovery_is_still_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let seg_max = 8 * 1024;
    {
        let s = FileJournal::open_sized(dir.path(), FsyncPolicy::Always, seg_max).unwrap();
        let keep = s.queue("keep");
        for i in 0..3u64 {
            keep.append(i, enc(&format!("k{i}"))).wait().await.unwrap();
        }
        keep.delivered(1, 2);
        s.close();
    }
    let first = journal::segment_ids(dir.path()).unwrap()[0];
    let s = FileJournal::open_sized(dir.path(), FsyncPolicy::Always, seg_max).unwrap();
    let churn = s.queue("churn");
    for i in 0..200u64 {
        churn.append(i, enc(&"x".repeat(200))).wait().await.unwrap();
        churn.remove(i);
    }
    s.barrier().wait().await.unwrap();
    assert!(
        !journal::segment_path(dir.path(), first).exists(),
        "the segment holding the messages was reclaimed"
    );
    let r = recover(&s);
    assert_eq!(
        bodies(&r, "keep"),
        vec![(0, "k0".into()), (1, "k1".into()), (2, "k2".into())]
    );
    assert_eq!(flags(&r, "keep")[1], (1, 2, true));
}

/// Drops the journal without [`Store::close`], as a crash would leave it (the writer
/// stops without its `Clean` record). Its queue logs must be gone already.
fn crash(s: FileJournal) {
    drop(s);
}

fn flags(r: &Got, queue: &str) -> Vec<(u64, u32, bool)> {
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
            let (s, _) = open(dir.path(), policy);
            let acks = s.queue("acks");
            for i in 0..3u64 {
                acks.append(i, enc(&format!("m{i}"))).wait().await.unwrap();
            }
            acks.remove(0);
            acks.remove(2);
            s.barrier().wait().await.unwrap();
            drop(acks);
            crash(s);
        }
        let (s, r) = open(dir.path(), FsyncPolicy::Always);
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
        let (s, r) = open(dir.path(), FsyncPolicy::Always);
        assert!(r.clean, "an empty journal is clean");
        let d = s.queue("d");
        for i in 0..3u64 {
            d.append(i, enc("x")).wait().await.unwrap();
        }
        d.delivered(1, 1);
        s.close();
    }
    {
        let (s, r) = open(dir.path(), FsyncPolicy::Always);
        assert!(r.clean);
        assert_eq!(
            flags(&r, "d"),
            vec![(0, 0, false), (1, 1, true), (2, 0, false)]
        );
        // Opened again: a crash now, even with nothing else written, is a crash.
        crash(s);
    }
    let (s, r) = open(dir.path(), FsyncPolicy::Always);
    assert!(!r.clean);
    assert_eq!(
        flags(&r, "d"),
        vec![(0, 0, true), (1, 1, true), (2, 0, true)],
        "the recorded counts are kept; only the flag is conservative"
    );
    s.close();
}
