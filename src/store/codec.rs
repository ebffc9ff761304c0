//! The byte primitives of what is stored: length-prefixed strings and a bounds-checked
//! cursor that never trusts a length it has not checked. The journal's records are
//! built from them, and so are the forms its users store in those records (the core's
//! encoded messages), so one reader serves both.
//!
//! `str` = u32 length (little-endian) + UTF-8; an optional `str` = `0u8` | `1u8 str`.

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored message is corrupt: {0}")]
pub struct Corrupt(pub &'static str);

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// A bounds-checked cursor over stored bytes.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b, at: 0 }
    }
    /// Where the next read starts.
    pub(crate) fn position(&self) -> usize {
        self.at
    }
    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let r = &self.b[self.at..];
        self.at = self.b.len();
        r
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.at.checked_add(n).ok_or(Corrupt("length overflow"))?;
        let s = self.b.get(self.at..end).ok_or(Corrupt("truncated"))?;
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| Corrupt("u32"))?,
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| Corrupt("u64"))?,
        ))
    }
    pub(crate) fn str(&mut self) -> Result<&'a str, Corrupt> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| Corrupt("invalid UTF-8"))
    }
    pub(crate) fn opt_str(&mut self) -> Result<Option<&'a str>, Corrupt> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(Corrupt("bad option tag")),
        }
    }
}
