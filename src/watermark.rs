//! The memory and disk watermarks: a task that measures, every [`EVERY`], the bytes
//! held by messages ([`Core::memory_bytes`]: ready in queues, delivered and not yet
//! acknowledged, retained by MQTT, buffered in open STOMP transactions) and the free
//! space on the data directory's file system, and
//! closes the core's publish gate ([`crate::core::flow::Flow`]) while either is past
//! its limit.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::Core;

/// How often the watermarks are checked.
pub const EVERY: Duration = Duration::from_millis(200);

/// Limits (0 turns one off).
#[derive(Debug, Clone)]
pub struct Watermarks {
    pub memory_high: u64,
    pub disk_free_limit: u64,
    pub data_dir: Option<PathBuf>,
}

/// Free bytes available to this process on the file system holding `path`.
pub fn free_space(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-buffer
    // that statvfs fills on success.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Why publishing should be blocked now, if it should.
pub fn check(core: &Core, w: &Watermarks) -> Option<String> {
    if w.memory_high > 0 {
        let held = core.memory_bytes();
        if held > w.memory_high {
            return Some(format!(
                "memory watermark: messages hold {} (limit {})",
                mib(held),
                mib(w.memory_high)
            ));
        }
    }
    if w.disk_free_limit > 0
        && let Some(dir) = &w.data_dir
    {
        match free_space(dir) {
            Ok(free) if free < w.disk_free_limit => {
                return Some(format!(
                    "disk watermark: {} free on {} (limit {})",
                    mib(free),
                    dir.display(),
                    mib(w.disk_free_limit)
                ));
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "free space unknown"),
        }
    }
    None
}

/// Runs the checks until `cancel` fires.
pub async fn run(core: Core, w: Watermarks, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => core.flow().set(check(&core, &w)),
        }
    }
}
