//! The durable message store (redb): persistent messages of durable queues are written
//! here before their publisher is confirmed, and removed once acknowledged.
//!
//! One writer thread owns every write: appends and removals queue up on a channel, and
//! the writer applies everything waiting in one transaction — a group commit, so many
//! publishers share one fsync. An append completes once its commit is durable (with
//! [`FsyncPolicy::Always`]), or at once with [`FsyncPolicy::Interval`], which commits
//! without fsync and makes everything durable every interval (and so may lose that
//! interval's writes in a crash, never corrupt the store: redb commits are atomic).
//!
//! This module is the store alone; wiring it into the core's queues is the durability
//! issue's next step (see `docs/` once it lands).

pub mod codec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::core::Message;

/// (queue name, sequence in the queue) → encoded message.
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");

/// When commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every commit is fsynced before the appends in it complete.
    Always,
    /// Commits are not fsynced; everything is made durable every interval. A crash may
    /// lose up to that interval of confirmed messages.
    Interval(Duration),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("store write failed: {0}")]
    Write(String),
    #[error("store read failed: {0}")]
    Read(String),
    #[error(transparent)]
    Corrupt(#[from] codec::Corrupt),
    #[error("the store is closed")]
    Closed,
}

enum Op {
    Append {
        queue: Arc<str>,
        seq: u64,
        bytes: Vec<u8>,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    Remove {
        queue: Arc<str>,
        seq: u64,
    },
    /// Apply what came before, sync, and stop.
    Shutdown,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Op>,
    db: Arc<Database>,
    commits: Arc<AtomicU64>,
    policy: FsyncPolicy,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 8192;

impl Store {
    /// Opens (or creates) the store file `dir/messages.redb` and starts its writer.
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<Self, StoreError> {
        let path = dir.join("messages.redb");
        let open_err = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_err(e.to_string()))?;
        // Make sure the table exists, so readers never meet a missing one.
        let txn = db.begin_write().map_err(|e| open_err(e.to_string()))?;
        txn.open_table(MESSAGES)
            .map_err(|e| open_err(e.to_string()))?;
        txn.commit().map_err(|e| open_err(e.to_string()))?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let thread = {
            let db = Arc::clone(&db);
            let commits = Arc::clone(&commits);
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer(db, rx, policy, commits))
                .map_err(|e| open_err(e.to_string()))?
        };
        Ok(Self {
            tx,
            db,
            commits,
            policy,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Stores a message; resolves once it is durable under the fsync policy.
    pub async fn append(&self, queue: &Arc<str>, seq: u64, m: &Message) -> Result<(), StoreError> {
        let bytes = codec::encode(m);
        let (done, wait) = oneshot::channel();
        let done = match self.policy {
            FsyncPolicy::Always => Some(done),
            FsyncPolicy::Interval(_) => None,
        };
        self.tx
            .send(Op::Append {
                queue: Arc::clone(queue),
                seq,
                bytes,
                done,
            })
            .map_err(|_| StoreError::Closed)?;
        match self.policy {
            FsyncPolicy::Always => wait.await.unwrap_or(Err(StoreError::Closed)),
            FsyncPolicy::Interval(_) => Ok(()),
        }
    }

    /// Forgets an acknowledged message (ordered after every earlier append).
    pub fn remove(&self, queue: &Arc<str>, seq: u64) {
        let _ = self.tx.send(Op::Remove {
            queue: Arc::clone(queue),
            seq,
        });
    }

    /// Every stored message, by queue, in sequence order.
    pub fn recover(&self) -> Result<BTreeMap<String, Vec<(u64, Message)>>, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(MESSAGES).map_err(|e| read(&e))?;
        let mut out: BTreeMap<String, Vec<(u64, Message)>> = BTreeMap::new();
        for item in table.iter().map_err(|e| read(&e))? {
            let (k, v) = item.map_err(|e| read(&e))?;
            let (queue, seq) = k.value();
            let m = codec::decode(v.value())?;
            out.entry(queue.to_owned()).or_default().push((seq, m));
        }
        Ok(out)
    }

    /// Applies everything sent before, makes it durable, and stops the writer; later
    /// appends through any handle fail with [`StoreError::Closed`]. Blocks until done.
    pub fn close(self) {
        let _ = self.tx.send(Op::Shutdown);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Commits made so far (group commit makes this far fewer than appends).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

fn writer(db: Arc<Database>, rx: mpsc::Receiver<Op>, policy: FsyncPolicy, commits: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(256);
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        let first = match policy {
            FsyncPolicy::Always => rx.recv().ok(),
            FsyncPolicy::Interval(every) => loop {
                // Wake by the end of the interval to make pending commits durable.
                if unsynced && last_sync.elapsed() >= every {
                    if sync(&db).is_ok() {
                        unsynced = false;
                    }
                    last_sync = Instant::now();
                }
                let wait = if unsynced {
                    every.saturating_sub(last_sync.elapsed())
                } else {
                    every
                };
                match rx.recv_timeout(wait) {
                    Ok(op) => break Some(op),
                    Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            },
        };
        let Some(first) = first else {
            if unsynced {
                let _ = sync(&db);
            }
            return;
        };
        let mut stop = matches!(first, Op::Shutdown);
        batch.push(first);
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => {
                    stop = matches!(op, Op::Shutdown);
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        let durable = matches!(policy, FsyncPolicy::Always);
        let result = apply(&db, &batch, durable);
        commits.fetch_add(1, Ordering::Relaxed);
        if result.is_ok() && !durable {
            unsynced = true;
        }
        for op in batch.drain(..) {
            if let Op::Append {
                done: Some(done), ..
            } = op
            {
                let _ = done.send(result.clone());
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "store commit failed; the publishers in it are refused");
        }
        if stop {
            if unsynced {
                let _ = sync(&db);
            }
            return;
        }
    }
}

fn apply(db: &Database, batch: &[Op], durable: bool) -> Result<(), StoreError> {
    let w = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
    let mut txn = db.begin_write().map_err(|e| w(&e))?;
    if !durable {
        txn.set_durability(Durability::None).map_err(|e| w(&e))?;
    }
    {
        let mut table = txn.open_table(MESSAGES).map_err(|e| w(&e))?;
        for op in batch {
            match op {
                Op::Append {
                    queue, seq, bytes, ..
                } => {
                    table
                        .insert((&**queue, *seq), bytes.as_slice())
                        .map_err(|e| w(&e))?;
                }
                Op::Remove { queue, seq } => {
                    table.remove((&**queue, *seq)).map_err(|e| w(&e))?;
                }
                Op::Shutdown => {}
            }
        }
    }
    txn.commit().map_err(|e| w(&e))
}

/// An empty durable commit: makes every earlier non-durable commit durable.
fn sync(db: &Database) -> Result<(), StoreError> {
    let w = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
    let txn = db.begin_write().map_err(|e| w(&e))?;
    txn.commit().map_err(|e| w(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Arc<str> {
        name.into()
    }

    #[tokio::test]
    async fn appends_survive_reopening_in_order_and_removals_stick() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
            for i in 0..10u64 {
                s.append(&q("orders"), i, &Message::new(format!("m{i}")))
                    .await
                    .unwrap();
            }
            s.append(&q("other"), 1, &Message::new("x")).await.unwrap();
            s.remove(&q("orders"), 3);
            s.remove(&q("orders"), 7);
            // A later append is ordered after the removals: once it is durable, so are they.
            s.append(&q("other"), 2, &Message::new("y")).await.unwrap();
            s.close();
        }
        let s = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        let all = s.recover().unwrap();
        let orders: Vec<(u64, String)> = all["orders"]
            .iter()
            .map(|(seq, m)| (*seq, String::from_utf8(m.body.to_vec()).unwrap()))
            .collect();
        let want: Vec<(u64, String)> = (0..10u64)
            .filter(|i| *i != 3 && *i != 7)
            .map(|i| (i, format!("m{i}")))
            .collect();
        assert_eq!(orders, want);
        assert_eq!(all["other"].len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishers_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        let mut tasks = Vec::new();
        for p in 0..50u64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20u64 {
                    s.append(&q("load"), p * 1000 + i, &Message::new(vec![0u8; 1024]))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.recover().unwrap()["load"].len(), 1000);
        // 1000 durable appends from 50 publishers at once: far fewer than 1000 commits.
        assert!(s.commits() < 500, "commits: {}", s.commits());
    }

    #[tokio::test]
    async fn interval_policy_confirms_at_once_and_syncs_later() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s =
                Store::open(dir.path(), FsyncPolicy::Interval(Duration::from_millis(20))).unwrap();
            for i in 0..5u64 {
                s.append(&q("fast"), i, &Message::new("f")).await.unwrap();
            }
            // Closing syncs what is pending.
            s.close();
        }
        let s = Store::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(s.recover().unwrap()["fast"].len(), 5);
    }
}
