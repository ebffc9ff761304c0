//! The process's own resource use, read from `/proc/self` at scrape time (Linux): what
//! an operator alerts on before the kernel or the file-descriptor limit does it for them.

/// Resident set size in bytes: the second field of `/proc/self/statm` (pages) times the
/// page size.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| pages * p)
}

/// Open file descriptors: the entries of `/proc/self/fd`, less the one that lists them.
pub fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`); `None` when unlimited.
pub fn max_fds() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-buffer of the type getrlimit fills.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(r.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_figures() {
        let rss = resident_bytes().unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
        // stdin, stdout, stderr and the file just opened, at least.
        let f = std::fs::File::open("/proc/self/statm").unwrap();
        let open = open_fds().unwrap();
        drop(f);
        assert!(open >= 4, "{open}");
        assert!(max_fds().is_none_or(|m| m >= open));
    }
}
