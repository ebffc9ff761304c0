"""Ownership of internal names (issue 19), driven by stomp.py and paho-mqtt 2.x.

Every internal name that belongs to a session, a user or a connection (MQTT session and
shared-group queues, durable STOMP subscriptions, temporary queues, link queues) is
reachable only by its owner; a configured `#` never covers `$` names; a client id with a
session belongs to its user; a delivery refused by permissions is dead-lettered, never
counted as delivered. Each scenario also checks that the honest client keeps being served.

Usage: abuse_ownership.py --port STOMP_PORT SCENARIO --mqtt-port P
Users (password `pw`, see tests/abuse/ownership.rs): alice and root (no rules: everything),
mallory (`#`, which covers queues too), sys (subscribe `$SYS.#` only).
"""

import os
import re
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import stomp  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--mqtt-port", type=int)))
H, T = args.host, args.timeout
V3, V5 = mqtt.MQTTv311, mqtt.MQTTv5
PW = "pw"
THIEVES = ["mallory", "root"]


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- STOMP ----------------------------------------------------------------------------


def sconn(user=None):
    c = stomp.Connection12([(H, args.port)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(user, PW if user else None, wait=True)
    return c, col


def wait_error(col, what):
    wait_for(lambda: col.errors or col.receipts or col.messages, T, f"{what}: no answer")
    expect(col.errors and not col.messages and not col.receipts,
           f"{what}: expected ERROR only, got receipts {col.receipts}, messages {col.bodies()}, errors {col._errors()}")
    e = col.errors[0]
    expect(e.headers.get("message") == "access refused", f"{what}: {e.headers} {e.body}")


def refused_subscribe(user, dest):
    """SUBSCRIBE on a fresh connection must be ERROR `access refused` (no RECEIPT, no MESSAGE)."""
    c, col = sconn(user)
    c.subscribe(dest, id="s", ack="client-individual", headers={"receipt": "r"})
    wait_error(col, f"{user} SUBSCRIBE {dest}")
    c.disconnect()


def refused_send(user, dest):
    c, col = sconn(user)
    c.send(dest, "injected", headers={"receipt": "r"})
    wait_error(col, f"{user} SEND {dest}")
    c.disconnect()


# ---- MQTT -----------------------------------------------------------------------------


class M:
    """A paho client that records what it gets."""

    def __init__(self, client_id=None, user=None, version=V5, clean=True, connect=True):
        self.cid = client_id or uniq("m")
        kw = {} if version == V5 else {"clean_session": clean}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cid, protocol=version, **kw)
        self.version, self.clean = version, clean
        self.msgs, self.lock = [], threading.Lock()
        self.subacks, self.connack, self.connected = {}, None, threading.Event()
        self.c.on_message = lambda c, u, m: self._add(m)
        self.c.on_connect = self._conn
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.__setitem__(mid, rcs)
        if user:
            self.c.username_pw_set(user, PW)
        if connect:
            self.connect()

    def _add(self, m):
        with self.lock:
            self.msgs.append(m)

    def _conn(self, c, u, flags, rc, props):
        self.connack = (flags, rc)
        self.connected.set()

    def connect(self, expect_ok=True):
        self.connected.clear()
        kw = {"clean_start": self.clean} if self.version == V5 else {}
        props = None
        if self.version == V5 and not self.clean:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.c.connect(H, args.mqtt_port, keepalive=30, properties=props, **kw)
        self.c.loop_start()
        expect(self.connected.wait(T), f"{self.cid}: no CONNACK")
        if expect_ok:
            expect(not self.connack[1].is_failure, f"{self.cid}: CONNACK {self.connack[1]}")
        return self.connack

    def sub(self, topic, qos=1):
        rc, mid = self.c.subscribe(topic, qos)
        wait_for(lambda: mid in self.subacks, T, f"{self.cid}: no SUBACK for {topic}")
        return self.subacks[mid][0]

    def pub(self, topic, payload, qos=1):
        info = self.c.publish(topic, payload, qos=qos)
        if qos > 0:
            info.wait_for_publish(T)
        return info

    def wait(self, n, what="messages"):
        wait_for(lambda: len(self.msgs) >= n, T, lambda: f"{self.cid}: {what}: got {[m.payload for m in self.msgs]}")
        return [m.payload for m in self.msgs]

    def bye(self):
        self.c.disconnect()
        self.c.loop_stop()


def puback_code(client, topic):
    """Publishes QoS 1 (5.0) and returns the PUBACK reason code."""
    got = {}
    done = threading.Event()

    def on_publish(c, u, mid, rc, props):
        got[mid] = rc
        done.set()

    client.c.on_publish = on_publish
    info = client.c.publish(topic, "injected", qos=1)
    expect(done.wait(T), f"no PUBACK for {topic}")
    return got[info.mid].value


# ---- scenarios ------------------------------------------------------------------------


def session_queues():
    """Another user's MQTT session and shared-group queues: not consumed, not written."""
    victim = M(uniq("victim"), user="alice", clean=False)
    group, filt = uniq("g"), "v/#"
    expect(victim.sub("v/#").value == 1, "victim subscribed")
    expect(victim.sub(f"$share/{group}/{filt}").value == 1, "victim joined a shared group")
    victim.bye()
    publisher = M()
    publisher.pub("v/x", "m1")
    session_q = f"$mqtt.s.{victim.cid.replace('.', '%2E')}"
    share_q = f"$mqtt.share.{group.encode().hex()}.{filt.encode().hex()}"
    for thief in THIEVES:
        refused_subscribe(thief, f"/queue/{session_q}")
        refused_subscribe(thief, f"/queue/{share_q}")
        refused_send(thief, f"/queue/{session_q}")
        m = M(user=thief)
        expect(m.sub(f"$queue/{session_q}").value == 0x87, f"{thief}: MQTT $queue/ subscription to a session queue")
        code = puback_code(m, f"$queue/{session_q}")
        expect(code == 0x87, f"{thief}: MQTT publish into another session's queue: PUBACK {code:#x}")
        m.bye()
    # The honest client finds its message, and nothing injected.
    # (It gets each twice: once through its session, once through its shared group.)
    victim.connect()
    publisher.pub("v/x", "m2")
    payloads = lambda: [m.payload for m in victim.msgs]  # noqa: E731
    wait_for(lambda: {b"m1", b"m2"} <= set(payloads()), T, lambda: f"victim got {payloads()}")
    expect(b"injected" not in payloads(), f"victim got {payloads()}")
    victim.bye()
    publisher.bye()
    print("ok")


def durable_subscriptions():
    """Another user's durable STOMP subscription (`stomp.USER.NAME`): not consumed, not written."""
    name = uniq("feed")
    topic = f"/topic/{uniq('news')}"
    a, acol = sconn("alice")
    a.subscribe(f"{topic}.#", id="d", ack="client-individual",
                headers={"durable": "true", "subscription-name": name, "receipt": "r1"})
    acol.wait_receipt("r1")
    a.disconnect()
    p, pcol = sconn()
    p.send(f"{topic}.eu", "n1", headers={"receipt": "p1"})
    pcol.wait_receipt("p1")
    for thief in ["mallory", "root"]:
        refused_subscribe(thief, f"/queue/stomp.alice.{name}")
        refused_send(thief, f"/queue/stomp.alice.{name}")
    # alice resumes it and finds exactly what was published (a fence after it).
    a, acol = sconn("alice")
    a.subscribe(f"{topic}.#", id="d", ack="auto", headers={"durable": "true", "subscription-name": name})
    p.send(f"{topic}.eu", "n2", headers={"receipt": "p2"})
    pcol.wait_receipt("p2")
    acol.wait_messages(2)
    expect(acol.bodies() == ["n1", "n2"], f"alice got {acol.bodies()}")
    a.disconnect()
    p.disconnect()
    print("ok")


def dollar_topics():
    """A configured `#` does not cover `$` names: not at SUBSCRIBE, not per delivery."""
    refused_subscribe("mallory", "/topic/$SYS.#")
    m = M(user="mallory")
    expect(m.sub("$SYS/#").value == 0x87, "MQTT: `#` must not cover $SYS/#")
    m.bye()
    c, col = sconn("mallory")
    c.subscribe("/topic/#", id="all", ack="auto", headers={"receipt": "r"})
    col.wait_receipt("r")
    s, scol = sconn("sys")
    s.subscribe("/topic/$SYS.#", id="sys", ack="auto", headers={"receipt": "r"})
    scol.wait_receipt("r")
    pub = M()
    pub.pub("$SYS/load", "sys-1")
    pub.pub("plain/x", "fence")
    col.wait_messages(1)
    scol.wait_messages(1)
    expect(col.bodies() == ["fence"], f"`#` subscriber got {col.bodies()}")
    expect(scol.bodies() == ["sys-1"], f"$SYS subscriber got {scol.bodies()}")
    pub.bye()
    c.disconnect()
    s.disconnect()
    print("ok")


def temp_queues():
    """Temporary queue names are unguessable, and only their connection consumes them."""
    svc = f"/queue/{uniq('svc')}"
    srv, scol = sconn("mallory")
    srv.subscribe(svc, id="svc", ack="auto", headers={"receipt": "r"})
    scol.wait_receipt("r")
    tokens = []
    for i in range(2):
        req, rcol = sconn("alice")
        req.send(svc, f"ask-{i}", headers={"reply-to": "/temp-queue/answers", "correlation-id": f"c{i}"})
        scol.wait_messages(i + 1)
        reply_to = scol.messages[i].headers.get("reply-to", "")
        m = re.fullmatch(r"/queue/\$sb\.tmp\.([^.]+)\.answers", reply_to)
        expect(m, f"reply-to {reply_to!r}")
        token = m.group(1)
        expect(re.fullmatch(r"[0-9a-f]{24,}", token), f"temporary queue token {token!r} is not ≥ 96 random bits")
        tokens.append(token)
        for thief in THIEVES:
            refused_subscribe(thief, reply_to)
            mq = M(user=thief)
            expect(mq.sub(f"$queue/{reply_to[len('/queue/'):]}").value == 0x87, f"{thief}: MQTT subscription to a temp queue")
            mq.bye()
        # Whoever was handed the address replies; the requester gets it.
        srv.send(reply_to, f"answer-{i}", headers={"correlation-id": f"c{i}", "receipt": f"a{i}"})
        scol.wait_receipt(f"a{i}")
        rcol.wait_messages(1)
        expect(rcol.bodies() == [f"answer-{i}"], f"requester got {rcol.bodies()}")
        req.disconnect()
    expect(tokens[0] != tokens[1], f"two temp queues share a token: {tokens}")
    srv.disconnect()
    print("ok")


def link_queues():
    """The router's own queues ($sb.…: links, subscriptions, XMPP push) are nobody's to use,
    not even a user allowed everything (mallory's `#` does not reach `$` names at all)."""
    for q in ["$sb.link.rabbit", "$sb.sub.1", "$sb.push.im.x"]:
        refused_subscribe("root", f"/queue/{q}")
        refused_send("root", f"/queue/{q}")
    print("ok")


def client_id_takeover():
    """A client id with a session belongs to its user: another user is refused (0x87 / 5)."""
    cid = uniq("alice-dev")
    alice = M(cid, user="alice", clean=False)
    expect(alice.sub("a/#").value == 1, "alice subscribed")
    alice.bye()
    pub = M()
    for i in range(3):
        pub.pub("a/x", f"m{i}")
    for version, clean, code in [(V5, False, 0x87), (V3, False, 5), (V5, True, 0x87), (V3, True, 5)]:
        thief = M(cid, user="mallory", version=version, clean=clean, connect=False)
        ack = thief.connect(expect_ok=False)
        expect(ack[1].value in (code, 0x87), f"mallory with alice's client id ({version}, clean {clean}): CONNACK {ack[1]}")
        expect(ack[1].is_failure, f"mallory accepted: {ack[1]}")
        thief.c.loop_stop()
    alice.connect()
    expect(alice.connack[0].session_present, "alice's session survived")
    got = alice.wait(3)
    expect(got == [b"m0", b"m1", b"m2"], f"alice got {got}")
    # While alice is connected, a thief is refused and alice is not kicked.
    thief = M(cid, user="mallory", connect=False)
    ack = thief.connect(expect_ok=False)
    expect(ack[1].value == 0x87, f"mallory while alice is connected: {ack[1]}")
    thief.c.loop_stop()
    pub.pub("a/x", "m3")
    got = alice.wait(4)
    expect(got[3] == b"m3", f"alice got {got}")
    alice.bye()
    pub.bye()
    print("ok")


def narrow_setup():
    """Before the restart: alice's persistent MQTT session on a/# and durable STOMP feed on news.#."""
    a = M("alice-narrow", user="alice", clean=False)
    expect(a.sub("a/#").value == 1, "alice subscribed")
    a.bye()
    c, col = sconn("alice")
    c.subscribe("/topic/news.#", id="d", ack="auto",
                headers={"durable": "true", "subscription-name": "feed", "receipt": "r"})
    col.wait_receipt("r")
    c.disconnect()
    print("ok")


def narrow_check():
    """After the restart alice may read only public.#: what waits for her on a/# and news.#
    is dead-lettered with reason `forbidden`, never delivered nor counted as acknowledged."""
    dl, dcol = sconn()
    dl.subscribe("/queue/dlq", id="dlq", ack="auto", headers={"receipt": "r"})
    dcol.wait_receipt("r")
    pub = M()
    pub.pub("a/x", "mqtt-secret")
    p, pcol = sconn()
    p.send("/topic/news.x", "stomp-secret", headers={"receipt": "p"})
    pcol.wait_receipt("p")
    # The client id is still alice's after the restart (its owner is stored).
    thief = M("alice-narrow", user="mallory", clean=False, connect=False)
    ack = thief.connect(expect_ok=False)
    expect(ack[1].value == 0x87, f"mallory with alice's client id after a restart: {ack[1]}")
    thief.c.loop_stop()
    a = M("alice-narrow", user="alice", clean=False)
    expect(a.connack[0].session_present, "alice's session survived the restart")
    c, col = sconn("alice")
    c.subscribe("/topic/public.#", id="d", ack="auto", headers={"durable": "true", "subscription-name": "feed"})
    dcol.wait_messages(2, "dead letters")
    reasons = sorted((m.body, m.headers.get("x-death-reason")) for m in dcol.messages)
    expect(reasons == [("mqtt-secret", "forbidden"), ("stomp-secret", "forbidden")], f"dead letters {reasons}")
    expect(not a.msgs and not col.messages, f"alice got {[m.payload for m in a.msgs]} {col.bodies()}")
    # The honest path still serves her.
    p.send("/topic/public.y", "public", headers={"receipt": "p2"})
    col.wait_messages(1)
    expect(col.bodies() == ["public"], f"alice got {col.bodies()}")
    for x in (a, pub):
        x.bye()
    for x in (c, p, dl):
        x.disconnect()
    print("ok")


SCENARIOS = {f.__name__: f for f in [session_queues, durable_subscriptions, dollar_topics, temp_queues, link_queues,
                                     client_id_takeover, narrow_setup, narrow_check]}
if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}")
SCENARIOS[args.scenario]()
