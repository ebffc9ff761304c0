//! Flow control above the watermarks: while memory held by queued messages, or free
//! disk space, is past its limit, publishes from the edges wait here. An edge that
//! awaits its publish stops reading its socket (STOMP, MQTT) or stops acknowledging
//! (AMQP link, so RabbitMQ stops delivering past the prefetch), which is the
//! protocol-level flow control RabbitMQ applies with its memory and disk alarms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

/// The publish gate; see the module docs.
#[derive(Debug, Default)]
pub struct Flow {
    blocked: AtomicBool,
    reason: Mutex<Option<String>>,
    open: Notify,
}

impl Flow {
    /// Waits while publishing is blocked.
    pub async fn wait_open(&self) {
        loop {
            let opened = self.open.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if !self.blocked.load(Ordering::Acquire) {
                return;
            }
            opened.await;
        }
    }

    /// Blocks publishing for `reason`, or opens it with `None`. Transitions are logged.
    pub fn set(&self, reason: Option<String>) {
        let mut r = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        match (&*r, &reason) {
            (None, Some(why)) => {
                tracing::warn!(reason = %why, "publishers blocked");
            }
            (Some(_), None) => {
                tracing::info!("below the watermarks again: publishers resumed");
            }
            (Some(old), Some(why)) if old != why => {
                tracing::warn!(reason = %why, "publishers still blocked");
            }
            _ => {}
        }
        self.blocked.store(reason.is_some(), Ordering::Release);
        *r = reason;
        drop(r);
        if !self.blocked.load(Ordering::Acquire) {
            self.open.notify_waiters();
        }
    }

    /// Why publishing is blocked, if it is.
    pub fn blocked(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
