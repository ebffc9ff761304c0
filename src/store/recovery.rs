//! Start-up: the journal is replayed oldest segment first, a torn or corrupt segment end
//! is cut off, and what survives is handed back as [`Recovered`] together with the
//! writer's live index of it.
//!
//! Replay reads each segment twice, through one reused buffer: first to find what
//! survives (later records cancel earlier ones), then to copy out just the bytes of the
//! surviving messages, so recovery never holds the whole journal in memory next to the
//! messages it restores.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

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

/// A stored message that survived replay: where its bytes are.
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

impl Segments {
    pub(super) fn recover(dir: &Path, segment_max: u64) -> Result<(Self, Recovered), String> {
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
        };
        journal.total = journal.segs.values().map(|s| s.size).sum();
        drop(bytes);
        // Second pass: the survivors' bytes, segment by segment.
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
            // A buffer of its own per segment, handed out in slices: no copy per
            // message. It is freed once every message read from it has been decoded
            // (the decoder copies what it keeps).
            let mut buf = Vec::new();
            read_segment(&path, &mut buf)?;
            let segment = Bytes::from(buf);
            for sv in survivors {
                // The range is from the first read of this file: trusted only if it fits.
                if segment.get(sv.range.clone()).is_none() {
                    out.repairs.push(format!(
                        "message {} of queue {} skipped: outside its segment {:016x}",
                        sv.seq, sv.queue, sv.loc.seg
                    ));
                    continue;
                }
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
                    bytes: segment.slice(sv.range),
                    deliveries: sv.deliveries,
                    redelivered: sv.deliveries > 0 || !clean,
                });
            }
        }
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
