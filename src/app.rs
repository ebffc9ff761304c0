//! Wiring and lifecycle: build the core, load the routes, start the watcher, the
//! listeners and the sweeper; on SIGTERM/SIGINT stop accepting, drain, exit. systemd is
//! told each step ([`crate::systemd`]).
//!
//! One [`CancellationToken`] fans out to every task; a [`TaskTracker`] is awaited so
//! shutdown ends only when every task has finished (or the grace period ran out).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::core::Core;
use crate::routes::reload::LiveRoutes;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the route files have errors:\n{}", .0.join("\n"))]
    Routes(Vec<String>),
    #[error(
        "cannot listen on {addr} for `{name}`: {source} (override with --listen {name}=HOST:PORT)"
    )]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("{0} (set another directory with --data-dir DIR)")]
    Store(String),
    #[error("cannot write the ready file {path}: {source}")]
    ReadyFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Connections the admin listener serves at once.
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Says once, at start, what the open-file limit allows: about that many connections
/// in all, past which new ones are refused at once (see [`crate::fd_limit`]). Warns
/// when one listener's `max_connections` is beyond it (the listeners' sum often is: not
/// all are full at once).
fn log_file_limit(
    files: std::io::Result<crate::fd_limit::FileLimit>,
    allowed: usize,
    largest: usize,
) {
    let limit = match files {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            return;
        }
    };
    let in_use = crate::fd_limit::open_now().unwrap_or(0);
    let room = limit.soft.saturating_sub(in_use);
    tracing::info!(
        open_files_limit = limit.soft,
        started_with = limit.was,
        hard_limit = limit.hard,
        in_use,
        "open files: room for about {room} connections in all (listeners allow {allowed}); past it new connections are refused at once"
    );
    if largest as u64 > room {
        tracing::warn!(
            open_files_limit = limit.soft,
            max_connections = largest,
            "a listener's max_connections is more than the open-file limit leaves room for: raise the hard limit (systemd LimitNOFILE=, ulimit -Hn) or lower max_connections"
        );
    }
}

/// Run-time options that are not settings.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Write `{"pid":…,"listeners":{name: address}}` here once every listener is bound
    /// (tests and supervisors use it to find port-0 listeners).
    pub ready_file: Option<PathBuf>,
}

/// Runs the daemon until `shutdown` fires (or a signal arrives).
pub async fn run(
    settings: Settings,
    options: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    crate::systemd::spawn_watchdog(shutdown.clone());
    // Every connection is a descriptor: the limit that counts is the hard one.
    let files = crate::fd_limit::raise();
    crate::fd_limit::keep_reserve();
    // Clustered, the cluster's route table is in force before any connection is taken.
    let cluster = match &settings.cluster {
        Some(c) => Some(Arc::new(
            crate::cluster::Cluster::join(c)
                .await
                .map_err(StartError::Cluster)?,
        )),
        None => None,
    };
    let routes = match &cluster {
        Some(c) => cluster_routes(c, &settings).await?,
        None => load_routes(&settings)?,
    };
    let shared = match &cluster {
        Some(c) => Some(c.shared().await.map_err(StartError::Cluster)?),
        None => None,
    };
    // Replaying the journal reads files (seconds for a million messages): off the runtime.
    let (core, journal) = {
        let s = settings.clone();
        let sh = shared.clone().map(|s| s as Arc<dyn crate::core::Shared>);
        tokio::task::spawn_blocking(move || open_core(&s, sh))
            .await
            .map_err(|e| StartError::Store(format!("store recovery failed: {e}")))??
    };
    if let Some(s) = &shared {
        s.deliver_to(core.clone());
    }
    let router = crate::router::Router::new(core.clone(), routes.table())
        .with_start_traces(settings.start_traces);
    let tracker = TaskTracker::new();

    tracker.spawn({
        let core = core.clone();
        let cancel = shutdown.clone();
        let every = settings.sweep_interval;
        async move {
            let _ = core.spawn_sweeper(every, cancel).await;
        }
    });

    let watermarks = crate::watermark::Watermarks {
        memory_high: settings.durability.memory_high_watermark,
        disk_free_limit: settings.durability.disk_free_limit,
        data_dir: settings.durability.data_dir.clone(),
    };
    tracker.spawn(crate::watermark::run(
        core.clone(),
        watermarks.clone(),
        shutdown.clone(),
    ));

    if let Some(c) = &cluster {
        // The cluster's table is the only one: no directory watch. SIGHUP is still
        // caught (its default action would end the process: a `systemctl reload` must
        // not kill a router) and answered with a log line saying why nothing reloads.
        c.start(Arc::clone(&routes), &tracker, shutdown.clone())
            .await
            .map_err(StartError::Cluster)?;
        spawn_sighup(&tracker, Arc::clone(&routes), shutdown.clone());
    } else {
        if routes.dir().is_dir() {
            match routes.spawn_watcher(settings.reload_debounce, shutdown.clone()) {
                Ok(h) => {
                    tracker.spawn(async move {
                        let _ = h.await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "live reload on file change disabled; SIGHUP still reloads")
                }
            }
        }
        spawn_sighup(&tracker, Arc::clone(&routes), shutdown.clone());
    }

    let links = crate::link::Links::default();
    for xmpp in &settings.xmpp_links {
        crate::link::xmpp::spawn(
            xmpp.clone(),
            router.clone(),
            Arc::clone(&settings.auth),
            routes.subscribe(),
            &links,
            shutdown.clone(),
            &tracker,
        );
    }
    for amqp in &settings.amqp_links {
        crate::link::amqp::spawn(
            amqp.clone(),
            router.clone(),
            routes.subscribe(),
            &links,
            shutdown.clone(),
            &tracker,
        );
    }

    let mut bound = BTreeMap::new();
    // Connections the listeners allow in all (their `max_connections`), and the most
    // one allows.
    let (mut allowed, mut largest) = (0usize, 0usize);
    // Readiness waits for every listener (the admin API's is bound first).
    let startup = Arc::new(crate::admin::Startup::default());
    // Every listener's admission gate, for the admin API's `/limits`.
    let gates = Arc::new(crate::listener::limit::Gates::default());
    // One MQTT state (sessions, retained messages) shared by the TCP and WebSocket listeners.
    let mut mqtt_state: Option<Arc<crate::listener::mqtt::state::MqttState>> = None;
    for (name, addr) in &settings.listeners {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                name: name.clone(),
                addr: *addr,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| StartError::Bind {
            name: name.clone(),
            addr: *addr,
            source,
        })?;
        let tls = settings.tls.get(name.as_str()).map(|t| t.0.clone());
        tracing::info!(listener = %name, address = %local, tls = tls.is_some(), "listening");
        bound.insert(name.clone(), local);
        let max_connections = match name.as_str() {
            "stomp" | "stomp-ws" => settings.stomp.max_connections,
            "mqtt" | "mqtt-ws" => settings.mqtt.max_connections,
            _ => ADMIN_MAX_CONNECTIONS,
        };
        allowed += max_connections;
        largest = largest.max(max_connections);
        let gate = crate::listener::limit::Gate::new(name, max_connections, settings.connections);
        gates.add(Arc::clone(&gate));
        match name.as_str() {
            "admin" => {
                let app = crate::admin::router(crate::admin::AdminDeps {
                    core: core.clone(),
                    routes: Arc::clone(&routes),
                    links: links.clone(),
                    gates: Arc::clone(&gates),
                    auth: Arc::clone(&settings.auth),
                    access: settings.admin.clone(),
                    local,
                    journal: journal.clone(),
                    watermarks: watermarks.clone(),
                    startup: Arc::clone(&startup),
                    cluster: cluster.clone(),
                });
                tracker.spawn(crate::listener::serve_http(
                    listener,
                    app,
                    None,
                    gate,
                    "admin",
                    shutdown.clone(),
                    tracker.clone(),
                ));
            }
            "stomp" | "stomp-ws" => {
                let shared = |loopback: bool| {
                    Arc::new(crate::listener::stomp::session::Shared {
                        router: router.clone(),
                        auth: Arc::clone(&settings.auth),
                        settings: settings.stomp.clone(),
                        loopback,
                    })
                };
                let loopback = local.ip().is_loopback();
                let cancel = shutdown.clone();
                let t = tracker.clone();
                if name == "stomp" {
                    tracker.spawn(crate::listener::stomp::server::serve_tcp(
                        listener,
                        shared(loopback),
                        tls,
                        gate,
                        cancel,
                        t,
                    ));
                } else {
                    // Browsers get the loopback anonymous grant only when configured.
                    let policy = settings.stomp_ws.clone();
                    let browsers = shared(loopback && policy.anonymous_browsers);
                    tracker.spawn(crate::listener::stomp::server::serve_ws(
                        listener,
                        shared(loopback),
                        browsers,
                        policy,
                        tls,
                        gate,
                        cancel,
                        t,
                    ));
                }
            }
            "mqtt" | "mqtt-ws" => {
                let state = match &mqtt_state {
                    Some(state) => Arc::clone(state),
                    None => {
                        let state = Arc::new(crate::listener::mqtt::state::MqttState::new(
                            router.clone(),
                            Arc::clone(&settings.auth),
                            settings.mqtt.clone(),
                        ));
                        if let Some(mirrored) = crate::listener::mqtt::persist::restore(&state) {
                            wait_retained_mirror(mirrored).await;
                        }
                        crate::listener::mqtt::roaming::start(&state);
                        if let Some(c) = &cluster {
                            let s = Arc::downgrade(&state);
                            c.count_sessions(move || {
                                s.upgrade().map_or(0, |s| {
                                    s.sessions().values().filter(|e| e.holder.is_some()).count()
                                        as u64
                                })
                            });
                        }
                        mqtt_state = Some(Arc::clone(&state));
                        state
                    }
                };
                let loopback = local.ip().is_loopback();
                let cancel = shutdown.clone();
                let t = tracker.clone();
                if name == "mqtt" {
                    tracker.spawn(crate::listener::mqtt::server::serve_tcp(
                        listener, state, loopback, tls, gate, cancel, t,
                    ));
                } else {
                    tracker.spawn(crate::listener::mqtt::server::serve_ws(
                        listener,
                        state,
                        loopback,
                        settings.mqtt_ws.clone(),
                        tls,
                        gate,
                        cancel,
                        t,
                    ));
                }
            }
            other => tracing::warn!(listener = other, "no such listener in this build"),
        }
    }

    log_file_limit(files, allowed, largest);
    startup.listeners_bound(bound.keys().cloned());
    if let Some(path) = &options.ready_file {
        let listeners: BTreeMap<&String, String> =
            bound.iter().map(|(k, v)| (k, v.to_string())).collect();
        let text =
            serde_json::json!({ "pid": std::process::id(), "listeners": listeners }).to_string();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| StartError::ReadyFile {
                path: path.clone(),
                source,
            })?;
    }
    let status = routes.status();
    tracing::info!(
        routes = status.routes,
        version = status.version,
        "switchboard ready"
    );
    crate::systemd::ready(&format!(
        "ready: {} routes (table version {}); listening: {}",
        status.routes,
        status.version,
        bound.keys().cloned().collect::<Vec<_>>().join(", ")
    ));

    wait_for_signal(shutdown.clone()).await;
    crate::systemd::stopping();
    tracing::info!("shutting down: no new connections; draining");
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(settings.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?settings.shutdown_grace, "shutdown grace period over; exiting with tasks still running");
    }
    if let Some(s) = journal {
        // Everything acknowledged or published before this point is written and synced.
        let _ = tokio::task::spawn_blocking(move || crate::store::Store::close(&*s)).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Clustered, the MQTT listeners serve once the cluster's retained messages are
/// mirrored (a subscriber of the first moments gets them too), or after
/// [`RETAINED_MIRROR_WAIT`] with a warning (they arrive meanwhile).
async fn wait_retained_mirror(mirrored: crate::store::StoreWait) {
    match tokio::time::timeout(RETAINED_MIRROR_WAIT, mirrored.wait()).await {
        Ok(Ok(())) => tracing::info!("cluster: retained messages mirrored"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cluster: retained messages not mirrored"),
        Err(_) => tracing::warn!(
            wait = ?RETAINED_MIRROR_WAIT,
            "cluster: retained messages not mirrored yet; serving MQTT while they arrive"
        ),
    }
}

/// See [`wait_retained_mirror`].
const RETAINED_MIRROR_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The core, backed by the durable store when a data directory is set, with what the
/// store held put back.
fn open_core(
    settings: &Settings,
    shared: Option<Arc<dyn crate::core::Shared>>,
) -> Result<(Core, Option<Arc<crate::store::FileJournal>>), StartError> {
    let Some(dir) = &settings.durability.data_dir else {
        if shared.is_none() {
            tracing::warn!(
                "no data directory (--data-dir off): persistent messages are kept in memory only"
            );
        }
        let core = Core::with_parts(settings.core.clone(), None, shared)
            .map_err(|e| StartError::Store(e.to_string()))?;
        return Ok((core, None));
    };
    // The journal itself, not only `dyn Store`: the admin API reads its commit count.
    let journal = Arc::new(
        crate::store::FileJournal::open(dir, settings.durability.fsync)
            .map_err(|e| StartError::Store(e.to_string()))?,
    );
    let store: Arc<dyn crate::store::Store> = journal.clone();
    if let Err(e) = store.check() {
        tracing::error!(dir = %dir.display(), error = %e, "the data directory cannot be written: persistent messages to durable queues are refused until it can");
    }
    let core = Core::with_parts(settings.core.clone(), Some(store), shared)
        .map_err(|e| StartError::Store(e.to_string()))?;
    Ok((core, Some(journal)))
}

fn load_routes(settings: &Settings) -> Result<Arc<LiveRoutes>, StartError> {
    let dir = &settings.routes_dir;
    if !dir.exists() {
        tracing::warn!(dir = %dir.display(), "routes directory does not exist; starting with no routes (SIGHUP reloads once it exists)");
        return Ok(Arc::new(LiveRoutes::missing(
            dir,
            settings.compile_context(),
        )));
    }
    let routes = LiveRoutes::load(dir, settings.compile_context())
        .map_err(|e| StartError::Routes(e.iter().map(ToString::to_string).collect()))?;
    tracing::info!(dir = %dir.display(), routes = routes.status().routes, "routes loaded");
    Ok(Arc::new(routes))
}

/// A clustered router's live routes: the cluster's current table, or none before the
/// first `routes push` (the local routes directory is not read).
async fn cluster_routes(
    cluster: &crate::cluster::Cluster,
    settings: &Settings,
) -> Result<Arc<LiveRoutes>, StartError> {
    let (version, sources) = match cluster.initial_table().await.map_err(StartError::Cluster)? {
        Some((version, sources)) => (
            version,
            Some(
                sources
                    .map_err(|e| StartError::Routes(e.iter().map(ToString::to_string).collect()))?,
            ),
        ),
        None => {
            tracing::warn!(
                "cluster: no route table pushed yet; running with no routes until `switchboard routes push`"
            );
            (0, None)
        }
    };
    // Schema files of the cluster's tables are written into the data directory, or a
    // temporary one.
    let schema_dirs =
        crate::routes::received::SchemaDirs::new(settings.durability.data_dir.as_deref());
    let routes = LiveRoutes::clustered(settings.compile_context(), version, sources, schema_dirs)
        .map_err(|e| StartError::Routes(e.iter().map(ToString::to_string).collect()))?;
    tracing::info!(
        version,
        routes = routes.status().routes,
        "cluster: route table loaded"
    );
    Ok(Arc::new(routes))
}

fn spawn_sighup(tracker: &TaskTracker, routes: Arc<LiveRoutes>, cancel: CancellationToken) {
    #[cfg(unix)]
    tracker.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install the SIGHUP handler");
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = hup.recv() => {
                    let routes = Arc::clone(&routes);
                    let _ = tokio::task::spawn_blocking(move || routes.reload("SIGHUP")).await;
                }
            }
        }
    });
}

async fn wait_for_signal(cancel: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        if let (Ok(mut term), Ok(mut int)) = (term, int) {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
                _ = cancel.cancelled() => {}
            }
            return;
        }
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = cancel.cancelled() => {}
    }
}
