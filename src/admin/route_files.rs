//! `PUT /routes/files/NAME` and `DELETE /routes/files/NAME`: route files managed over the
//! admin API. The files stay the source of truth: a change is compiled with the rest of
//! the directory exactly as `switchboard check` would (400 with every error, nothing
//! written), then written atomically (a dot-file beside it, which the loader skips,
//! fsynced and renamed over the name) and reloaded at once; the file watcher sees the
//! same change and finds nothing new. The answer carries the version in force.
//!
//! Admin callers only: on a router without admin users or tokens (loopback access) the
//! API can read and reload, not write files (403).
//!
//! A clustered router edits the cluster's table instead (its routes directory is not
//! read): the same check, then a compare-and-set on the revision it read
//! ([`Cluster::edit_table`](crate::cluster::Cluster::edit_table); 409 when another push
//! or edit came first), and the answer once this router runs the new revision, which
//! every other router swaps in as after `switchboard routes push`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{AdminState, Caller};
use crate::cluster::TableEditError;
use crate::routes::received::Received;
use crate::routes::reload::ReloadOutcome;

/// One edit at a time: check, write and reload are one step for each request.
static EDITS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Answer = (StatusCode, Json<Value>);

fn refusal(status: StatusCode, error: impl Into<String>) -> Answer {
    (status, Json(json!({ "error": error.into() })))
}

/// A file name the loader reads (`*.yaml`/`*.yml`, not hidden) and nothing else: no
/// path separators, only letters, digits, `.`, `_` and `-`.
fn valid_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty()
        || name.len() > 200
        || !ok_chars
        || name.starts_with('.')
        || !(name.ends_with(".yaml") || name.ends_with(".yml"))
    {
        return Err(format!(
            "`{name}` is not a route file name: letters, digits, `.`, `_`, `-`, ending in .yaml or .yml, not starting with `.`"
        ));
    }
    Ok(())
}

/// What every handler checks first: an admin and a name.
fn allowed(caller: Caller, name: &str) -> Result<(), Answer> {
    if caller != Caller::Admin {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "writing route files needs an admin user or token (auth: admin users or admin_tokens)",
        ));
    }
    valid_name(name).map_err(|e| refusal(StatusCode::BAD_REQUEST, e))
}

/// `PUT /routes/files/NAME` with the file's text as the body.
pub(super) async fn put_file(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    text: String,
) -> Answer {
    if let Err(a) = allowed(caller, &name) {
        return a;
    }
    edit(s, name, Some(text)).await
}

/// `DELETE /routes/files/NAME`.
pub(super) async fn delete_file(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Answer {
    if let Err(a) = allowed(caller, &name) {
        return a;
    }
    edit(s, name, None).await
}

/// Check, write (or remove) and reload, under [`EDITS`], off the async workers.
async fn edit(s: AdminState, name: String, text: Option<String>) -> Answer {
    let _one = EDITS.lock().await;
    if let Some(cluster) = s.cluster.clone() {
        return edit_cluster(&s, &cluster, name, text).await;
    }
    let routes = Arc::clone(&s.routes);
    let done = tokio::task::spawn_blocking(move || {
        let path = routes.dir().join(&name);
        if text.is_none() && !path.is_file() {
            return refusal(StatusCode::NOT_FOUND, format!("no route file `{name}`"));
        }
        if let Err(errors) = routes.check_edit(&name, text.as_deref()) {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "errors": errors, "version": routes.status().version })),
            );
        }
        let written = match &text {
            Some(t) => write_atomic(&path, t),
            None => std::fs::remove_file(&path),
        };
        if let Err(e) = written {
            return refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write `{name}`: {e}"),
            );
        }
        let trigger = format!(
            "admin api: {} {name}",
            if text.is_some() { "PUT" } else { "DELETE" }
        );
        match routes.reload(&trigger) {
            Ok(ReloadOutcome::Swapped { version, .. } | ReloadOutcome::Unchanged { version }) => (
                StatusCode::OK,
                Json(json!({ "file": name, "version": version, "routes": routes.status().routes })),
            ),
            // The directory changed between the check and the reload (another editor):
            // the file is written, the table in force stays.
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                (
                    StatusCode::CONFLICT,
                    Json(json!({ "errors": errors, "version": routes.status().version })),
                )
            }
        }
    })
    .await;
    done.unwrap_or_else(|e| refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// How long a clustered edit's answer waits for this router to run the stored revision
/// (its watch usually brings it within milliseconds).
const IN_FORCE_WAIT: Duration = Duration::from_secs(10);

/// [`edit`] on a clustered router: the cluster's table, checked with this router's
/// settings, stored by compare-and-set; answered once this router runs it.
async fn edit_cluster(
    s: &AdminState,
    cluster: &crate::cluster::Cluster,
    name: String,
    text: Option<String>,
) -> Answer {
    let routes = Arc::clone(&s.routes);
    let check = move |table: Received| routes.check_received(&table);
    let revision = match cluster.edit_table(&name, text, check).await {
        Ok(r) => r,
        Err(e) => {
            let version = s.routes.status().version;
            return match e {
                TableEditError::Invalid(errors) => {
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    (
                        StatusCode::BAD_REQUEST,
                        Json(json!({ "errors": errors, "version": version })),
                    )
                }
                TableEditError::NoSuchFile(n) => refusal(
                    StatusCode::NOT_FOUND,
                    format!("no route file `{n}` in the cluster's table"),
                ),
                TableEditError::TooLarge(n) => refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the route table would be {n} bytes; the cluster takes at most {}",
                        crate::cluster::connection::MAX_TABLE_BYTES
                    ),
                ),
                TableEditError::Conflict(why) => refusal(StatusCode::CONFLICT, why),
                TableEditError::Unavailable(why) => refusal(StatusCode::SERVICE_UNAVAILABLE, why),
            };
        }
    };
    let deadline = tokio::time::Instant::now() + IN_FORCE_WAIT;
    loop {
        let status = s.routes.status();
        if status.version >= revision {
            return (
                StatusCode::OK,
                Json(json!({ "file": name, "version": revision, "routes": status.routes })),
            );
        }
        if tokio::time::Instant::now() >= deadline {
            return (
                StatusCode::ACCEPTED,
                Json(json!({
                    "file": name,
                    "version": revision,
                    "error": "stored in the cluster's table; this router does not run it yet (see GET /routes and GET /cluster)",
                })),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `text` to a hidden file beside `path`, syncs it and renames it over `path`, so
/// the loader sees the old file or the new one, never half of one.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("routes");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_plain_route_files() {
        assert!(valid_name("10-orders.yaml").is_ok());
        assert!(valid_name("a.yml").is_ok());
        for bad in [
            "",
            ".hidden.yaml",
            "../x.yaml",
            "a/b.yaml",
            "x.txt",
            "x yaml.yaml",
        ] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
    }
}
