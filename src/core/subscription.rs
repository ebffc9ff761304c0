//! Topic subscriptions: a subscription is a queue bound to patterns, so a publish to a
//! matching topic puts the message into it. A non-durable one is a private queue that
//! goes with its consumer; a durable one is a named queue that stays bound while its
//! subscriber is away.

use std::sync::Arc;

use super::consumer::{ConsumeOptions, Consumer};
use super::pattern::Pattern;
use super::queue::{Queue, QueueOptions};
use super::{Core, CoreError};

/// Prefix of the private queues behind non-durable subscriptions. Edges must not let
/// clients name queues with it.
pub const PRIVATE_PREFIX: &str = "$sb.";

impl Core {
    /// Binds a queue to a topic pattern: every publish to a matching topic is copied into it.
    pub fn bind(&self, queue: &str, pattern: &str) -> Result<(), CoreError> {
        let pattern = Pattern::parse(pattern)?;
        let q = self
            .queue(queue)
            .ok_or_else(|| CoreError::NoSuchQueue(queue.to_owned()))?;
        if self.inner.topics.bind(&q, pattern.clone()) {
            self.save_queue_meta(&q);
            self.bindings_changed(&q, &pattern, true);
        }
        Ok(())
    }

    /// Tells the cluster, if any, that local queue `q` gained or lost the binding to
    /// `pattern`: it counts as this router's interest (see [`super::shared`]). (A shared
    /// queue's log is given its whole new set by the topics, under their lock.)
    fn bindings_changed(&self, q: &Arc<Queue>, pattern: &Pattern, bound: bool) {
        if let Some(shared) = &self.inner.shared
            && !q.is_shared()
        {
            shared.interest(pattern, bound);
        }
    }

    /// Removes every binding of `q` (it is being deleted), telling the cluster.
    pub(super) fn unbind_all(&self, q: &Arc<Queue>) {
        let removed = self.inner.topics.unbind_all(q);
        if let Some(shared) = &self.inner.shared
            && q.shared().is_none()
        {
            for p in &removed {
                shared.interest(p, false);
            }
        }
    }

    /// Removes one binding. False when it did not exist.
    pub fn unbind(&self, queue: &str, pattern: &str) -> Result<bool, CoreError> {
        let pattern = Pattern::parse(pattern)?;
        let Some(q) = self.queue(queue) else {
            return Ok(false);
        };
        let removed = self.inner.topics.unbind(&q, &pattern);
        self.save_queue_meta(&q);
        if removed {
            self.bindings_changed(&q, &pattern, false);
        }
        Ok(removed)
    }

    /// The patterns a queue is bound to.
    pub fn bindings(&self, queue: &str) -> Vec<String> {
        self.inner.topics.patterns(queue)
    }

    /// A non-durable subscription: a private, auto-deleted queue bound to `patterns`.
    /// It holds messages only while the returned consumer lives.
    pub fn subscribe(
        &self,
        patterns: &[&str],
        options: ConsumeOptions,
    ) -> Result<Consumer, CoreError> {
        let parsed = parse_all(patterns)?;
        let name = format!("{PRIVATE_PREFIX}sub.{}", self.next_id());
        let q = self.declare_queue(&name, Some(self.inner.config.default_subscription.clone()))?;
        let consumer = self.attach(q, options)?;
        for p in &parsed {
            self.bind(&name, p.as_str())?;
        }
        Ok(consumer)
    }

    /// A durable subscription: the queue `name` bound to `patterns` (its bindings are
    /// replaced by exactly these). It keeps collecting messages (up to its limits) while
    /// no consumer is attached; [`Core::delete_queue`] ends it.
    pub fn subscribe_durable(
        &self,
        name: &str,
        patterns: &[&str],
        options: ConsumeOptions,
    ) -> Result<Consumer, CoreError> {
        let parsed = parse_all(patterns)?;
        let opts = self
            .inner
            .config
            .queues
            .get(name)
            .cloned()
            .unwrap_or_else(|| QueueOptions {
                durable: true,
                auto_delete: false,
                ..self.inner.config.default_subscription.clone()
            });
        let q = self.declare_queue(name, Some(opts))?;
        for old in self.bindings(name) {
            if !parsed.iter().any(|p| p.as_str() == old) {
                self.unbind(name, &old)?;
            }
        }
        for p in &parsed {
            self.bind(name, p.as_str())?;
        }
        self.attach(q, options)
    }

    /// The queues bound to patterns matching `topic`.
    pub(super) fn match_topic(&self, topic: &str) -> Arc<[Arc<Queue>]> {
        self.inner.topics.matching(topic)
    }

    /// How many subscriptions a publish to `topic` would reach now.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.match_topic(topic).len()
    }
}

/// Every pattern parsed, or the first that is not one.
fn parse_all(patterns: &[&str]) -> Result<Vec<Pattern>, CoreError> {
    Ok(patterns
        .iter()
        .map(|p| Pattern::parse(p))
        .collect::<Result<_, _>>()?)
}
