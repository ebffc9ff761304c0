//! Start-up: the journal is replayed oldest segment first, a torn or corrupt segment end
//! is cut off, and what survives is handed back: the writer's live index of it and the
//! metadata when the journal is opened, the messages when [`super::Store::recover`] asks.
//!
//! Replay reads each segment twice, through one reused buffer: first (at open) to find
//! what survives (later records cancel earlier ones), then (at recover) to lend the bytes
//! of the surviving messages to the visitor, a segment at a time, which decodes them
//! while the buffer holds them. Recovery never holds the journal in memory next to the
//! messages it restores, and touches no fresh memory for it but that one buffer.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::journal::{self, MAGIC, Record};
use super::segments::{LiveMessage, Loc, SegStat, Segments};
use super::{Recovered, StoredMessage};

/// A message seen in replay: where its encoded bytes are in its segment's buffer, its
/// delivery count and its place.
type Replayed = (std::ops::Range<usize>, u32, Loc);

/// Replay state: the latest bytes of every live message and metadata key.
#[derive(Default)]
struct Replay {
    messages: HashMap<Arc<str>, BTreeMap<u64, Replayed>>,
    meta: HashMap<(String, String), (Vec<u8>, Loc)>,
}

/// A stored message that survived replay: where its bytes are in its segment.
struct Survivor {
    queue: Arc<str>,
    seq: u64,
    deliveries: u32,
    range: std::ops::Range<usize>,
}

/// One segment's survivors, queue by queue, each queue's in sequence order. The file is
/// opened before the writer starts: a segment the writer reclaims before the second pass
/// reads it stays readable through this handle (its records were moved, not changed).
struct SegmentSurvivors {
    path: PathBuf,
    file: File,
    survivors: Vec<Survivor>,
}

/// What the first pass found, waiting for [`Pending::replay`] to hand over the messages.
pub(super) struct Pending {
    /// Everything but the messages.
    pub(super) recovered: Recovered,
    /// Messages that survived.
    pub(super) messages: usize,
    segments: Vec<SegmentSurvivors>,
}

/// Reads a whole segment file into `buf` (reusing its allocation).
/// Refuses a segment whose header is complete but not this version's: written by
/// another version of Switchboard (a downgrade, a future format) or not a journal at
/// all. Repairing it as a torn tail would discard every record in it; the daemon must
/// not start on it instead. A header cut short or never written (zeros) is the torn
/// creation of a new segment, repaired as usual.
fn foreign_header(bytes: &[u8], path: &Path) -> Result<(), String> {
    let Some(head) = bytes.get(..MAGIC.len()) else {
        return Ok(());
    };
    if head == MAGIC || head.iter().all(|b| *b == 0) {
        return Ok(());
    }
    Err(format!(
        "{}: segment header {:?} is not this version's ({:?}): written by another version of switchboard, or not a journal segment; refusing to start rather than discard it (run the version that wrote it, or restore the data directory from a backup)",
        path.display(),
        String::from_utf8_lossy(head),
        String::from_utf8_lossy(MAGIC)
    ))
}

fn read_segment(file: &mut File, path: &Path, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    file.rewind()
        .and_then(|()| file.read_to_end(buf))
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Segments {
    /// First pass: what survives, and the writer's live index of it. The messages' bytes
    /// are left for [`Pending::replay`].
    pub(super) fn recover(dir: &Path, segment_max: u64) -> Result<(Self, Pending), String> {
        let ids = journal::segment_ids(dir).map_err(|e| e.to_string())?;
        let mut replay = Replay::default();
        let mut out = Recovered::default();
        let mut segs = BTreeMap::new();
        // One buffer, reused for every segment (see the module docs).
        let mut bytes = Vec::new();
        let last = ids.last().copied();
        // An empty journal is clean; otherwise its last record says.
        let mut clean = true;
        for id in &ids {
            let path = journal::segment_path(dir, *id);
            let mut file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            read_segment(&mut file, &path, &mut bytes)?;
            drop(file);
            foreign_header(&bytes, &path)?;
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
        let mut journal = Segments {
            dir: dir.to_owned(),
            segment_max,
            head_id: last.unwrap_or(0),
            segs,
            head: None,
            messages: HashMap::new(),
            meta: HashMap::new(),
            live: 0,
            total: 0,
            synced_in: std::time::Duration::ZERO,
        };
        journal.total = journal.segs.values().map(|s| s.size).sum();
        drop(bytes);
        out.clean = clean;
        // The live index is complete now; the survivors' bytes wait for the second pass,
        // grouped by segment (and within one, by queue in sequence order).
        let mut by_segment: BTreeMap<u64, Vec<Survivor>> = BTreeMap::new();
        let mut messages = 0;
        for (queue, entries) in replay.messages {
            if entries.is_empty() {
                continue;
            }
            let live = journal.messages.entry(Arc::clone(&queue)).or_default();
            for (seq, (range, deliveries, loc)) in entries {
                live.insert(seq, LiveMessage { loc, deliveries });
                by_segment.entry(loc.seg).or_default().push(Survivor {
                    queue: Arc::clone(&queue),
                    seq,
                    deliveries,
                    range,
                });
                messages += 1;
            }
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
        let segments = by_segment
            .into_iter()
            .map(|(id, survivors)| {
                let path = journal::segment_path(dir, id);
                match File::open(&path) {
                    Ok(file) => Ok(SegmentSurvivors {
                        path,
                        file,
                        survivors,
                    }),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                }
            })
            .collect::<Result<_, _>>()?;
        let pending = Pending {
            recovered: out,
            messages,
            segments,
        };
        Ok((journal, pending))
    }
}

impl Pending {
    /// Second pass: the survivors' bytes, segment by segment through one reused buffer,
    /// lent to `visit` one queue's run of a segment at a time (see the module docs).
    pub(super) fn replay(
        self,
        visit: &mut dyn FnMut(&str, &[StoredMessage<'_>]),
    ) -> Result<Recovered, String> {
        let clean = self.recovered.clean;
        let mut buf = Vec::new();
        for mut seg in self.segments {
            read_segment(&mut seg.file, &seg.path, &mut buf)?;
            for run in seg
                .survivors
                .chunk_by(|a, b| Arc::ptr_eq(&a.queue, &b.queue))
            {
                let batch: Vec<StoredMessage<'_>> = run
                    .iter()
                    .map(|sv| StoredMessage {
                        seq: sv.seq,
                        // The range is from the first read of this file: trusted only if
                        // it fits. Empty bytes are unreadable: the visitor forgets them.
                        bytes: buf.get(sv.range.clone()).unwrap_or_else(|| {
                            tracing::warn!(queue = %sv.queue, seq = sv.seq, segment = %seg.path.display(), "store: stored message outside its segment on the second read");
                            &[]
                        }),
                        deliveries: sv.deliveries,
                        redelivered: sv.deliveries > 0 || !clean,
                    })
                    .collect();
                visit(&run[0].queue, &batch);
            }
        }
        Ok(self.recovered)
    }
}

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
