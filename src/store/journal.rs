//! The journal: append-only segment files of checksummed records.
//!
//! A segment is `MAGIC` followed by records, each framed as `u32 length | u32 CRC-32 |
//! kind u8 | payload` (little-endian; length and CRC cover kind and payload). Records
//! are only ever appended, so a crash can at worst leave a partial record at the end of
//! the newest segment: recovery stops at the first record whose frame or checksum does
//! not hold, truncates the file there and logs what it cut (the "torn tail"). Everything
//! before it was written by complete batches.
//!
//! Payloads (`str` = u32 length + UTF-8, as in [`super::codec`]):
//! - 0 `Nop` (health probe)
//! - 1 `Append` queue `str`, seq u64, encoded message (rest)
//! - 2 `Remove` queue `str`, seq u64
//! - 3 `Delivered` queue `str`, seq u64, count u32
//! - 4 `DropQueue` queue `str`
//! - 5 `Put` namespace `str`, key `str`, value (rest)
//! - 6 `Delete` namespace `str`, key `str`
//! - 7 `Clean` (empty): written last by an orderly close. A journal whose last record is
//!   not this one was not closed cleanly (a crash), so delivery marks may be missing.

use std::path::{Path, PathBuf};

use super::codec::{Corrupt, Reader, put_str};

/// First bytes of every segment file.
pub(crate) const MAGIC: &[u8; 8] = b"SBJRNL01";

/// A segment is sealed and a new one started once it grows past this.
pub(crate) const SEGMENT_MAX: u64 = 64 * 1024 * 1024;

/// Largest record accepted on reading (a length beyond it is a torn or corrupt frame).
const RECORD_MAX: usize = 256 * 1024 * 1024;

const HEADER: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Nop,
    Append {
        queue: &'a str,
        seq: u64,
        message: &'a [u8],
    },
    Remove {
        queue: &'a str,
        seq: u64,
    },
    Delivered {
        queue: &'a str,
        seq: u64,
        count: u32,
    },
    DropQueue {
        queue: &'a str,
    },
    Put {
        ns: &'a str,
        key: &'a str,
        value: &'a [u8],
    },
    Delete {
        ns: &'a str,
        key: &'a str,
    },
    Clean,
}

impl<'a> Record<'a> {
    /// Appends the framed record to `out`; returns its framed length.
    pub(crate) fn frame(&self, out: &mut Vec<u8>) -> u32 {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER]);
        match *self {
            Record::Nop => out.push(0),
            Record::Append {
                queue,
                seq,
                message,
            } => {
                out.push(1);
                put_str(out, queue);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(message);
            }
            Record::Remove { queue, seq } => {
                out.push(2);
                put_str(out, queue);
                out.extend_from_slice(&seq.to_le_bytes());
            }
            Record::Delivered { queue, seq, count } => {
                out.push(3);
                put_str(out, queue);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            Record::DropQueue { queue } => {
                out.push(4);
                put_str(out, queue);
            }
            Record::Put { ns, key, value } => {
                out.push(5);
                put_str(out, ns);
                put_str(out, key);
                out.extend_from_slice(value);
            }
            Record::Delete { ns, key } => {
                out.push(6);
                put_str(out, ns);
                put_str(out, key);
            }
            Record::Clean => out.push(7),
        }
        let body = &out[start + HEADER..];
        let len = body.len() as u32;
        let crc = crc32fast::hash(body);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        (out.len() - start) as u32
    }

    fn decode(body: &'a [u8]) -> Result<Self, Corrupt> {
        let mut r = Reader::new(body);
        let rec = match r.u8()? {
            0 => Record::Nop,
            1 => Record::Append {
                queue: r.str()?,
                seq: r.u64()?,
                message: r.rest(),
            },
            2 => Record::Remove {
                queue: r.str()?,
                seq: r.u64()?,
            },
            3 => Record::Delivered {
                queue: r.str()?,
                seq: r.u64()?,
                count: r.u32()?,
            },
            4 => Record::DropQueue { queue: r.str()? },
            5 => Record::Put {
                ns: r.str()?,
                key: r.str()?,
                value: r.rest(),
            },
            6 => Record::Delete {
                ns: r.str()?,
                key: r.str()?,
            },
            7 => Record::Clean,
            _ => return Err(Corrupt("unknown record kind")),
        };
        if !r.rest().is_empty() {
            return Err(Corrupt("trailing bytes in record"));
        }
        Ok(rec)
    }
}

/// Where a segment's readable records end, when not at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Torn {
    /// Offset of the first bad byte.
    pub offset: u64,
    pub reason: &'static str,
}

/// Calls `f(record, offset, framed_len)` for each record of a segment's bytes, in order.
/// Returns where reading stopped early, if it did.
pub(crate) fn scan<'a>(bytes: &'a [u8], mut f: impl FnMut(Record<'a>, u64, u32)) -> Option<Torn> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Some(Torn {
            offset: 0,
            reason: "missing segment header",
        });
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let torn = |reason| {
            Some(Torn {
                offset: at as u64,
                reason,
            })
        };
        let Some(head) = bytes.get(at..at + HEADER) else {
            return torn("partial record header");
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > RECORD_MAX {
            return torn("impossible record length");
        }
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else {
            return torn("partial record");
        };
        if crc32fast::hash(body) != crc {
            return torn("checksum mismatch");
        }
        let Ok(rec) = Record::decode(body) else {
            return torn("undecodable record");
        };
        f(rec, at as u64, (HEADER + len) as u32);
        at += HEADER + len;
    }
    None
}

/// The file of segment `id`.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.journal"))
}

/// Segment ids present in `dir`, ascending.
pub(crate) fn segment_ids(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(hex) = name.strip_suffix(".journal")
            && hex.len() == 16
            && let Ok(id) = u64::from_str_radix(hex, 16)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        Record::Append {
            queue: "q",
            seq: 7,
            message: b"hello",
        }
        .frame(&mut out);
        Record::Delivered {
            queue: "q",
            seq: 7,
            count: 2,
        }
        .frame(&mut out);
        Record::Put {
            ns: "queue",
            key: "q",
            value: b"{}",
        }
        .frame(&mut out);
        Record::Remove { queue: "q", seq: 7 }.frame(&mut out);
        Record::Clean.frame(&mut out);
        out
    }

    #[test]
    fn records_round_trip_in_order() {
        let bytes = sample();
        let mut seen = Vec::new();
        assert_eq!(scan(&bytes, |r, _, _| seen.push(r)), None);
        assert_eq!(seen.len(), 5);
        assert_eq!(
            seen[0],
            Record::Append {
                queue: "q",
                seq: 7,
                message: b"hello"
            }
        );
        assert_eq!(seen[3], Record::Remove { queue: "q", seq: 7 });
        assert_eq!(seen[4], Record::Clean);
    }

    #[test]
    fn every_truncation_keeps_the_complete_records_and_reports_the_tear() {
        let bytes = sample();
        let mut ends = vec![MAGIC.len() as u64];
        scan(&bytes, |_, off, len| ends.push(off + u64::from(len)));
        for cut in MAGIC.len()..bytes.len() {
            let mut n = 0;
            let torn = scan(&bytes[..cut], |_, _, _| n += 1);
            let complete = ends.iter().filter(|e| **e <= cut as u64).count() - 1;
            assert_eq!(n, complete, "cut at {cut}");
            assert_eq!(
                torn.is_some(),
                !ends.contains(&(cut as u64)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_stops_the_scan_at_that_record() {
        let mut bytes = sample();
        let last = bytes.len() - 12;
        bytes[last] ^= 1;
        let mut n = 0;
        let torn = scan(&bytes, |_, _, _| n += 1).unwrap();
        assert_eq!(n, 3);
        assert_eq!(torn.reason, "checksum mismatch");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&b);
            let _ = scan(&bytes, |_, _, _| {});
        }
    }
}
