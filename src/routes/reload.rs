//! Live reload: compile a new table, swap it in atomically, keep the old one on error.
//!
//! Triggers: a change in the routes directory (watched with `notify`, debounced), SIGHUP,
//! and the admin API. Queues and subscriptions live in the core and are never rebuilt by
//! a reload; a publish in progress finishes on the table it loaded.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::counters::Counts;
use super::received::{Received, SchemaDirs};
use super::{CompileContext, Retired, RouteError, RouteTable, compile_sources, files};

/// Outcome of the latest reload attempt, for logs and the admin API.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Version of the table in force.
    pub version: u64,
    /// Routes in the table in force.
    pub routes: usize,
    /// Whether the latest attempt succeeded (or found nothing changed).
    pub ok: bool,
    /// Errors of the latest attempt (empty when it succeeded).
    pub errors: Vec<String>,
    /// What triggered the latest attempt.
    pub trigger: String,
    /// When the latest attempt ran (Unix ms).
    pub at_unix_ms: u64,
    /// Attempts so far, successful or not.
    pub attempts: u64,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    Swapped { version: u64, routes: usize },
    Unchanged { version: u64 },
}

/// The route directory, its live table and reload bookkeeping.
#[derive(Debug)]
pub struct LiveRoutes {
    dir: PathBuf,
    ctx: CompileContext,
    table: Arc<ArcSwap<RouteTable>>,
    state: Mutex<(ReloadStatus, u64)>,
    /// Carries the version of every swapped-in table to whoever follows changes (links
    /// re-declare topology and consumers).
    changes: tokio::sync::watch::Sender<u64>,
    /// The table comes from the cluster (`install`), not from `dir`: `reload` refuses.
    clustered: bool,
    /// Where the schema files of installed tables are written (clustered routers).
    schema_dirs: Option<SchemaDirs>,
    /// Reload attempts that failed (the previous table stayed), for `/metrics`: the
    /// status only tells whether the latest one did.
    failures: AtomicU64,
    /// Counts of the routes reloads removed (see [`super::counters`]).
    retired: Retired,
}

fn digest(sources: &[(String, String)]) -> u64 {
    let mut h = DefaultHasher::new();
    sources.hash(&mut h);
    h.finish()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LiveRoutes {
    /// Live routes for a routes directory that does not exist: no routes; reloads (SIGHUP,
    /// admin API) pick the directory up once it is created.
    pub fn missing(dir: &Path, mut ctx: CompileContext) -> Self {
        ctx.schema_dir = Some(dir.to_owned());
        Self {
            dir: dir.to_owned(),
            ctx,
            table: Arc::new(ArcSwap::from_pointee(RouteTable::empty())),
            changes: tokio::sync::watch::Sender::new(1),
            state: Mutex::new((
                ReloadStatus {
                    version: 1,
                    ok: true,
                    trigger: "start".into(),
                    at_unix_ms: now_ms(),
                    attempts: 1,
                    ..ReloadStatus::default()
                },
                0,
            )),
            clustered: false,
            schema_dirs: None,
            failures: AtomicU64::new(0),
            retired: Retired::default(),
        }
    }

    /// Live routes of a clustered router: `table` is the cluster's table at `version`
    /// (its revision), or none yet (version 0, no routes); its schema files are written
    /// under `schema_dirs`. Errors are fatal to start-up, as for [`load`](Self::load).
    pub fn clustered(
        ctx: CompileContext,
        version: u64,
        table: Option<Received>,
        schema_dirs: SchemaDirs,
    ) -> Result<Self, Vec<RouteError>> {
        let mut live = Self::missing(Path::new("cluster"), ctx);
        live.clustered = true;
        // No routes directory: each installed table's schema files are in a folder of
        // `schema_dirs`.
        live.ctx.schema_dir = None;
        live.schema_dirs = Some(schema_dirs);
        if let Some(table) = table {
            live.install("start", version, Ok(table))?;
        } else {
            live.state
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .0
                .version = 0;
        }
        Ok(live)
    }

    /// Loads the directory once. Errors here are fatal to start-up: the daemon does not
    /// start on a broken table.
    pub fn load(dir: &Path, mut ctx: CompileContext) -> Result<Self, Vec<RouteError>> {
        ctx.schema_dir = Some(dir.to_owned());
        let sources = files::read(dir)?;
        let mut table = compile_sources(&sources, &ctx)?;
        table.version = 1;
        let status = ReloadStatus {
            version: 1,
            routes: table.routes.len(),
            ok: true,
            errors: Vec::new(),
            trigger: "start".into(),
            at_unix_ms: now_ms(),
            attempts: 1,
        };
        Ok(Self {
            dir: dir.to_owned(),
            ctx,
            table: Arc::new(ArcSwap::from_pointee(table)),
            changes: tokio::sync::watch::Sender::new(1),
            state: Mutex::new((status, digest(&sources))),
            clustered: false,
            schema_dirs: None,
            failures: AtomicU64::new(0),
            retired: Retired::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live table, shared with the router, which reads it on every publish.
    pub fn table(&self) -> Arc<ArcSwap<RouteTable>> {
        Arc::clone(&self.table)
    }

    /// Follows table swaps: the receiver sees each new version.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn status(&self) -> ReloadStatus {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// Reload attempts that failed since start (a refused cluster reload is no attempt).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The counts of the routes that reloads removed since start.
    pub fn retired_counts(&self) -> Counts {
        self.retired.get()
    }

    /// Re-reads and recompiles the directory; swaps the table only if it compiled. A
    /// router whose table comes from the cluster refuses, and its status stays as it is.
    pub fn reload(&self, trigger: &str) -> Result<ReloadOutcome, Vec<RouteError>> {
        if self.clustered {
            tracing::warn!(
                trigger,
                "routes not reloaded: this router takes its routes from the cluster (`switchboard routes push`)"
            );
            return Err(vec![RouteError {
                file: self.dir.display().to_string(),
                line: 0,
                column: 0,
                route: None,
                message: "this router takes its routes from the cluster: publish a new table with `switchboard routes push`".into(),
            }]);
        }
        self.update(trigger, None, None, || files::read(&self.dir))
    }

    /// Compiles the routes directory as it would be with the file `name` holding `text`
    /// (`None`: removed), without touching the table in force: what the admin API checks
    /// before it writes a route file.
    pub fn check_edit(&self, name: &str, text: Option<&str>) -> Result<(), Vec<RouteError>> {
        let shown = self.dir.join(name).display().to_string();
        let mut sources = files::read(&self.dir)?;
        sources.retain(|(f, _)| *f != shown);
        if let Some(t) = text {
            sources.push((shown, t.to_owned()));
            sources.sort_by(|a, b| a.0.cmp(&b.0));
        }
        compile_sources(&sources, &self.ctx).map(|_| ())
    }

    /// Compiles `table` (route files and schema files) with this router's settings,
    /// without touching the table in force: what the admin API checks before it stores
    /// an edit of the cluster's table.
    pub fn check_received(&self, table: &Received) -> Result<(), Vec<RouteError>> {
        match &self.schema_dirs {
            Some(dirs) => dirs.compile(table, &self.ctx).map(|_| ()),
            None => SchemaDirs::temporary()
                .compile(table, &self.ctx)
                .map(|_| ()),
        }
    }

    /// Swaps in a table received from elsewhere (the cluster's route table), compiled
    /// like a reload against its own schema files, in force as `version`. Errors are
    /// recorded as a failed reload's and the previous table stays. The schema files'
    /// folder of the previous table is removed once this one is in force.
    pub fn install(
        &self,
        trigger: &str,
        version: u64,
        table: Result<Received, Vec<RouteError>>,
    ) -> Result<ReloadOutcome, Vec<RouteError>> {
        let temporary;
        let dirs = match &self.schema_dirs {
            Some(d) => d,
            None => {
                temporary = SchemaDirs::temporary();
                &temporary
            }
        };
        let (sources, schema_dir) =
            match table.and_then(|t| dirs.write_table(version, &t.schemas).map(|d| (t.files, d))) {
                Ok((files, dir)) => (Ok(files), Some(dir)),
                Err(e) => (Err(e), None),
            };
        let outcome = self.update(trigger, Some(version), schema_dir, || sources);
        match outcome {
            Ok(_) => dirs.keep_only(version),
            Err(_) => dirs.discard(version),
        }
        outcome
    }

    /// One reload attempt: `read` gives the sources; `version` is the new table's version
    /// (`None`: one more than the current, and unchanged sources and schema files leave
    /// the table alone); `schema_dir`, when set, is where this table's schemas are read
    /// instead of the routes directory.
    fn update(
        &self,
        trigger: &str,
        version: Option<u64>,
        schema_dir: Option<PathBuf>,
        read: impl FnOnce() -> Result<Vec<(String, String)>, Vec<RouteError>>,
    ) -> Result<ReloadOutcome, Vec<RouteError>> {
        let ctx = match schema_dir {
            Some(dir) => std::borrow::Cow::Owned(CompileContext {
                schema_dir: Some(dir),
                ..self.ctx.clone()
            }),
            None => std::borrow::Cow::Borrowed(&self.ctx),
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (status, last_digest) = &mut *state;
        status.attempts += 1;
        status.trigger = trigger.to_owned();
        status.at_unix_ms = now_ms();
        let compiled = read().and_then(|s| {
            let d = digest(&s);
            if version.is_none() && d == *last_digest && !self.table.load().schema_files_changed() {
                return Ok(None);
            }
            compile_sources(&s, &ctx).map(|t| Some((t, d)))
        });
        match compiled {
            Ok(None) => {
                status.ok = true;
                status.errors.clear();
                tracing::debug!(trigger, version = status.version, "routes unchanged");
                Ok(ReloadOutcome::Unchanged {
                    version: status.version,
                })
            }
            Ok(Some((mut table, d))) => {
                let version = version.unwrap_or(status.version + 1);
                table.version = version;
                let routes = table.routes.len();
                let gone = table.adopt_state(&self.table.load());
                self.retired.add(gone);
                self.table.store(Arc::new(table));
                self.changes.send_replace(version);
                *last_digest = d;
                status.version = version;
                status.routes = routes;
                status.ok = true;
                status.errors.clear();
                tracing::info!(trigger, version, routes, "routes reloaded");
                Ok(ReloadOutcome::Swapped { version, routes })
            }
            Err(errors) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                status.ok = false;
                status.errors = errors.iter().map(ToString::to_string).collect();
                for e in &errors {
                    tracing::error!(trigger, error = %e, "route reload rejected");
                }
                tracing::warn!(
                    trigger,
                    version = status.version,
                    errors = errors.len(),
                    "route reload failed; the previous table stays in force"
                );
                Err(errors)
            }
        }
    }

    /// Watches the directory and reloads on changes until `cancel` fires, once
    /// `debounce` has passed without a further change (an editor's save, a `cp` of several
    /// files: one reload).
    ///
    /// The debounce is this task's timer, armed by a change: an idle router does not wake
    /// up for its routes. (notify-debouncer-full, used before, ticks a thread every
    /// quarter of the debounce, 20 times a second, changes or not; on a 2-core machine
    /// each wake-up can hold up a message arriving meanwhile.)
    pub fn spawn_watcher(
        self: &Arc<Self>,
        debounce: Duration,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                // Reading the files ourselves produces access events: only changes count,
                // or every reload would trigger the next.
                Ok(e) if !matches!(e.kind, EventKind::Access(_) | EventKind::Other) => {
                    // A full channel already holds a change not yet taken.
                    let _ = tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "route directory watch error"),
            })
            .map_err(|e| format!("cannot watch routes directory: {e}"))?;
        // Recursive: schema files may sit in a folder of the routes directory.
        watcher
            .watch(&self.dir, RecursiveMode::Recursive)
            .map_err(|e| format!("cannot watch {}: {e}", self.dir.display()))?;
        let routes = Arc::clone(self);
        Ok(tokio::spawn(async move {
            // The watcher stops watching when dropped; keep it alive in the task.
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    got = rx.recv() => {
                        if got.is_none() {
                            return;
                        }
                    }
                }
                // Quiet for `debounce` since the last change, then one reload.
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        more = tokio::time::timeout(debounce, rx.recv()) => match more {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_quiet) => break,
                        },
                    }
                }
                let routes = Arc::clone(&routes);
                // File reads and compilation are blocking work.
                let _ = tokio::task::spawn_blocking(move || routes.reload("file change")).await;
            }
        }))
    }
}
