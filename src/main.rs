//! The `switchboard` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::app::{self, RunOptions};
use switchboard::config::{LogFormat, Settings};
use tokio_util::sync::CancellationToken;

/// mimalloc, purging at once (see `switchboard::alloc`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard: a message router with its own queues and topics, STOMP and MQTT
/// listeners, AMQP and XMPP links, and live-reloadable YAML routing tables.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the router. With no --config it runs on the embedded default: routes from
    /// ./routes, listeners on loopback, no external service needed.
    Run {
        /// Settings file (YAML); see docs/configuration.md.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Routes directory (overrides the settings file).
        #[arg(long)]
        routes: Option<PathBuf>,
        /// Listener address override, NAME=HOST:PORT (port 0 = any free port) or
        /// NAME=off; repeatable. Names: admin, stomp, stomp-ws, mqtt, mqtt-ws.
        #[arg(long = "listen", value_name = "NAME=HOST:PORT")]
        listen: Vec<String>,
        /// Log format.
        #[arg(long, value_enum, env = "SWITCHBOARD_LOG_FORMAT")]
        log_format: Option<LogFormat>,
        /// Log level or tracing filter (e.g. `debug`, `info,switchboard::routes=debug`).
        #[arg(long, env = "SWITCHBOARD_LOG")]
        log_level: Option<String>,
        /// Write the bound listener addresses as JSON to this file once ready.
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
        /// Directory of the durable store (persistent messages, durable queues and
        /// subscriptions, MQTT sessions and retained messages), relative to the working
        /// directory; `off` keeps everything in memory.
        #[arg(long, value_name = "DIR", env = "SWITCHBOARD_DATA_DIR", default_value = switchboard::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Join a NATS JetStream cluster: membership and the cluster's route table
        /// (docs/cluster.md). The local routes directory is then not read.
        #[arg(long, value_name = "nats://HOST:PORT[,…]")]
        cluster: Option<String>,
        /// This router's name in the cluster (letters, digits, `_`, `-`).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// The cluster's route table.
    Routes {
        #[command(subcommand)]
        command: RoutesCommand,
    },
    /// Print an argon2 hash of a password read from standard input, for
    /// `auth.users.NAME.password_hash` in the settings file.
    Passwd,
    /// Explain what the routes do with a message sent to an address: the internal
    /// destination it means, every route it passes (file:line, captures, filter,
    /// transform) and where it is delivered, in each protocol's spelling. Uses the same
    /// compiled table the daemon does.
    ///
    /// ADDRESS: `stomp /queue/NAME` | `mqtt a/b/c` | `internal topic:a.b` |
    /// `amqp LINK queue NAME` | `amqp LINK exchange NAME ROUTING_KEY` |
    /// `xmpp LINK JID` | `xmpp LINK presence JID`
    Explain {
        /// Routes directory [default: ./routes, or the settings file's routes_dir].
        #[arg(long)]
        routes: Option<PathBuf>,
        /// Settings file, for the links the routes name.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// A header of the sample message (filters and templates read them); repeatable.
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// Body of the sample message.
        #[arg(long, default_value = "")]
        body: String,
        /// Content type of the sample message.
        #[arg(long)]
        content_type: Option<String>,
        /// The protocol and address.
        #[arg(required = true, num_args = 2..)]
        address: Vec<String>,
    },
    /// Validate route files: print every error (file:line:column) and exit 1, or a
    /// one-line summary and exit 0. Same code path as a live reload.
    Check {
        /// Routes directory [default: ./routes, or the settings file's routes_dir].
        dir: Option<PathBuf>,
        /// Settings file, for the links and queues routes may name.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RoutesCommand {
    /// Validate DIR exactly as `check` does and, only if it is valid, publish it as the
    /// cluster's new route table; every clustered router swaps to it as on a reload.
    Push {
        /// Routes directory.
        dir: PathBuf,
        /// NATS servers [default: the settings file's cluster.servers].
        #[arg(long, value_name = "nats://HOST:PORT[,…]")]
        cluster: Option<String>,
        /// Settings file, for the links and queues routes may name, and the cluster
        /// section (bucket prefix, replicas).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// What `check` and `routes push` print for a directory that compiles.
fn summary(table: &switchboard::routes::RouteTable, dir: &std::path::Path) -> String {
    format!(
        "ok: {} route{} in {} file{} under {}",
        table.routes.len(),
        if table.routes.len() == 1 { "" } else { "s" },
        table.files.len(),
        if table.files.len() == 1 { "" } else { "s" },
        dir.display()
    )
}

/// What `check` and `routes push` print for a directory that does not compile.
fn print_route_errors(errors: &[switchboard::routes::RouteError]) -> ExitCode {
    for e in errors {
        println!("{e}");
    }
    println!(
        "{} error{}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

/// `routes push`: the same read and compile as `check`, then the push.
fn push_routes(dir: PathBuf, cluster: Option<String>, config: Option<PathBuf>) -> ExitCode {
    let settings = match load_settings(config.as_ref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cluster = match switchboard::config::ClusterSettings::from_args(
        settings.cluster.clone(),
        cluster.as_deref(),
        None,
    ) {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!(
                "error: routes push needs --cluster nats://HOST:PORT[,…] (or a `cluster:` section in --config)"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let ctx = switchboard::routes::CompileContext {
        schema_dir: Some(dir.clone()),
        ..settings.compile_context()
    };
    // As `check` compiles it; then the route files and the schema files the routes read,
    // compiled from the blob alone as every router will.
    let compiled = switchboard::routes::read_files(&dir).and_then(|sources| {
        let table = switchboard::routes::compile_sources(&sources, &ctx)?;
        switchboard::cluster::push::blob_of(&dir, &sources, &table, &ctx).map(|blob| (blob, table))
    });
    let (blob, table) = match compiled {
        Ok(ok) => ok,
        Err(errors) => return print_route_errors(&errors),
    };
    let pushed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
        .and_then(|rt| rt.block_on(switchboard::cluster::push::push(&cluster, &blob)));
    match pushed {
        Ok(version) => {
            println!("{}; pushed as version {version}", summary(&table, &dir));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_settings(config: Option<&PathBuf>) -> Result<Settings, ExitCode> {
    match config {
        None => Ok(Settings::embedded_default()),
        Some(p) => Settings::load(p).map_err(|errs| {
            for e in errs {
                eprintln!("error: {e}");
            }
            ExitCode::from(2)
        }),
    }
}

fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|e| {
        eprintln!("warning: bad log filter `{level}` ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    // Colours only for a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    switchboard::alloc::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Passwd => {
            let mut line = String::new();
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("password (echoed): ");
            }
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("error: cannot read the password from standard input");
                return ExitCode::FAILURE;
            }
            let pw = line.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                eprintln!("error: empty password");
                return ExitCode::FAILURE;
            }
            match switchboard::auth::hash(pw) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain {
            routes,
            config,
            headers,
            body,
            content_type,
            address,
        } => {
            let settings = match load_settings(config.as_ref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let query = match switchboard::routes::explain::parse_query(&address) {
                Ok(q) => q,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut message = switchboard::core::Message::new(body);
            message.content_type = content_type;
            for h in &headers {
                let Some((k, v)) = h.split_once('=') else {
                    eprintln!("error: --header `{h}`: expected NAME=VALUE");
                    return ExitCode::from(2);
                };
                message.headers.append(k, v);
            }
            let dir = routes.unwrap_or(settings.routes_dir.clone());
            match switchboard::routes::load_dir(&dir, &settings.compile_context()) {
                Ok(table) => {
                    print!(
                        "{}",
                        switchboard::routes::explain::explain(&table, &query, message)
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { dir, config } => {
            let settings = match load_settings(config.as_ref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let dir = dir.unwrap_or(settings.routes_dir.clone());
            match switchboard::routes::load_dir(&dir, &settings.compile_context()) {
                Ok(table) => {
                    println!("{}", summary(&table, &dir));
                    ExitCode::SUCCESS
                }
                Err(errors) => print_route_errors(&errors),
            }
        }
        Command::Routes {
            command:
                RoutesCommand::Push {
                    dir,
                    cluster,
                    config,
                },
        } => push_routes(dir, cluster, config),
        Command::Run {
            config,
            routes,
            listen,
            log_format,
            log_level,
            ready_file,
            data_dir,
            cluster,
            node,
        } => {
            let mut settings = match load_settings(config.as_ref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if let Some(r) = routes {
                settings.routes_dir = r;
            }
            for l in &listen {
                if let Err(e) = settings.override_listener(l) {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
            settings.durability.data_dir = (data_dir.as_os_str() != "off").then_some(data_dir);
            match switchboard::config::ClusterSettings::from_args(
                settings.cluster.take(),
                cluster.as_deref(),
                node.as_deref(),
            ) {
                Ok(Some(c)) if c.node.is_empty() => {
                    eprintln!(
                        "error: cluster mode needs this router's name: --node NAME (or cluster.node)"
                    );
                    return ExitCode::from(2);
                }
                Ok(c) => settings.cluster = c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
            if let Some(f) = log_format {
                settings.log_format = f;
            }
            if let Some(l) = log_level {
                settings.log_level = l;
            }
            init_tracing(settings.log_format, &settings.log_level);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .on_thread_park(switchboard::alloc::collect_when_idle)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(app::run(
                settings,
                RunOptions { ready_file },
                CancellationToken::new(),
            ));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "switchboard could not start");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
