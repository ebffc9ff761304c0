//! The file backend of the [`Store`]: a journal of append-only segment files in the data
//! directory ([`super::journal`] has the record format), as in RabbitMQ's message store
//! and Artemis's journal. Appends, removals, delivery marks and metadata are records;
//! start-up replays them ([`super::recovery`]). One writer thread owns the files and
//! writes whatever is waiting as one batch, a group commit ([`super::writer`]); the
//! segments and the index of what is live in them, which reclaiming space needs, are
//! [`super::segments`].
//!
//! When an append (or put) is confirmed depends on the [`FsyncPolicy`]:
//! - [`FsyncPolicy::Always`]: once its batch is written and fsynced. A crash of the
//!   process or of the machine loses nothing confirmed.
//! - [`FsyncPolicy::Interval`]: once its batch is written (`write()` returned: the
//!   operating system has it), before the fsync, which runs every interval. A crash of
//!   the process loses nothing confirmed; a crash of the machine (power cut) may lose up
//!   to one interval of confirmed writes. Either way the journal is never corrupt: a
//!   torn tail is cut off on the next start.
//!
//! An orderly [`Store::close`] ends the journal with a `Clean` record; a journal that
//! does not end with one was not closed cleanly ([`super::Recovered::clean`]). One
//! process at a time: the directory is locked ([`super::lock`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::commit_stats::{CommitStats, HistogramSnapshot};
use super::health::Health;
use super::journal::{Record, SEGMENT_MAX};
use super::lock::DirLock;
use super::recovery::Pending;
use super::segments::Segments;
use super::writer::{self, Done, Op};
use super::{QueueLog, Recovered, Store, StoreError, StoreWait, StoredMessage};

/// When commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every batch is fsynced before the operations in it are confirmed.
    Always,
    /// Batches are confirmed once written, and fsynced every interval. A crash of the
    /// machine (not of the process) may lose up to that interval of confirmed writes.
    Interval(Duration),
}

/// The journal in one data directory.
pub struct FileJournal {
    tx: mpsc::Sender<Op>,
    health: Arc<Health>,
    stats: Arc<CommitStats>,
    policy: FsyncPolicy,
    dir: PathBuf,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held while this journal or a queue log of it may still write; released by close.
    lock: Arc<DirLock>,
    /// What the replay at open found, until [`Store::recover`] reads the messages back.
    recovered: Mutex<Option<Pending>>,
}

impl std::fmt::Debug for FileJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileJournal")
            .field("dir", &self.dir)
            .field("policy", &self.policy)
            .finish()
    }
}

/// Sends an operation whose waiter is answered once the writer has written it (and,
/// with [`FsyncPolicy::Always`], fsynced it).
fn send_awaited(tx: &mpsc::Sender<Op>, op: impl FnOnce(Done) -> Op) -> StoreWait {
    let (done, rx) = oneshot::channel();
    match tx.send(op(done)) {
        Ok(()) => StoreWait::Pending(rx),
        Err(_) => StoreWait::Done(Err(StoreError::Closed)),
    }
}

impl FileJournal {
    /// Opens (or creates) the journal in `dir`, replays it, and starts the writer. A
    /// directory that can be read but not written still opens: what it holds is
    /// recovered and the store starts unhealthy (see [`Store::check`]).
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<Self, StoreError> {
        Self::open_sized(dir, policy, SEGMENT_MAX)
    }

    /// [`FileJournal::open`] with another segment size (tests exercise reclaiming with
    /// small ones).
    pub(crate) fn open_sized(
        dir: &Path,
        policy: FsyncPolicy,
        segment_max: u64,
    ) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.to_owned(),
            reason,
        };
        if let Err(e) = std::fs::create_dir_all(dir)
            && !dir.is_dir()
        {
            return Err(open_err(e.to_string()));
        }
        let lock = DirLock::acquire(dir).map_err(open_err)?;
        let started = Instant::now();
        let (mut segments, recovered) = Segments::recover(dir, segment_max).map_err(open_err)?;
        let Pending {
            recovered: found,
            messages,
            ..
        } = &recovered;
        // From now on the journal is open: a first record after a `Clean` one means a
        // crash from here on is seen as one at the next start.
        let opened = segments.open_head().and_then(|()| {
            let mut buf = Vec::new();
            Record::Nop.frame(&mut buf);
            segments.write(&buf, true).map(|_| ())
        });
        let health = Arc::new(Health::at_open(
            opened.map_err(|e| format!("data directory not writable: {e}")),
        ));
        tracing::info!(
            dir = %dir.display(),
            clean = found.clean,
            messages,
            bytes = found.bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "store recovered"
        );
        for r in &found.repairs {
            tracing::warn!(repair = %r, "store: torn or corrupt journal tail cut off");
        }
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let thread = {
            let health = Arc::clone(&health);
            let stats = Arc::clone(&stats);
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer::run(segments, rx, policy, health, stats))
                .map_err(|e| open_err(e.to_string()))?
        };
        Ok(Self {
            tx,
            health,
            stats,
            policy,
            dir: dir.into(),
            thread: Mutex::new(Some(thread)),
            lock: Arc::new(lock),
            recovered: Mutex::new(Some(recovered)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Batches written so far (group commit makes this far fewer than appends).
    pub fn commits(&self) -> u64 {
        self.stats.commits()
    }

    /// How long each fsync of written batches took, in microseconds: one per commit with
    /// [`FsyncPolicy::Always`], one per interval with [`FsyncPolicy::Interval`]
    /// (buckets: [`FSYNC_BOUNDS_MICROS`](super::FSYNC_BOUNDS_MICROS)).
    pub fn fsync_micros(&self) -> HistogramSnapshot {
        self.stats.fsync_micros()
    }

    /// Records written per commit: appends, removals, delivery marks, metadata (buckets:
    /// [`BATCH_BOUNDS_RECORDS`](super::BATCH_BOUNDS_RECORDS)).
    pub fn batch_records(&self) -> HistogramSnapshot {
        self.stats.batch_records()
    }
}

impl Store for FileJournal {
    fn queue(&self, name: &str) -> Box<dyn QueueLog> {
        Box::new(FileQueueLog {
            queue: name.into(),
            tx: self.tx.clone(),
            _lock: Arc::clone(&self.lock),
        })
    }

    fn put(&self, ns: &'static str, key: &str, value: Vec<u8>) -> StoreWait {
        send_awaited(&self.tx, |done| Op::Put {
            ns: Cow::Borrowed(ns),
            key: key.to_owned(),
            value,
            done: Some(done),
        })
    }

    fn delete(&self, ns: &'static str, key: &str) {
        let _ = self.tx.send(Op::Delete {
            ns,
            key: key.to_owned(),
        });
    }

    /// Shares the group commit of whatever else is waiting and costs no write of its
    /// own. With [`FsyncPolicy::Interval`] it waits for the write, not the fsync.
    fn barrier(&self) -> StoreWait {
        send_awaited(&self.tx, |done| Op::Barrier { done })
    }

    fn recover(
        &self,
        visit: &mut dyn FnMut(&str, &[StoredMessage<'_>]),
    ) -> Result<Recovered, StoreError> {
        let pending = self
            .recovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(pending) = pending else {
            return Ok(Recovered::default());
        };
        let (started, messages) = (Instant::now(), pending.messages);
        let recovered = pending.replay(visit).map_err(|reason| StoreError::Open {
            path: self.dir.clone(),
            reason,
        })?;
        tracing::info!(
            messages,
            took_ms = started.elapsed().as_millis() as u64,
            "store recovered messages handed over"
        );
        Ok(recovered)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.health.is_healthy() {
            return Ok(());
        }
        Err(StoreError::Unavailable(self.health.error()))
    }

    fn close(&self) {
        let _ = self.tx.send(Op::Shutdown);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.lock.release();
    }
}

/// A queue's handle on the journal: its operations go down the same channel as every
/// other, so they are written in the order they were issued.
#[derive(Debug)]
struct FileQueueLog {
    queue: Arc<str>,
    tx: mpsc::Sender<Op>,
    /// Keeps the directory locked while this log may still write.
    _lock: Arc<DirLock>,
}

impl QueueLog for FileQueueLog {
    fn append(&self, seq: u64, bytes: Bytes) -> StoreWait {
        send_awaited(&self.tx, |done| Op::Append {
            queue: Arc::clone(&self.queue),
            seq,
            bytes,
            done: Some(done),
        })
    }

    fn remove(&self, seq: u64) {
        let _ = self.tx.send(Op::Remove {
            queue: Arc::clone(&self.queue),
            seq,
        });
    }

    fn delivered(&self, seq: u64, count: u32) {
        let _ = self.tx.send(Op::Delivered {
            queue: Arc::clone(&self.queue),
            seq,
            count,
        });
    }

    fn drop_queue(&self) {
        let _ = self.tx.send(Op::DropQueue {
            queue: Arc::clone(&self.queue),
        });
    }
}
