//! The data directory's lock, so two routers never write one journal.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// An exclusive lock on `dir/lock`, held until [`DirLock::release`] or drop.
#[derive(Debug)]
pub(super) struct DirLock(Mutex<Option<File>>);

impl DirLock {
    /// Takes the lock. A directory where the lock file cannot even be created
    /// (read-only) is not locked: nothing will be written to it.
    pub(super) fn acquire(dir: &Path) -> Result<Self, String> {
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
                Err(_) => return Ok(Self(Mutex::new(None))),
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
        Ok(Self(Mutex::new(Some(file))))
    }

    /// Done with the directory: another store (or router) may open it now.
    pub(super) fn release(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}
