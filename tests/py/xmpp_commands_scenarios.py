"""Ad-hoc commands (XEP-0050) and rooms of an XMPP link, component or bot, with slixmpp users
through the test server; stomp.py on the router's side. The Rust test (tests/xmpp_commands.rs)
writes the settings and routes, starts the router and runs one scenario.

The link maps --jid to the user `alice` (may subscribe to P.#) and --jid2 to `bob` (only
other.#); --jid3 maps to nobody. --target is the JID that runs the commands (the component's
domain, or the bot's full JID: an iq to a bare account JID is the server's to answer).

Usage: xmpp_commands_scenarios.py --port STOMP_PORT --prefix P --target JID
                                  --jid A --jid2 B --jid3 C --password PW SCENARIO
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402
from xmpptest import User  # noqa: E402

import stomp  # noqa: E402
from slixmpp.exceptions import IqError  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--prefix", required=True),
                             p.add_argument("--target", required=True),
                             p.add_argument("--jid", required=True), p.add_argument("--jid2", required=True),
                             p.add_argument("--jid3", required=True), p.add_argument("--password", required=True),
                             p.add_argument("--c2s-port", type=int, default=5222),
                             p.add_argument("--ping", type=float, default=1.0)))
P = args.prefix
T = args.timeout
TARGET = args.target
FROM = TARGET.split("/")[0]


def stomp_conn():
    c = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


async def login(jid):
    u = User(jid, args.password, T)
    for p in ("xep_0004", "xep_0050"):
        u.register_plugin(p)
    u.connect("127.0.0.1", args.c2s_port)
    await u.started()
    return u


async def run(u, node, **values):
    """Runs a command: `execute`, then, if it asks with a form, `complete` with `values`.
    Returns the last answer's <command/>."""
    adhoc = u.plugin["xep_0050"]
    iq = await adhoc.send_command(TARGET, node, timeout=T)
    cmd = iq["command"]
    if cmd["status"] == "executing":
        asked = cmd["form"].get_fields()
        expect(set(values) <= set(asked), f"{node} asks for {list(asked)}")
        form = u.plugin["xep_0004"].make_form(ftype="submit")
        for var, value in values.items():
            form.add_field(var=var, value=value)
        iq = await adhoc.send_command(TARGET, node, action="complete", payload=form,
                                      sessionid=cmd["sessionid"], timeout=T)
        cmd = iq["command"]
    expect(cmd["status"] == "completed", f"{node}: {cmd}")
    return cmd


async def refused(u, node, **values):
    """Runs a command expecting a `forbidden` error; returns its text."""
    try:
        await run(u, node, **values)
    except IqError as e:
        expect(e.condition == "forbidden", f"{node}: {e.condition} {e.text}")
        return e.text
    fail(f"{node} with {values} was not refused")


def notes(cmd):
    return " ".join(n[1] for n in cmd["notes"])


async def commands():
    """alice lists the commands, the routes and a queue's depth, subscribes to a topic: a STOMP
    publish to it reaches her as a chat from the link; bob may not subscribe to that topic, carol
    (mapped to no user) sees no command and may run none; once alice unsubscribes, the topic no
    longer reaches her."""
    s, _col = stomp_conn()
    for i in range(3):
        s.send(f"/queue/{P}.work", f"job {i}", headers={"receipt": f"w{i}"})
    wait_for(lambda: all(f"w{i}" in _col.receipts for i in range(3)), T, "the jobs stored")
    alice = await login(args.jid)
    items = await alice.plugin["xep_0050"].get_commands(TARGET, timeout=T)
    nodes = sorted(i[1] for i in items["disco_items"]["items"])
    expect(nodes == ["queue-depth", "routes", "subscribe", "unsubscribe"], f"commands: {nodes}")
    listed = await run(alice, "routes")
    lines = listed["form"].get_values()["routes"]
    expect(any(line.startswith(f"{P}-in:") for line in lines), f"routes: {lines}")
    depth = await run(alice, "queue-depth", queue=f"{P}.work")
    ready = depth["form"].get_values()["ready"]
    expect(ready == "3", f"ready {ready!r}: {notes(depth)}")
    text = await refused(alice, "queue-depth", queue="other.work")
    expect("may not read queue other.work" in text, text)

    sub = await run(alice, "subscribe", topic=f"{P}.alerts")
    expect("subscribed" in notes(sub), notes(sub))
    await run(alice, "subscribe", topic=f"{P}.other")
    s.send(f"/topic/{P}.alerts", "alert 1")
    await alice.wait(lambda: any(m["body"] == "alert 1" for m in alice.messages), "the alert pushed to alice")
    m = next(m for m in alice.messages if m["body"] == "alert 1")
    expect(m["from"].bare == FROM, f"from {m['from']}")

    bob = await login(args.jid2)
    text = await refused(bob, "subscribe", topic=f"{P}.alerts")
    expect("bob may not subscribe" in text, text)
    carol = await login(args.jid3)
    items = await carol.plugin["xep_0050"].get_commands(TARGET, timeout=T)
    expect(len(items["disco_items"]["items"]) == 0, f"carol sees {items['disco_items']['items']}")
    await refused(carol, "routes")
    await refused(carol, "subscribe", topic=f"{P}.alerts")

    gone = await run(alice, "unsubscribe", topic=f"{P}.alerts")
    expect("unsubscribed" in notes(gone), notes(gone))
    s.send(f"/topic/{P}.alerts", "alert 2")
    s.send(f"/topic/{P}.other", "marker")
    await alice.wait(lambda: any(m["body"] == "marker" for m in alice.messages), "the marker pushed to alice")
    got = [m["body"] for m in alice.messages]
    expect("alert 2" not in got and got.count("alert 1") == 1, f"alice got {got}")
    for u in (alice, bob, carol):
        u.disconnect()
    s.disconnect()
    print("ok")


async def rooms():
    """alice creates the room P@conference.localhost (as owner) under the nick the link is
    configured with, `sbbot`, then prints `ready` and reads the router's STOMP port: the link joins
    as `sbbot-2` (nick conflict). alice kicks it; it is back within the self-ping interval
    (--ping seconds). carol joins and leaves, alice sets the subject: all of it arrives as events
    on the queue P.roomev."""
    import json
    import time
    room = f"{P}@conference.localhost"
    alice = await login(args.jid)
    muc = alice.plugin["xep_0045"]
    await muc.join_muc_wait(room, "sbbot", maxstanzas=0, timeout=T)
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    await muc.set_room_config(room, form, timeout=T)
    print("ready", flush=True)
    port = int(sys.stdin.readline())
    c = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    c.subscribe(f"/queue/{P}.roomev", id="1", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")

    def events():
        return [json.loads(f.body) for f in col.messages]

    await alice.wait(lambda: "sbbot-2" in muc.get_roster(room), "the link in the room as sbbot-2")
    kicked = time.monotonic()
    await muc.set_role(room, "sbbot-2", "none", reason="test", timeout=T)
    await alice.wait(lambda: "sbbot-2" not in muc.get_roster(room), "the link out of the room")
    await alice.wait(lambda: "sbbot-2" in muc.get_roster(room), "the link back in the room",
                     timeout=args.ping * 2 + 5)
    back = time.monotonic() - kicked
    expect(back <= args.ping * 2 + 1, f"back after {back:.1f}s, the self-ping interval is {args.ping}s")

    carol = await login(args.jid3)
    await carol.plugin["xep_0045"].join_muc_wait(room, "carol", maxstanzas=0, timeout=T)
    carol.plugin["xep_0045"].leave_muc(room, "carol")
    muc.set_subject(room, "deploy at noon")

    def seen(**kv):
        return any(all(e.get(k) == v for k, v in kv.items()) for e in events())
    await alice.wait(lambda: seen(event="subject", subject="deploy at noon"), "the subject event")
    for kv in ({"event": "joined", "nick": "sbbot-2", "self": True},
               {"event": "joined", "nick": "sbbot", "self": False},
               {"event": "left", "nick": "sbbot-2", "self": True},
               {"event": "joined", "nick": "carol", "self": False},
               {"event": "left", "nick": "carol", "self": False}):
        expect(seen(room=room, **kv), f"no {kv} in {events()}")
    left = next(e for e in events() if e["event"] == "left" and e["self"])
    expect("307" in left["codes"], f"kick status: {left}")
    own = [e["event"] for e in events() if e.get("self")]
    expect(own[:3] == ["joined", "left", "joined"], f"own events {own}")
    print(f"back in the room {back:.1f}s after the kick")
    for u in (alice, carol):
        u.disconnect()
    c.disconnect()
    print("ok")


async def presence_unsubscribe():
    """alice subscribes to a topic with the command and gets what is published there; bob (who
    stays subscribed to another topic) too. alice then cancels her presence subscription to the
    link's JID (`unsubscribe`): what is published to her topic afterwards does not reach her (bob
    getting a later message on his topic is the barrier), and the command subscription is gone
    (`unsubscribe` answers that she was not subscribed)."""
    s, _col = stomp_conn()
    alice = await login(args.jid)
    bob = await login(args.jid2)
    await run(alice, "subscribe", topic=f"{P}.alerts")
    await run(bob, "subscribe", topic=f"other.{P}")
    # The link asked alice for her presence in return; slixmpp approves and asks back.
    await alice.wait(lambda: alice.client_roster[FROM]["subscription"] == "both", "a mutual subscription")
    s.send(f"/topic/{P}.alerts", "alert 1")
    await alice.wait(lambda: any(m["body"] == "alert 1" for m in alice.messages), "the alert pushed to alice")
    alice.send_presence(pto=FROM, ptype="unsubscribe")
    await alice.wait(lambda: alice.client_roster[FROM]["subscription"] in ("none", "from"),
                     "alice's subscription to the link cancelled")
    s.send(f"/topic/{P}.alerts", "alert 2")
    s.send(f"/topic/other.{P}", "marker")
    await bob.wait(lambda: any(m["body"] == "marker" for m in bob.messages), "the marker pushed to bob")
    got = [m["body"] for m in alice.messages]
    expect(got.count("alert 1") == 1 and "alert 2" not in got, f"alice got {got}")
    gone = await run(alice, "unsubscribe", topic=f"{P}.alerts")
    expect("you were not subscribed" in notes(gone), notes(gone))
    for u in (alice, bob):
        u.disconnect()
    s.disconnect()
    print("ok")


def error_note(cmd):
    """The text of a command's error note, or None."""
    return next((n[1] for n in cmd["notes"] if n[0] == "error"), None)


async def caps():
    """The link holds at most 2 command subscriptions per user and 3 push subscriptions in all.
    alice's third topic is refused with an error note (twice: logged once), bob is served; once
    alice unsubscribes one and bob takes the free place, alice's next is refused for the link's
    cap. Both keep getting their topics."""
    s, _col = stomp_conn()
    alice = await login(args.jid)
    bob = await login(args.jid2)
    for t in ("t1", "t2"):
        cmd = await run(alice, "subscribe", topic=f"{P}.{t}")
        expect(error_note(cmd) is None, notes(cmd))
    for t in ("t3", "t4"):
        cmd = await run(alice, "subscribe", topic=f"{P}.{t}")
        note = error_note(cmd) or ""
        expect("you hold 2 topic subscriptions here" in note, f"{t}: {notes(cmd)}")
    # Subscribing again to a topic she holds is no new subscription.
    cmd = await run(alice, "subscribe", topic=f"{P}.t2")
    expect(error_note(cmd) is None, notes(cmd))
    cmd = await run(bob, "subscribe", topic=f"other.{P}.b1")
    expect(error_note(cmd) is None, notes(cmd))
    await run(alice, "unsubscribe", topic=f"{P}.t1")
    cmd = await run(bob, "subscribe", topic=f"other.{P}.b2")
    expect(error_note(cmd) is None, notes(cmd))
    cmd = await run(alice, "subscribe", topic=f"{P}.t3")
    note = error_note(cmd) or ""
    expect("this link holds 3 push subscriptions" in note, notes(cmd))
    s.send(f"/topic/{P}.t2", "for alice")
    s.send(f"/topic/other.{P}.b1", "for bob")
    await alice.wait(lambda: any(m["body"] == "for alice" for m in alice.messages), "alice's topic pushed")
    await bob.wait(lambda: any(m["body"] == "for bob" for m in bob.messages), "bob's topic pushed")
    for u in (alice, bob):
        u.disconnect()
    s.disconnect()
    print("ok")


async def restart():
    """alice subscribes to a topic with the command (the link asks for her presence in
    return), prints `restart` and waits, connected, for the test to restart the router and
    give its new STOMP port: a publish to her topic then reaches her, once, without her doing
    anything (the subscription was kept across the restart)."""
    alice = await login(args.jid)
    sub = await run(alice, "subscribe", topic=f"{P}.alerts")
    expect("subscribed" in notes(sub), notes(sub))
    await alice.wait(lambda: alice.client_roster[FROM]["subscription"] == "both", "a mutual subscription")
    print("restart", flush=True)
    port = int(await asyncio.to_thread(sys.stdin.readline))
    c = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    c.send(f"/topic/{P}.alerts", "after the restart", headers={"receipt": "r1"})
    wait_for(lambda: "r1" in col.receipts, T, "the publish received")
    await alice.wait(lambda: any(m["body"] == "after the restart" for m in alice.messages),
                     "the alert pushed to alice after the restart")
    got = [m["body"] for m in alice.messages]
    expect(got.count("after the restart") == 1, f"alice got {got}")
    alice.disconnect()
    c.disconnect()
    print("ok")


SCENARIOS = {"commands": commands, "rooms": rooms, "presence_unsubscribe": presence_unsubscribe,
             "caps": caps, "restart": restart}
if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}")
asyncio.run(SCENARIOS[args.scenario]())
