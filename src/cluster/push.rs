//! `switchboard routes push`: publishes a validated route directory as the cluster's
//! new route table (a new revision of `SB_ROUTES`/`table`). Validation is the caller's
//! (the same read and compile as `switchboard check`); this only stores the files.

use super::connection::{self, MAX_TABLE_BYTES, TABLE_KEY};
use super::table::TableBlob;
use crate::config::ClusterSettings;

/// Stores `sources` as the new table; returns its revision (the version every router
/// will show).
pub async fn push(settings: &ClusterSettings, sources: &[(String, String)]) -> Result<u64, String> {
    let blob = TableBlob::from_sources(sources).encode();
    if blob.len() > MAX_TABLE_BYTES {
        return Err(format!(
            "the route table is {} bytes; the cluster takes at most {MAX_TABLE_BYTES} (SB_ROUTES' largest value): remove routes or comments",
            blob.len()
        ));
    }
    let client = connection::connect(settings, "switchboard routes push").await?;
    let js = async_nats::jetstream::new(client.clone());
    let kv = connection::routes_bucket(&js, settings, &client).await?;
    let revision = kv
        .put(TABLE_KEY, blob.into())
        .await
        .map_err(|e| format!("cannot store the route table: {e}"))?;
    client.flush().await.ok();
    Ok(revision)
}
