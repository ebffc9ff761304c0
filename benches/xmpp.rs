//! XMPP link benchmark (not a test): an XMPP user's messages through Prosody and the
//! router's component into a queue and out to a STOMP consumer, against Prosody's own
//! c2s → c2s rate on the same machine as the ceiling; the same minimal Rust c2s client
//! (benches/common/xmpp_client.rs) sends on both paths, one run each; prints both
//! figures and the ratio. Needs Prosody (`scripts/bench xmpp` starts it).
//! `XMPP_BENCH_COUNT` (default 20000).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{stomp_client, xmpp_client};
use futures::{SinkExt, StreamExt};
use switchboard::listener::stomp::codec::{Incoming, Outgoing};
use switchboard::listener::stomp::frame::{Command as Cmd, Frame};

const CTL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/peers/prosody-ctl.sh");

fn main() {
    let count: usize = std::env::var("XMPP_BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c2s: std::net::SocketAddr = "127.0.0.1:5222".parse().unwrap();
    let queue = format!("{tag}.q");
    let (ceiling, routed) = rt.block_on(async {
        let mut sa = xmpp_client::login(c2s, &a, "pw").await;
        let mut sb = xmpp_client::login(c2s, &b, "pw").await;
        // Ceiling: A → Prosody → B.
        let t0 = Instant::now();
        let recv = tokio::spawn(async move { xmpp_client::count_messages(&mut sb.r, count).await });
        xmpp_client::send_chats(&mut sa.w, &b, count).await;
        let ceiling = count as f64 / (recv.await.unwrap() - t0).as_secs_f64();
        println!("ceiling  {count:>7} messages: {ceiling:>7.0} msgs/s");
        // Router: A → Prosody → component → queue → STOMP consumer.
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
        let recv = tokio::spawn(async move {
            let mut got = 0;
            while got < count {
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
        });
        let t0 = Instant::now();
        xmpp_client::send_chats(&mut sa.w, "bench@bridge.localhost", count).await;
        let routed = count as f64 / (recv.await.unwrap() - t0).as_secs_f64();
        println!("router   {count:>7} messages: {routed:>7.0} msgs/s");
        (ceiling, routed)
    });
    common::row(
        "XMPP",
        "XMPP chat → queue → STOMP",
        "msg/s",
        common::Fig::value(routed),
        Some(("Prosody c2s → c2s", common::Fig::value(ceiling))),
        Some(router.0.id()),
    );
    println!(
        "router / ceiling = {:.2}x (goal >= 0.9x); router RSS {} KiB",
        routed / ceiling,
        common::rss_kb(router.0.id())
    );
}
