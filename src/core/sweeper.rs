//! TTL expiry across the core: queues drop or dead-letter expired messages lazily, when
//! they dispatch or run out of room; the sweeper also removes them from queues nobody
//! reads, so they are counted and their room freed on time.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Core;

impl Core {
    /// Removes expired messages from every queue now (also done lazily at dispatch).
    pub fn sweep_expired(&self) {
        let now = Instant::now();
        for q in self.all_queues() {
            let mut dead = Vec::new();
            q.expire(now, &mut dead);
            self.forward_dead(&q, dead);
        }
    }

    /// Runs [`Core::sweep_expired`] every `every` until `cancel` fires.
    pub fn spawn_sweeper(
        &self,
        every: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let core = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => core.sweep_expired(),
                }
            }
        })
    }
}
