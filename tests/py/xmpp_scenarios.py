"""XMPP link scenarios: slixmpp (an independent XMPP client) as the IM user on a real XMPP server
(Prosody or ejabberd: both serve the domain localhost, the component bridge.localhost and the MUC
service conference.localhost; only their ports differ), stomp.py on the router's side. The Rust test
(tests/xmpp.rs) writes the routes, starts the router (its component serves bridge.localhost) and runs
one scenario.

Usage: xmpp_scenarios.py --port STOMP_PORT --admin-port PORT --prefix P --jid USER@localhost --password PW
                         [--c2s-port 5222] SCENARIO
"""

import asyncio
import json
import os
import sys
import threading
import urllib.request
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, expect_traffic, fail, mqtt5_responder, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402
from xmpptest import User  # noqa: E402

import stomp  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--prefix", required=True),
                             p.add_argument("--admin-port", type=int, required=True),
                             p.add_argument("--jid", required=True), p.add_argument("--password", required=True),
                             p.add_argument("--mqtt-port", type=int),
                             p.add_argument("--c2s-port", type=int, default=5222)))
P = args.prefix
T = args.timeout
BRIDGE = "bridge.localhost"


def links():
    with urllib.request.urlopen(f"http://127.0.0.1:{args.admin_port}/links", timeout=5) as r:
        return {l["name"]: l for l in json.load(r)}


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


async def chat_roundtrip():
    """A chat to orders@bridge reaches a STOMP consumer with thread, reply address and SHIM-free
    headers; the receipt comes only after the router took it; the STOMP reply comes back to the
    user's full JID from orders@bridge in the same thread; an address no route serves gets an
    item-not-found error; service discovery lists the JIDs and features."""
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.orders", id="1", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    u = await login()
    # A chat-state notification first ("typing…"): it has no body and must not be routed.
    cs = u.make_message(mto=f"orders@{BRIDGE}", mtype="chat")
    cs.xml.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
    cs.send()
    m = u.make_message(mto=f"orders@{BRIDGE}", mbody="status 42", mtype="chat")
    m["thread"] = "th-1"
    m["id"] = "req-1"
    m.send()
    await u.wait(lambda: col.messages, "STOMP got the chat")
    f = col.messages[0]
    expect(len(col.messages) == 1, f"only the chat, not the chat state: {[x.body for x in col.messages]}")
    expect(f.body == "status 42", f"body {f.body!r}")
    h = f.headers
    for k, v in {"correlation-id": "th-1", "x-xmpp-thread": "th-1", "x-xmpp-type": "chat",
                 "x-xmpp-to": f"orders@{BRIDGE}"}.items():
        expect(h.get(k) == v, f"header {k}: {h.get(k)!r} in {h}")
    expect(h.get("x-xmpp-from", "").startswith(args.jid + "/"), f"full JID in {h}")
    await u.wait(lambda: "req-1" in u.receipts, "receipt for req-1")
    s.send(h["reply-to"], "shipped", headers={"correlation-id": h["correlation-id"]})
    await u.wait(lambda: u.messages, "the reply")
    r = u.messages[0]
    expect(str(r["from"]) == f"orders@{BRIDGE}" and r["body"] == "shipped" and r["thread"] == "th-1",
           f"reply {r}")
    # An address no route serves: an error stanza, not silence.
    u.make_message(mto=f"nobody@{BRIDGE}", mbody="hello?", mtype="chat").send()
    await u.wait(lambda: u.errors, "error stanza")
    e = u.errors[0]
    expect(e["error"]["condition"] == "item-not-found" and "routes nowhere" in e["error"]["text"],
           f"error {e['error']}")
    info = await u.plugin["xep_0030"].get_info(jid=BRIDGE, timeout=T)
    feats = info["disco_info"]["features"]
    expect("urn:xmpp:receipts" in feats and "http://jabber.org/protocol/shim" in feats, f"features {feats}")
    items = await u.plugin["xep_0030"].get_items(jid=BRIDGE, timeout=T)
    jids = [str(i[0]) for i in items["disco_items"]["items"]]
    expect(f"orders@{BRIDGE}" in jids, f"items {jids}")
    st = links()["im"]["counters"]
    expect(st["received"] >= 1 and st["rejected"] >= 1 and st["published"] >= 1, f"{st}")
    # In by XMPP, out by STOMP: the chat (9 bytes); in by STOMP, out by XMPP: the reply (7).
    # The chat state and the message no route serves are not counted.
    expect_traffic(args.admin_port, T, xmpp=(1, 9, 1, 7), stomp=(1, 7, 1, 9))
    u.disconnect()
    s.disconnect()
    print("ok")


async def durable_before():
    """Chats to orders@bridge nobody consumes yet: each receipt comes only once the
    message is in the router's journal."""
    u = await login()
    for i in range(5):
        m = u.make_message(mto=f"orders@{BRIDGE}", mbody=f"d{i}", mtype="chat")
        m["id"] = f"dur-{i}"
        m.send()
    await u.wait(lambda: all(f"dur-{i}" in u.receipts for i in range(5)), "five receipts")
    u.disconnect()
    print("ok")


async def durable_after():
    """After kill -9 and a restart the receipted chats are all there, in order."""
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.orders", id="1", ack="auto")
    # A marker sent to the queue now comes after everything recovered into it.
    s.send(f"/queue/{P}.orders", "marker")
    wait_for(lambda: len(col.messages) >= 6, T, lambda: f"got {[m.body for m in col.messages]}")
    got = [m.body for m in col.messages]
    expect(got == [f"d{i}" for i in range(5)] + ["marker"], f"after restart: {got}")
    s.disconnect()
    print("ok")


async def rpc_mqtt5():
    """A chat to ask@bridge reaches an MQTT 5 responder with a response topic and correlation
    data; its answer comes back to the user from ask@bridge in the chat's thread."""
    resp = mqtt5_responder(args.mqtt_port, f"{P}/ask", lambda body: b"answer to " + body, T)
    u = await login()
    m = u.make_message(mto=f"ask@{BRIDGE}", mbody="how many?", mtype="chat")
    m["thread"] = "t-mqtt"
    m.send()
    await u.wait(lambda: u.messages, "the MQTT responder's answer")
    r = u.messages[0]
    expect(r["body"] == "answer to how many?" and r["thread"] == "t-mqtt" and str(r["from"]) == f"ask@{BRIDGE}",
           f"reply {r}")
    resp.loop_stop()
    resp.disconnect()
    u.disconnect()
    print("ok")


async def notify():
    """STOMP → route → headline from alerts@bridge to the user, with SHIM headers."""
    u = await login()
    s, col = stomp_conn()
    for i in range(3):
        s.send(f"/queue/{P}.notify", f"disk {i}", headers={"user": args.jid, "severity": "high"})
    await u.wait(lambda: len(u.messages) >= 3, "three headlines")
    got = [(str(m["from"]), m["type"], m["body"]) for m in u.messages]
    expect(got == [(f"alerts@{BRIDGE}", "headline", f"disk {i}") for i in range(3)], f"{got}")
    expect("severity" in str(u.messages[0]), f"SHIM header in {u.messages[0]}")
    u.disconnect()
    s.disconnect()
    print("ok")


async def presence_and_push():
    """Presence changes become JSON events on an internal topic; a user subscribed to
    alerts@bridge gets the alerts topic pushed while online, and what was published while
    they were offline once they come back."""
    s, col = stomp_conn()
    s.subscribe(f"/topic/{P}.presence.#", id="p", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    local = args.jid.split("@")[0]

    def events():
        return [json.loads(m.body) for m in col.messages]

    u = await login()
    u.send_presence_subscription(pto=f"alerts@{BRIDGE}")
    await u.wait(lambda: any(e["available"] for e in events()), "an available event")
    e = [e for e in events() if e["available"]][0]
    expect(e["user"] == args.jid and e["show"] == "available" and e["jid"].startswith(args.jid + "/"), f"event {e}")
    expect(all(m.headers["destination"] == f"/topic/{P}.presence.{local}" for m in col.messages),
           f"{[m.headers['destination'] for m in col.messages]}")
    # Pushed while online (the subscription collects from the moment it was accepted).
    s.send(f"/topic/{P}.alerts", "a1")
    await u.wait(lambda: u.messages, "pushed a1")
    m = u.messages[0]
    expect(str(m["from"]) == f"alerts@{BRIDGE}" and m["body"] == "a1", f"push {m}")
    u.send_presence(pshow="away", pstatus="lunch")
    await u.wait(lambda: any(e.get("show") == "away" for e in events()), "away event")
    away = [e for e in events() if e.get("show") == "away"][0]
    expect(away["status"] == "lunch" and away["available"], f"away {away}")
    before = len(events())
    u.disconnect()
    await u.wait(lambda: any(not e["available"] for e in events()[before:]), "unavailable event")
    # Offline: these wait in the user's subscription.
    for i in (2, 3):
        s.send(f"/topic/{P}.alerts", f"a{i}", receipt=f"r{i}")
    await u.wait(lambda: "r3" in col.receipts, "the offline messages accepted")
    u2 = await login()
    await u2.wait(lambda: len(u2.messages) >= 2, "a2 and a3 after coming back")
    expect([m["body"] for m in u2.messages] == ["a2", "a3"], f"{[m['body'] for m in u2.messages]}")
    u2.disconnect()
    s.disconnect()
    print("ok")


class PresenceEvents:
    """The presence events the router publishes on P.presence.#, as a STOMP subscriber sees them."""

    def __init__(self):
        self.stomp, self.col = stomp_conn()
        self.stomp.subscribe(f"/topic/{P}.presence.#", id="p", ack="auto", receipt="sub")
        wait_for(lambda: "sub" in self.col.receipts, T, "SUBSCRIBE receipt")

    def all(self):
        return [json.loads(m.body) for m in self.col.messages]

    def brief(self):
        """(jid, available, show) per event, for failure messages."""
        return [(e["jid"], e["available"], e["show"]) for e in self.all()]

    async def wait(self, u, pred, what):
        """The first event matching pred, waiting for it."""
        await u.wait(lambda: any(pred(e) for e in self.all()), f"{what}; events so far: {self.brief()}")
        return [e for e in self.all() if pred(e)][0]


async def presence_online_without_a_stray_offline():
    """A user who subscribes to one of our JIDs while online: the server answers the subscription
    handshake with presences of its own (one of them an unavailable presence from the user's bare
    JID), but the user never went offline, so the events say online, then away — and nothing else."""
    ev = PresenceEvents()
    u = await login()
    me = str(u.boundjid.full)
    u.send_presence_subscription(pto=f"alerts@{BRIDGE}")
    await ev.wait(u, lambda e: e["jid"] == me and e["available"], "the online event")
    # A change of our own as a barrier: the server's handshake presences came before it.
    u.send_presence(pshow="away", pstatus="lunch")
    await ev.wait(u, lambda e: e["show"] == "away", "the away event")
    got = ev.brief()
    expect(got == [(me, True, "available"), (me, True, "away")], f"events while online: {got}")
    for e in ev.all():
        expect(e["user"] == args.jid and e["resources"] == [me], f"event {e}")
    u.disconnect()
    off = await ev.wait(u, lambda e: not e["available"], "the offline event")
    expect(off["jid"] == me and off["show"] == "unavailable" and off["resources"] == [], f"offline {off}")
    expect(len(ev.all()) == 3, f"events: {ev.brief()}")
    ev.stomp.disconnect()
    print("ok")


async def presence_two_resources():
    """The user online with two resources: the second one leaving is an event for that resource
    but not "offline" (the user is still available, and the push goes on); the last one leaving is."""
    ev = PresenceEvents()
    s, _ = stomp_conn()
    a = await login()
    ja = str(a.boundjid.full)
    a.send_presence_subscription(pto=f"alerts@{BRIDGE}")
    await ev.wait(a, lambda e: e["jid"] == ja and e["available"], "resource A online")
    b = await login()
    jb = str(b.boundjid.full)
    expect(ja != jb, f"two resources: {ja} {jb}")
    both = await ev.wait(a, lambda e: e["jid"] == jb and e["available"], "resource B online")
    expect(both["resources"] == sorted([ja, jb]), f"event {both}")
    b.disconnect()
    left = await ev.wait(a, lambda e: e["jid"] == jb and e["show"] == "unavailable", "resource B gone")
    expect(left["available"] and left["resources"] == [ja], f"B left while A stays: {left}")
    expect(all(e["available"] for e in ev.all()), f"no offline event while A is online: {ev.brief()}")
    # A is still online: the push goes on.
    s.send(f"/topic/{P}.alerts", "still here")
    await a.wait(lambda: any(m["body"] == "still here" for m in a.messages), "pushed to A after B left")
    a.disconnect()
    off = await ev.wait(a, lambda e: not e["available"], "the offline event")
    expect(off["jid"] == ja and off["resources"] == [], f"offline {off}")
    expect([e["available"] for e in ev.all()] == [True, True, True, False], f"events: {ev.brief()}")
    s.disconnect()
    ev.stomp.disconnect()
    print("ok")


async def room():
    """The user and the router share a room: what the user says reaches an internal topic (once:
    the router's own messages are not routed back), what is published to another topic is said in
    the room by the router."""
    room_jid = f"{P}@conference.localhost"
    s, col = stomp_conn()
    s.subscribe(f"/topic/{P}.room", id="r", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    u = await login()
    said = []
    u.add_event_handler("groupchat_message", lambda m: said.append(m))
    await u.plugin["xep_0045"].join_muc_wait(room_jid, "alice", maxstanzas=0, timeout=T)
    # Wait until the router is in the room too (it joins on connect).
    await u.wait(lambda: "switchboard" in u.plugin["xep_0045"].get_roster(room_jid), "router in the room")
    u.send_message(mto=room_jid, mbody="hello room", mtype="groupchat")
    await u.wait(lambda: col.messages, "the room message on the topic")
    expect(col.messages[0].body == "hello room", f"{[f.body for f in col.messages]}")
    expect(col.messages[0].headers.get("x-xmpp-from") == f"{room_jid}/alice", f"{col.messages[0].headers}")
    s.send(f"/topic/{P}.say", "hello from the router")
    await u.wait(lambda: any(m["body"] == "hello from the router" for m in said), "the router's message in the room")
    m = [m for m in said if m["body"] == "hello from the router"][0]
    expect(str(m["from"]) == f"{room_jid}/switchboard", f"from {m['from']}")
    # No echo: the room reflects the router's message back to it before it relays anything
    # the user says after seeing that message, so a marker said now arrives after any echo.
    u.send_message(mto=room_jid, mbody="marker", mtype="groupchat")
    await u.wait(lambda: any(f.body == "marker" for f in col.messages), "the marker on the topic")
    bodies = [f.body for f in col.messages]
    expect(bodies == ["hello room", "marker"], f"no echo: the topic got {bodies}")
    u.disconnect()
    s.disconnect()
    print("ok")


async def rpc_amqp():
    """A chat user's request reaches a pika worker on RabbitMQ through the router; the worker's
    reply (to reply_to, with the correlation id) comes back to the user in the same thread."""
    import pika
    params = pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest"))
    stop = threading.Event()
    ready = threading.Event()

    def worker():
        c = pika.BlockingConnection(params)
        ch = c.channel()
        ch.queue_declare(f"{P}.work", arguments={"x-expires": 600000})
        ready.set()
        for method, props, body in ch.consume(f"{P}.work", inactivity_timeout=0.1):
            if stop.is_set():
                break
            if method is None:
                continue
            ch.basic_publish("", props.reply_to, b"order " + body.split()[-1] + b": shipped",
                             pika.BasicProperties(correlation_id=props.correlation_id))
            ch.basic_ack(method.delivery_tag)
        c.close()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    expect(ready.wait(T), "worker ready")
    u = await login()
    m = u.make_message(mto=f"rpc@{BRIDGE}", mbody="status 42", mtype="chat")
    m["thread"] = "conv-7"
    m.send()
    await u.wait(lambda: u.messages, "the worker's reply")
    r = u.messages[0]
    expect(r["body"] == "order 42: shipped" and r["thread"] == "conv-7" and str(r["from"]) == f"rpc@{BRIDGE}",
           f"reply {r}")
    stop.set()
    t.join(5)
    u.disconnect()
    print("ok")


async def subscription_refused():
    """With subscriptions_from not naming the user's domain, a subscription is refused."""
    u = await login()
    refused = []
    u.add_event_handler("presence_unsubscribed", lambda p: refused.append(str(p["from"])))
    u.send_presence_subscription(pto=f"alerts@{BRIDGE}")
    await u.wait(lambda: refused, "unsubscribed from alerts@")
    expect(refused[0] == f"alerts@{BRIDGE}", f"{refused}")
    u.disconnect()
    print("ok")


async def full_destination():
    """A destination full with `block` overflow: the first message is taken (receipt), the second
    is refused with resource-constraint after a short wait, and the link keeps serving."""
    u = await login()
    for i in range(2):
        m = u.make_message(mto=f"orders@{BRIDGE}", mbody=f"m{i}", mtype="chat")
        m["id"] = f"f{i}"
        m.send()
    await u.wait(lambda: u.errors, "resource-constraint", timeout=T + 10)
    e = u.errors[0]
    expect(e["error"]["condition"] == "resource-constraint" and e["id"] == "f1", f"error {e}")
    expect("f0" in u.receipts, f"receipts {u.receipts}")
    info = await u.plugin["xep_0030"].get_info(jid=BRIDGE, timeout=T)
    expect(info["disco_info"]["features"], "the link still answers")
    u.disconnect()
    print("ok")


async def oversize():
    """A 300 KiB stanza: the server's size limit (256 KiB for c2s on both test servers) ends that user's
    stream; the router's link is unaffected and the next user's message goes through."""
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.orders", id="1", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    u = await login()
    gone = asyncio.Event()
    u.add_event_handler("disconnected", lambda _e: gone.set())
    u.make_message(mto=f"orders@{BRIDGE}", mbody="x" * (300 * 1024), mtype="chat").send()
    await asyncio.wait_for(gone.wait(), T)
    expect(links()["im"]["state"] == "connected", f"link {links()['im']}")
    u2 = await login()
    u2.make_message(mto=f"orders@{BRIDGE}", mbody="small", mtype="chat").send()
    await u2.wait(lambda: col.messages, "the small message")
    expect([f.body for f in col.messages] == ["small"], f"{[len(f.body) for f in col.messages]}")
    u2.disconnect()
    s.disconnect()
    print("ok")


SCENARIOS = {f.__name__: f for f in [chat_roundtrip, durable_before, durable_after, rpc_mqtt5, notify, presence_and_push,
                                     presence_online_without_a_stray_offline, presence_two_resources, room, rpc_amqp,
                                     subscription_refused, full_destination, oversize]}
if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}")
asyncio.run(SCENARIOS[args.scenario]())
