//! The XMPP client (bot) link against the real Prosody: the router logs in as an
//! ordinary account (STARTTLS, SCRAM, resource binding, roster, XEP-0198), slixmpp is
//! the user chatting with it, stomp.py the router's side (tests/py/xmpp_client_scenarios.py).
//!
//! The bot connects through a [`Forwarder`], so a test can cut its TCP connection
//! (as a network failure would: the server sees the connection end without a stream
//! close, and keeps the session for resumption) without touching anyone else's.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::forwarder::Forwarder;
use common::xmpp_server::{PROSODY, Server};
use common::{Daemon, http_json, python, wait_until};

/// The test Prosody's self-signed certificate, which the bot trusts through `ca_file`.
fn prosody_cert() -> String {
    let dir = std::env::var("PROSODY_DIR").unwrap_or_else(|_| "/tmp/prosody-test".into());
    format!("{dir}/certs/localhost.crt")
}

/// A bot account and a user account for the test `p`: (bot JID, (user JID, password)).
fn accounts(s: &Server, p: &str) -> (String, (String, String)) {
    let (bot, _) = s.user(&format!("{p}-bot"));
    (bot, s.user(p))
}

/// The routes every scenario expects (see the scenario script's docs).
const ROUTES: &str = r#"
routes:
  - name: PFX-in
    from: {xmpp: {link: bot, jid: "BOT"}}
    when: {headers: {x-xmpp-type: chat}}
    to: [{stomp: /queue/PFX.inbox}]
  - name: PFX-say
    from: {stomp: /queue/PFX.say}
    to: [{xmpp: {link: bot, to: "{header:user}", from: "BOT", type: chat}}]
  - name: PFX-presence
    from: {xmpp: {link: bot, presence: "*@localhost"}}
    to: [{topic: "PFX.presence.{1}"}]
  - name: PFX-room-in
    from: {xmpp: {link: bot, jid: "BOT"}}
    when: {headers: {x-xmpp-type: groupchat}}
    to: [{topic: PFX.room}]
  - name: PFX-room-out
    from: {topic: PFX.said}
    to: [{xmpp: {link: bot, to: "PFX@conference.localhost", type: groupchat}}]
"#;

/// Starts a router whose bot logs in to Prosody through `port` (a forwarder's).
fn router(p: &str, bot: &str, port: u16) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        format!(
            "links:\n  bot:\n    xmpp_client:\n      jid: {bot}\n      password: pw\n      server: \"127.0.0.1:{port}\"\n      ca_file: {}\n      reconnect_initial: 100ms\n      reconnect_max: 1s\n      rooms:\n        - {{room: \"{p}@conference.localhost\", nick: sbbot}}\n",
            prosody_cert()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("routes/bot.yaml"),
        ROUTES.replace("PFX", p).replace("BOT", bot),
    )
    .unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    wait_until(Duration::from_secs(20), "the bot logged in", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    d
}

fn scenario_command(
    d: &Daemon,
    p: &str,
    bot: &str,
    user: &(String, String),
    name: &str,
) -> Command {
    let mut c = Command::new(python());
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/xmpp_client_scenarios.py"
    ))
    .args(["--port", &d.addr("stomp").port().to_string()])
    .args(["--admin-port", &d.addr("admin").port().to_string()])
    .args([
        "--prefix",
        p,
        "--jid",
        &user.0,
        "--password",
        &user.1,
        "--bot",
        bot,
    ])
    .args(["--timeout", "20", name]);
    c
}

fn scenario(d: &Daemon, p: &str, bot: &str, user: &(String, String), name: &str) {
    let out = scenario_command(d, p, bot, user, name)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "scenario {name} failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

fn link(d: &Daemon) -> serde_json::Value {
    let (_, v) = http_json(d.addr("admin"), "GET", "/links");
    v[0].clone()
}

#[test]
#[cfg_attr(not(peers), ignore = "needs Prosody, Python: run scripts/test")]
fn a_bot_chats_both_ways_with_receipts_and_replies() {
    let s = &PROSODY;
    let _l = s.lock();
    let p = common::unique_prefix("bchat").to_lowercase();
    let (bot, user) = accounts(s, &p);
    let fwd = Forwarder::start(0, "127.0.0.1:5222");
    let d = router(&p, &bot, fwd.port());
    scenario(&d, &p, &bot, &user, "chat");
    assert!(d.log().contains("roster received"), "{}", d.log());
}

#[test]
#[cfg_attr(not(peers), ignore = "needs Prosody, Python: run scripts/test")]
fn a_users_presence_in_the_bots_roster_becomes_events() {
    let s = &PROSODY;
    let _l = s.lock();
    let p = common::unique_prefix("bprs").to_lowercase();
    let (bot, user) = accounts(s, &p);
    let fwd = Forwarder::start(0, "127.0.0.1:5222");
    let d = router(&p, &bot, fwd.port());
    scenario(&d, &p, &bot, &user, "presence");
}

#[test]
#[cfg_attr(not(peers), ignore = "needs Prosody, Python: run scripts/test")]
fn a_bot_in_a_room_relays_both_ways_without_echo() {
    let s = &PROSODY;
    let _l = s.lock();
    let p = common::unique_prefix("broom").to_lowercase();
    let (bot, user) = accounts(s, &p);
    let fwd = Forwarder::start(0, "127.0.0.1:5222");
    let d = router(&p, &bot, fwd.port());
    scenario(&d, &p, &bot, &user, "room");
}

/// Runs a stream scenario and, once a quarter of the messages went each way, calls
/// `cut`; returns the scenario's output.
fn stream_with_a_cut(
    d: &Daemon,
    p: &str,
    bot: &str,
    user: &(String, String),
    name: &str,
    n: u64,
    mut cut: impl FnMut(),
) -> String {
    let mut child = scenario_command(d, p, bot, user, name)
        .args(["--n", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    wait_until(Duration::from_secs(60), "a quarter of the stream", || {
        let c = &link(d)["counters"];
        (c["received"].as_u64() >= Some(n / 4) && c["published"].as_u64() >= Some(n / 4))
            .then_some(())
    });
    let at = link(d)["counters"].clone();
    cut();
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        out.push_str(&line.unwrap());
        out.push('\n');
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        status.success() && out.trim_end().ends_with("ok"),
        "scenario {name} failed (cut at {at})\nstdout:\n{out}\nstderr:\n{err}\ndaemon log:\n{}",
        d.log()
    );
    eprintln!("{name}: cut at {at}; {out}");
    out
}

/// The bot's TCP connection dies mid-stream (both ways busy), and what the bot wrote in
/// its last moments never reached the server: the link reconnects, resumes the stream
/// (XEP-0198), sends again what the server had not acknowledged (at least the messages
/// lost on the way), and the server sends again what the bot had not: every message
/// arrives, once, in order for those routed to the user.
#[test]
#[cfg_attr(not(peers), ignore = "needs Prosody, Python: run scripts/test")]
fn a_connection_cut_mid_stream_is_resumed_and_loses_nothing() {
    let s = &PROSODY;
    let _l = s.lock();
    let p = common::unique_prefix("bres").to_lowercase();
    let (bot, user) = accounts(s, &p);
    let fwd = Forwarder::start(0, "127.0.0.1:5222");
    let d = router(&p, &bot, fwd.port());
    let mut lost = 0;
    stream_with_a_cut(&d, &p, &bot, &user, "stream_resumed", 400, || {
        // The bot's writes (messages, and its acknowledgements of the server's) vanish
        // for a while, then the connection dies.
        let before = link(&d)["counters"]["published"].as_u64().unwrap();
        fwd.swallow(true);
        let during = wait_until(
            Duration::from_secs(20),
            "messages written into the void",
            || {
                let now = link(&d)["counters"]["published"].as_u64().unwrap();
                (now >= before + 20).then_some(now)
            },
        );
        lost = during - before;
        fwd.cut();
        fwd.swallow(false);
    });
    let l = link(&d);
    assert_eq!(l["counters"]["reconnects"], 1, "{l}");
    let log = d.log();
    let resumed = log
        .lines()
        .find(|l| l.contains("XMPP stream resumed"))
        .unwrap_or_else(|| panic!("not resumed:\n{log}"));
    let sent_again: u64 = resumed
        .split("sent_again=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{resumed}"));
    eprintln!("{resumed}");
    assert!(
        sent_again >= lost,
        "{lost} messages never reached the server, {sent_again} sent again"
    );
    assert!(!log.contains("cannot resume"), "{log}");
}

/// The server cannot resume (the session it kept is gone: here an operator closed it
/// while the bot was away): the bot starts a new session and sends again everything the
/// server had not acknowledged, so every message routed to the user arrives (perhaps
/// twice). Chats the bot had not acknowledged are the server's business: Prosody hands
/// those it held for the lost session to offline storage, and the test server, without
/// mod_offline, bounces them, as it bounces those sent while the bot had no session —
/// each chat reaches the queue or comes back to the user as an error, none vanishes.
#[test]
#[cfg_attr(not(peers), ignore = "needs Prosody, Python: run scripts/test")]
fn when_the_server_cannot_resume_what_it_had_not_acknowledged_is_sent_again() {
    let s = &PROSODY;
    let _l = s.lock();
    let p = common::unique_prefix("bnores").to_lowercase();
    let (bot, user) = accounts(s, &p);
    let fwd = Forwarder::start(0, "127.0.0.1:5222");
    let d = router(&p, &bot, fwd.port());
    let out = stream_with_a_cut(&d, &p, &bot, &user, "stream_not_resumed", 300, || {
        fwd.refuse(true);
        fwd.cut();
        wait_until(Duration::from_secs(10), "the link noticed", || {
            (link(&d)["state"] != "connected").then_some(())
        });
        // The session Prosody keeps for resumption, closed by the operator.
        let closed = Command::new(s.ctl)
            .args(["shell", &format!("c2s:close('{bot}')")])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&closed.stdout).into_owned();
        assert!(said.contains("1 sessions closed"), "{said}");
        fwd.refuse(false);
    });
    assert!(out.contains("reconnects: 1"), "{out}");
    let log = d.log();
    assert!(
        log.contains("the server cannot resume the XMPP stream"),
        "{log}"
    );
}
