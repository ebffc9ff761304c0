//! Claims: records that one router at a time owns, shared by every router (clustered,
//! the MQTT sessions: who serves a client id, and its subscriptions).
//!
//! A record is a key, an opaque value, the router that wrote it last and a revision
//! that increases with every write. A write names the revision it was read at and is
//! refused ([`ClaimError::Changed`]) when another write came in between: so two
//! routers claiming one key both read revision `r`, one writes `r + 1`, the other is
//! refused, reads again and writes `r + 2` — one claim after the other, never both at
//! once, and every router sees them in that order through [`Claims::watch`]. No lease:
//! a router that died does not hold its records, the next claim simply replaces it;
//! [`Claims::live_nodes`] tells which routers are alive, so that the others can take
//! over what a dead router's records still promised (MQTT wills, session expiry).
//!
//! Alone, a router has no claims ([`super::Shared::claims`] is `None`) and keeps what
//! it needs in its own store.

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// A record as the cluster keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The router that wrote it (its cluster node name).
    pub node: String,
    /// Increases with every write of any key; what a later write names.
    pub revision: u64,
    /// The owner's data, as it wrote it.
    pub value: Bytes,
}

/// Why a claim was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// The record changed since the revision named: read it again.
    Changed,
    /// The cluster could not be asked (why).
    Unavailable(String),
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Changed => f.write_str("the record changed meanwhile"),
            Self::Unavailable(e) => write!(f, "the cluster cannot be asked: {e}"),
        }
    }
}

/// A change of a record, as every router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimChange {
    pub key: String,
    /// The revision of the change.
    pub revision: u64,
    /// The router that wrote it; `None` when the record was removed.
    pub node: Option<String>,
}

/// Claimed records shared by the routers of a cluster. See the module docs.
pub trait Claims: Send + Sync + std::fmt::Debug {
    /// This router's name, as records written here carry it.
    fn node(&self) -> &str;

    /// The record of `key`: `Ok(None)` when there is none, `Err` when the cluster cannot
    /// answer. A removed record reads as a [`Claim`] with an empty `node` and value
    /// (its revision is what the next write names).
    fn read(&self, key: &str) -> BoxFuture<'static, Result<Option<Claim>, ClaimError>>;

    /// Writes `value` as this router's record of `key`, if the record is still at
    /// `revision` (0: there never was one). The new revision.
    fn write(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'static, Result<u64, ClaimError>>;

    /// Removes the record of `key` if it is still at `revision`.
    fn remove(&self, key: &str, revision: u64) -> BoxFuture<'static, Result<(), ClaimError>>;

    /// The routers of the cluster alive now (their names, as [`Claim::node`] has them).
    /// A router is dead once it has stopped announcing itself for a while (a crash, a
    /// partition); one that stopped cleanly leaves at once.
    fn live_nodes(&self) -> BoxFuture<'static, Result<Vec<String>, ClaimError>>;

    /// Every change from now on, in revision order, this router's own included (for
    /// as long as the receiver is kept).
    fn watch(&self) -> mpsc::UnboundedReceiver<ClaimChange>;
}
