//! The writer thread: the one owner of the segment files. Operations queue up on a
//! channel; the writer takes everything waiting, writes it as one batch and (with
//! [`FsyncPolicy::Always`]) fsyncs it once — a group commit, so many publishers share
//! one fsync — and only then answers the operations waiting for a confirmation. With
//! [`FsyncPolicy::Interval`] it answers once the batch is written (the operating system
//! has it) and fsyncs on a timer.
//!
//! Each batch, and each fsync's duration, is counted in [`super::commit_stats`].
//!
//! When a write fails the batch is cut back off the file, its waiters get the error, and
//! the store is unhealthy until a probe write (every [`PROBE_EVERY`]) succeeds.

use std::borrow::Cow;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::StoreError;
use super::commit_stats::CommitStats;
use super::file_journal::FsyncPolicy;
use super::health::Health;
use super::journal::Record;
use super::segments::Segments;

/// Where the writer answers an operation once it is durable.
pub(super) type Done = oneshot::Sender<Result<(), StoreError>>;

pub(super) enum Op {
    Append {
        queue: Arc<str>,
        seq: u64,
        bytes: Bytes,
        done: Option<Done>,
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
        /// Borrowed when it comes from a user; owned when compaction moves a record
        /// read back from the journal.
        ns: Cow<'static, str>,
        key: String,
        value: Vec<u8>,
        done: Option<Done>,
    },
    Delete {
        ns: &'static str,
        key: String,
    },
    /// Completes once everything sent before it is durable (writes nothing itself).
    Barrier {
        done: Done,
    },
    /// Write and sync what came before, mark the journal closed cleanly, then stop.
    Shutdown,
}

/// Most operations written in one batch.
const MAX_BATCH: usize = 8192;
/// Most bytes written in one batch.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How often an unhealthy store retries.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Appends the operation's record to `buf`; returns its framed length.
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

/// The writer thread's loop, until [`Op::Shutdown`] or every sender is gone.
pub(super) fn run(
    mut j: Segments,
    rx: mpsc::Receiver<Op>,
    policy: FsyncPolicy,
    health: Arc<Health>,
    stats: Arc<CommitStats>,
) {
    let mut ops: Vec<(Op, u64, u32)> = Vec::with_capacity(256);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        let healthy = health.is_healthy();
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
                        if r.is_ok() {
                            stats.fsync(j.synced_in);
                        }
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
            match health.is_healthy() {
                true => Ok(0),
                false => Err(health.error()),
            }
        } else {
            j.write(&buf, sync)
        };
        if !buf.is_empty() {
            stats.commit(ops.iter().filter(|(_, _, len)| *len > 0).count());
        }
        if let Ok(base) = &result {
            if !sync {
                unsynced = true;
            } else {
                if !buf.is_empty() {
                    stats.fsync(j.synced_in);
                }
                last_sync = Instant::now();
                unsynced = false;
            }
            j.index(&ops, *base);
        }
        health.set(&result.as_ref().map(|_| ()).map_err(Clone::clone));
        // Written (and synced, when `sync`): only now are the waiters answered.
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
