//! Ad-hoc commands (XEP-0050) and rooms on both XMPP link kinds, against Prosody and
//! ejabberd (`prosody::NAME`, `ejabberd::NAME`), with slixmpp users
//! (tests/py/xmpp_commands_scenarios.py): commands gated by the permissions of the user
//! a JID maps to; a link that is kicked from its room comes back within its self-ping
//! interval, under a suffixed nick when its own is taken, and the room's occupants and
//! subject arrive as events.

mod common;

use std::process::Command;
use std::time::Duration;

use common::xmpp_server::Server;
use common::{Daemon, http_json, password_hash, python, wait_until};

on_both_servers!(
    needs "Python";
    ad_hoc_commands_on_the_component_follow_the_users_permissions,
    ad_hoc_commands_on_the_bot_follow_the_users_permissions,
    a_kicked_component_rejoins_its_room_and_occupants_are_events,
    a_kicked_bot_rejoins_its_room_and_occupants_are_events,
    presence_unsubscribe_from_the_component_ends_the_command_subscriptions,
    presence_unsubscribe_from_the_bot_ends_the_command_subscriptions,
    command_subscriptions_over_the_caps_are_refused_with_a_note_on_the_component,
    command_subscriptions_over_the_caps_are_refused_with_a_note_on_the_bot,
    a_restarted_component_pushes_the_command_subscriptions_again,
    a_restarted_bot_pushes_the_command_subscriptions_again,
);

const ROOM_ROUTES: &str = r#"
routes:
  - name: PFX-roomev
    from: {xmpp: {link: im, presence: "PFX@conference.localhost"}}
    to: [{queue: PFX.roomev}]
"#;

/// The rooms scenario: the user creates the room first (so that they own it, and hold
/// the nick the link is configured with), then the router starts with `link` (as in
/// [`commands`], joining that room, self-pinging every second).
fn rooms(s: &Server, name: &str, link: &str) {
    let p = common::unique_prefix(name).to_lowercase();
    let (alice, pw) = s.user(&format!("{p}-a"));
    let (carol, _) = s.user(&format!("{p}-c"));
    let (bot, _) = s.user(&format!("{p}-bot"));
    let (child, mut lines) = common::spawn_stepped(
        Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/py/xmpp_commands_scenarios.py"
            ))
            .args(["--port", "0", "--c2s-port", &s.c2s.to_string()])
            .args(["--prefix", &p, "--target", "-", "--ping", "1"])
            .args(["--jid", &alice, "--jid2", &carol, "--jid3", &carol])
            .args(["--password", &pw, "--timeout", "15", "rooms"]),
    );
    let out = common::read_to_step(&mut lines, "ready");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let settings = format!(
        "links:\n  im:\n{}      reconnect_initial: 100ms\n      reconnect_max: 1s\n      room_ping: 1s\n      rooms:\n        - {{room: \"{p}@conference.localhost\", nick: sbbot}}\n",
        link.replace("BOT", &bot).replace("CERT", &s.cert())
    );
    std::fs::write(dir.path().join("switchboard.yaml"), settings).unwrap();
    std::fs::write(
        dir.path().join("routes/xmpp.yaml"),
        ROOM_ROUTES.replace("PFX", &p),
    )
    .unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    let port = d.addr("stomp").port().to_string();
    let out = common::finish_stepped(child, lines, out, &port).unwrap_or_else(|e| {
        panic!(
            "rooms scenario on {} failed\n{e}\ndaemon log:\n{}",
            s.name,
            d.log()
        )
    });
    eprintln!("{name} on {}: {out}", s.name);
    let log = d.log();
    assert!(log.contains("nick taken in the room"), "{log}");
}

fn a_kicked_component_rejoins_its_room_and_occupants_are_events(s: &Server) {
    let _l = s.lock();
    let link = format!(
        "    xmpp:\n      server: \"{}\"\n      domain: bridge.localhost\n      secret: bridgesecret\n",
        s.component_addr()
    );
    rooms(s, "roomc", &link);
}

fn a_kicked_bot_rejoins_its_room_and_occupants_are_events(s: &Server) {
    let _l = s.lock();
    let link = format!(
        "    xmpp_client:\n      jid: BOT\n      password: pw\n      server: \"127.0.0.1:{}\"\n      ca_file: CERT\n",
        s.c2s
    );
    rooms(s, "roomb", &link);
}

const ROUTES: &str = r#"
routes:
  - name: PFX-in
    from: {xmpp: {link: im, jid: "JID"}}
    to: [{queue: PFX.inbox}]
"#;

/// Starts a router whose link `im` is `link` (its settings, indented 6 spaces, follow),
/// mapping `alice` and `bob` to users; runs the commands scenario against `target`.
fn commands(s: &Server, name: &str, link: &str, target: &str) {
    run_scenario(s, name, link, target, "commands", "");
}

/// As [`commands`], running `scenario` with the link settings `extra` (each line
/// indented 6 spaces) added; returns the router, for its log.
fn run_scenario(
    s: &Server,
    name: &str,
    link: &str,
    target: &str,
    scenario: &str,
    extra: &str,
) -> Daemon {
    let (d, mut cmd) = start_scenario(s, name, link, target, scenario, extra);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (run scripts/setup python): {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "scenario on {} failed\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
        s.name,
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    d
}

/// Starts the router of [`run_scenario`] (with a data directory), once its link is
/// connected; returns it and the scenario's command, not started.
fn start_scenario(
    s: &Server,
    name: &str,
    link: &str,
    target: &str,
    scenario: &str,
    extra: &str,
) -> (Daemon, Command) {
    let p = common::unique_prefix(name).to_lowercase();
    let (alice, pw) = s.user(&format!("{p}-a"));
    let (bob, _) = s.user(&format!("{p}-b"));
    let (carol, _) = s.user(&format!("{p}-c"));
    let (bot, _) = s.user(&format!("{p}-bot"));
    let hash = password_hash("pw");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    let settings = format!(
        "links:\n  im:\n{}{extra}      reconnect_initial: 100ms\n      reconnect_max: 1s\n      users: {{\"{alice}\": alice, \"{bob}\": bob}}\n\
auth:\n  users:\n    alice: {{password_hash: \"{hash}\", subscribe: [\"{p}.#\"]}}\n    bob: {{password_hash: \"{hash}\", subscribe: [\"other.#\"]}}\n",
        link.replace("BOT", &bot).replace("CERT", &s.cert())
    );
    std::fs::write(dir.path().join("switchboard.yaml"), settings).unwrap();
    std::fs::write(
        dir.path().join("routes/xmpp.yaml"),
        ROUTES
            .replace(
                "JID",
                &target
                    .split('/')
                    .next()
                    .unwrap()
                    .replace("BOT", &bot)
                    .replace("bridge.localhost", &format!("{p}@bridge.localhost")),
            )
            .replace("PFX", &p),
    )
    .unwrap();
    let cfg = dir.path().join("switchboard.yaml").display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    wait_until(Duration::from_secs(20), "XMPP link connected", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    let mut cmd = Command::new(python());
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/xmpp_commands_scenarios.py"
    ))
    .args(["--port", &d.addr("stomp").port().to_string()])
    .args(["--c2s-port", &s.c2s.to_string()])
    .args(["--prefix", &p, "--target", &target.replace("BOT", &bot)])
    .args(["--jid", &alice, "--jid2", &bob, "--jid3", &carol])
    .args(["--password", &pw, "--timeout", "15", scenario]);
    (d, cmd)
}

fn ad_hoc_commands_on_the_component_follow_the_users_permissions(s: &Server) {
    let _l = s.lock();
    let link = format!(
        "    xmpp:\n      server: \"{}\"\n      domain: bridge.localhost\n      secret: bridgesecret\n",
        s.component_addr()
    );
    commands(s, "cmdc", &link, "bridge.localhost");
}

fn ad_hoc_commands_on_the_bot_follow_the_users_permissions(s: &Server) {
    let _l = s.lock();
    let link = format!(
        "    xmpp_client:\n      jid: BOT\n      password: pw\n      server: \"127.0.0.1:{}\"\n      ca_file: CERT\n",
        s.c2s
    );
    commands(s, "cmdb", &link, "BOT/switchboard");
}

fn component_link(s: &Server) -> String {
    format!(
        "    xmpp:\n      server: \"{}\"\n      domain: bridge.localhost\n      secret: bridgesecret\n",
        s.component_addr()
    )
}

fn bot_link(s: &Server) -> String {
    format!(
        "    xmpp_client:\n      jid: BOT\n      password: pw\n      server: \"127.0.0.1:{}\"\n      ca_file: CERT\n",
        s.c2s
    )
}

fn presence_unsubscribe_from_the_component_ends_the_command_subscriptions(s: &Server) {
    let _l = s.lock();
    let d = run_scenario(
        s,
        "unsubc",
        &component_link(s),
        "bridge.localhost",
        "presence_unsubscribe",
        "",
    );
    assert!(
        d.log().contains("presence subscription cancelled"),
        "{}",
        d.log()
    );
}

fn presence_unsubscribe_from_the_bot_ends_the_command_subscriptions(s: &Server) {
    let _l = s.lock();
    let d = run_scenario(
        s,
        "unsubb",
        &bot_link(s),
        "BOT/switchboard",
        "presence_unsubscribe",
        "",
    );
    // Whichever comes first ends the subscriptions: the `unsubscribe`, or the roster
    // push of the bot's account it causes (ejabberd sends that first).
    let log = d.log();
    assert!(
        log.contains("presence subscription cancelled")
            || log.contains("roster push: the contact is no longer subscribed to the bot"),
        "{log}"
    );
}

/// The caps scenario (2 command subscriptions per user, 3 in all), then the log: one
/// line per episode of alice over a cap (two refusals in the first, one in the second),
/// none for bob.
fn caps(s: &Server, name: &str, link: &str, target: &str) {
    let extra = "      max_command_subscriptions: 2\n      max_push_subscriptions: 3\n";
    let d = run_scenario(s, name, link, target, "caps", extra);
    let log = d.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("push subscription refused: over a cap"))
        .collect();
    assert_eq!(refused.len(), 2, "{log}");
    assert!(
        refused[0].contains("you hold 2 topic subscriptions")
            && refused[1].contains("this link holds 3 push subscriptions")
            && refused.iter().all(|l| l.contains("-a@localhost")),
        "{refused:#?}"
    );
}

fn command_subscriptions_over_the_caps_are_refused_with_a_note_on_the_component(s: &Server) {
    let _l = s.lock();
    caps(s, "capc", &component_link(s), "bridge.localhost");
}

fn command_subscriptions_over_the_caps_are_refused_with_a_note_on_the_bot(s: &Server) {
    let _l = s.lock();
    caps(s, "capb", &bot_link(s), "BOT/switchboard");
}

/// The restart scenario: alice subscribes to a topic with the command; the router
/// stops (SIGTERM) and starts again over the same data directory, and once its link is
/// back the scenario publishes to the topic (STOMP): it reaches alice, who did nothing
/// meanwhile. So the command subscription was kept in the router's store and its push
/// restarted (the component probes its subscribers, the bot's server sends it their
/// presence).
fn restart(s: &Server, name: &str, link: &str, target: &str) {
    let (d, mut cmd) = start_scenario(s, name, link, target, "restart", "");
    let (child, mut lines) = common::spawn_stepped(&mut cmd);
    let out = common::read_to_step(&mut lines, "restart");
    assert!(
        out.ends_with("restart\n"),
        "scenario before the restart:\n{out}\n{}",
        d.log()
    );
    let cfg = d.routes_dir().parent().unwrap().join("switchboard.yaml");
    let cfg = cfg.display().to_string();
    let d = d.stop_and_restart(&["--config", &cfg]);
    wait_until(Duration::from_secs(20), "XMPP link connected again", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/links");
        (v[0]["state"] == "connected").then_some(())
    });
    if let Err(e) = common::finish_stepped(child, lines, out, &d.addr("stomp").port().to_string()) {
        panic!(
            "restart scenario on {} failed\n{e}\ndaemon log:\n{}",
            s.name,
            d.log()
        );
    }
}

fn a_restarted_component_pushes_the_command_subscriptions_again(s: &Server) {
    let _l = s.lock();
    restart(s, "rstc", &component_link(s), "bridge.localhost");
}

fn a_restarted_bot_pushes_the_command_subscriptions_again(s: &Server) {
    let _l = s.lock();
    restart(s, "rstb", &bot_link(s), "BOT/switchboard");
}
