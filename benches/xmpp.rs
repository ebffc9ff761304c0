//! XMPP link benchmark (not a test): an XMPP user's messages through Prosody and the
//! router's component into a queue and out to a STOMP consumer, against Prosody's own
//! c2s → c2s rate on the same machine as the ceiling; slixmpp sends on both paths, one
//! run each; prints both figures and the ratio. Needs Prosody (`scripts/bench xmpp`
//! starts it) and the test venv. `XMPP_BENCH_COUNT` (default 20000).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

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
    // The component needs a moment to log in to Prosody.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if std::fs::read_to_string(format!("/proc/{}/status", router.0.id())).is_ok() {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let rates = common::python_paths(
        "xmpp_bench.py",
        &[
            "--stomp-port".into(),
            stomp.port().to_string(),
            "--a".into(),
            a.clone(),
            "--b".into(),
            b.clone(),
            "--password".into(),
            "pw".into(),
            "--count".into(),
            count.to_string(),
            "--queue".into(),
            format!("{tag}.q"),
        ],
    );
    if let (Some(c), Some(r)) = (rates.get("ceiling"), rates.get("router")) {
        common::row(
            "XMPP",
            "XMPP chat → queue → STOMP (slixmpp)",
            "msg/s",
            common::Fig::value(*r),
            Some(("Prosody c2s → c2s", common::Fig::value(*c))),
            Some(router.0.id()),
        );
        println!(
            "router / ceiling = {:.2}x (goal >= 0.9x); router RSS {} KiB",
            r / c,
            common::rss_kb(router.0.id())
        );
    }
}
