//! Clustered routers over the 3-node NATS JetStream rig (scripts/peers/nats-ctl.sh), for
//! tests/cluster.rs and tests/cluster_queues.rs: each test runs its routers under a
//! `cluster.prefix` no other run uses, and [`Buckets`] deletes everything that prefix
//! created in JetStream when the test ends, passed or not.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::Daemon;

/// The rig's client ports, as a router's `--cluster` takes them.
pub const URLS: &str = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224";
pub const WAIT: Duration = Duration::from_secs(20);

/// Deletes the run's JetStream state when dropped: every stream whose name starts with
/// the prefix (shared queues `<prefix>SBQ_…`, `<prefix>SB_TOPICS`…) and every KV bucket
/// (`KV_<prefix>…`). Retried for a while: right after NATS nodes came back, a stream may
/// have no leader yet to take the delete.
pub struct Buckets(pub String);

impl Drop for Buckets {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let Ok(client) = async_nats::connect(URLS.split(',').collect::<Vec<_>>()).await else {
                return;
            };
            let js = async_nats::jetstream::new(client);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left = own_streams(&js, &prefix).await;
                if left.as_ref().is_ok_and(|l| l.is_empty()) {
                    return;
                }
                if Instant::now() > deadline {
                    eprintln!("streams of prefix {prefix} not deleted: {left:?}");
                    return;
                }
                for name in left.unwrap_or_default() {
                    let _ = js.delete_stream(&name).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}

/// The streams a run under `prefix` made (KV buckets are streams named `KV_<bucket>`).
async fn own_streams(
    js: &async_nats::jetstream::Context,
    prefix: &str,
) -> Result<Vec<String>, String> {
    let kv = format!("KV_{prefix}");
    let mut names = js.stream_names();
    let mut own = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| e.to_string())?;
        if name.starts_with(prefix) || name.starts_with(&kv) {
            own.push(name);
        }
    }
    Ok(own)
}

/// Writes a settings file with the `cluster:` section (`prefix`, 3 replicas) and `extra`
/// YAML (other top-level sections) into `dir`; returns its path.
pub fn settings_with(dir: &Path, prefix: &str, extra: &str) -> String {
    let path = dir.join("switchboard.yaml");
    std::fs::write(
        &path,
        format!("cluster:\n  prefix: {prefix}\n  replicas: 3\n{extra}"),
    )
    .unwrap();
    path.display().to_string()
}

pub fn settings(dir: &Path, prefix: &str) -> String {
    settings_with(dir, prefix, "")
}

/// A router named `node` on the rig.
pub fn router(node: &str, prefix: &str) -> Daemon {
    router_on(URLS, node, prefix, "")
}

/// A router named `node` on `servers`, with `extra` settings (see [`settings_with`]).
pub fn router_on(servers: &str, node: &str, prefix: &str, extra: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let config = settings_with(dir.path(), prefix, extra);
    Daemon::start_in(
        dir,
        &["--config", &config, "--cluster", servers, "--node", node],
    )
}

/// Runs `tests/py/SCRIPT` with `args` then `scenario` (the script prints `ok` last when
/// it passed) and returns what it printed; on failure, panics with its output and the
/// last 150 log lines of each of `routers` (named A, B, C… in order).
#[allow(dead_code)] // not every test binary that includes `common` runs scenarios
pub fn run_scenario(script: &str, args: &[String], scenario: &str, routers: &[Daemon]) -> String {
    let out = std::process::Command::new(super::python())
        .arg(format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .arg(scenario)
        // nats-ctl.sh finds nats-server next to this Python (a worktree has no .venv).
        .env("SWITCHBOARD_PYTHON", super::python())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (run scripts/setup python): {e}",
                super::python()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !(out.status.success() && stdout.trim_end().ends_with("ok")) {
        let logs: String = routers
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let log = d.log();
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "\n===== router {} log (last 150 lines) =====\n{}",
                    char::from(b'A' + i as u8),
                    lines[lines.len().saturating_sub(150)..].join("\n")
                )
            })
            .collect();
        panic!("scenario {scenario} failed\nstdout:\n{stdout}\nstderr:\n{stderr}{logs}");
    }
    eprintln!("{scenario}: {stdout}{stderr}");
    stdout
}

/// Routers `a`, `b` and `c` on the rig under `prefix`, with `extra` settings.
#[allow(dead_code)] // not every test binary that includes `common` starts three
pub fn three_routers(prefix: &str, extra: &str) -> Vec<Daemon> {
    ["a", "b", "c"]
        .iter()
        .map(|n| router_on(URLS, n, prefix, extra))
        .collect()
}

/// A `cluster.prefix` no other run uses, for the test `name`.
#[allow(dead_code)]
pub fn run_prefix(name: &str) -> String {
    format!("{}_", super::unique_prefix(name))
}
