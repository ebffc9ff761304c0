//! The writer's view of the journal: the segment files, the head being appended to, and
//! where every live record is (the live index), which is what reclaiming space needs.
//!
//! Space is reclaimed oldest segment first: a sealed segment with nothing live left is
//! deleted; when the journal holds more than twice the live data, the oldest segment's
//! live records are copied to the head and it is deleted. Deleting only ever the oldest
//! segment keeps a removal record from outliving the append it cancels.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::journal::{self, MAGIC, Record};
use super::writer::Op;

/// Where a live record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    pub(super) seg: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct LiveMessage {
    pub(super) loc: Loc,
    pub(super) deliveries: u32,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SegStat {
    pub(super) size: u64,
    pub(super) live: u64,
}

/// The writer's view of the journal: segment files and where every live record is.
pub(super) struct Segments {
    pub(super) dir: PathBuf,
    pub(super) segment_max: u64,
    pub(super) segs: BTreeMap<u64, SegStat>,
    pub(super) head: Option<File>,
    pub(super) head_id: u64,
    pub(super) messages: HashMap<Arc<str>, BTreeMap<u64, LiveMessage>>,
    pub(super) meta: HashMap<(String, String), Loc>,
    pub(super) live: u64,
    pub(super) total: u64,
    /// How long the latest successful fsync took (for the writer's commit figures).
    pub(super) synced_in: Duration,
}

/// Fsyncs `f`'s data, noting in `took` how long it took when it succeeded.
fn timed_sync(f: &File, took: &mut Duration) -> std::io::Result<()> {
    let started = Instant::now();
    f.sync_data()?;
    *took = started.elapsed();
    Ok(())
}

impl Segments {
    pub(super) fn add_live(&mut self, loc: Loc) {
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
    pub(super) fn open_head(&mut self) -> Result<(), String> {
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
    pub(super) fn write(&mut self, buf: &[u8], sync: bool) -> Result<u64, String> {
        if self.head.is_none() {
            self.open_head()?;
        }
        let id = self.head_id;
        let at = self.segs.get(&id).map_or(0, |s| s.size);
        let Some(f) = self.head.as_mut() else {
            return Err("no journal segment open".into());
        };
        let written = f.write_all(buf).and_then(|()| match sync {
            true => timed_sync(f, &mut self.synced_in),
            false => Ok(()),
        });
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

    pub(super) fn sync(&mut self) -> Result<(), String> {
        match &self.head {
            Some(f) => timed_sync(f, &mut self.synced_in).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Applies a written batch to the live index; `base` is where the batch starts.
    pub(super) fn index(&mut self, ops: &[(Op, u64, u32)], base: u64) {
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
    pub(super) fn reclaim(&mut self) {
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
                                    ns: Cow::Owned(ns.to_owned()),
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
