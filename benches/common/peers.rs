//! The peers a row compares with, as this bench run's own processes where that is cheap
//! (a Mosquitto and a nats-server with MQTT on free loopback ports, stopped when dropped:
//! their settings are the bench's, and the shared peers the tests use are left alone),
//! or the shared ones (RabbitMQ, Prosody) with the PID of their server process, for its
//! CPU time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::method::{free_port, plan, wait_port};

/// QoS 1 messages a server keeps sent and unacknowledged to one subscriber: the same on
/// every side (Switchboard `mqtt.max_inflight`, Mosquitto `max_inflight_messages`,
/// nats-server `mqtt.max_ack_pending`), and the window the bench's QoS 1 publishers keep.
pub const MQTT_WINDOW: usize = 100;

/// A server a row is compared with.
pub struct Peer {
    pub name: String,
    pub addr: SocketAddr,
    /// Its server process (CPU time, RSS); `None` for one given by address.
    pub pid: Option<u32>,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl Peer {
    pub fn pids(&self) -> Vec<u32> {
        self.pid.into_iter().collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `VAR` set to an address: that server (no CPU figures); `off`: none; unset: `start`.
fn chosen(var: &str, name: &str, start: impl FnOnce() -> Option<Peer>) -> Option<Peer> {
    if !plan().peers {
        return None;
    }
    match std::env::var(var).ok().as_deref() {
        Some("off") => None,
        Some(a) => {
            let addr: SocketAddr = a.parse().unwrap_or_else(|_| panic!("{var}={a}: HOST:PORT"));
            wait_port(addr, Duration::from_secs(1)).then(|| Peer {
                name: name.into(),
                addr,
                pid: None,
                child: None,
                dir: None,
            })
        }
        None => start(),
    }
}

fn spawn(name: &str, dir: PathBuf, addr: SocketAddr, cmd: &mut Command) -> Option<Peer> {
    let log = std::fs::File::create(dir.join("server.log")).ok()?;
    let child = match cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            println!("{name}: not started ({e}): its columns stay empty");
            return None;
        }
    };
    let peer = Peer {
        name: name.into(),
        addr,
        pid: Some(child.id()),
        child: Some(child),
        dir: Some(dir),
    };
    if wait_port(addr, Duration::from_secs(20)) {
        Some(peer)
    } else {
        println!("{name}: did not come up on {addr}: its columns stay empty");
        None
    }
}

fn fresh_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sb-bench-{what}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("peer directory");
    d
}

/// A Mosquitto of this run (`mosquitto` from PATH: `scripts/setup mosquitto`): memory
/// only (`persistence false`, as the shared test broker), `max_queued_messages 100000`
/// and `max_inflight_messages` [`MQTT_WINDOW`]. `MOSQUITTO=HOST:PORT` uses that one
/// instead, `MOSQUITTO=off` none.
pub fn mosquitto() -> Option<Peer> {
    chosen("MOSQUITTO", "Mosquitto", || {
        let dir = fresh_dir("mosquitto");
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n\
                 listener {port} 127.0.0.1\nmax_queued_messages 100000\n\
                 max_inflight_messages {MQTT_WINDOW}\n"
            ),
        )
        .ok()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        spawn(
            "Mosquitto",
            dir,
            addr,
            Command::new("mosquitto").arg("-c").arg(&conf),
        )
    })
}

/// The nats-server binary: `NATS_SERVER`, else `.venv/bin` of this tree, else the one
/// beside `SWITCHBOARD_PYTHON`, else PATH (as scripts/peers/nats-ctl.sh finds it).
fn nats_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        candidates.push(p.into());
    }
    candidates.push(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/nats-server").into());
    if let Some(py) = std::env::var_os("SWITCHBOARD_PYTHON") {
        candidates.push(PathBuf::from(py).with_file_name("nats-server"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| "nats-server".into())
}

/// A single nats-server of this run with MQTT and JetStream on (its MQTT needs both and a
/// `server_name`), its store in a fresh directory under /tmp (JetStream's default sync:
/// not every write is fsynced), `mqtt.max_ack_pending` [`MQTT_WINDOW`]. Not the 3-node
/// rig the cluster tests use. `NATS_MQTT=HOST:PORT` uses that one, `NATS_MQTT=off` none.
pub fn nats_mqtt() -> Option<Peer> {
    chosen("NATS_MQTT", "nats-server MQTT", || {
        let dir = fresh_dir("nats");
        let (client, mqtt) = (free_port(), free_port());
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "server_name: sb-bench\nlisten: 127.0.0.1:{client}\n\
                 jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 256MB\n  max_file_store: 8GB\n}}\n\
                 mqtt {{\n  listen: 127.0.0.1:{mqtt}\n  max_ack_pending: {MQTT_WINDOW}\n}}\n",
                dir.join("store").display()
            ),
        )
        .ok()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], mqtt));
        spawn(
            "nats-server MQTT",
            dir,
            addr,
            Command::new(nats_binary()).arg("-c").arg(&conf),
        )
    })
}

/// The PID of the shared RabbitMQ's Erlang VM (beam.smp), from the pid file
/// scripts/peers/rabbitmq-ctl.sh keeps (`RMQ_DIR`, default /tmp/rabbitmq-test).
pub fn rabbitmq_pid() -> Option<u32> {
    let dir = std::env::var("RMQ_DIR").unwrap_or_else(|_| "/tmp/rabbitmq-test".into());
    std::fs::read_to_string(format!("{dir}/rabbit.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The PID of the shared Prosody (scripts/peers/prosody-ctl.sh's launcher pid file).
pub fn prosody_pid() -> Option<u32> {
    let dir = std::env::var("PROSODY_DIR").unwrap_or_else(|_| "/tmp/prosody-test".into());
    std::fs::read_to_string(format!("{dir}/launcher.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// RabbitMQ's AMQP address as the shared peer serves it (scripts/peers/rabbitmq.conf).
pub const RABBITMQ_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Deletes RabbitMQ queues a sample left behind (a STOMP `/queue/…` destination is a
/// durable queue there, which outlives the connection).
pub async fn rabbitmq_delete_queues(names: &[String]) {
    let Ok(c) =
        lapin::Connection::connect(RABBITMQ_AMQP, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(ch) = c.create_channel().await {
        for n in names {
            let _ = ch.queue_delete(n.as_str().into(), Default::default()).await;
        }
    }
    let _ = c.close(200, "done".into()).await;
}
