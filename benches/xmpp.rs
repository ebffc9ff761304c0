//! XMPP link benchmark (not a test): an XMPP user's chats through Prosody into the
//! router by its two kinds of link, each routed to a queue and out to a STOMP consumer,
//! against Prosody's own c2s → c2s rate on the same machine:
//!
//! - component: user A → Prosody → the `xmpp` link (XEP-0114, domain bridge.localhost,
//!   plain TCP) → queue → STOMP;
//! - bot: user A → Prosody → the `xmpp_client` link (an ordinary account logged in over
//!   STARTTLS with SCRAM and XEP-0198 stream management) → queue → STOMP;
//! - ceiling: user A → Prosody → user B (plain TCP, no stream management).
//!
//! The third figure is a **ceiling, not a peer**: no other product does these paths
//! here, and both router paths run through Prosody too (Prosody hands a component one
//! stream and does less per stanza than for a c2s recipient, so the component path can
//! pass it; the bot is a c2s recipient like B, plus TLS and stream management).
//!
//! Like for like on the two router paths: the same sender (one session of user A, the
//! minimal Rust c2s client of benches/common/xmpp_client.rs), the same messages (chat
//! stanzas with bodies `m0`, `m1`, …, in writes of 200 stanzas), the same window (none
//! but TCP's: the whole sample is written as fast as Prosody reads it, and the sample
//! ends when the last message reaches the STOMP consumer), and the same route (the
//! link's JID → a queue of its own, one STOMP subscriber with `ack: auto`). The
//! guarantees differ as the links do (docs/xmpp.md, "Delivery guarantees"): nothing
//! acknowledges a component's stanzas, while the bot's stream acknowledges to Prosody
//! (`<a h='…'/>`) what the link handed to the core, when Prosody asks (`<r/>`); the
//! bench counts those requests and answers in Prosody's debug log.
//!
//! Method: benches/common/method.rs (warm-up, alternating order, repeats, median and
//! spread, CPU of the router and of Prosody). Needs Prosody (`scripts/bench xmpp`
//! starts it); Prosody lets one connection serve a component domain, so the bench
//! waits (up to a minute) while another test holds bridge.localhost.

mod common;

use std::cell::Cell;
use std::process::Command;
use std::time::{Duration, Instant};

use common::method::{self, Side, Sizing, Stats, Window};
use common::prosody_log::{self, Acks};
use common::{stomp_client, xmpp_client};
use futures::{SinkExt, StreamExt};
use switchboard::listener::stomp::codec::{Incoming, Outgoing};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame};

const CTL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/prosody-ctl.sh");
const COMPONENT_JID: &str = "bench@bridge.localhost";

fn adduser(jid: &str) {
    let ok = Command::new(CTL)
        .args(["adduser", jid, "pw"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("prosody-ctl.sh");
    assert!(ok.success(), "adduser {jid}");
}

/// The test Prosody's self-signed certificate, which the bot trusts through `ca_file`.
fn prosody_cert() -> String {
    let dir = std::env::var("PROSODY_DIR").unwrap_or_else(|_| "/tmp/prosody-test".into());
    format!("{dir}/certs/localhost.crt")
}

/// Waits until both links say `connected`; a component domain held by another
/// connection (a test using bridge.localhost) keeps the component link retrying, so
/// the wait is long and its failure says why.
fn wait_links(admin: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = common::http_get(admin, "/links");
        if text.matches("\"connected\"").count() >= 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the router's links did not both connect in 60 s (is another test holding the \
             component domain bridge.localhost? retry when it is done):\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn subscribe(stomp: std::net::SocketAddr, queue: &str) -> stomp_client::Conn {
    let mut c = stomp_client::connect(stomp, None).await;
    let sub = Frame::new(Cmd::Subscribe)
        .with_header("destination", format!("/queue/{queue}"))
        .with_header("id", "1")
        .with_header("ack", "auto")
        .with_header("receipt", "s1");
    c.send(Outgoing::Frame(sub)).await.unwrap();
    stomp_client::receipt(&mut c, "s1").await;
    c
}

/// Sends probes to `to` until one reaches `consumer` (a link that just connected may
/// not be ready for chats yet: one to it before then bounces); late probes are skipped
/// by [`receive`].
async fn probe(sa: &mut xmpp_client::Session, to: &str, consumer: &mut stomp_client::Conn) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no probe to {to} came through");
        xmpp_client::send_probe(&mut sa.w, to).await;
        let got = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await;
        if let Ok(Some(Ok(Incoming::Frame(f)))) = got
            && f.command == Cmd::Message
        {
            return;
        }
    }
}

/// Reads `n` messages (not probes) from `consumer`; returns when the last one came.
async fn receive(consumer: &mut stomp_client::Conn, n: usize) -> Instant {
    let mut got = 0;
    while got < n {
        match consumer.next().await {
            Some(Ok(Incoming::Frame(f)))
                if f.command == Cmd::Message && &f.body[..] != b"probe" =>
            {
                got += 1
            }
            Some(Ok(_)) => {}
            other => panic!("STOMP consumer: {other:?} after {got}"),
        }
    }
    Instant::now()
}

fn main() {
    let plan = method::plan();
    let tag = format!("bench{}", std::process::id());
    let (a, b, bot) = (
        format!("{tag}a@localhost"),
        format!("{tag}b@localhost"),
        format!("{tag}bot@localhost"),
    );
    for u in [&a, &b, &bot] {
        adduser(u);
    }
    let settings = format!(
        "links:\n  im:\n    xmpp:\n      server: \"127.0.0.1:5347\"\n      domain: bridge.localhost\n      secret: bridgesecret\n  bot:\n    xmpp_client:\n      jid: {bot}\n      password: pw\n      server: \"127.0.0.1:5222\"\n      ca_file: {}\n",
        prosody_cert()
    );
    let (queue, bot_queue) = (format!("{tag}.q"), format!("{tag}.botq"));
    let routes = format!(
        "routes:\n  - name: bench\n    from: {{xmpp: {{link: im, jid: \"{COMPONENT_JID}\"}}}}\n    to: [{{queue: {queue}}}]\n  - name: bench-bot\n    from: {{xmpp: {{link: bot, jid: \"{bot}\"}}}}\n    to: [{{queue: {bot_queue}}}]\n"
    );
    let log_from = prosody_log::offset();
    let (router, addrs) = common::start_listeners(&["stomp", "admin"], &settings, &routes, true);
    let (stomp, admin) = (addrs[0], addrs[1]);
    wait_links(admin);
    let bot_session = prosody_log::session_of(&prosody_log::since(log_from), &bot);
    let prosody = common::peers::prosody_pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c2s: std::net::SocketAddr = "127.0.0.1:5222".parse().unwrap();
    let (mut sa, mut sb, mut consumer, mut bot_consumer) = rt.block_on(async {
        let mut sa = xmpp_client::login(c2s, &a, "pw").await;
        let sb = xmpp_client::login(c2s, &b, "pw").await;
        let mut consumer = subscribe(stomp, &queue).await;
        let mut bot_consumer = subscribe(stomp, &bot_queue).await;
        probe(&mut sa, COMPONENT_JID, &mut consumer).await;
        probe(&mut sa, &bot, &mut bot_consumer).await;
        (sa, sb, consumer, bot_consumer)
    });
    let ceiling_pids: Vec<u32> = prosody.into_iter().collect();
    let router_pids: Vec<u32> = std::iter::once(router.0.id()).chain(prosody).collect();
    let rt = &rt;
    // The bot's stream-management traffic over its samples (warm-up included).
    let (acks, bot_msgs) = (Cell::new(Acks::default()), Cell::new(0u64));
    // Every side sends from user A's session, one after the other.
    let sa = tokio::sync::Mutex::new(&mut sa);
    let mut sides = vec![
        Side::new("Switchboard component", |n| {
            rt.block_on(async {
                let mut sa = sa.lock().await;
                let window = Window::open(&router_pids);
                let send = xmpp_client::send_chats(&mut sa.w, COMPONENT_JID, n);
                let (end, ()) = tokio::join!(receive(&mut consumer, n), send);
                window.close_at(end, n as u64, Vec::new())
            })
        }),
        Side::new("Switchboard bot", |n| {
            rt.block_on(async {
                let mut sa = sa.lock().await;
                let from = prosody_log::offset();
                let window = Window::open(&router_pids);
                let send = xmpp_client::send_chats(&mut sa.w, &bot, n);
                let (end, ()) = tokio::join!(receive(&mut bot_consumer, n), send);
                let run = window.close_at(end, n as u64, Vec::new());
                if let Some(s) = &bot_session {
                    let mut sum = acks.get();
                    sum += prosody_log::acks(&prosody_log::since(from), s);
                    acks.set(sum);
                    bot_msgs.set(bot_msgs.get() + n as u64);
                }
                run
            })
        }),
    ];
    if plan.peers {
        sides.push(Side::new("Prosody c2s → c2s (ceiling)", |n| {
            rt.block_on(async {
                let mut sa = sa.lock().await;
                let window = Window::open(&ceiling_pids);
                let recv = xmpp_client::count_messages(&mut sb.r, n);
                let send = xmpp_client::send_chats(&mut sa.w, &b, n);
                let (end, ()) = tokio::join!(recv, send);
                window.close_at(end, n as u64, Vec::new())
            })
        }));
    }
    println!("XMPP benchmark ({plan:?})");
    let stats = method::compare(
        &plan,
        Sizing::Closed {
            warm: 5_000,
            max: 500_000,
        },
        &mut sides,
    );
    drop(sides);
    let rss = common::rss_mib(router.0.id());
    let (component, bot_side, ceiling) = (&stats[0], &stats[1], stats.get(2));
    let note = "the ceiling is not a peer: Prosody's own chat-to-chat delivery on the same machine; the router's paths run through Prosody too, so their per CPU-s ratio counts the router and Prosody";
    let rows = [
        ("XMPP chat → queue → STOMP", component),
        ("XMPP chat → bot → queue → STOMP", bot_side),
    ];
    for (scenario, side) in rows {
        let row: Vec<Stats> = std::iter::once(side).chain(ceiling).cloned().collect();
        common::record_stats("XMPP", scenario, "scripts/bench xmpp", note, &row, rss);
    }
    side_by_side(component, bot_side, ceiling);
    let (acks, n) = (acks.get(), bot_msgs.get());
    if bot_session.is_none() {
        println!("  (the bot's session was not found in Prosody's log: no acknowledgement counts)");
    } else if n > 0 {
        println!(
            "  bot stream management: Prosody sent {} <r/>, the link answered {} <a/> acknowledging {} stanzas, for {n} chats ({:.0} chats per acknowledgement round trip)",
            acks.requests,
            acks.answers,
            acks.acked,
            n as f64 / acks.answers.max(1) as f64
        );
    }
}

/// The three figures on one screen: rates, ratios, and the CPU each path costs the
/// router and Prosody.
fn side_by_side(component: &Stats, bot: &Stats, ceiling: Option<&Stats>) {
    println!("side by side (medians)");
    // Prosody's CPU per message (µs), median over the samples; it is the `i`th process
    // the side watched.
    let us = |s: &Stats, i: usize| {
        let mut v: Vec<f64> = s
            .runs
            .iter()
            .filter_map(|r| Some(r.cpu.get(i).copied().flatten()? * 1e6 / r.msgs.max(1) as f64))
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).map_or("—".into(), |m| format!("{m:.1}"))
    };
    for s in [component, bot] {
        println!(
            "  {:<27} {:>8.0} msg/s  {:>8.0} per router CPU-s  {:>7.0} per CPU-s router + Prosody  Prosody {} µs CPU/msg",
            s.name,
            s.rate(),
            s.per_cpu_second().unwrap_or(0.0),
            s.per_cpu_second_all().unwrap_or(0.0),
            us(s, 1),
        );
    }
    if let Some(c) = ceiling {
        println!(
            "  {:<27} {:>8.0} msg/s  {:>8}                   {:>7.0} per Prosody CPU-s           Prosody {} µs CPU/msg",
            c.name,
            c.rate(),
            "",
            c.per_cpu_second().unwrap_or(0.0),
            us(c, 0),
        );
    }
    let r = |x: &Stats, y: &Stats| x.rate() / y.rate().max(1e-9);
    print!("  bot ÷ component {:.2}×", r(bot, component));
    if let Some(c) = ceiling {
        print!(
            "; component ÷ ceiling {:.2}×; bot ÷ ceiling {:.2}×",
            r(component, c),
            r(bot, c)
        );
    }
    println!();
}
