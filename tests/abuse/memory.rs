//! Memory bounds: unacknowledged bytes, transactions, retained messages, route fan-out,
//! and the log lines a flood of refusals makes.
//!
//! Each memory test runs the daemon with small limits and a memory watermark of
//! [`WATERMARK_MIB`], lets a hostile client (tests/py/abuse_memory.py) do its thing while
//! an honest client on another connection keeps being served, and asserts the refusal
//! at protocol level and that the daemon's RSS (VmRSS of /proc/PID/status) stays under
//! the watermark plus [`MARGIN_MIB`]: the margin is what the process holds besides
//! messages (code, allocator slack, socket and codec buffers of a debug build).

use crate::common::{Daemon, daemon_with_config, http, http_json, python};

const WATERMARK_MIB: u64 = 64;
const MARGIN_MIB: u64 = 64;

fn limits_config(extra: &str) -> String {
    format!(
        "durability:\n  memory_high_watermark: {}\n{extra}",
        WATERMARK_MIB * 1024 * 1024
    )
}

/// Runs a scenario of abuse_memory.py with the daemon's pid and the RSS limit.
fn scenario(d: &Daemon, name: &str, extra: &[&str]) -> String {
    let pid = d.child.id().to_string();
    let limit = (WATERMARK_MIB + MARGIN_MIB).to_string();
    let port = d.addr("stomp").port().to_string();
    let mqtt = d.addr("mqtt").port().to_string();
    let out = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/abuse_memory.py"
        ))
        .args([
            "--port",
            &port,
            name,
            "--pid",
            &pid,
            "--rss-limit-mib",
            &limit,
        ])
        .args(["--mqtt-port", &mqtt, "--timeout", "20"])
        .args(extra)
        .output()
        .expect("run abuse_memory.py");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "scenario {name} failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log (tail):\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&d.log(), 40)
    );
    stdout
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A limit's hit counter in `GET /memory`.
fn hits(d: &Daemon, cause: &str) -> u64 {
    let (status, v) = http_json(d.addr("admin"), "GET", "/memory");
    assert_eq!(status, 200, "{v}");
    v["limits"][cause].as_u64().unwrap_or(0)
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn a_consumer_that_never_reads_holds_bounded_unacknowledged_bytes() {
    let d = daemon_with_config(&limits_config(
        "queues:\n  defaults:\n    max_bytes: 4194304\n    overflow: reject-publish\nstomp:\n  max_unacked_bytes: 1048576\n",
    ));
    scenario(&d, "unacked", &[]);
    assert!(
        hits(&d, "stomp.unacked_bytes") > 0,
        "{}",
        tail(&d.log(), 20)
    );
    let (_, v) = http_json(d.addr("admin"), "GET", "/memory");
    let unacked = v["held"]["unacked"].as_u64().unwrap();
    // One connection's budget, plus at most one message over it.
    assert!(unacked <= 1024 * 1024 + 65 * 1024, "{v}");
    let log = d.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("unacknowledged bytes"))
            .count()
            <= 3,
        "the limit is logged once per episode:\n{}",
        tail(&log, 30)
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn one_stomp_transaction_cannot_buffer_more_than_its_limit() {
    let d = daemon_with_config(&limits_config("stomp:\n  max_transaction_bytes: 1048576\n"));
    scenario(&d, "transaction", &[]);
    assert!(hits(&d, "stomp.transaction_bytes") > 0);
    let (_, v) = http_json(d.addr("admin"), "GET", "/memory");
    assert_eq!(v["held"]["transactions"], 0, "the buffer is freed: {v}");
}

/// Each MQTT filter costs the router a binding (clustered, a NATS subscription too): a
/// session holds at most `mqtt.max_subscriptions`.
#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn an_mqtt_session_holds_at_most_its_subscription_limit() {
    let d = daemon_with_config(&limits_config("mqtt:\n  max_subscriptions: 4\n"));
    scenario(&d, "subscriptions", &["--expect-max", "4"]);
    assert_eq!(
        hits(&d, "mqtt.subscriptions_full"),
        6,
        "3 refusals per protocol version"
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn retained_messages_are_bounded_in_bytes_also_after_a_restart() {
    let d = daemon_with_config(&limits_config("mqtt:\n  max_retained_bytes: 1048576\n"));
    // 64 KiB each: at most 16 fit in 1 MiB.
    scenario(&d, "retained", &["--expect-max", "16"]);
    assert!(hits(&d, "mqtt.retained_full") > 0);
    let (_, v) = http_json(d.addr("admin"), "GET", "/memory");
    let held = v["held"]["retained"].as_u64().unwrap();
    assert!(held > 0 && held <= 1024 * 1024, "{v}");
    // A smaller limit after the restart: the reload from the store keeps to it.
    let cfg = d.dir.path().join("switchboard.yaml").display().to_string();
    let d = d.kill_change_restart(
        |dir| {
            std::fs::write(
                dir.join("switchboard.yaml"),
                limits_config("mqtt:\n  max_retained_bytes: 262144\n"),
            )
            .unwrap()
        },
        &["--config", &cfg],
    );
    scenario(&d, "retained_count", &["--expect-max", "4"]);
    let (_, v) = http_json(d.addr("admin"), "GET", "/memory");
    assert!(v["held"]["retained"].as_u64().unwrap() <= 256 * 1024, "{v}");
    assert!(
        d.log()
            .contains("retained messages over the byte limit not restored"),
        "{}",
        tail(&d.log(), 20)
    );
}

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn a_subscriber_overflow_is_logged_once_per_second_with_a_count() {
    let d = daemon_with_config(
        "queues:\n  subscription_defaults:\n    max_length: 10\n    overflow: reject-publish\n",
    );
    let started = std::time::Instant::now();
    scenario(&d, "overflow", &[]);
    let secs = started.elapsed().as_secs() + 1;
    let log = d.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("subscription buffer full"))
        .collect();
    assert!(
        !lines.is_empty(),
        "the overflow is logged at all:\n{}",
        tail(&log, 20)
    );
    // At most one line a second (and one for the first hit), each with a count.
    assert!(
        lines.len() as u64 <= secs + 1,
        "{} lines in {secs} s:\n{}",
        lines.len(),
        lines[..lines.len().min(5)].join("\n")
    );
    assert!(lines.iter().all(|l| l.contains("count=")), "{}", lines[0]);
    assert!(hits(&d, "subscription.overflow") >= 2900);
}

#[test]
fn a_reload_to_a_table_over_the_fanout_limit_is_refused() {
    let d = daemon_with_config("routes:\n  max_fanout: 100\n");
    // 20 × 20 legs for one publish to `in`.
    let mut t = String::from("routes:\n  - name: a\n    from: { queue: in }\n    to:\n");
    for i in 0..20 {
        t += &format!("      - topic: mid.{i}\n");
    }
    for i in 0..20 {
        t += &format!("  - name: b{i}\n    from: {{ topic: mid.{i} }}\n    to:\n");
        for j in 0..20 {
            t += &format!("      - queue: out.{i}.{j}\n");
        }
    }
    std::fs::write(d.routes_dir().join("fan.yaml"), t).unwrap();
    let (status, body) = http(d.addr("admin"), "POST", "/routes/reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("fan-out"), "{body}");
    // The table in force is still the empty one.
    let (_, v) = http_json(d.addr("admin"), "GET", "/routes");
    assert_eq!(v["routes"].as_array().map(Vec::len), Some(0), "{v}");
}
