//! systemd service notifications (`sd_notify(3)`), for units with `Type=notify`
//! (contrib/systemd/switchboard.service, docs/operations.md):
//!
//! - `READY=1` once the route table is loaded, the store recovered and every configured
//!   listener is bound and accepting (the same moment as the ready file and the
//!   "switchboard ready" log line), so `systemctl start` returns when clients can connect
//!   and units ordered `After=` it start then;
//! - `STOPPING=1` when a SIGTERM or SIGINT starts the orderly stop;
//! - `WATCHDOG=1` at half the unit's `WatchdogSec=` while the runtime runs its tasks: a
//!   runtime that stops scheduling (a deadlock, a blocked worker) stops the pings and
//!   systemd restarts the service.
//!
//! Each carries a `STATUS=` line that `systemctl status` shows. Without `NOTIFY_SOCKET`
//! (not started by systemd) nothing is sent. The datagrams go through the `sd-notify`
//! crate (no dependencies beyond `libc`, already in the build), not libsystemd.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Start-up is complete: clients can connect.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The orderly stop has begun.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining connections"),
    ]);
}

/// With a watchdog configured (`WATCHDOG_USEC` for this process), pings it at half its
/// interval until `cancel` fires. Call it first thing: the watchdog runs during start-up
/// too (store recovery can take seconds, off the runtime).
pub fn spawn_watchdog(cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(1));
    tracing::info!(?interval, ?every, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    });
}
