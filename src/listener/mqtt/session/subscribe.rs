//! SUBSCRIBE and UNSUBSCRIBE: filters, shared groups, `$queue/NAME`, retained messages.

use std::sync::Arc;

use super::connect::session_queue_options;
use super::connection::{Connection, Source};
use super::end::End;
use super::reason_code;
use super::transport::Transport;
use crate::auth::Kind;
use crate::core::{ConsumeOptions, Destination, Pattern, QueueOptions};
use crate::listener::mqtt::codec::{Out, SubOpts, Version};
use crate::listener::mqtt::convert::RETAINED_HEADER;
use crate::listener::mqtt::state::Sub;
use crate::translate::mqtt_names::{self, QUEUE_PREFIX, session_queue, shared_queue};

impl<T: Transport> Connection<T> {
    pub(super) async fn on_subscribe(
        &mut self,
        pid: u16,
        sub_id: Option<u32>,
        filters: Vec<(String, SubOpts)>,
    ) -> Result<(), End> {
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        let mut bound = std::collections::BTreeSet::new();
        for (filter, opts) in filters {
            let code = match self.subscribe_one(&filter, opts, sub_id) {
                Ok((granted, send_retained)) => {
                    let queue = self
                        .data()
                        .subs
                        .get(&filter)
                        .and_then(|s| s.shared_queue.clone())
                        .unwrap_or_else(|| session_queue(&self.client_id));
                    bound.insert(queue);
                    if let Some(pattern) = send_retained {
                        for (topic, m) in self.state.retained_matching(&pattern) {
                            retained.push((topic, m, granted, opts));
                        }
                    }
                    granted
                }
                Err(code) => {
                    tracing::info!(filter = %filter, code, "subscription refused");
                    code
                }
            };
            codes.push(code);
        }
        self.save_subscriptions().await;
        // The SUBACK promises the subscription: clustered, its bindings must be in force
        // on the other routers first (at once on a router alone).
        let core = self.state.router.core().clone();
        for queue in &bound {
            let _ = core.bindings_settled(queue).wait().await;
        }
        self.send(Out::SubAck {
            packet_id: pid,
            codes,
        })
        .await?;
        // Retained messages go through the session's own queue, after the SUBACK, so they
        // are flow-controlled, acknowledged and resent like any other delivery.
        let core = self.state.router.core().clone();
        let queue = session_queue(&self.client_id);
        for (topic, m, _granted, _opts) in retained {
            let mut copy = (*m).clone();
            copy.headers.set(RETAINED_HEADER, "1");
            if let Err(e) = core.enqueue(&queue, &Destination::topic(&topic), Arc::new(copy)) {
                crate::rate_warn!(RETAINED_NOT_QUEUED, topic = %topic, error = %e, "retained message not queued for the subscriber");
            }
        }
        self.flush().await?;
        self.deliver().await
    }

    /// Returns the granted QoS and, when retained messages are due, the pattern to
    /// look them up with.
    fn subscribe_one(
        &mut self,
        filter: &str,
        opts: SubOpts,
        sub_id: Option<u32>,
    ) -> Result<(u8, Option<Pattern>), u8> {
        let v5 = self.version == Version::V5;
        let invalid = if v5 {
            reason_code::TOPIC_FILTER_INVALID
        } else {
            reason_code::UNSPECIFIED
        };
        let (group, real) = match filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((g, f)) if !g.is_empty() && !g.contains(['+', '#']) && !f.is_empty() => {
                    (Some(g), f)
                }
                _ => return Err(invalid),
            },
            None => (None, filter),
        };
        // Each filter costs the router a binding (and, clustered, a NATS subscription):
        // a session holds at most `max_subscriptions` (replacing one is not a new one).
        let max = self.state.settings.max_subscriptions;
        if !self.data().subs.contains_key(filter) && self.data().subs.len() >= max {
            crate::rate_warn!(
                SUBSCRIPTIONS_FULL,
                client_id = &*self.client_id,
                max,
                "subscription refused: the session has as many as allowed"
            );
            return Err(if v5 {
                reason_code::QUOTA_EXCEEDED
            } else {
                reason_code::UNSPECIFIED
            });
        }
        let queue_sub = real.strip_prefix(QUEUE_PREFIX).filter(|_| group.is_none());
        let core = self.state.router.core().clone();
        let granted = opts.qos.min(2);
        let (pattern, shared_queue) = if let Some(q) = queue_sub {
            let p = Pattern::parse(q).map_err(|_| invalid)?;
            // The router's own queues ($sb.…, $mqtt.…) belong to other sessions.
            if q.starts_with('$') {
                return Err(reason_code::NOT_AUTHORIZED);
            }
            if !p.is_literal() || !self.principal.can_subscribe(Kind::Queue, &p) {
                return Err(if p.is_literal() {
                    reason_code::NOT_AUTHORIZED
                } else {
                    invalid
                });
            }
            (p, Some(q.to_owned()))
        } else {
            mqtt_names::validate_filter(real).map_err(|_| invalid)?;
            let p = Pattern::parse(&mqtt_names::filter_to_internal(real)).map_err(|_| invalid)?;
            if !self.principal.can_subscribe(Kind::Topic, &p) {
                return Err(reason_code::NOT_AUTHORIZED);
            }
            (p, group.map(|g| shared_queue(g, real)))
        };
        let existed = self.data().subs.contains_key(filter);
        match &shared_queue {
            None => {
                let queue = session_queue(&self.client_id);
                if !self
                    .consumers
                    .iter()
                    .any(|(s, _)| matches!(s, Source::Session))
                {
                    let opts = session_queue_options(&self.state, self.persistent);
                    let c = core
                        .declare_queue(&queue, Some(opts))
                        .and_then(|_| {
                            core.consume(
                                &queue,
                                ConsumeOptions::manual(usize::from(self.client_receive_max))
                                    .with_notify(Arc::clone(&self.notify)),
                            )
                        })
                        .map_err(|_| reason_code::UNSPECIFIED)?;
                    self.consumers.insert(0, (Source::Session, c));
                }
                core.bind(&queue, pattern.as_str())
                    .map_err(|_| reason_code::UNSPECIFIED)?;
            }
            Some(q) => {
                if !existed {
                    if queue_sub.is_none() {
                        let opts = QueueOptions {
                            max_length: self.state.settings.max_queued,
                            ..core.config().default_subscription.clone()
                        };
                        let opts = QueueOptions {
                            durable: true,
                            auto_delete: false,
                            ..opts
                        };
                        core.declare_queue(q, Some(opts)).map_err(|_| {
                            if v5 {
                                reason_code::SHARED_NOT_SUPPORTED
                            } else {
                                reason_code::UNSPECIFIED
                            }
                        })?;
                        core.bind(q, pattern.as_str())
                            .map_err(|_| reason_code::UNSPECIFIED)?;
                        self.state.share_join(q);
                    }
                    let c = core
                        .consume(
                            q,
                            ConsumeOptions::manual(usize::from(self.client_receive_max))
                                .with_notify(Arc::clone(&self.notify)),
                        )
                        .map_err(|_| reason_code::UNSPECIFIED)?;
                    self.consumers.push((Source::Shared(q.clone()), c));
                }
            }
        }
        self.data().subs.insert(
            filter.to_owned(),
            Sub {
                opts,
                pattern: pattern.clone(),
                shared_queue,
                subscription_id: sub_id,
            },
        );
        let send_retained = group.is_none()
            && queue_sub.is_none()
            && match opts.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
        Ok((granted, send_retained.then_some(pattern)))
    }

    pub(super) async fn on_unsubscribe(
        &mut self,
        pid: u16,
        filters: Vec<String>,
    ) -> Result<(), End> {
        let mut codes = Vec::new();
        for f in filters {
            let removed = self.data().subs.remove(&f);
            codes.push(match removed {
                None => reason_code::NO_SUBSCRIPTION_EXISTED,
                Some(sub) => {
                    match &sub.shared_queue {
                        None => {
                            let still = self
                                .data()
                                .subs
                                .values()
                                .any(|s| s.shared_queue.is_none() && s.pattern == sub.pattern);
                            if !still {
                                let _ = self
                                    .state
                                    .router
                                    .core()
                                    .unbind(&session_queue(&self.client_id), sub.pattern.as_str());
                            }
                        }
                        Some(q) => {
                            let retired =
                                self.retire_consumers(|s| matches!(s, Source::Shared(n) if n == q));
                            self.data().adopt(retired);
                            if crate::translate::mqtt_names::is_share_queue(q) {
                                self.state.share_leave(q);
                            }
                        }
                    }
                    reason_code::SUCCESS
                }
            });
        }
        self.save_subscriptions().await;
        self.send(Out::UnsubAck {
            packet_id: pid,
            codes,
        })
        .await?;
        self.flush().await
    }

    /// Makes a persistent session's subscriptions durable, before they are acknowledged
    /// (a failed write is logged; the acknowledgement still goes out).
    async fn save_subscriptions(&mut self) {
        if self.session_expiry == 0 {
            return;
        }
        let claim = self
            .state
            .sessions()
            .get(&*self.client_id)
            .and_then(|e| e.claim.clone());
        let write = {
            let d = self.data();
            super::super::persist::save_session(
                &self.state,
                &self.client_id,
                self.principal.name(),
                &d,
                self.session_expiry,
                None,
                self.will
                    .as_deref()
                    .map(|w| super::super::persist::WillRecord {
                        will: w,
                        user: self.principal.name(),
                        due: None,
                    }),
                claim.as_ref(),
            )
        };
        if let Some(w) = write
            && let Err(e) = w.wait().await
        {
            tracing::warn!(error = %e, "session subscriptions not stored durably");
        }
    }
}

/// Retained messages a subscriber's full queue could not take (see [`crate::ratelog`]).
static RETAINED_NOT_QUEUED: crate::ratelog::Cause =
    crate::ratelog::Cause::new("mqtt.retained_not_queued");
static SUBSCRIPTIONS_FULL: crate::ratelog::Cause =
    crate::ratelog::Cause::new("mqtt.subscriptions_full");
