//! Clustered, a link's topology is declared by one router per change, not by every
//! router on every connection (docs/cluster.md, "Links").
//!
//! The cluster keeps a marker per link ([`crate::core::Core::link_records`], key
//! `amqp-topology.<link>`): a digest of what was declared (the routes' declarations
//! and the broker's address and vhost) and whether it is `declaring` or `declared`.
//! Every write is a compare-and-set on the marker's revision, so of routers that
//! start together (or see the same route change) exactly one claims the declaration:
//!
//! - marker `declared` with this digest: RabbitMQ should hold the topology. The
//!   router checks that it does with passive declarations of the exchanges and
//!   queues (they change nothing); a 404 (RabbitMQ restarted and lost non-durable
//!   objects, someone deleted one) makes the marker stale, and the router claims it;
//! - marker `declaring` with this digest: another router is at it; wait (poll) until
//!   it says `declared`, for up to [`PATIENCE`] — a router that died declaring is
//!   then taken over;
//! - anything else (no marker, another digest, a stale or abandoned one): claim it
//!   (`declaring`), declare, then mark it `declared` — or remove it if a declaration
//!   failed, so every router tries (and reports the failure on its own `/links`).
//!
//! When the cluster cannot be asked, the router declares, as it does alone.
//! Bindings cannot be checked passively: a binding deleted by hand between durable
//! objects comes back at the next topology change, not at the next connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use sha2::{Digest, Sha256};

use super::link::LinkCtx;
use super::topology::declare_now;
use crate::core::shared::claims::{ClaimError, Claims};
use crate::routes::spec::DeclareSpec;

/// How long a router waits for another one's declaration before taking it over.
const PATIENCE: Duration = Duration::from_secs(10);
/// How often the marker is read while another router declares.
const POLL: Duration = Duration::from_millis(100);

const DECLARING: &str = "declaring";
const DECLARED: &str = "declared";

/// The marker's key for link `name`.
fn key(name: &str) -> String {
    format!("amqp-topology.{name}")
}

/// What the topology is, as the marker names it: a digest of the broker's address and
/// vhost and of every declaration, in table order.
fn digest(ctx: &LinkCtx, specs: &[(&str, &DeclareSpec)]) -> String {
    let u = &ctx.settings.uri;
    let broker = format!("{}:{}/{}", u.authority.host, u.authority.port, u.vhost);
    let specs: Vec<&DeclareSpec> = specs.iter().map(|(_, s)| *s).collect();
    let json = serde_json::to_vec(&(broker, specs)).unwrap_or_default();
    let d = Sha256::digest(&json);
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn marker(state: &str, digest: &str) -> Bytes {
    Bytes::from(format!("{state} {digest}"))
}

/// The marker's state when it is about `digest`.
fn state_of<'a>(value: &'a [u8], digest: &str) -> Option<&'a str> {
    let (state, d) = std::str::from_utf8(value).ok()?.split_once(' ')?;
    (d == digest).then_some(state)
}

/// Declares `specs` unless another router of the cluster has (see the module docs).
pub(super) async fn declare(
    ctx: &Arc<LinkCtx>,
    conn: &Connection,
    records: &dyn Claims,
    specs: &[(&str, &DeclareSpec)],
) {
    let key = key(&ctx.settings.name);
    let digest = digest(ctx, specs);
    // The revision of a `declaring` marker seen, and since when.
    let mut waiting: Option<(u64, Instant)> = None;
    loop {
        let current = match records.read(&key).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's AMQP topology marker; declaring");
                declare_now(ctx, conn, specs).await;
                return;
            }
        };
        let revision = current.as_ref().map_or(0, |c| c.revision);
        let by = current.as_ref().map_or("", |c| c.node.as_str());
        match current.as_ref().and_then(|c| state_of(&c.value, &digest)) {
            Some(DECLARED) => match verify(conn, specs).await {
                Ok(()) => {
                    tracing::info!(
                        by,
                        "AMQP topology is in place (declared once for the cluster)"
                    );
                    ctx.status.set_topology(BTreeMap::new());
                    return;
                }
                Err(e) => {
                    tracing::info!(error = %e, "AMQP topology marked declared is missing in RabbitMQ; declaring it again");
                }
            },
            Some(DECLARING) => {
                let since = match waiting {
                    Some((r, t)) if r == revision => t,
                    _ => {
                        let now = Instant::now();
                        waiting = Some((revision, now));
                        now
                    }
                };
                if since.elapsed() < PATIENCE {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                tracing::warn!(
                    by,
                    "a router has been declaring the AMQP topology for too long; taking over"
                );
            }
            _ => {}
        }
        match records
            .write(&key, marker(DECLARING, &digest), revision)
            .await
        {
            Ok(claimed) => {
                let done = if declare_now(ctx, conn, specs).await {
                    records
                        .write(&key, marker(DECLARED, &digest), claimed)
                        .await
                        .map(drop)
                } else {
                    records.remove(&key, claimed).await
                };
                if let Err(e) = done {
                    tracing::warn!(error = %e, "cannot record the AMQP topology declared in the cluster");
                }
                return;
            }
            // Another router claimed it first: see what it wrote.
            Err(ClaimError::Changed) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the cluster's AMQP topology marker; declaring");
                declare_now(ctx, conn, specs).await;
                return;
            }
        }
    }
}

/// Whether RabbitMQ has every exchange and queue of `specs` (passive declarations,
/// on a channel of their own: the first 404 closes it).
async fn verify(conn: &Connection, specs: &[(&str, &DeclareSpec)]) -> Result<(), String> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    let result = async {
        for (_, spec) in specs {
            for x in &spec.exchanges {
                let passive = ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                };
                ch.exchange_declare(
                    x.name.as_str().into(),
                    ExchangeKind::Direct,
                    passive,
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("exchange `{}`: {e}", x.name))?;
            }
            for q in &spec.queues {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                ch.queue_declare(q.name.as_str().into(), passive, FieldTable::default())
                    .await
                    .map_err(|e| format!("queue `{}`: {e}", q.name))?;
            }
        }
        Ok(())
    }
    .await;
    if ch.status().connected() {
        let _ = ch.close(200, "checked".into()).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_counts_only_for_its_own_digest() {
        let m = marker(DECLARED, "abc");
        assert_eq!(state_of(&m, "abc"), Some(DECLARED));
        assert_eq!(state_of(&m, "abd"), None);
        assert_eq!(state_of(b"", "abc"), None);
        assert_eq!(state_of(&marker(DECLARING, "abc"), "abc"), Some(DECLARING));
    }
}
