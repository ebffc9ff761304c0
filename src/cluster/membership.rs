//! Membership: each router keeps a key in `SB_NODES` (its node name) holding a
//! [`NodeRecord`], refreshed every [`REFRESH`]. The bucket's `max_age` drops the key of
//! a router that stopped refreshing it, so the keys present are the routers alive, with
//! no clock compared across machines. An orderly stop deletes the key at once.

use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// How often a router refreshes its key (the key lives `NODE_TTL`, three times as long).
pub const REFRESH: Duration = Duration::from_secs(2);

/// How long an admin query of the bucket may take (the connection may be down).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What a router says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub node: String,
    /// The router's own version (`switchboard --version`).
    pub version: String,
    /// The route table version in force there (the `SB_ROUTES` revision; 0: none yet).
    pub routes_version: u64,
    /// When the router started (Unix ms, its own clock: shown, never compared).
    pub started_at_unix_ms: u64,
    /// MQTT sessions this router serves now (clients connected to it), as of its last
    /// refresh.
    #[serde(default)]
    pub mqtt_sessions: u64,
}

impl NodeRecord {
    fn bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }
}

/// Takes this router's key; fails when another live router holds the name. A bucket
/// just created by another router may not answer for a moment (`503`): asked again for
/// a few seconds; a create that went through unanswered is recognised as ours.
pub async fn register(nodes: &kv::Store, record: &NodeRecord) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut retried = false;
    loop {
        match nodes.create(&record.node, record.bytes()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                if retried
                    && let Ok(Some(v)) = nodes.get(&record.node).await
                    && v == record.bytes()
                {
                    return Ok(());
                }
                return Err(format!(
                    "node name `{}` is taken: another router of the cluster runs under it (or this one stopped less than {}s ago without a clean shutdown)",
                    record.node,
                    super::connection::NODE_TTL.as_secs()
                ));
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "cluster: cannot register yet; asking again");
                retried = true;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(format!("cannot register node `{}`: {e}", record.node)),
        }
    }
}

/// Refreshes the key every [`REFRESH`] with what `record` returns, until `cancel`; then
/// deletes it. A failed refresh is logged once until one succeeds again.
pub async fn keep_alive(
    nodes: kv::Store,
    record: impl Fn() -> NodeRecord,
    cancel: CancellationToken,
) {
    let mut failing = false;
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let r = record();
        match nodes.put(&r.node, r.bytes()).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(node = %r.node, "cluster: membership key refreshed again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(node = %r.node, error = %e, "cluster: cannot refresh the membership key; other routers will drop this one after 6 s");
            }
            Err(_) => {}
        }
    }
    let node = record().node;
    if tokio::time::timeout(QUERY_TIMEOUT, nodes.delete(&node))
        .await
        .is_err()
    {
        tracing::warn!(%node, "cluster: could not delete the membership key on shutdown; it expires by itself");
    }
}

/// The routers whose keys are present now, sorted by name.
pub async fn list(nodes: &kv::Store) -> Result<Vec<NodeRecord>, String> {
    let mut keys = nodes.keys().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        // A key can expire between the listing and the read.
        if let Some(value) = nodes.get(&key).await.map_err(|e| e.to_string())?
            && let Ok(r) = serde_json::from_slice::<NodeRecord>(&value)
        {
            out.push(r);
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(out)
}
