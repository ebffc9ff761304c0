//! Following the cluster's route table: a watch on the `table` key of `SB_ROUTES`; each
//! new revision is compiled and swapped in through [`LiveRoutes::install`], exactly as a
//! local reload (a publish in progress finishes on the table it loaded; errors are
//! recorded like a failed reload's and the previous table stays). The revision is the
//! version shown in `GET /routes`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::connection::TABLE_KEY;
use super::table::TableBlob;
use crate::routes::reload::LiveRoutes;

/// Pause before watching again after the watch failed (the connection is down, or the
/// server refused): the client reconnects meanwhile.
const REWATCH: Duration = Duration::from_secs(1);

/// Watches the table until `cancel`; revisions at or below the version in force (the
/// table loaded at start-up) are skipped.
pub async fn follow(routes_kv: kv::Store, routes: Arc<LiveRoutes>, cancel: CancellationToken) {
    let mut seen = routes.status().version;
    loop {
        match routes_kv.watch_with_history(TABLE_KEY).await {
            Ok(mut watch) => loop {
                let entry = tokio::select! {
                    _ = cancel.cancelled() => return,
                    e = watch.next() => e,
                };
                match entry {
                    Some(Ok(e)) if e.revision > seen => {
                        seen = e.revision;
                        if e.operation != kv::Operation::Put {
                            tracing::warn!(
                                revision = e.revision,
                                "cluster: the route table was deleted; the table in force stays"
                            );
                            continue;
                        }
                        let routes = Arc::clone(&routes);
                        let _ = tokio::task::spawn_blocking(move || {
                            let table = TableBlob::decode(&e.value, e.revision);
                            routes.install("cluster push", e.revision, table)
                        })
                        .await;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "cluster: route table watch failed; watching again");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => tracing::debug!(error = %e, "cluster: cannot watch the route table yet"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(REWATCH) => {}
        }
    }
}
