//! The XMPP client (bot) link against real XMPP servers — Prosody and ejabberd, each
//! test on both (`prosody::NAME` and `ejabberd::NAME`): the router logs in as an
//! ordinary account (STARTTLS, SCRAM, resource binding, roster, XEP-0198), slixmpp is
//! the user chatting with it, stomp.py the router's side (tests/py/xmpp_client_scenarios.py).
//!
//! The bot connects through a [`Forwarder`], so a test can cut its TCP connection
//! (as a network failure would: the server sees the connection end without a stream
//! close, and keeps the session for resumption) without touching anyone else's.

mod common;

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::forwarder::Forwarder;
use common::xmpp_server::Server;
use common::{Daemon, http_json, python, wait_until};

on_both_servers!(
    needs "Python";
    a_bot_chats_both_ways_with_receipts_and_replies,
    a_users_presence_in_the_bots_roster_becomes_events,
    a_bot_in_a_room_relays_both_ways_without_echo,
    a_connection_cut_mid_stream_is_resumed_and_loses_nothing,
    when_the_server_cannot_resume_what_it_had_not_acknowledged_is_sent_again,
    after_a_restart_the_bot_pushes_its_roster_subscribers_again,
    a_contact_removed_from_the_roster_by_another_client_is_no_longer_pushed,
    after_a_session_that_could_not_be_resumed_a_contact_who_left_meanwhile_is_offline,
);

/// Closes the bot's session on the server ([`Server::close_session`]); Prosody says how
/// many it closed, which must be the one.
fn close_session(s: &Server, bot: &str) {
    let said = s.close_session(bot);
    assert!(
        s.name != "prosody" || said.contains("1 sessions closed"),
        "{said}"
    );
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

/// One test's set-up: the server, a bot account and a user account, a forwarder to the
/// server's c2s port, and a router whose bot logs in through it.
struct Run<'a> {
    s: &'a Server,
    p: String,
    bot: String,
    user: (String, String),
    fwd: Forwarder,
    d: Daemon,
}

impl<'a> Run<'a> {
    fn start(s: &'a Server, name: &str) -> Self {
        Self::start_with(s, name, ROUTES)
    }

    /// As [`Run::start`], with these routes (`PFX`, `BOT` replaced).
    fn start_with(s: &'a Server, name: &str, routes: &str) -> Self {
        let p = common::unique_prefix(name).to_lowercase();
        let (bot, _) = s.user(&format!("{p}-bot"));
        let user = s.user(&p);
        let fwd = Forwarder::start(0, String::leak(format!("127.0.0.1:{}", s.c2s)));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("routes")).unwrap();
        std::fs::write(
            dir.path().join("switchboard.yaml"),
            format!(
                "links:\n  bot:\n    xmpp_client:\n      jid: {bot}\n      password: pw\n      server: \"127.0.0.1:{}\"\n      ca_file: {}\n      reconnect_initial: 100ms\n      reconnect_max: 1s\n      rooms:\n        - {{room: \"{p}@conference.localhost\", nick: sbbot}}\n",
                fwd.port(),
                s.cert()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("routes/bot.yaml"),
            routes.replace("PFX", &p).replace("BOT", &bot),
        )
        .unwrap();
        let cfg = dir.path().join("switchboard.yaml").display().to_string();
        let d = Daemon::start_in(dir, &["--config", &cfg]);
        wait_until(Duration::from_secs(20), "the bot logged in", || {
            let (_, v) = http_json(d.addr("admin"), "GET", "/links");
            (v[0]["state"] == "connected").then_some(())
        });
        Run {
            s,
            p,
            bot,
            user,
            fwd,
            d,
        }
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(python());
        c.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/xmpp_client_scenarios.py"
        ))
        .args(["--port", &self.d.addr("stomp").port().to_string()])
        .args(["--admin-port", &self.d.addr("admin").port().to_string()])
        .args(["--c2s-port", &self.s.c2s.to_string()])
        .args(["--prefix", &self.p, "--bot", &self.bot])
        .args(["--jid", &self.user.0, "--password", &self.user.1])
        .args(["--timeout", "20", name]);
        c
    }

    fn scenario(&self, name: &str) {
        let out = self
            .command(name)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim_end().ends_with("ok"),
            "scenario {name} on {} failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
            self.s.name,
            String::from_utf8_lossy(&out.stderr),
            self.d.log()
        );
    }

    /// Starts a scenario that talks with the test ([`Talk`]).
    fn talk(&self, name: &'static str) -> Talk {
        let mut child = self
            .command(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
        Talk {
            name,
            stdin: child.stdin.take().unwrap(),
            lines: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            out: String::new(),
        }
    }

    fn link(&self) -> serde_json::Value {
        let (_, v) = http_json(self.d.addr("admin"), "GET", "/links");
        v[0].clone()
    }

    /// Runs a stream scenario of `n` messages each way and, once a quarter went each
    /// way, calls `cut`; returns the scenario's output.
    fn stream_with_a_cut(&self, name: &str, n: u64, cut: impl FnOnce()) -> String {
        let mut child = self
            .command(name)
            .args(["--n", &n.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
        wait_until(Duration::from_secs(60), "a quarter of the stream", || {
            let c = &self.link()["counters"];
            (c["received"].as_u64() >= Some(n / 4) && c["published"].as_u64() >= Some(n / 4))
                .then_some(())
        });
        let at = self.link()["counters"].clone();
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
            "scenario {name} on {} failed (cut at {at})\nstdout:\n{out}\nstderr:\n{err}\ndaemon log:\n{}",
            self.s.name,
            self.d.log()
        );
        eprintln!("{name} on {}: cut at {at}; {out}", self.s.name);
        out
    }
}

fn a_bot_chats_both_ways_with_receipts_and_replies(s: &Server) {
    let _l = s.lock();
    let r = Run::start(s, "bchat");
    r.scenario("chat");
    assert!(r.d.log().contains("roster received"), "{}", r.d.log());
}

fn a_users_presence_in_the_bots_roster_becomes_events(s: &Server) {
    let _l = s.lock();
    Run::start(s, "bprs").scenario("presence");
}

fn a_bot_in_a_room_relays_both_ways_without_echo(s: &Server) {
    let _l = s.lock();
    Run::start(s, "broom").scenario("room");
}

/// The bot's TCP connection dies mid-stream (both ways busy), and what the bot wrote in
/// its last moments never reached the server: the link reconnects, resumes the stream
/// (XEP-0198), sends again what the server had not acknowledged (at least the messages
/// lost on the way), and the server sends again what the bot had not: every message
/// arrives, once, in order for those routed to the user.
fn a_connection_cut_mid_stream_is_resumed_and_loses_nothing(s: &Server) {
    let _l = s.lock();
    let r = Run::start(s, "bres");
    let published = || r.link()["counters"]["published"].as_u64().unwrap();
    let mut lost = 0;
    r.stream_with_a_cut("stream_resumed", 400, || {
        // The bot's writes (messages, and its acknowledgements of the server's) vanish
        // for a while, then the connection dies.
        let before = published();
        r.fwd.swallow(true);
        let during = wait_until(Duration::from_secs(20), "writes into the void", || {
            let now = published();
            (now >= before + 20).then_some(now)
        });
        lost = during - before;
        r.fwd.cut();
        r.fwd.swallow(false);
    });
    let l = r.link();
    assert_eq!(l["counters"]["reconnects"], 1, "{l}");
    let log = r.d.log();
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
fn when_the_server_cannot_resume_what_it_had_not_acknowledged_is_sent_again(s: &Server) {
    let _l = s.lock();
    let r = Run::start(s, "bnores");
    let out = r.stream_with_a_cut("stream_not_resumed", 300, || {
        r.fwd.refuse(true);
        r.fwd.cut();
        wait_until(Duration::from_secs(10), "the link noticed", || {
            (r.link()["state"] != "connected").then_some(())
        });
        // The session the server keeps for resumption, closed by the operator.
        close_session(s, &r.bot);
        r.fwd.refuse(false);
    });
    assert!(out.contains("reconnects: 1"), "{out}");
    let log = r.d.log();
    assert!(
        log.contains("the server cannot resume the XMPP stream"),
        "{log}"
    );
}

/// A scenario that prints a line when it waits for the test, and reads the test's
/// answer from its stdin.
struct Talk {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    out: String,
}

impl Talk {
    /// Reads the scenario's output up to the line `line`.
    fn until(&mut self, line: &str, r: &Run) {
        for l in self.lines.by_ref() {
            let l = l.unwrap();
            self.out.push_str(&l);
            self.out.push('\n');
            if l == line {
                return;
            }
        }
        let err = self.stderr();
        panic!(
            "{} on {}: ended before `{line}`\nstdout:\n{}\nstderr:\n{err}\ndaemon log:\n{}",
            self.name,
            r.s.name,
            self.out,
            r.d.log()
        );
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).unwrap();
        }
        err
    }

    /// Reads the rest of the output and asserts the scenario ended `ok`.
    fn finish(mut self, r: &Run) {
        for l in self.lines.by_ref() {
            self.out.push_str(&l.unwrap());
            self.out.push('\n');
        }
        let status = self.child.wait().unwrap();
        let err = self.stderr();
        assert!(
            status.success() && self.out.trim_end().ends_with("ok"),
            "{} on {} failed\nstdout:\n{}\nstderr:\n{err}\ndaemon log:\n{}",
            self.name,
            r.s.name,
            self.out,
            r.d.log()
        );
    }
}

/// The bot's JID routes to a topic: a user subscribed to the bot is pushed that topic.
const FEED_ROUTES: &str = r#"
routes:
  - name: PFX-feed
    from: {xmpp: {link: bot, jid: "BOT"}}
    to: [{topic: PFX.feed}]
"#;

/// The router restarts without what its store kept (its data directory removed while it
/// is stopped, as with `--data-dir off`): the bot's roster is what tells it whom to push.
fn after_a_restart_the_bot_pushes_its_roster_subscribers_again(s: &Server) {
    let _l = s.lock();
    let mut r = Run::start_with(s, "bpush", FEED_ROUTES);
    let (child, mut lines) = common::spawn_stepped(&mut r.command("push_restart"));
    let out = common::read_to_step(&mut lines, "restart");
    assert!(
        out.ends_with("restart\n"),
        "scenario before the restart:\n{out}\n{}",
        r.d.log()
    );
    let cfg = r.d.routes_dir().parent().unwrap().join("switchboard.yaml");
    let cfg = cfg.display().to_string();
    r.d.signal("TERM");
    wait_until(Duration::from_secs(20), "the router stopped", || {
        r.d.child.try_wait().unwrap().map(|_| ())
    });
    r.d = r.d.kill_change_restart(
        |dir| std::fs::remove_dir_all(dir.join("data")).unwrap(),
        &["--config", &cfg],
    );
    // Once rebuilt, the push subscription collects what is published (and the user's
    // presence, which the server sends the bot after its login, starts the push).
    wait_until(
        Duration::from_secs(20),
        "the subscription rebuilt from the roster",
        || {
            r.d.current_log()
                .contains("push subscriptions rebuilt from the roster")
                .then_some(())
        },
    );
    if let Err(e) = common::finish_stepped(child, lines, out, &r.d.addr("stomp").port().to_string())
    {
        panic!(
            "push_restart on {} failed\n{e}\ndaemon log:\n{}",
            s.name,
            r.d.log()
        );
    }
}

/// The bot's JID routes to a topic (pushed to its subscribers), with the routes to the
/// user and of presence events of [`ROUTES`].
const FEED_SAY_PRESENCE_ROUTES: &str = r#"
routes:
  - name: PFX-feed
    from: {xmpp: {link: bot, jid: "BOT"}}
    to: [{topic: PFX.feed}]
  - name: PFX-say
    from: {stomp: /queue/PFX.say}
    to: [{xmpp: {link: bot, to: "{header:user}", from: "BOT", type: chat}}]
  - name: PFX-presence
    from: {xmpp: {link: bot, presence: "*@localhost"}}
    to: [{topic: "PFX.presence.{1}"}]
"#;

/// Another client of the bot's account removes a contact subscribed to the bot from the
/// roster, while the bot is online: the server's roster push ends the contact's push
/// subscription, so that what the topic gets afterwards no longer reaches them, even once
/// they show themselves to the bot again (before, the subscription stayed and their
/// presence restarted its push).
fn a_contact_removed_from_the_roster_by_another_client_is_no_longer_pushed(s: &Server) {
    let _l = s.lock();
    let r = Run::start_with(s, "brem", FEED_SAY_PRESENCE_ROUTES);
    let mut t = r.talk("roster_remove");
    t.until("removed", &r);
    wait_until(Duration::from_secs(20), "the roster push applied", || {
        r.d.log()
            .contains("roster push: the contact is no longer subscribed to the bot")
            .then_some(())
    });
    t.say("go");
    t.finish(&r);
    let log = r.d.log();
    assert!(!log.contains("roster push from someone other"), "{log}");
}

/// The bot's session ends so that it cannot be resumed (the connection cut, the session
/// the server kept closed by the operator) while a contact is online; the contact leaves
/// before the bot is back. The new session's server says nothing of users who are not
/// online: the bot probes those it knew online, and the server's answer gives the
/// contact's "offline" event.
fn after_a_session_that_could_not_be_resumed_a_contact_who_left_meanwhile_is_offline(s: &Server) {
    let _l = s.lock();
    let r = Run::start(s, "boff");
    let mut t = r.talk("offline_meanwhile");
    t.until("online", &r);
    r.fwd.refuse(true);
    r.fwd.cut();
    wait_until(Duration::from_secs(10), "the link noticed", || {
        (r.link()["state"] != "connected").then_some(())
    });
    close_session(s, &r.bot);
    t.say("go");
    t.until("offline", &r);
    r.fwd.refuse(false);
    t.finish(&r);
    let log = r.d.log();
    assert!(
        log.contains("the server cannot resume the XMPP stream")
            && log.contains("probing the contacts who were online before this new session"),
        "{log}"
    );
}
