//! The core's [`Claims`] over a KV bucket (`<prefix>SB_SESSIONS`; the links' records in
//! `<prefix>SB_LINKS` are another): one key per record
//! (an MQTT client id), written with JetStream's expected-last-revision check, so a
//! claim is a compare-and-set on the key's revision (docs/cluster.md, "MQTT sessions").
//!
//! - Key: the record's key escaped by [`names::kv_key`] (reversible: a watch gives back
//!   the key itself, also for a removal); a key whose escaped form is longer than
//!   [`names::MAX_KV_KEY`] is refused.
//! - Value: the writing router's node name, a newline, then the owner's data.
//!
//! The routers alive are the keys of `SB_NODES` (see [`super::membership`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::names;
use crate::core::shared::claims::{Claim, ClaimChange, ClaimError, Claims};

/// See the module docs.
#[derive(Debug)]
pub struct ClaimBucket {
    kv: kv::Store,
    /// `SB_NODES`: one key per router alive.
    nodes: kv::Store,
    node: String,
    runtime: tokio::runtime::Handle,
}

impl ClaimBucket {
    pub(super) fn new(
        kv: kv::Store,
        nodes: kv::Store,
        node: String,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Self {
            kv,
            nodes,
            node,
            runtime,
        })
    }
}

/// The KV key of `key` ([`names::kv_key`], as retained topics are keyed); a key too
/// long to be one is refused.
fn encode_key(key: &str) -> Result<String, ClaimError> {
    names::kv_key(key).ok_or_else(|| {
        ClaimError::Unavailable(format!(
            "a key of {} bytes is too long for the cluster (at most {} escaped)",
            key.len(),
            names::MAX_KV_KEY
        ))
    })
}

fn split_value(v: &Bytes) -> Option<(String, Bytes)> {
    let nl = v.iter().position(|b| *b == b'\n')?;
    let node = std::str::from_utf8(&v[..nl]).ok()?.to_owned();
    Some((node, v.slice(nl + 1..)))
}

fn unavailable(e: impl std::fmt::Display) -> ClaimError {
    ClaimError::Unavailable(e.to_string())
}

/// A refused write (or removal): [`ClaimError::Changed`] when the revision was not the
/// key's last.
fn update_error(e: kv::UpdateError) -> ClaimError {
    if is_wrong_revision(&e) {
        ClaimError::Changed
    } else {
        unavailable(e)
    }
}

/// Whether a KV write was refused because the key's revision was not the one named
/// (another router wrote it, or it expired meanwhile).
pub(super) fn is_wrong_revision(e: &kv::UpdateError) -> bool {
    e.kind() == kv::UpdateErrorKind::WrongLastRevision || wrong_last_sequence(e)
}

/// Whether JetStream refused the write for its expected last sequence: besides the
/// code the client maps (10071), servers answer 10164 when the key had no message yet
/// (expected revision 0), which the client reports as some other error.
fn wrong_last_sequence(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(js) = err.downcast_ref::<async_nats::jetstream::Error>()
            && matches!(js.error_code().0, 10071 | 10164)
        {
            return true;
        }
        next = err.source();
    }
    false
}

impl Claims for ClaimBucket {
    fn node(&self) -> &str {
        &self.node
    }

    fn read(&self, key: &str) -> BoxFuture<'static, Result<Option<Claim>, ClaimError>> {
        let kv = self.kv.clone();
        let key = encode_key(key);
        Box::pin(async move {
            let Some(e) = kv.entry(key?).await.map_err(unavailable)? else {
                return Ok(None);
            };
            if e.operation != kv::Operation::Put {
                return Ok(Some(Claim {
                    node: String::new(),
                    revision: e.revision,
                    value: Bytes::new(),
                }));
            }
            let (node, value) = split_value(&e.value).unwrap_or_default();
            Ok(Some(Claim {
                node,
                revision: e.revision,
                value,
            }))
        })
    }

    fn write(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'static, Result<u64, ClaimError>> {
        let kv = self.kv.clone();
        let key = encode_key(key);
        let mut v = BytesMut::with_capacity(self.node.len() + 1 + value.len());
        v.extend_from_slice(self.node.as_bytes());
        v.extend_from_slice(b"\n");
        v.extend_from_slice(&value);
        let v = v.freeze();
        Box::pin(async move { kv.update(key?, v, revision).await.map_err(update_error) })
    }

    fn remove(&self, key: &str, revision: u64) -> BoxFuture<'static, Result<(), ClaimError>> {
        let kv = self.kv.clone();
        let key = encode_key(key);
        Box::pin(async move {
            kv.delete_expect_revision(key?, Some(revision))
                .await
                .map_err(update_error)
        })
    }

    fn live_nodes(&self) -> BoxFuture<'static, Result<Vec<String>, ClaimError>> {
        let nodes = self.nodes.clone();
        Box::pin(async move {
            let mut keys = nodes.keys().await.map_err(unavailable)?;
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                out.push(key.map_err(unavailable)?);
            }
            Ok(out)
        })
    }

    fn watch(&self) -> mpsc::UnboundedReceiver<ClaimChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.runtime.spawn(follow(self.kv.clone(), tx));
        rx
    }
}

/// Forwards every change of the bucket until the receiver goes; a watch that fails is
/// made again from the revision after the last one seen, so none is missed.
async fn follow(kv: kv::Store, tx: mpsc::UnboundedSender<ClaimChange>) {
    let mut next: Option<u64> = None;
    loop {
        let watch = match next {
            None => kv.watch_all().await,
            Some(r) => kv.watch_all_from_revision(r).await,
        };
        match watch {
            Ok(mut w) => {
                while let Some(e) = w.next().await {
                    let Ok(e) = e else { break };
                    next = Some(e.revision + 1);
                    let Some(key) = names::from_kv_key(&e.key) else {
                        continue;
                    };
                    let node = (e.operation == kv::Operation::Put)
                        .then(|| split_value(&e.value).map(|(n, _)| n))
                        .flatten();
                    let change = ClaimChange {
                        key,
                        revision: e.revision,
                        node,
                    };
                    if tx.send(change).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot watch the sessions bucket; retrying")
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_long_ones_are_refused() {
        for k in ["", "a", "client-1", "a.b c/d_e=f", "é€", "$mqtt", ".x..y."] {
            let e = encode_key(k).unwrap();
            assert_eq!(names::from_kv_key(&e).as_deref(), Some(k), "{e}");
        }
        assert!(encode_key(&"é".repeat(names::MAX_KV_KEY)).is_err());
    }
}
