//! Whether the file journal can be written: set by the writer after every batch and
//! probe, read by every publish (through [`super::Store::check`]) without touching the
//! disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub(super) struct Health {
    healthy: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Health {
    /// The state at open: healthy when the first write worked (only a failure is logged).
    pub(super) fn at_open(first_write: Result<(), String>) -> Self {
        let h = Self::default();
        match first_write {
            Ok(()) => h.healthy.store(true, Ordering::Release),
            Err(e) => h.set(&Err(e)),
        }
        h
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Why writes fail (only meaningful while not healthy).
    pub(super) fn error(&self) -> String {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "not writable".into())
    }

    /// Records the outcome of a write, logging each change (and each new error).
    pub(super) fn set(&self, r: &Result<(), String>) {
        let ok = r.is_ok();
        let was = self.healthy.swap(ok, Ordering::AcqRel);
        let mut e = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        match r {
            Ok(()) if !was => tracing::info!("store writable again; persistent publishes accepted"),
            Err(reason) if was || e.as_deref() != Some(reason) => {
                tracing::error!(error = %reason, "store write failed; persistent publishes are refused until it recovers")
            }
            _ => {}
        }
        *e = r.clone().err();
    }
}
