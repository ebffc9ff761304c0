"""XMPP client (bot) link scenarios: the router logs in to Prosody as an ordinary account (the bot,
--bot JID) and slixmpp is a user chatting with it; stomp.py on the router's side. The Rust test
(tests/xmpp_client.rs) writes the routes, starts the router and runs one scenario; for the
stream scenarios it also cuts the bot's connection mid-stream.

Routes the scenarios expect (P = --prefix):
  P-in:       xmpp {link: bot, jid: BOT}            -> /queue/P.inbox
  P-say:      /queue/P.say                          -> xmpp {link: bot, to: {header:user}, from: BOT}
  P-presence: xmpp {link: bot, presence: *@localhost} -> topic P.presence.{1}
  P-room-in / P-room-out: the room P@conference.localhost <-> topics P.room / P.said

Usage: xmpp_client_scenarios.py --port STOMP_PORT --admin-port PORT --prefix P --jid USER --password PW
                                --bot BOT [--n N] SCENARIO
"""

import asyncio
import json
import os
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402
from xmpptest import User  # noqa: E402

import stomp  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--prefix", required=True),
                             p.add_argument("--admin-port", type=int, required=True),
                             p.add_argument("--jid", required=True), p.add_argument("--password", required=True),
                             p.add_argument("--bot", required=True), p.add_argument("--bot-password", default="pw"),
                             p.add_argument("--n", type=int, default=300),
                             p.add_argument("--c2s-port", type=int, default=5222)))
P = args.prefix
T = args.timeout
BOT = args.bot


def link():
    with urllib.request.urlopen(f"http://127.0.0.1:{args.admin_port}/links", timeout=5) as r:
        return {l["name"]: l for l in json.load(r)}["bot"]


def stomp_conn():
    c = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


async def login():
    u = User(args.jid, args.password, T)
    u.connect("127.0.0.1", args.c2s_port)
    await u.started()
    return u


def bodies(u, prefix):
    return [m["body"] for m in u.messages if m["body"].startswith(prefix)]


async def chat():
    """A chat to the bot's JID reaches a STOMP consumer (with the bot's bare JID as x-xmpp-to, and
    a receipt for the user once taken); a STOMP message routed to the user arrives as a chat from
    the bot; the reply address of the first chat answers the user in its thread."""
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.inbox", id="1", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    u = await login()
    m = u.make_message(mto=BOT, mbody="status 42", mtype="chat")
    m["thread"] = "th-1"
    m["id"] = "req-1"
    m.send()
    await u.wait(lambda: col.messages, "STOMP got the chat")
    f = col.messages[0]
    expect(f.body == "status 42", f"body {f.body!r}")
    h = f.headers
    for k, v in {"correlation-id": "th-1", "x-xmpp-type": "chat", "x-xmpp-to": BOT}.items():
        expect(h.get(k) == v, f"header {k}: {h.get(k)!r} in {h}")
    expect(h.get("x-xmpp-from") == str(u.boundjid.full), f"x-xmpp-from {h.get('x-xmpp-from')}")
    await u.wait(lambda: "req-1" in u.receipts, "the receipt from the bot")
    # The worker answers to the reply address: back to the user's full JID, in the thread.
    s.send(h["reply-to"], "order 42: shipped", headers={"correlation-id": "th-1"})
    await u.wait(lambda: bodies(u, "order"), "the reply")
    r = [m for m in u.messages if m["body"].startswith("order")][0]
    expect(str(r["from"].bare) == BOT and r["thread"] == "th-1", f"reply {r}")
    # A route from a queue to the user.
    for i in range(3):
        s.send(f"/queue/{P}.say", f"hello {i}", headers={"user": args.jid})
    await u.wait(lambda: len(bodies(u, "hello")) >= 3, "three chats from the bot")
    got = [(str(m["from"].bare), m["type"], m["body"]) for m in u.messages if m["body"].startswith("hello")]
    expect(got == [(BOT, "chat", f"hello {i}") for i in range(3)], f"{got}")
    expect(link()["kind"] == "xmpp_client" and link()["peer"].startswith(f"xmpp-client://{BOT}@"), f"{link()}")
    u.disconnect()
    s.disconnect()
    print("ok")


async def presence():
    """The user asks to see the bot's presence: the bot accepts and asks for the user's in return
    (slixmpp approves), so the user is in the bot's roster; the user's presence changes become
    events (online, away, offline)."""
    s, col = stomp_conn()
    s.subscribe(f"/topic/{P}.presence.#", id="p", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")

    def events():
        return [json.loads(m.body) for m in col.messages]

    u = await login()
    me = str(u.boundjid.full)
    u.send_presence_subscription(pto=BOT)
    await u.wait(lambda: any(e["jid"] == me and e["available"] for e in events()), "the online event")
    await u.wait(lambda: u.client_roster[BOT]["subscription"] == "both", "a mutual subscription")
    u.send_presence(pshow="away", pstatus="lunch")
    await u.wait(lambda: any(e["show"] == "away" for e in events()), "the away event")
    away = [e for e in events() if e["show"] == "away"][0]
    expect(away["status"] == "lunch" and away["user"] == args.jid, f"away {away}")
    u.disconnect()
    await u.wait(lambda: any(not e["available"] for e in events()), "the offline event")
    local = args.jid.split("@")[0]
    expect(all(m.headers["destination"] == f"/topic/{P}.presence.{local}" for m in col.messages),
           f"{[m.headers['destination'] for m in col.messages]}")
    s.disconnect()
    print("ok")


async def room():
    """The bot joins a room as itself: what the user says there reaches a topic (once: the bot's
    own messages are not routed back), what is published to another topic the bot says there."""
    room_jid = f"{P}@conference.localhost"
    s, col = stomp_conn()
    s.subscribe(f"/topic/{P}.room", id="r", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    u = await login()
    said = []
    u.add_event_handler("groupchat_message", lambda m: said.append(m))
    await u.plugin["xep_0045"].join_muc_wait(room_jid, "alice", maxstanzas=0, timeout=T)
    await u.wait(lambda: "sbbot" in u.plugin["xep_0045"].get_roster(room_jid), "the bot in the room")
    u.send_message(mto=room_jid, mbody="hello room", mtype="groupchat")
    await u.wait(lambda: col.messages, "the room message on the topic")
    expect(col.messages[0].headers.get("x-xmpp-from") == f"{room_jid}/alice", f"{col.messages[0].headers}")
    s.send(f"/topic/{P}.said", "hello from the bot")
    await u.wait(lambda: any(m["body"] == "hello from the bot" for m in said), "the bot's message in the room")
    u.send_message(mto=room_jid, mbody="marker", mtype="groupchat")
    await u.wait(lambda: any(f.body == "marker" for f in col.messages), "the marker on the topic")
    expect([f.body for f in col.messages] == ["hello room", "marker"], f"no echo: {[f.body for f in col.messages]}")
    u.disconnect()
    s.disconnect()
    print("ok")


async def stream(lossless):
    """N chats from the user to the bot and N messages routed to the user, paced, while the Rust
    test cuts the bot's connection (it watches the link's counters). Prints `sent` once every
    message has been handed over, then waits until everything arrived.

    lossless: the stream is resumed (XEP-0198), so every message arrives exactly once, both ways.
    Otherwise the server could not resume: each message routed to the user still arrives (some may
    arrive twice: sent again because the server had not acknowledged them). Chats to the bot: those
    it had taken are in the queue; the server deals with the others as for any session that ended
    (Prosody hands those it held for the lost session to offline storage, and with mod_offline off,
    as on the test server, bounces them, as it bounces those sent while the bot had no session):
    each arrives or comes back to the user as an error, none vanishes. The counts are printed."""
    n = args.n
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.inbox", id="1", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    u = await login()

    def publish():
        for i in range(n):
            s.send(f"/queue/{P}.say", f"out {i}", headers={"user": args.jid})
            time.sleep(0.01)

    publisher = threading.Thread(target=publish)
    publisher.start()
    sent = {}  # stanza id -> body: an error that comes back says which chat bounced
    for i in range(n):
        m = u.make_message(mto=BOT, mbody=f"in {i}", mtype="chat")
        m.send()
        sent[m["id"]] = f"in {i}"
        await asyncio.sleep(0.01)
    while publisher.is_alive():
        await asyncio.sleep(0.05)
    print("sent", flush=True)
    want_out = {f"out {i}" for i in range(n)}
    want_in = {f"in {i}" for i in range(n)}
    timeout = T + n * 0.05
    await u.wait(lambda: set(bodies(u, "out ")) >= want_out, "every routed message at the user", timeout)
    # A last chat as a barrier: the server passes the user's chats on in order, so once it is
    # in the queue, every earlier chat that will ever arrive has.
    u.send_message(mto=BOT, mbody="in end", mtype="chat")
    await u.wait(lambda: "in end" in col.bodies(), "the last chat at the bot", timeout)
    out = bodies(u, "out ")
    got_in = [b for b in col.bodies() if b != "in end"]
    bounced = {sent[m["id"]] for m in u.errors if m["id"] in sent}
    lost = want_in - set(got_in) - bounced
    print(f"out: {len(out)} for {n} ({len(out) - len(set(out))} twice), in: {len(got_in)} for {n}, "
          f"bounced: {len(bounced)}, lost: {len(lost)}, "
          f"reconnects: {link()['counters']['reconnects']}", flush=True)
    expect(set(out) == want_out, "every routed message arrived")
    expect(not lost, f"chats neither at the bot nor bounced: {sorted(lost)[:10]}")
    if lossless:
        expect(sorted(out, key=lambda b: int(b.split()[1])) == out, "routed messages in order")
        expect(len(out) == n, f"each routed message once: {len(out)} for {n}")
        expect(sorted(got_in) == sorted(want_in), f"each chat once: {len(got_in)} for {n}")
        expect(not u.errors, f"no errors: {[m['body'] for m in u.errors][:5]}")
    u.disconnect()
    s.disconnect()
    print("ok")


async def push_restart():
    """The user subscribes to the bot, whose JID routes to the topic P.feed (the test's own
    routes): what is published there is pushed to them. Then prints `restart` and reads the
    router's new STOMP port: the Rust test has restarted the router meanwhile. What is published
    now is pushed again, the user having done nothing (the bot rebuilt the subscription from its
    roster)."""
    s, _col = stomp_conn()
    u = await login()
    u.send_presence_subscription(pto=BOT)
    await u.wait(lambda: u.client_roster[BOT]["subscription"] == "both", "a mutual subscription")
    s.send(f"/topic/{P}.feed", "before")
    await u.wait(lambda: bodies(u, "before"), "pushed before the restart")
    s.disconnect()
    print("restart", flush=True)
    port = int(sys.stdin.readline())
    s = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
    s.connect(wait=True)
    s.send(f"/topic/{P}.feed", "after")
    await u.wait(lambda: bodies(u, "after"), "pushed after the restart")
    expect(bodies(u, "before") == ["before"], f"{[m['body'] for m in u.messages]}")
    u.disconnect()
    s.disconnect()
    print("ok")


async def from_the_test(said):
    """Prints `said` for the Rust test and waits for its answer line (the XMPP streams keep going
    meanwhile)."""
    print(said, flush=True)
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def at(col, destination):
    with col.lock:
        return [m for m in col.messages if m.headers["destination"] == destination]


async def roster_remove():
    """Routes: the bot's JID to the topic P.feed, P-say and P-presence. The user subscribes to the
    bot and is pushed P.feed. Then another client of the bot's account (slixmpp, resource `other`)
    removes the user from the account's roster; prints `removed` and waits until the Rust test saw
    the router apply the roster push. The user then shows itself to the bot (directed presence,
    which before restarted the push the bot kept): what is published to P.feed now reaches another
    subscriber of the topic but not the user, a chat routed to the user after it arrives alone."""
    feed, presence_topic = f"/topic/{P}.feed", f"/topic/{P}.presence.#"
    s, col = stomp_conn()
    s.subscribe(feed, id="f", ack="auto", receipt="f")
    s.subscribe(presence_topic, id="p", ack="auto", receipt="p")
    wait_for(lambda: {"f", "p"} <= set(col.receipts), T, "SUBSCRIBE receipts")
    u = await login()
    u.send_presence_subscription(pto=BOT)
    await u.wait(lambda: u.client_roster[BOT]["subscription"] == "both", "a mutual subscription")
    s.send(feed, "before")
    await u.wait(lambda: bodies(u, "before"), "pushed before the removal")
    other = User(f"{BOT}/other", args.bot_password, T)
    other.connect("127.0.0.1", args.c2s_port)
    await other.started()
    await other.del_roster_item(args.jid)
    await other.disconnect()
    await from_the_test("removed")

    def events():
        return [json.loads(m.body) for m in at(col, f"/topic/{P}.presence.{args.jid.split('@')[0]}")]

    u.send_presence(pto=BOT, pstatus="still here")
    await u.wait(lambda: any(e["status"] == "still here" for e in events()), "the directed presence's event")
    s.send(feed, "after")
    await u.wait(lambda: any(m.body == "after" for m in at(col, feed)), "the other subscriber got it")
    s.send(f"/queue/{P}.say", "marker", headers={"user": args.jid})
    await u.wait(lambda: bodies(u, "marker"), "the chat routed after it")
    got = [m["body"] for m in u.messages]
    expect(got == ["before", "marker"], f"the user got {got}")
    u.disconnect()
    s.disconnect()
    print("ok")


async def offline_meanwhile():
    """The user subscribes to the bot and is online (an event). Prints `online` and waits: the
    Rust test cuts the bot's connection and closes its session on the server, so that it cannot be
    resumed. The user leaves; prints `offline` once the server ended its session: the Rust test lets
    the bot reconnect. The bot's new session gets from the server only who is online; the user's
    "offline" event comes all the same (the bot probes the contacts it knew online)."""
    s, col = stomp_conn()
    s.subscribe(f"/topic/{P}.presence.#", id="p", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")

    def events():
        local = args.jid.split("@")[0]
        return [json.loads(m.body) for m in at(col, f"/topic/{P}.presence.{local}")]

    u = await login()
    me = str(u.boundjid.full)
    u.send_presence_subscription(pto=BOT)
    await u.wait(lambda: any(e["jid"] == me and e["available"] for e in events()), "the online event")
    await u.wait(lambda: u.client_roster[BOT]["subscription"] == "both", "a mutual subscription")
    await from_the_test("online")
    before = len(events())
    expect(all(e["available"] for e in events()), f"offline too soon: {events()}")
    await u.disconnect()
    print("offline", flush=True)
    await u.wait(lambda: any(not e["available"] for e in events()[before:]), "the offline event")
    off = [e for e in events()[before:] if not e["available"]]
    expect(len(off) == 1 and off[0]["user"] == args.jid and off[0]["resources"] == []
           and off[0]["show"] == "unavailable", f"{off}")
    s.disconnect()
    print("ok")


SCENARIOS = {"chat": chat, "push_restart": push_restart, "presence": presence, "room": room,
             "stream_resumed": lambda: stream(True), "stream_not_resumed": lambda: stream(False),
             "roster_remove": roster_remove, "offline_meanwhile": offline_meanwhile}
if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}")
asyncio.run(SCENARIOS[args.scenario]())
