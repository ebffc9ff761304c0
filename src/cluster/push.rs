//! `switchboard routes push`: publishes a validated route directory as the cluster's
//! new route table (a new revision of `SB_ROUTES`/`table`). Validation is the caller's
//! (the same read and compile as `switchboard check`); [`blob_of`] gathers the route
//! files and the schema files their routes read, and [`push`] stores them.

use std::path::Path;

use super::connection::{self, MAX_TABLE_BYTES, TABLE_KEY};
use super::table::TableBlob;
use crate::config::ClusterSettings;
use crate::routes::received::SchemaDirs;
use crate::routes::{CompileContext, RouteError, RouteTable};

/// The blob of the routes directory `dir`: its route files (`sources`, as `check` read
/// them) and every schema file `table` (compiled from them) read. It is then compiled as
/// each router will compile it, from the blob alone, so a table that only compiles with
/// the pushing machine's directory (a schema reached through a link, whose `$ref`s
/// resolve elsewhere) is refused here rather than on every router.
pub fn blob_of(
    dir: &Path,
    sources: &[(String, String)],
    table: &RouteTable,
    ctx: &CompileContext,
) -> Result<TableBlob, Vec<RouteError>> {
    let blob = TableBlob::from_sources(sources)
        .with_schema_files(dir, &table.schema_files)
        .map_err(|message| {
            vec![RouteError {
                file: dir.display().to_string(),
                line: 0,
                column: 0,
                route: None,
                message,
            }]
        })?;
    let received = blob.clone().into_received();
    let compile_ctx = CompileContext {
        schema_dir: None,
        ..ctx.clone()
    };
    SchemaDirs::temporary().compile(&received, &compile_ctx)?;
    Ok(blob)
}

/// Stores `blob` as the new table; returns its revision (the version every router will
/// show).
pub async fn push(settings: &ClusterSettings, blob: &TableBlob) -> Result<u64, String> {
    let bytes = blob.encode();
    if bytes.len() > MAX_TABLE_BYTES {
        return Err(format!(
            "the route table is {} bytes (route files {}, schema files {}); the cluster takes at most {MAX_TABLE_BYTES} (SB_ROUTES' largest value): remove routes, comments or schema files",
            bytes.len(),
            text_bytes(blob.files.values()),
            text_bytes(blob.schemas.values()),
        ));
    }
    let client = connection::connect(settings, "switchboard routes push").await?;
    let js = async_nats::jetstream::new(client.clone());
    let kv = connection::routes_bucket(&js, settings, &client).await?;
    let revision = kv
        .put(TABLE_KEY, bytes.into())
        .await
        .map_err(|e| format!("cannot store the route table: {e}"))?;
    client.flush().await.ok();
    Ok(revision)
}

/// The bytes of some texts (before JSON escaping).
fn text_bytes<'a>(texts: impl Iterator<Item = &'a String>) -> usize {
    texts.map(String::len).sum()
}
