//! Temporary queues (`/temp-queue/NAME`): one per name and connection, made when the
//! connection first sends to one or names it in `reply-to`, and consumed by the
//! connection itself (its MESSAGEs carry the name as the client wrote it).

use std::sync::Arc;

use super::connection::Connection;
use super::fatal::{Fatal, fatal};
use super::subscribe::{AckPolicy, Sub};
use super::transport::Transport;
use crate::core::{ConsumeOptions, QueueOptions};
use crate::translate::stomp_names::TEMP_PREFIX;

impl<T: Transport> Connection<T> {
    /// The internal name of the connection's temporary queue `name`, made and
    /// subscribed to on first use.
    pub(super) async fn ensure_temp(&mut self, name: &str) -> Result<String, Fatal> {
        if let Some(q) = self.temp.get(name) {
            return Ok(q.clone());
        }
        let core = self.shared.router.core().clone();
        // 128 random bits: a temporary queue's name cannot be guessed.
        let token = crate::random::hex_token(16).map_err(|e| {
            tracing::error!(error = %e, "no randomness for a temporary queue name");
            fatal(
                "temporary queue unavailable",
                "the server could not create a temporary queue",
            )
        })?;
        let internal = format!("{TEMP_PREFIX}{token}.{name}");
        let opts = QueueOptions {
            durable: false,
            auto_delete: true,
            ..core.config().default_queue.clone()
        };
        core.declare_queue(&internal, Some(opts))
            .map_err(|e| fatal("invalid destination", e.to_string()))?;
        let consumer = core
            .consume(
                &internal,
                ConsumeOptions::auto_ack(self.shared.settings.default_prefetch)
                    .with_notify(Arc::clone(&self.notify))
                    .with_budget(Arc::clone(&self.budget)),
            )
            .map_err(|e| fatal("invalid destination", e.to_string()))?;
        let sub_id = format!("/temp-queue/{name}");
        self.subs.insert(
            sub_id.clone(),
            Sub {
                dest: sub_id,
                consumer,
                ack: AckPolicy::Auto,
                temp: true,
                durable: None,
            },
        );
        self.temp.insert(name.to_owned(), internal.clone());
        Ok(internal)
    }
}
