//! The durable store: persistent messages of durable queues are written here before
//! their publisher is confirmed and forgotten once acknowledged; durable queue metadata
//! (bindings), MQTT sessions and retained messages are kept here too.
//!
//! It is a journal of append-only segment files ([`journal`]), as in RabbitMQ's message
//! store and Artemis's journal: appends, removals and delivery marks are records, and
//! recovery replays them. One writer thread owns the files: operations queue up on a
//! channel and the writer writes everything waiting as one batch followed by one fsync —
//! a group commit, so many publishers share one fsync. An append completes once its
//! batch is durable ([`FsyncPolicy::Always`]), or at once with [`FsyncPolicy::Interval`],
//! which fsyncs every interval and so may lose that interval's confirmed writes in a
//! crash (never corrupt the journal: a torn tail is cut off on the next start).
//!
//! Space is reclaimed oldest segment first: a sealed segment with nothing live left is
//! deleted; when the journal holds more than twice the live data, the oldest segment's
//! live records are copied to the head and it is deleted. Deleting only ever the oldest
//! segment keeps a removal record from outliving the append it cancels.
//!
//! When a write fails (disk full, read-only file system) the batch is cut back off the
//! file, its publishers get the error, and the store reports itself unhealthy (callers
//! refuse persistent publishes up front) until a probe write succeeds again.
//!
//! Removals and delivery marks are not awaited one by one: a confirmation that depends
//! on them (a STOMP RECEIPT for an ACK) awaits a [`Store::barrier`], which completes
//! once everything sent before it is durable, in the same group commit. Delivery marks
//! are written after the delivery may already be on the wire, so after a crash they can
//! be missing: an orderly close ends the journal with a `Clean` record, and a journal
//! that does not end with one has every recovered message flagged redelivered
//! ([`StoredMessage::redelivered`]).

pub mod codec;
pub(crate) mod journal;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::core::Message;
use journal::{MAGIC, Record, SEGMENT_MAX};

/// When commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every batch is fsynced before the appends in it complete.
    Always,
    /// Batches are written at once and fsynced every interval. A crash may lose up to
    /// that interval of confirmed messages.
    Interval(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("store write failed: {0}")]
    Write(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Corrupt(#[from] codec::Corrupt),
    #[error("the store is closed")]
    Closed,
}

/// A stored message as recovered.
#[derive(Debug)]
pub struct StoredMessage {
    pub seq: u64,
    /// What its consumer sees as where it was published.
    pub destination: crate::core::Destination,
    pub message: Message,
    /// Times it was handed to a consumer without being acknowledged, as recorded (0:
    /// none recorded).
    pub deliveries: u32,
    /// It may have been handed to a consumer before: a delivery was recorded, or the
    /// journal was not closed cleanly (a crash can lose delivery marks, so every message
    /// is then assumed delivered).
    pub redelivered: bool,
}

/// What a start-up replay found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Messages by queue, in sequence order.
    pub queues: BTreeMap<String, Vec<StoredMessage>>,
    /// Metadata by namespace and key.
    pub meta: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Torn or corrupt segment ends found (and cut off), one line each.
    pub repairs: Vec<String>,
    /// Bytes read.
    pub bytes: u64,
    /// The journal ended with an orderly close (or was empty): its delivery marks are
    /// complete.
    pub clean: bool,
}

enum Op {
    Append {
        queue: Arc<str>,
        seq: u64,
        bytes: Bytes,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    Remove {
        queue: Arc<str>,
        seq: u64,
    },
    Delivered {
        queue: Arc<str>,
        seq: u64,
        count: u32,
    },
    DropQueue {
        queue: Arc<str>,
    },
    Put {
        ns: &'static str,
        key: String,
        value: Vec<u8>,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    Delete {
        ns: &'static str,
        key: String,
    },
    /// Completes once everything sent before it is durable (writes nothing itself).
    Barrier {
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Write and sync what came before, mark the journal closed cleanly, then stop.
    Shutdown,
}

/// The outcome of an append or put, to await before confirming a publisher.
#[derive(Debug)]
pub enum StoreWait {
    Done(Result<(), StoreError>),
    Pending(oneshot::Receiver<Result<(), StoreError>>),
}

impl StoreWait {
    pub async fn wait(self) -> Result<(), StoreError> {
        match self {
            Self::Done(r) => r,
            Self::Pending(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
        }
    }

    /// True when it needs no waiting and succeeded.
    pub fn is_done_ok(&self) -> bool {
        matches!(self, Self::Done(Ok(())))
    }
}

#[derive(Debug, Default)]
struct Health {
    healthy: AtomicBool,
    error: Mutex<Option<String>>,
    commits: AtomicU64,
}

impl Health {
    fn set(&self, r: &Result<(), String>) {
        let ok = r.is_ok();
        let was = self.healthy.swap(ok, Ordering::AcqRel);
        let mut e = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        match r {
            Ok(()) if !was => tracing::info!("store writable again; persistent publishes accepted"),
            Err(reason) if was || e.as_deref() != Some(reason) => {
                tracing::error!(error = %reason, "store write failed; persistent publishes are refused until it recovers")
            }
            _ => {}
        }
        *e = r.clone().err();
    }
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Op>,
    health: Arc<Health>,
    policy: FsyncPolicy,
    dir: Arc<Path>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Holds the data directory's lock for as long as any handle lives.
    lock: Arc<Mutex<Option<File>>>,
}

/// Takes an exclusive lock on `dir/lock`, so two routers never write one journal.
/// A directory where the lock file cannot even be created (read-only) is not locked:
/// nothing will be written to it.
fn lock_dir(dir: &Path) -> Result<Option<File>, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(f) => f,
        Err(_) => match File::open(&path) {
            Ok(f) => f,
            Err(_) => return Ok(None),
        },
    };
    // SAFETY: flock on a file descriptor this function owns; no memory is involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            "the data directory is in use by another switchboard process".into()
        } else {
            format!("cannot lock {}: {e}", path.display())
        });
    }
    Ok(Some(file))
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("policy", &self.policy)
            .finish()
    }
}

/// Most operations written in one batch.
const MAX_BATCH: usize = 8192;
/// Most bytes written in one batch.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How often an unhealthy store retries.
const PROBE_EVERY: Duration = Duration::from_secs(1);

impl Store {
    /// Opens (or creates) the journal in `dir`, replays it, and starts the writer. A
    /// directory that can be read but not written still opens: what it holds is
    /// recovered and the store starts unhealthy (see [`Store::check`]).
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<(Self, Recovered), StoreError> {
        Self::open_sized(dir, policy, SEGMENT_MAX)
    }

    /// [`Store::open`] with another segment size (tests exercise reclaiming with small ones).
    pub(crate) fn open_sized(
        dir: &Path,
        policy: FsyncPolicy,
        segment_max: u64,
    ) -> Result<(Self, Recovered), StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.to_owned(),
            reason,
        };
        if let Err(e) = std::fs::create_dir_all(dir)
            && !dir.is_dir()
        {
            return Err(open_err(e.to_string()));
        }
        let lock = lock_dir(dir).map_err(open_err)?;
        let started = Instant::now();
        let (mut journal, recovered) = Journal::recover(dir, segment_max).map_err(open_err)?;
        let health = Arc::new(Health::default());
        // From now on the journal is open: a first record after a `Clean` one means a
        // crash from here on is seen as one at the next start.
        let opened = journal.open_head().and_then(|()| {
            let mut buf = Vec::new();
            Record::Nop.frame(&mut buf);
            journal.write(&buf, true).map(|_| ())
        });
        match opened {
            Ok(()) => health.healthy.store(true, Ordering::Release),
            Err(e) => health.set(&Err(format!("data directory not writable: {e}"))),
        }
        tracing::info!(
            dir = %dir.display(),
            clean = recovered.clean,
            queues = recovered.queues.len(),
            messages = recovered.queues.values().map(Vec::len).sum::<usize>(),
            bytes = recovered.bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "store recovered"
        );
        for r in &recovered.repairs {
            tracing::warn!(repair = %r, "store: torn or corrupt journal tail cut off");
        }
        let (tx, rx) = mpsc::channel();
        let thread = {
            let health = Arc::clone(&health);
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer(journal, rx, policy, health))
                .map_err(|e| open_err(e.to_string()))?
        };
        Ok((
            Self {
                tx,
                health,
                policy,
                dir: dir.into(),
                thread: Arc::new(Mutex::new(Some(thread))),
                lock: Arc::new(Mutex::new(lock)),
            },
            recovered,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Ok while writes succeed; the last write error otherwise.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.health.healthy.load(Ordering::Acquire) {
            return Ok(());
        }
        let e = self
            .health
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Err(StoreError::Unavailable(
            e.unwrap_or_else(|| "not writable".into()),
        ))
    }

    fn waiter(&self) -> (Option<oneshot::Sender<Result<(), StoreError>>>, StoreWait) {
        match self.policy {
            FsyncPolicy::Always => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), StoreWait::Pending(rx))
            }
            FsyncPolicy::Interval(_) => (None, StoreWait::Done(Ok(()))),
        }
    }

    /// Stores an encoded message (see [`codec::encode_queued`]) under `queue` and `seq`. Ordered
    /// before every later operation on this store, so a removal sent after it can never
    /// be applied before it.
    pub fn append(&self, queue: &Arc<str>, seq: u64, bytes: Bytes) -> StoreWait {
        let (done, wait) = self.waiter();
        let op = Op::Append {
            queue: Arc::clone(queue),
            seq,
            bytes,
            done,
        };
        match self.tx.send(op) {
            Ok(()) => wait,
            Err(_) => StoreWait::Done(Err(StoreError::Closed)),
        }
    }

    /// Forgets an acknowledged (or dead-lettered, expired, dropped) message.
    pub fn remove(&self, queue: &Arc<str>, seq: u64) {
        let _ = self.tx.send(Op::Remove {
            queue: Arc::clone(queue),
            seq,
        });
    }

    /// Records that a message was handed to a consumer `count` times, so a restart
    /// redelivers it flagged as redelivered.
    pub fn delivered(&self, queue: &Arc<str>, seq: u64, count: u32) {
        let _ = self.tx.send(Op::Delivered {
            queue: Arc::clone(queue),
            seq,
            count,
        });
    }

    /// Resolves once every operation sent before it (through any handle) is durable:
    /// written, and fsynced with [`FsyncPolicy::Always`]. It shares the group commit of
    /// whatever else is waiting, and costs no write of its own. What a confirmation of
    /// removals and delivery marks (which are not awaited one by one) waits for. With
    /// [`FsyncPolicy::Interval`] it waits for the write, not the fsync.
    pub fn barrier(&self) -> StoreWait {
        let (done, rx) = oneshot::channel();
        match self.tx.send(Op::Barrier { done }) {
            Ok(()) => StoreWait::Pending(rx),
            Err(_) => StoreWait::Done(Err(StoreError::Closed)),
        }
    }

    /// Forgets every message of a deleted queue.
    pub fn drop_queue(&self, queue: &Arc<str>) {
        let _ = self.tx.send(Op::DropQueue {
            queue: Arc::clone(queue),
        });
    }

    /// Stores a metadata value (replacing the key's earlier one).
    pub fn put(&self, ns: &'static str, key: &str, value: Vec<u8>) -> StoreWait {
        let (done, wait) = self.waiter();
        let op = Op::Put {
            ns,
            key: key.to_owned(),
            value,
            done,
        };
        match self.tx.send(op) {
            Ok(()) => wait,
            Err(_) => StoreWait::Done(Err(StoreError::Closed)),
        }
    }

    pub fn delete(&self, ns: &'static str, key: &str) {
        let _ = self.tx.send(Op::Delete {
            ns,
            key: key.to_owned(),
        });
    }

    /// Writes and syncs everything sent before and stops the writer; later operations
    /// through any handle fail with [`StoreError::Closed`]. Blocks until done.
    pub fn close(&self) {
        let _ = self.tx.send(Op::Shutdown);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        // Done with the directory: another store (or router) may open it now.
        self.lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Batches written so far (group commit makes this far fewer than appends).
    pub fn commits(&self) -> u64 {
        self.health.commits.load(Ordering::Relaxed)
    }
}

/// Where a live record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    seg: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug, Clone, Copy)]
struct LiveMessage {
    loc: Loc,
    deliveries: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct SegStat {
    size: u64,
    live: u64,
}

/// The writer's view of the journal: segment files and where every live record is.
struct Journal {
    dir: PathBuf,
    segment_max: u64,
    segs: BTreeMap<u64, SegStat>,
    head: Option<File>,
    head_id: u64,
    messages: HashMap<Arc<str>, BTreeMap<u64, LiveMessage>>,
    meta: HashMap<(String, String), Loc>,
    live: u64,
    total: u64,
}

/// A message seen in replay: where its encoded bytes are in its segment's buffer, its
/// delivery count and its place.
type Replayed = (std::ops::Range<usize>, u32, Loc);

/// Replay state: the latest bytes of every live message and metadata key.
#[derive(Default)]
struct Replay {
    messages: HashMap<Arc<str>, BTreeMap<u64, Replayed>>,
    meta: HashMap<(String, String), (Vec<u8>, Loc)>,
}

impl Journal {
    fn recover(dir: &Path, segment_max: u64) -> Result<(Self, Recovered), String> {
        let ids = journal::segment_ids(dir).map_err(|e| e.to_string())?;
        let mut replay = Replay::default();
        let mut out = Recovered::default();
        let mut segs = BTreeMap::new();
        // One buffer, reused for every segment: replay reads each segment twice (first
        // to find what survives, then to decode just that), so recovery never holds the
        // whole journal in memory next to the messages it restores.
        let mut bytes = Vec::new();
        let last = ids.last().copied();
        // An empty journal is clean; otherwise its last record says.
        let mut clean = true;
        for id in &ids {
            let path = journal::segment_path(dir, *id);
            read_segment(&path, &mut bytes)?;
            out.bytes += bytes.len() as u64;
            let base = bytes.as_ptr() as usize;
            let torn = journal::scan(&bytes, |rec, offset, len| {
                clean = rec == Record::Clean;
                let range = match rec {
                    Record::Append { message, .. } => {
                        let start = message.as_ptr() as usize - base;
                        start..start + message.len()
                    }
                    _ => 0..0,
                };
                replay.apply(
                    rec,
                    Loc {
                        seg: *id,
                        offset,
                        len,
                    },
                    range,
                )
            });
            let mut size = bytes.len() as u64;
            if let Some(t) = torn {
                clean = false;
                let cut = bytes.len() as u64 - t.offset;
                let what = if Some(*id) == last {
                    "torn tail"
                } else {
                    "corrupt segment end"
                };
                out.repairs.push(format!(
                    "{what} in {}: {} at offset {}, {cut} bytes discarded",
                    path.display(),
                    t.reason,
                    t.offset
                ));
                // Cut it off so the head appends after complete records only. A
                // read-only directory keeps the bytes; replay skips them again.
                let offset = t.offset.max(MAGIC.len() as u64);
                let cut_ok = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| {
                        if t.offset == 0 {
                            f.set_len(0)?;
                            (&f).write_all(MAGIC)?;
                        } else {
                            f.set_len(offset)?;
                        }
                        f.sync_all()
                    })
                    .is_ok();
                if cut_ok {
                    size = offset;
                }
            }
            segs.insert(*id, SegStat { size, live: 0 });
        }
        let mut journal = Journal {
            dir: dir.to_owned(),
            segment_max,
            head_id: last.unwrap_or(0),
            segs,
            head: None,
            messages: HashMap::new(),
            meta: HashMap::new(),
            live: 0,
            total: 0,
        };
        journal.total = journal.segs.values().map(|s| s.size).sum();
        // Second pass: the survivors, segment by segment, decoded on every core.
        let mut by_segment: BTreeMap<u64, Vec<Survivor>> = BTreeMap::new();
        for (queue, entries) in replay.messages {
            for (seq, (range, deliveries, loc)) in entries {
                by_segment.entry(loc.seg).or_default().push(Survivor {
                    queue: Arc::clone(&queue),
                    seq,
                    deliveries,
                    loc,
                    range,
                });
            }
        }
        out.clean = clean;
        let mut lists: HashMap<Arc<str>, Vec<StoredMessage>> = HashMap::new();
        for (seg, survivors) in by_segment {
            let path = journal::segment_path(dir, seg);
            read_segment(&path, &mut bytes)?;
            let decoded = decode_all(&survivors, &bytes);
            for (sv, d) in survivors.into_iter().zip(decoded) {
                match d {
                    Ok((destination, message)) => {
                        journal
                            .messages
                            .entry(Arc::clone(&sv.queue))
                            .or_default()
                            .insert(
                                sv.seq,
                                LiveMessage {
                                    loc: sv.loc,
                                    deliveries: sv.deliveries,
                                },
                            );
                        lists.entry(sv.queue).or_default().push(StoredMessage {
                            seq: sv.seq,
                            destination,
                            message,
                            deliveries: sv.deliveries,
                            redelivered: sv.deliveries > 0 || !clean,
                        });
                    }
                    Err(e) => out.repairs.push(format!(
                        "message {} of queue {} skipped: {e} (segment {:016x}, offset {})",
                        sv.seq, sv.queue, sv.loc.seg, sv.loc.offset
                    )),
                }
            }
        }
        drop(bytes);
        for (queue, mut list) in lists {
            // Compaction may have moved older messages into newer segments.
            list.sort_unstable_by_key(|m| m.seq);
            out.queues.insert(queue.to_string(), list);
        }
        for ((ns, key), (value, loc)) in replay.meta {
            journal.meta.insert((ns.clone(), key.clone()), loc);
            out.meta.entry(ns).or_default().insert(key, value);
        }
        let locs: Vec<Loc> = journal
            .messages
            .values()
            .flat_map(|m| m.values().map(|l| l.loc))
            .chain(journal.meta.values().copied())
            .collect();
        for loc in locs {
            journal.add_live(loc);
        }
        Ok((journal, out))
    }

    fn add_live(&mut self, loc: Loc) {
        self.segs.entry(loc.seg).or_default().live += u64::from(loc.len);
        self.live += u64::from(loc.len);
    }

    fn sub_live(&mut self, loc: Loc) {
        if let Some(s) = self.segs.get_mut(&loc.seg) {
            s.live = s.live.saturating_sub(u64::from(loc.len));
        }
        self.live = self.live.saturating_sub(u64::from(loc.len));
    }

    /// Opens the newest segment for appending (or starts one).
    fn open_head(&mut self) -> Result<(), String> {
        let reuse = self
            .segs
            .last_key_value()
            .filter(|(_, s)| s.size >= MAGIC.len() as u64 && s.size < self.segment_max)
            .map(|(id, _)| *id);
        match reuse {
            Some(id) => {
                let path = journal::segment_path(&self.dir, id);
                let f = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                self.head = Some(f);
                self.head_id = id;
                Ok(())
            }
            None => self.new_head(),
        }
    }

    fn new_head(&mut self) -> Result<(), String> {
        let id = self.segs.last_key_value().map_or(1, |(id, _)| id + 1);
        let path = journal::segment_path(&self.dir, id);
        let made = (|| {
            let mut f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            f.write_all(MAGIC)?;
            f.sync_all()?;
            File::open(&self.dir)?.sync_all()?;
            Ok::<_, std::io::Error>(f)
        })();
        match made {
            Ok(f) => {
                if let Some(old) = self.head.take() {
                    let _ = old.sync_all();
                }
                self.head = Some(f);
                self.head_id = id;
                self.segs.insert(
                    id,
                    SegStat {
                        size: MAGIC.len() as u64,
                        live: 0,
                    },
                );
                self.total += MAGIC.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(format!("{}: {e}", path.display()))
            }
        }
    }

    /// Writes `buf` at the head's end (and fsyncs it when `sync`). On failure the head
    /// is cut back to where it was, so no partial batch stays in the journal.
    fn write(&mut self, buf: &[u8], sync: bool) -> Result<u64, String> {
        if self.head.is_none() {
            self.open_head()?;
        }
        let id = self.head_id;
        let at = self.segs.get(&id).map_or(0, |s| s.size);
        let Some(f) = self.head.as_mut() else {
            return Err("no journal segment open".into());
        };
        let written = f
            .write_all(buf)
            .and_then(|()| if sync { f.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            if f.set_len(at).is_err() {
                // Cannot even cut it back: leave this segment and start a new one later.
                self.head = None;
                self.segs.entry(id).or_default().size = self.segment_max;
            }
            return Err(e.to_string());
        }
        if let Some(s) = self.segs.get_mut(&id) {
            s.size += buf.len() as u64;
        }
        self.total += buf.len() as u64;
        Ok(at)
    }

    fn sync(&mut self) -> Result<(), String> {
        match &self.head {
            Some(f) => f.sync_data().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Applies a written batch to the live index; `base` is where the batch starts.
    fn index(&mut self, ops: &[(Op, u64, u32)], base: u64) {
        let seg = self.head_id;
        for (op, rel, len) in ops {
            let loc = Loc {
                seg,
                offset: base + rel,
                len: *len,
            };
            match op {
                Op::Append { queue, seq, .. } => {
                    let old = self
                        .messages
                        .entry(Arc::clone(queue))
                        .or_default()
                        .insert(*seq, LiveMessage { loc, deliveries: 0 });
                    if let Some(old) = old {
                        self.sub_live(old.loc);
                    }
                    self.add_live(loc);
                }
                Op::Remove { queue, seq } => {
                    let gone = self.messages.get_mut(queue).and_then(|m| m.remove(seq));
                    if let Some(old) = gone {
                        self.sub_live(old.loc);
                    }
                }
                Op::Delivered { queue, seq, count } => {
                    if let Some(m) = self.messages.get_mut(queue).and_then(|m| m.get_mut(seq)) {
                        m.deliveries = *count;
                    }
                }
                Op::DropQueue { queue } => {
                    if let Some(all) = self.messages.remove(queue) {
                        for m in all.into_values() {
                            self.sub_live(m.loc);
                        }
                    }
                }
                Op::Put { ns, key, .. } => {
                    if let Some(old) = self.meta.insert((ns.to_string(), key.clone()), loc) {
                        self.sub_live(old);
                    }
                    self.add_live(loc);
                }
                Op::Delete { ns, key } => {
                    if let Some(old) = self.meta.remove(&(ns.to_string(), key.clone())) {
                        self.sub_live(old);
                    }
                }
                Op::Barrier { .. } | Op::Shutdown => {}
            }
        }
        if self
            .segs
            .get(&seg)
            .is_some_and(|s| s.size >= self.segment_max)
        {
            let _ = self.sync();
            self.head = None;
            let _ = self.new_head();
        }
    }

    /// Reclaims the oldest sealed segment when it holds nothing live, or when the
    /// journal is more than twice the live data: its live records move to the head.
    fn reclaim(&mut self) {
        let Some((&oldest, stat)) = self.segs.first_key_value() else {
            return;
        };
        if oldest == self.head_id || self.head.is_none() {
            return;
        }
        let stat = *stat;
        if stat.live > 0 && self.total <= 2 * self.live + self.segment_max {
            return;
        }
        let path = journal::segment_path(&self.dir, oldest);
        if stat.live > 0 {
            let Ok(bytes) = std::fs::read(&path) else {
                return;
            };
            let mut buf = Vec::new();
            let mut moved: Vec<(Op, u64, u32)> = Vec::new();
            journal::scan(&bytes, |rec, offset, _| {
                let here = |l: &Loc| l.seg == oldest && l.offset == offset;
                match rec {
                    Record::Append { queue, seq, .. } => {
                        let Some(live) = self.messages.get(queue).and_then(|m| m.get(&seq)) else {
                            return;
                        };
                        if !here(&live.loc) {
                            return;
                        }
                        let rel = buf.len() as u64;
                        let len = rec.frame(&mut buf);
                        let queue: Arc<str> = self
                            .messages
                            .get_key_value(queue)
                            .map(|(k, _)| Arc::clone(k))
                            .unwrap_or_else(|| queue.into());
                        let deliveries = live.deliveries;
                        moved.push((
                            Op::Append {
                                queue: Arc::clone(&queue),
                                seq,
                                bytes: Bytes::new(),
                                done: None,
                            },
                            rel,
                            len,
                        ));
                        if deliveries > 0 {
                            let rel = buf.len() as u64;
                            let len = Record::Delivered {
                                queue: &queue,
                                seq,
                                count: deliveries,
                            }
                            .frame(&mut buf);
                            moved.push((
                                Op::Delivered {
                                    queue,
                                    seq,
                                    count: deliveries,
                                },
                                rel,
                                len,
                            ));
                        }
                    }
                    Record::Put { ns, key, .. } => {
                        let k = (ns.to_owned(), key.to_owned());
                        if self.meta.get(&k).is_some_and(here) {
                            let rel = buf.len() as u64;
                            let len = rec.frame(&mut buf);
                            moved.push((
                                Op::Put {
                                    ns: intern_ns(ns),
                                    key: key.to_owned(),
                                    value: Vec::new(),
                                    done: None,
                                },
                                rel,
                                len,
                            ));
                        }
                    }
                    _ => {}
                }
            });
            match self.write(&buf, true) {
                Ok(base) => self.index(&moved, base),
                Err(e) => {
                    tracing::warn!(error = %e, segment = oldest, "store: compaction write failed; retried later");
                    return;
                }
            }
        }
        if std::fs::remove_file(&path).is_ok() || !path.exists() {
            if let Some(s) = self.segs.remove(&oldest) {
                self.total = self.total.saturating_sub(s.size);
                self.live = self.live.saturating_sub(s.live);
            }
            tracing::debug!(segment = oldest, "store: segment reclaimed");
        }
    }
}

/// A stored message that survived replay: where to decode it from.
struct Survivor {
    queue: Arc<str>,
    seq: u64,
    deliveries: u32,
    loc: Loc,
    range: std::ops::Range<usize>,
}

/// Reads a segment file into `buf` (reusing its allocation).
fn read_segment(path: &Path, buf: &mut Vec<u8>) -> Result<(), String> {
    use std::io::Read;
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Decodes survivors from their segment's bytes, on every core (a million stored
/// messages must be back in seconds).
fn decode_all(
    survivors: &[Survivor],
    bytes: &[u8],
) -> Vec<Result<(crate::core::Destination, Message), codec::Corrupt>> {
    let decode = |sv: &Survivor| {
        let b = bytes
            .get(sv.range.clone())
            .ok_or(codec::Corrupt("message outside its segment"))?;
        codec::decode_queued(b)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || survivors.len() < 10_000 {
        return survivors.iter().map(decode).collect();
    }
    let chunk = survivors.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = survivors
            .chunks(chunk)
            .map(|part| {
                (
                    part,
                    s.spawn(move || part.iter().map(decode).collect::<Vec<_>>()),
                )
            })
            .collect();
        parts
            .into_iter()
            // A decoder thread that died is redone here, so no message goes missing.
            .flat_map(|(part, h)| {
                h.join()
                    .unwrap_or_else(|_| part.iter().map(decode).collect())
            })
            .collect()
    })
}

/// Namespaces are a small fixed set; compaction maps a stored one back to its static name.
fn intern_ns(ns: &str) -> &'static str {
    const KNOWN: &[&str] = &[META_QUEUE, META_MQTT_SESSION, META_MQTT_RETAINED];
    KNOWN.iter().copied().find(|k| *k == ns).unwrap_or("other")
}

/// Namespace of durable queue metadata (options and bindings), keyed by queue name.
pub const META_QUEUE: &str = "queue";
/// Namespace of persistent MQTT sessions, keyed by client id.
pub const META_MQTT_SESSION: &str = "mqtt-session";
/// Namespace of MQTT retained messages, keyed by topic.
pub const META_MQTT_RETAINED: &str = "mqtt-retained";

impl Replay {
    /// `range` is where an append's message bytes are in the segment being replayed.
    fn apply(&mut self, rec: Record<'_>, loc: Loc, range: std::ops::Range<usize>) {
        match rec {
            Record::Nop | Record::Clean => {}
            Record::Append { queue, seq, .. } => {
                let q = match self.messages.get_key_value(queue) {
                    Some((k, _)) => Arc::clone(k),
                    None => queue.into(),
                };
                let prior = self
                    .messages
                    .entry(q)
                    .or_default()
                    .insert(seq, (range, 0, loc));
                // A copy moved by compaction keeps the delivery count it was moved with.
                if let Some((_, d, _)) = prior
                    && let Some(e) = self.messages.get_mut(queue).and_then(|m| m.get_mut(&seq))
                {
                    e.1 = e.1.max(d);
                }
            }
            Record::Remove { queue, seq } => {
                if let Some(m) = self.messages.get_mut(queue) {
                    m.remove(&seq);
                }
            }
            Record::Delivered { queue, seq, count } => {
                if let Some(e) = self.messages.get_mut(queue).and_then(|m| m.get_mut(&seq)) {
                    e.1 = count;
                }
            }
            Record::DropQueue { queue } => {
                self.messages.remove(queue);
            }
            Record::Put { ns, key, value } => {
                self.meta
                    .insert((ns.to_owned(), key.to_owned()), (value.to_vec(), loc));
            }
            Record::Delete { ns, key } => {
                self.meta.remove(&(ns.to_owned(), key.to_owned()));
            }
        }
    }
}

fn frame_op(op: &Op, buf: &mut Vec<u8>) -> u32 {
    match op {
        Op::Append {
            queue, seq, bytes, ..
        } => Record::Append {
            queue,
            seq: *seq,
            message: bytes,
        }
        .frame(buf),
        Op::Remove { queue, seq } => Record::Remove { queue, seq: *seq }.frame(buf),
        Op::Delivered { queue, seq, count } => Record::Delivered {
            queue,
            seq: *seq,
            count: *count,
        }
        .frame(buf),
        Op::DropQueue { queue } => Record::DropQueue { queue }.frame(buf),
        Op::Put { ns, key, value, .. } => Record::Put { ns, key, value }.frame(buf),
        Op::Delete { ns, key } => Record::Delete { ns, key }.frame(buf),
        Op::Barrier { .. } => 0,
        // Last in its batch: nothing is collected after a shutdown.
        Op::Shutdown => Record::Clean.frame(buf),
    }
}

fn writer(mut j: Journal, rx: mpsc::Receiver<Op>, policy: FsyncPolicy, health: Arc<Health>) {
    let mut ops: Vec<(Op, u64, u32)> = Vec::with_capacity(256);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        let healthy = health.healthy.load(Ordering::Acquire);
        let mut wait = if healthy {
            Duration::from_secs(3600)
        } else {
            PROBE_EVERY
        };
        if let FsyncPolicy::Interval(every) = policy
            && unsynced
        {
            wait = wait.min(every.saturating_sub(last_sync.elapsed()));
        }
        let first = match rx.recv_timeout(wait) {
            Ok(op) => Some(op),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if unsynced && let FsyncPolicy::Interval(every) = policy {
                    if last_sync.elapsed() >= every {
                        let r = j.sync();
                        unsynced = r.is_err();
                        last_sync = Instant::now();
                        health.set(&r);
                    }
                } else if !healthy {
                    // Probe: can we write again?
                    buf.clear();
                    Record::Nop.frame(&mut buf);
                    let r = j.write(&buf, true).map(|_| ());
                    health.set(&r);
                }
                continue;
            }
        };
        let Some(first) = first else {
            let _ = j.sync();
            return;
        };
        let mut stop = matches!(first, Op::Shutdown);
        buf.clear();
        let len = frame_op(&first, &mut buf);
        ops.push((first, 0, len));
        while !stop && ops.len() < MAX_BATCH && buf.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(op) => {
                    stop = matches!(op, Op::Shutdown);
                    let rel = buf.len() as u64;
                    let len = frame_op(&op, &mut buf);
                    ops.push((op, rel, len));
                }
                Err(_) => break,
            }
        }
        let sync = matches!(policy, FsyncPolicy::Always) || stop;
        let result = if buf.is_empty() {
            // Only barriers: everything before them went in earlier batches, durable
            // unless the store is failing.
            match health.healthy.load(Ordering::Acquire) {
                true => Ok(0),
                false => Err(health
                    .error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_else(|| "not writable".into())),
            }
        } else {
            j.write(&buf, sync)
        };
        if !buf.is_empty() {
            health.commits.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(base) = &result {
            if !sync {
                unsynced = true;
            } else {
                last_sync = Instant::now();
                unsynced = false;
            }
            j.index(&ops, *base);
        }
        health.set(&result.as_ref().map(|_| ()).map_err(Clone::clone));
        let reply = result
            .map(|_| ())
            .map_err(|e| StoreError::Write(format!("{e} (in {})", j.dir.display())));
        for (op, _, _) in ops.drain(..) {
            match op {
                Op::Append { done: Some(d), .. }
                | Op::Put { done: Some(d), .. }
                | Op::Barrier { done: d } => {
                    let _ = d.send(reply.clone());
                }
                _ => {}
            }
        }
        if stop {
            let _ = j.sync();
            return;
        }
        if reply.is_ok() {
            j.reclaim();
        }
    }
}

#[cfg(test)]
mod tests;
