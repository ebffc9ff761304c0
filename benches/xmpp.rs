//! XMPP link benchmark (not a test): an XMPP user's messages through Prosody and the
//! router's component into a queue and out to a STOMP consumer, against Prosody's own
//! c2s → c2s rate on the same machine. That second figure is a **ceiling, not a peer**:
//! no other product does this path here, and the router's path runs through Prosody too
//! (Prosody hands a component one stream and does less per stanza than for a c2s
//! recipient, so the router's path can pass it). The same minimal Rust c2s client
//! (benches/common/xmpp_client.rs) sends on both paths; method: benches/common/method.rs
//! (warm-up, alternating order, repeats, median and spread, CPU of the router and of
//! Prosody). Needs Prosody (`scripts/bench xmpp` starts it).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::method::{self, Side, Sizing, Window};
use common::{stomp_client, xmpp_client};
use futures::{SinkExt, StreamExt};
use switchboard::listener::stomp::codec::{Incoming, Outgoing};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame};

const CTL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/prosody-ctl.sh");

fn main() {
    let plan = method::plan();
    let tag = format!("bench{}", std::process::id());
    let (a, b) = (format!("{tag}a@localhost"), format!("{tag}b@localhost"));
    for u in [&a, &b] {
        let ok = Command::new(CTL)
            .args(["adduser", u, "pw"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("prosody-ctl.sh");
        assert!(ok.success(), "adduser {u}");
    }
    let settings = "links:\n  im:\n    xmpp:\n      server: \"127.0.0.1:5347\"\n      domain: bridge.localhost\n      secret: bridgesecret\n";
    let routes = format!(
        "routes:\n  - name: bench\n    from: {{xmpp: {{link: im, jid: \"bench@bridge.localhost\"}}}}\n    to: [{{queue: {tag}.q}}]\n"
    );
    let (router, stomp) = common::start_router_with_routes("stomp", settings, &routes);
    let prosody = common::peers::prosody_pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c2s: std::net::SocketAddr = "127.0.0.1:5222".parse().unwrap();
    let queue = format!("{tag}.q");
    let (mut sa, mut sb, mut consumer) = rt.block_on(async {
        let mut sa = xmpp_client::login(c2s, &a, "pw").await;
        let sb = xmpp_client::login(c2s, &b, "pw").await;
        let mut consumer = stomp_client::connect(stomp, None).await;
        let sub = Frame::new(Cmd::Subscribe)
            .with_header("destination", format!("/queue/{queue}"))
            .with_header("id", "1")
            .with_header("ack", "auto")
            .with_header("receipt", "s1");
        consumer.send(Outgoing::Frame(sub)).await.unwrap();
        stomp_client::receipt(&mut consumer, "s1").await;
        // The component may still be logging in to Prosody (a message to it before then
        // bounces): probe until one arrives; late probes are not counted below.
        let probe_deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < probe_deadline,
                "the router's XMPP component never came up"
            );
            xmpp_client::send_probe(&mut sa.w, "bench@bridge.localhost").await;
            let got = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await;
            if let Ok(Some(Ok(Incoming::Frame(f)))) = got
                && f.command == Cmd::Message
            {
                break;
            }
        }
        (sa, sb, consumer)
    });
    let ceiling_pids: Vec<u32> = prosody.into_iter().collect();
    let router_pids: Vec<u32> = std::iter::once(router.0.id()).chain(prosody).collect();
    let rt = &rt;
    // Both sides send from user A's session, one after the other.
    let sa = tokio::sync::Mutex::new(&mut sa);
    let mut sides = vec![Side::new("Switchboard", |n| {
        rt.block_on(async {
            let mut sa = sa.lock().await;
            let recv = async {
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
            };
            let window = Window::open(&router_pids);
            let send = xmpp_client::send_chats(&mut sa.w, "bench@bridge.localhost", n);
            let (end, ()) = tokio::join!(recv, send);
            window.close_at(end, n as u64, Vec::new())
        })
    })];
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
    common::record_stats(
        "XMPP",
        "XMPP chat → queue → STOMP",
        "scripts/bench xmpp",
        "the second side is a ceiling, not a peer: Prosody's own chat-to-chat delivery on the same machine; the router's path runs through Prosody too, so its per CPU-s ratio counts the router and Prosody",
        &stats,
        common::rss_mib(router.0.id()),
    );
}
