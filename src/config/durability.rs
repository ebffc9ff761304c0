//! The `durability:` section: where and how persistent messages are kept.

use std::path::PathBuf;

use super::raw::RawDurability;
use super::{ConfigError, set_given};
use crate::duration::parse_duration;

/// Where and how persistent messages are kept.
#[derive(Debug, Clone)]
pub struct Durability {
    /// The store's directory; `None` keeps everything in memory (`--data-dir off`).
    pub data_dir: Option<PathBuf>,
    pub fsync: crate::store::FsyncPolicy,
    /// Bytes of queued messages above which publishers are blocked.
    pub memory_high_watermark: u64,
    /// Free bytes on the data directory's disk below which publishers are blocked.
    pub disk_free_limit: u64,
}

/// The data directory used when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "data";

impl Default for Durability {
    fn default() -> Self {
        Self {
            data_dir: Some(PathBuf::from(DEFAULT_DATA_DIR)),
            fsync: crate::store::FsyncPolicy::Always,
            memory_high_watermark: 1024 * 1024 * 1024,
            disk_free_limit: 50 * 1024 * 1024,
        }
    }
}

/// Parses `always` or `interval DURATION`.
pub fn parse_fsync(s: &str) -> Result<crate::store::FsyncPolicy, String> {
    let s = s.trim();
    if s == "always" {
        return Ok(crate::store::FsyncPolicy::Always);
    }
    match s.strip_prefix("interval") {
        Some(d) => {
            let d = parse_duration(d)?;
            if d.is_zero() {
                return Err("fsync interval must be more than 0".into());
            }
            Ok(crate::store::FsyncPolicy::Interval(d))
        }
        None => Err(format!(
            "`{s}`: expected `always` or `interval DURATION` (e.g. interval 10ms)"
        )),
    }
}

/// Applies `durability:` (the data directory comes from the command line, not the file).
pub(super) fn validate(
    raw: RawDurability,
    shown: &str,
    d: &mut Durability,
    errors: &mut Vec<ConfigError>,
) {
    if let Some(f) = &raw.fsync {
        match parse_fsync(f) {
            Ok(p) => d.fsync = p,
            Err(e) => errors.push(ConfigError(format!("{shown}: durability.fsync: {e}"))),
        }
    }
    set_given(&mut d.memory_high_watermark, raw.memory_high_watermark);
    set_given(&mut d.disk_free_limit, raw.disk_free_limit);
}
