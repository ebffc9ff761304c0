//! AMQP link benchmark (not a test): the router's AMQP link moving messages from one
//! RabbitMQ queue to another, against RabbitMQ's own shovel (`rabbitmq_shovel` plugin, a
//! dynamic shovel) doing the same move, at-least-once on both sides: the link acks the
//! source only once the core has the message (and, for a persistent one, its journal
//! has it on disk) and publishes with confirms; the shovel runs with `ack-mode:
//! on-confirm`. Needs RabbitMQ on 127.0.0.1:5672 (`scripts/bench amqp` starts it and
//! enables the shovel plugin).
//!
//! Every sample fills the source queue with `AMQP_BENCH_COUNT` (100,000) persistent
//! messages of `AMQP_BENCH_SIZE` (256) bytes with confirms, outside the timed window;
//! then the mover starts (a router with one route `amqp queue SRC` → the default
//! exchange with routing key DST, or a shovel from SRC to the queue DST, i.e. the default
//! exchange with that key), and the window runs from the first message seen in DST to
//! the last (polled every 10 ms with a passive declare: the movers' start-up is not
//! timed). Reported: msgs/s, and the CPU seconds per 100,000 messages of the router
//! and of RabbitMQ's VM (beam.smp) in the window, from `/proc/PID/stat`.
//!
//! Both sides run their defaults: the link's `prefetch` and `publish_window`, the
//! shovel's `src-prefetch-count` (1000). `AMQP_BENCH_PREFETCH`, `AMQP_BENCH_WINDOW` and
//! `AMQP_BENCH_PENDING` set the link's `prefetch`, `publish_window` and `max_pending`; `AMQP_BENCH_DATA=off` runs the router without its journal.
//! Method: benches/common/method.rs (a warm-up move of 10,000 per side, then
//! `SB_BENCH_REPEATS` samples each, the side going first alternating).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use common::method::{self, Run, Side, Sizing, Window};
use common::peers::RABBITMQ_AMQP as URI;

const CTL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/rabbitmq-ctl.sh");

async fn channel() -> (Connection, Channel) {
    let c = Connection::connect(URI, ConnectionProperties::default())
        .await
        .expect("AMQP connect (scripts/setup rabbitmq)");
    let ch = c.create_channel().await.expect("channel");
    (c, ch)
}

/// Declares (durable, expiring after 10 idle minutes) and empties a queue.
async fn declare(ch: &Channel, name: &str) {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("declare");
    ch.queue_purge(name.into(), QueuePurgeOptions::default())
        .await
        .expect("purge");
}

/// Messages in a queue (passive declare).
async fn depth(ch: &Channel, name: &str) -> u32 {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive declare")
    .message_count()
}

/// Publishes `count` persistent messages of `size` bytes to `queue`, every one confirmed.
async fn fill(ch: &Channel, queue: &str, count: usize, size: usize) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let body = vec![b'x'; size];
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/octet-stream".into());
    let mut pending = Vec::with_capacity(1000);
    for i in 0..count {
        pending.push(
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await
            .expect("publish"),
        );
        if pending.len() == 1000 || i + 1 == count {
            for c in pending.drain(..) {
                c.await.expect("confirm");
            }
        }
    }
}

/// Waits until `dst` holds `count` messages; the window opens when the first one is seen.
async fn timed_move(ch: &Channel, dst: &str, count: usize, pids: &[u32]) -> Run {
    let deadline = Instant::now() + Duration::from_secs(300);
    let (window, first) = loop {
        let d = depth(ch, dst).await as usize;
        if d > 0 {
            break (Window::open(pids), d);
        }
        assert!(Instant::now() < deadline, "nothing moved to {dst}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    loop {
        let d = depth(ch, dst).await as usize;
        if d >= count {
            return window.close(d.saturating_sub(first) as u64, Vec::new());
        }
        assert!(
            Instant::now() < deadline,
            "{dst}: {d} of {count} after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ctl(args: &[&str]) -> bool {
    Command::new(CTL)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn env_num(k: &str) -> Option<usize> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let plan = method::plan();
    let count = env_num("AMQP_BENCH_COUNT").unwrap_or(100_000);
    let size = env_num("AMQP_BENCH_SIZE").unwrap_or(256);
    let journal = std::env::var("AMQP_BENCH_DATA").ok().as_deref() != Some("off");
    let prefix = format!("bench{}", std::process::id());
    let (src, dst) = (format!("{prefix}.src"), format!("{prefix}.dst"));
    let rabbit = common::peers::rabbitmq_pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (conn, ch) = rt.block_on(channel());
    let shovel = plan.peers && ctl(&["plugins", "enable", "rabbitmq_shovel"]);
    if plan.peers && !shovel {
        println!("rabbitmq_shovel could not be enabled: the shovel side is left out");
    }
    let mut link = String::from("links:\n  rabbit:\n    amqp:\n      uri: \"");
    link.push_str(URI);
    link.push_str("\"\n");
    let mut link_note = Vec::new();
    for (var, key) in [
        ("AMQP_BENCH_PREFETCH", "prefetch"),
        ("AMQP_BENCH_WINDOW", "publish_window"),
        ("AMQP_BENCH_PENDING", "max_pending"),
    ] {
        if let Some(v) = env_num(var) {
            link.push_str(&format!("      {key}: {v}\n"));
            link_note.push(format!("{key} {v}"));
        }
    }
    let link_note = if link_note.is_empty() {
        "link defaults".to_owned()
    } else {
        link_note.join(", ")
    };
    let routes = format!(
        "routes:\n  - name: move\n    from: {{amqp: {{link: rabbit, queue: {src}}}}}\n    to: [{{amqp: {{link: rabbit, routing_key: {dst}}}}}]\n"
    );
    let rt = &rt;
    let ch = &ch;
    let prepare = |n: usize| {
        rt.block_on(async {
            declare(ch, &src).await;
            declare(ch, &dst).await;
            fill(ch, &src, n, size).await;
        })
    };
    let mut rss = 0;
    let link_side = Side::new("Switchboard AMQP link", |n| {
        prepare(n);
        let (router, _admin) = if journal {
            common::start_router_with_routes("admin", &link, &routes)
        } else {
            let (r, a) = common::start_listeners(&["admin"], &link, &routes, false);
            (r, a[0])
        };
        let pids: Vec<u32> = std::iter::once(router.0.id()).chain(rabbit).collect();
        let run = rt.block_on(timed_move(ch, &dst, n, &pids));
        rss = common::rss_kb(router.0.id());
        run
    });
    let shovel_name = format!("{prefix}-shovel");
    let shovel_side = Side::new("RabbitMQ shovel", |n| {
        prepare(n);
        let value = serde_json::json!({
            "src-protocol": "amqp091",
            "src-uri": "amqp://guest:guest@127.0.0.1:5672",
            "src-queue": src,
            "dest-protocol": "amqp091",
            "dest-uri": "amqp://guest:guest@127.0.0.1:5672",
            "dest-queue": dst,
            "ack-mode": "on-confirm",
        })
        .to_string();
        assert!(
            ctl(&["ctl", "set_parameter", "shovel", &shovel_name, &value]),
            "rabbitmqctl set_parameter shovel"
        );
        let pids: Vec<u32> = rabbit.into_iter().collect();
        let run = rt.block_on(timed_move(ch, &dst, n, &pids));
        ctl(&["ctl", "clear_parameter", "shovel", &shovel_name]);
        run
    });
    let mut sides = vec![link_side];
    if shovel {
        sides.push(shovel_side);
    }
    println!(
        "AMQP link vs RabbitMQ shovel ({plan:?}): {count} persistent {size} B messages queue → queue, router journal {}, {link_note}",
        if journal { "on" } else { "off" }
    );
    let stats = method::compare(
        &plan,
        Sizing::Count {
            warm: 10_000.min(count),
            count,
        },
        &mut sides,
    );
    drop(sides);
    // CPU seconds per 100,000 messages moved, of each watched process (median).
    let per_100k = |s: &method::Stats, i: usize| {
        let msgs = s.runs.iter().map(|r| r.msgs).sum::<u64>() as f64 / s.runs.len() as f64;
        s.cpu(i).map(|c| c * 100_000.0 / msgs.max(1.0))
    };
    let fmt = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.2}"));
    let link_router = per_100k(&stats[0], 0);
    let link_rabbit = per_100k(&stats[0], 1);
    let mut note = format!(
        "at-least-once on both (link: ack after the core took it, publishes with confirms; shovel: ack-mode on-confirm, src-prefetch-count default 1000); {link_note}; router journal {}; CPU-s per 100k: link router {} + RabbitMQ {}",
        if journal { "on" } else { "off" },
        fmt(link_router),
        fmt(link_rabbit)
    );
    if let Some(s) = stats.get(1) {
        let shovel_rabbit = per_100k(s, 0);
        note.push_str(&format!(", shovel RabbitMQ {}", fmt(shovel_rabbit)));
        if let (Some(a), Some(b), Some(c)) = (link_router, link_rabbit, shovel_rabbit) {
            note.push_str(&format!(
                " (RabbitMQ {:.2}× its shovel CPU, router + RabbitMQ {:.2}×)",
                b / c,
                (a + b) / c
            ));
        }
    }
    println!("{note}");
    common::record_stats(
        "AMQP",
        &format!("link vs shovel, queue → queue, {count} persistent {size} B"),
        "scripts/bench amqp",
        &note,
        &stats,
        Some(rss as f64 / 1024.0),
    );
    rt.block_on(async {
        for q in [&src, &dst] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        let _ = conn.close(200, "done".into()).await;
    });
}
