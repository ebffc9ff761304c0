//! The process's open-file limit, and a reserve descriptor for refusing connections
//! once it is reached.
//!
//! Every connection is a descriptor. A process starts with the soft limit its parent
//! gave it (often 1,024) while the hard limit may be far higher: [`raise`] takes the
//! soft limit up to the hard one at start, so the limit that counts is the one the
//! system administrator set, and the start-up log says what it allows.
//!
//! At the limit, `accept` fails with EMFILE and the connection stays in the listen
//! queue: the client waits without an answer, and the listener, still readable, fails
//! again at once. So one descriptor is kept open on `/dev/null` ([`keep_reserve`]):
//! when an accept fails for lack of descriptors, the listener closes the reserve,
//! accepts the waiting connection with the descriptor that frees, tells it the server
//! is full and closes it, then takes the reserve again (`listener::accept_next`).

use std::fs::File;
use std::sync::{Mutex, PoisonError};

/// The open-file limit as [`raise`] left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit in force (what `accept` runs into).
    pub soft: u64,
    /// The hard limit (what the soft one may be raised to without privileges).
    pub hard: u64,
    /// The soft limit the process was started with.
    pub was: u64,
}

/// Raises the soft open-file limit to the hard limit (to `fs.nr_open` when the hard
/// limit is unlimited: the kernel refuses more), and says what it is now.
pub fn raise() -> std::io::Result<FileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = lim.rlim_cur;
    let mut want = lim.rlim_max;
    if want == libc::RLIM_INFINITY {
        want = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if want > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = want;
    }
    Ok(FileLimit {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
        was,
    })
}

/// The soft open-file limit in force; `None` when unlimited or unknown.
pub fn soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Descriptors open in this process now (entries of `/proc/self/fd`, less the one
/// reading it); `None` where that cannot be read.
pub fn open_now() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

static RESERVE: Mutex<Option<File>> = Mutex::new(None);

/// Opens the reserve descriptor if it is not open; whether it is open now.
pub fn keep_reserve() -> bool {
    let mut r = RESERVE.lock().unwrap_or_else(PoisonError::into_inner);
    if r.is_none() {
        *r = File::open("/dev/null").ok();
    }
    r.is_some()
}

/// Closes the reserve descriptor, freeing one for the caller; whether there was one.
pub fn release_reserve() -> bool {
    RESERVE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .is_some()
}

/// Whether an error says the process (EMFILE) or the system (ENFILE) is out of file
/// descriptors.
pub fn is_out_of_files(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_released_once_and_taken_again() {
        assert!(keep_reserve());
        assert!(keep_reserve(), "kept: opening again is a no-op");
        assert!(release_reserve());
        assert!(!release_reserve(), "nothing left to release");
        assert!(keep_reserve());
    }

    #[test]
    fn raise_leaves_the_soft_limit_at_the_hard_one() {
        let l = raise().unwrap();
        assert!(l.soft >= l.was);
        assert!(l.hard == libc::RLIM_INFINITY || l.soft == l.hard);
        assert!(open_now().unwrap() >= 3, "stdin, stdout, stderr at least");
    }

    #[test]
    fn emfile_and_enfile_are_out_of_files() {
        assert!(is_out_of_files(&std::io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(is_out_of_files(&std::io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_out_of_files(&std::io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
