//! One route file of the cluster's table changed over the admin API (`PUT`/`DELETE
//! /routes/files/NAME` on a clustered router): the table is read with its revision, the
//! edit applied to its route files (its schema files stay as they are: the edited table
//! is checked against them, so a route may name any schema the table carries), checked by
//! the caller like `switchboard check`, and stored
//! only if nobody pushed meanwhile (a compare-and-set on the revision read), so two
//! editors on two routers cannot undo each other's change without noticing. Every router,
//! this one included, then swaps the new revision in through its watch
//! ([`follow`](super::follow)), exactly as after `switchboard routes push`.

use async_nats::jetstream::kv;

use super::connection::{MAX_TABLE_BYTES, TABLE_KEY};
use super::node::Cluster;
use super::table::TableBlob;
use crate::routes::RouteError;
use crate::routes::received::Received;

/// Why an edit of the cluster's table was not stored.
#[derive(Debug)]
pub enum TableEditError {
    /// `DELETE` of a file the table does not have.
    NoSuchFile(String),
    /// The edited table does not compile: `check`'s errors.
    Invalid(Vec<RouteError>),
    /// The edited table is larger than the bucket takes.
    TooLarge(usize),
    /// Someone stored another revision since this one was read.
    Conflict(String),
    /// NATS did not answer, or refused.
    Unavailable(String),
}

impl Cluster {
    /// Reads the table, applies the edit (`text: None` removes `name`), runs `check` on
    /// the result (route files in evaluation order, and the table's schema files) and
    /// stores it if the table is still the revision read. Returns the new revision.
    pub async fn edit_table(
        &self,
        name: &str,
        text: Option<String>,
        check: impl FnOnce(Received) -> Result<(), Vec<RouteError>> + Send + 'static,
    ) -> Result<u64, TableEditError> {
        let kv = self.routes_kv();
        let entry = kv.entry(TABLE_KEY).await.map_err(|e| {
            TableEditError::Unavailable(format!("cannot read the cluster's route table: {e}"))
        })?;
        let read_at = entry.as_ref().map(|e| e.revision);
        let mut blob = match entry.filter(|e| e.operation == kv::Operation::Put) {
            Some(e) => TableBlob::parse(&e.value, e.revision).map_err(TableEditError::Invalid)?,
            None => TableBlob::default(),
        };
        let files = &mut blob.files;
        match text {
            Some(t) => {
                files.insert(name.to_owned(), t);
            }
            None => {
                if files.remove(name).is_none() {
                    return Err(TableEditError::NoSuchFile(name.to_owned()));
                }
            }
        }
        let edited = blob.clone().into_received();
        tokio::task::spawn_blocking(move || check(edited))
            .await
            .map_err(|e| TableEditError::Unavailable(e.to_string()))?
            .map_err(TableEditError::Invalid)?;
        let blob = blob.encode();
        if blob.len() > MAX_TABLE_BYTES {
            return Err(TableEditError::TooLarge(blob.len()));
        }
        match read_at {
            Some(revision) => {
                kv.update(TABLE_KEY, blob.into(), revision)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => conflict(),
                        _ => TableEditError::Unavailable(format!(
                            "cannot store the route table: {e}"
                        )),
                    })
            }
            None => kv
                .create(TABLE_KEY, blob.into())
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => conflict(),
                    _ => TableEditError::Unavailable(format!("cannot store the route table: {e}")),
                }),
        }
    }
}

fn conflict() -> TableEditError {
    TableEditError::Conflict(
        "the cluster's route table changed while this edit was checked (another push or edit): read it again and retry".into(),
    )
}
