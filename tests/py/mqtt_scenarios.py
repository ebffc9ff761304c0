"""MQTT scenarios driven by paho-mqtt 2.x (an independent client) and raw sockets.

Usage: mqtt_scenarios.py --port PORT SCENARIO [--stomp-port P] [--user U --password P]
"""

import os
import socket
import struct
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from paho.mqtt.subscribeoptions import SubscribeOptions  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--stomp-port", type=int),
                             p.add_argument("--user"), p.add_argument("--password"), p.add_argument("--ca"),
                             p.add_argument("--admin-port", type=int),
                             p.add_argument("--ws-port", type=int)))
H, P, T = args.host, args.port, args.timeout
V3, V5 = mqtt.MQTTv311, mqtt.MQTTv5


class C:
    """A paho client that records what it gets."""

    def __init__(self, version=V5, client_id=None, clean=True, user=None, password=None, will=None, keepalive=30, connect=True,
                 expiry=3600):
        self.cid = client_id or f"t-{uuid.uuid4().hex[:8]}"
        kw = {} if version == V5 else {"clean_session": clean}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cid, protocol=version, **kw)
        self.version = version
        self.msgs, self.lock = [], threading.Lock()
        self.connack = None
        self.disconnects = []
        self.subacks = {}
        self.connected = threading.Event()
        self.c.on_message = self._msg
        self.c.on_connect = self._conn
        self.c.on_disconnect = self._disc
        self.c.on_subscribe = self._sub
        if user:
            self.c.username_pw_set(user, password)
        if will:
            self.c.will_set(*will)
        self.clean = clean
        self.expiry = expiry  # 5.0 Session Expiry Interval sent when not clean (None: no property)
        self.keepalive = keepalive
        if connect:
            self.connect()

    def _msg(self, c, u, m):
        with self.lock:
            self.msgs.append(m)

    def _conn(self, c, u, flags, rc, props):
        self.connack = (flags, rc, props)
        self.connected.set()

    def _disc(self, c, u, flags, rc, props):
        self.disconnects.append(rc)

    def _sub(self, c, u, mid, rcs, props):
        self.subacks[mid] = rcs

    def connect(self, expect_ok=True):
        self.connected.clear()
        kw = {"clean_start": self.clean} if self.version == V5 else {}
        props = None
        if self.version == V5 and not self.clean and self.expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.expiry
        self.c.connect(H, P, keepalive=self.keepalive, properties=props, **kw)
        self.c.loop_start()
        expect(self.connected.wait(T), f"{self.cid}: no CONNACK")
        if expect_ok:
            expect(not self.connack[1].is_failure, f"{self.cid}: CONNACK {self.connack[1]}")
        return self.connack

    def sub(self, topic, qos=1, **opts):
        o = SubscribeOptions(qos=qos, **opts) if self.version == V5 else None
        rc, mid = self.c.subscribe(topic, options=o) if o else self.c.subscribe(topic, qos)
        wait_for(lambda: mid in self.subacks, T, f"{self.cid}: no SUBACK for {topic}")
        return self.subacks[mid]

    def pub(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos > 0:
            info.wait_for_publish(T)
            expect(info.is_published(), f"{self.cid}: publish to {topic} not acknowledged")
        return info

    def wait(self, n, what="messages"):
        wait_for(lambda: len(self.msgs) >= n, T, lambda: f"{self.cid}: {what}: got {len(self.msgs)} of {n}: {[m.payload for m in self.msgs]}")
        return self.msgs

    def nothing_more(self, n, pub, topic, marker=b"marker"):
        """Exactly n messages came and no more is on its way: a marker `pub` publishes
        to `topic` now (which this client subscribes to) arrives right after them."""
        pub.pub(topic, marker, qos=1)
        got = self.wait(n + 1, "the marker")
        expect(len(got) == n + 1 and got[-1].payload == marker,
               f"{self.cid}: expected {n} messages then the marker, got {[(m.topic, m.payload) for m in got]}")

    def bye(self):
        self.c.disconnect()
        self.c.loop_stop()

    def vanish(self):
        """Drop the TCP connection without DISCONNECT (as a crashed client would)."""
        self.c.loop_stop()
        self.c.socket().shutdown(socket.SHUT_RDWR)
        self.c.socket().close()


def t(prefix):
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


def admin_json(path):
    """GET `path` of the router's admin API (--admin-port)."""
    import json
    import urllib.request
    expect(args.admin_port, "this scenario needs --admin-port")
    with urllib.request.urlopen(f"http://{H}:{args.admin_port}{path}", timeout=T) as r:
        return json.loads(r.read())


def wait_open(n, what):
    """Waits until the router's MQTT listener holds exactly n connections (GET /limits):
    a connection's slot is freed once the router has finished with it (will sent on
    its way, session stored or dropped)."""
    open_now = lambda: admin_json("/limits")["mqtt"]["open"]  # noqa: E731
    wait_for(lambda: open_now() == n, T, lambda: f"{what}: {open_now()} MQTT connections open, expected {n}")


# ---- raw MQTT 3.1.1 packets, for flows paho would complete on its own -------------------

def enc_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def enc_len(n):
    out = b""
    while True:
        d, n = n % 128, n // 128
        out += bytes([d | (0x80 if n else 0)])
        if not n:
            return out


def packet(first, body):
    return bytes([first]) + enc_len(len(body)) + body


class WsSocket:
    """The MQTT WebSocket listener as raw_connect's socket (websocket-client, PyPI): each
    sendall is one binary WebSocket message, recv reads across messages."""

    def __init__(self):
        import websocket
        self.ws = websocket.create_connection(f"ws://{H}:{args.ws_port}/mqtt", subprotocols=["mqtt"], timeout=T)
        self.buf = b""

    def sendall(self, data):
        self.ws.send_binary(data)

    def recv(self, n):
        import websocket
        while not self.buf:
            try:
                data = self.ws.recv()
            except websocket.WebSocketConnectionClosedException:
                return b""
            if not data:
                return b""
            self.buf = data.encode() if isinstance(data, str) else data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self):
        self.ws.close()


def raw_connect(cid, clean, keepalive=30, ws=False):
    s = WsSocket() if ws else socket.create_connection((H, P), timeout=T)
    flags = 0x02 if clean else 0
    s.sendall(packet(0x10, enc_str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + enc_str(cid)))
    ack = read_packet(s)
    expect(ack[0] == 0x20 and ack[1][1] == 0, f"CONNACK {ack}")
    return s, ack[1][0] & 1


def read_packet(s):
    first = s.recv(1)
    if not first:
        return None
    mult, n = 1, 0
    while True:
        b = s.recv(1)[0]
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return first[0], body


def parse_publish(first, body):
    qos = (first >> 1) & 3
    tl = struct.unpack("!H", body[:2])[0]
    topic = body[2:2 + tl].decode()
    rest = body[2 + tl:]
    pid = None
    if qos:
        pid = struct.unpack("!H", rest[:2])[0]
        rest = rest[2:]
    return {"dup": bool(first & 8), "qos": qos, "retain": bool(first & 1), "topic": topic, "pid": pid, "payload": rest}


# ---------------------------------------------------------------------------------------


def qos_levels():
    """QoS 0/1/2 in and out, in both versions; delivered QoS = min(publish, subscription)."""
    for version in (V3, V5):
        top = t("qos")
        s2 = C(version)
        s2.sub(f"{top}/#", qos=2)
        s0 = C(version)
        s0.sub(f"{top}/#", qos=0)
        p = C(version)
        for q in (0, 1, 2):
            p.pub(f"{top}/q{q}", f"m{q}", qos=q)
        got = s2.wait(3)
        by = {m.topic: m for m in got}
        for q in (0, 1, 2):
            m = by.get(f"{top}/q{q}")
            expect(m is not None and m.payload == f"m{q}".encode(), f"{version}: q{q} missing: {list(by)}")
            expect(m.qos == q, f"{version}: q{q} arrived at QoS {m.qos}")
        for m in s0.wait(3):
            expect(m.qos == 0, f"downgraded to the subscription's QoS 0, got {m.qos}")
        for x in (s2, s0, p):
            x.bye()
    print("ok")


def retained():
    """Retained messages: delivered on subscribe with the retain flag, replaced, cleared by an empty payload."""
    top = t("ret")
    p = C(V3)
    p.pub(f"{top}/a", "old", retain=True)
    p.pub(f"{top}/a", "new", retain=True)
    p.pub(f"{top}/b", "bee", retain=True)
    s = C(V5)
    s.sub(f"{top}/#")
    got = s.wait(2)
    expect(sorted((m.topic, m.payload, m.retain) for m in got) == [(f"{top}/a", b"new", True), (f"{top}/b", b"bee", True)], f"{[(m.topic, m.payload, m.retain) for m in got]}")
    p.pub(f"{top}/a", "live")
    s.wait(3)
    expect(s.msgs[2].retain is False, "a live message is not flagged retained")
    p.pub(f"{top}/a", b"", retain=True)
    p.pub(f"{top}/b", b"", retain=True)
    s2 = C(V3)
    s2.sub(f"{top}/#")
    # Retained messages are queued for a subscriber before its SUBACK goes out: a marker
    # published after the SUBACK comes behind them.
    s2.nothing_more(0, p, f"{top}/m")
    # 5.0 retain handling 2: never send retained.
    p.pub(f"{top}/c", "cee", retain=True)
    s3 = C(V5)
    s3.sub(f"{top}/#", retainHandling=2)
    s3.nothing_more(0, p, f"{top}/m")
    for x in (p, s, s2, s3):
        x.bye()
    print("ok")


def will():
    """The will is published when a client vanishes, not when it disconnects cleanly."""
    top = t("will")
    s = C(V3)
    s.sub(f"{top}/#")
    a = C(V3, will=(f"{top}/a", "a died", 1, False))
    a.vanish()
    got = s.wait(1, "will")
    expect(got[0].topic == f"{top}/a" and got[0].payload == b"a died", f"{got[0].topic} {got[0].payload}")
    b = C(V5, will=(f"{top}/b", "b died", 1, False))
    b.bye()
    # Once b's connection has ended in the router (its slot is free: only s is left), a
    # will would have been sent on its way, ahead of a marker published now.
    wait_open(1, "b's DISCONNECT handled")
    s.nothing_more(1, s, f"{top}/marker")
    s.bye()
    print("ok")


def will_delay():
    """5.0 will delay: the will waits for its delay after the client vanished; a client
    that comes back in time cancels it."""
    top = t("wd")
    s = C(V5)
    s.sub(f"{top}/#")
    props = Properties(PacketTypes.WILLMESSAGE)
    props.WillDelayInterval = 1

    def with_will(name, cid):
        return C(V5, client_id=cid, clean=False, expiry=60, will=(f"{top}/{name}", f"{name} will", 1, False, props))

    # b vanishes, the router notices (b's connection slot is free: only s is left), and b
    # comes back within the delay: its will is cancelled (tests/mqtt.rs finds the log line).
    bid = f"wd-b-{uuid.uuid4().hex[:6]}"
    with_will("b", bid).vanish()
    wait_open(1, "b's vanishing noticed")
    b = C(V5, client_id=bid, clean=False, expiry=60, connect=False)
    expect(b.connect()[0].session_present, "b came back to its session")
    # a vanishes after b came back, with the same delay: had b's will not been cancelled,
    # it would have arrived before a's.
    a = with_will("a", f"wd-a-{uuid.uuid4().hex[:6]}")
    a.vanish()
    gone = time.monotonic()
    got = s.wait(1, "a's delayed will")
    took = time.monotonic() - gone
    expect([(m.topic, m.payload) for m in got] == [(f"{top}/a", b"a will")],
           f"only a's will, b's was cancelled: {[(m.topic, m.payload) for m in got]}")
    # The router starts the delay when it notices a has gone, after `gone`: no margin
    # is needed below (the wait above has its own, generous, upper bound).
    expect(took >= 0.95, f"the will waited for its 1 s delay: it came after {took:.2f} s")
    b.bye()
    s.bye()
    print("ok")


def persistent_session():
    """A persistent session keeps subscriptions and QoS 1 messages while offline (both versions)."""
    for version in (V3, V5):
        top = t("persist")
        cid = f"ps-{uuid.uuid4().hex[:8]}"
        a = C(version, client_id=cid, clean=False)
        expect(not a.connack[0].session_present, "first connect has no session")
        a.sub(f"{top}/#", qos=1)
        a.bye()
        p = C(V3)
        for i in range(5):
            p.pub(f"{top}/x", f"m{i}", qos=1)
        p.bye()
        b = C(version, client_id=cid, clean=False, connect=False)
        flags = b.connect()[0]
        expect(flags.session_present, f"{version}: session present")
        got = b.wait(5, "offline messages")
        expect([m.payload for m in got] == [f"m{i}".encode() for i in range(5)], f"in order: {[m.payload for m in got]}")
        b.bye()
        # A clean start discards it.
        c = C(version, client_id=cid, clean=True)
        expect(not c.connack[0].session_present, "clean start: no session")
        c.bye()
    print("ok")


def qos2_across_reconnect():
    """QoS 2 outbound: PUBLISH resent with DUP when the client left before PUBREC; PUBREL after PUBREC.
    QoS 2 inbound: a resent PUBLISH with the same packet id is delivered once."""
    top = t("q2")
    cid = f"q2-{uuid.uuid4().hex[:8]}"
    s, present = raw_connect(cid, clean=False)
    s.sendall(packet(0x82, struct.pack("!H", 1) + enc_str(f"{top}/x") + bytes([2])))
    ack = read_packet(s)
    expect(ack[0] == 0x90 and ack[1][2] == 2, f"SUBACK {ack}")
    p = C(V3)
    p.pub(f"{top}/x", "exactly-once", qos=2)
    first, body = read_packet(s)
    m = parse_publish(first, body)
    expect(m["qos"] == 2 and not m["dup"] and m["payload"] == b"exactly-once", f"{m}")
    s.close()  # gone before PUBREC
    s, present = raw_connect(cid, clean=False)
    expect(present == 1, "session present")
    first, body = read_packet(s)
    m2 = parse_publish(first, body)
    expect(m2["dup"] and m2["qos"] == 2 and m2["payload"] == b"exactly-once", f"resent with DUP: {m2}")
    expect(m2["pid"] == m["pid"], f"resent with its original packet id: {m['pid']} then {m2['pid']}")
    s.sendall(packet(0x50, struct.pack("!H", m2["pid"])))  # PUBREC
    rel = read_packet(s)
    expect(rel[0] == 0x62 and struct.unpack("!H", rel[1])[0] == m2["pid"], f"PUBREL {rel}")
    s.close()  # gone before PUBCOMP: PUBREL is resent, not the message
    s, _ = raw_connect(cid, clean=False)
    rel = read_packet(s)
    expect(rel[0] == 0x62, f"PUBREL resent after reconnect: {rel}")
    s.sendall(packet(0x70, struct.pack("!H", m2["pid"])))  # PUBCOMP
    # Inbound duplicate QoS 2.
    sub = C(V3)
    sub.sub(f"{top}/in", qos=2)
    pub_body = enc_str(f"{top}/in") + struct.pack("!H", 77) + b"once"
    s.sendall(packet(0x34, pub_body))
    rec = read_packet(s)
    expect(rec[0] == 0x50, f"PUBREC {rec}")
    s.sendall(packet(0x3C, pub_body))  # the same, DUP set
    rec = read_packet(s)
    expect(rec[0] == 0x50, f"PUBREC again {rec}")
    s.sendall(packet(0x62, struct.pack("!H", 77)))
    comp = read_packet(s)
    expect(comp[0] == 0x70, f"PUBCOMP {comp}")
    sub.wait(1)
    sub.nothing_more(1, p, f"{top}/in")
    s.sendall(packet(0xE0, b""))
    s.close()
    sub.bye()
    p.bye()
    print("ok")


def shared_subscriptions():
    """$share/GROUP/filter: each message to exactly one member of the group; plain subscribers get all."""
    top = t("share")
    members = [C(V5) for _ in range(2)]
    for m in members:
        m.sub(f"$share/workers/{top}/#", qos=1)
    plain = C(V5)
    plain.sub(f"{top}/#")
    p = C(V3)
    for i in range(20):
        p.pub(f"{top}/job", str(i))
    plain.wait(20)
    wait_for(lambda: sum(len(m.msgs) for m in members) >= 20, T, "all jobs handed out")
    # Markers until each member has had one: each member's comes after all it was given.
    for i in range(10):
        if all(m.msgs[-1].payload.startswith(b"end") for m in members if m.msgs):
            break
        p.pub(f"{top}/job", f"end{i}")
        wait_for(lambda: sum(len(m.msgs) for m in members) >= 21 + i, T, f"marker {i} handed out")
    ends = [[x.payload for x in m.msgs if x.payload.startswith(b"end")] for m in members]
    expect(all(e and m.msgs[-1].payload == e[-1] for m, e in zip(members, ends)), f"a marker to each member, last: {ends}")
    got = sorted(int(x.payload) for m in members for x in m.msgs if not x.payload.startswith(b"end"))
    expect(got == list(range(20)), f"each job once: {got}")
    expect(all(len(m.msgs) > len(e) for m, e in zip(members, ends)), f"both members worked: {[len(m.msgs) for m in members]}")
    # The group ends with its last (clean) member: nothing piles up for a later member.
    for m in members:
        m.bye()
    wait_open(2, "the members' DISCONNECTs handled (plain and p are left)")
    for i in range(3):
        p.pub(f"{top}/job", f"while-empty-{i}")
    late = C(V5)
    late.sub(f"$share/workers/{top}/#", qos=1)
    late.nothing_more(0, p, f"{top}/job", b"after")
    for x in [late, plain, p]:
        x.bye()
    print("ok")


def takeover():
    """A second connection with the same client id closes the first (5.0: reason 0x8E)."""
    cid = f"dup-{uuid.uuid4().hex[:6]}"
    a = C(V5, client_id=cid)
    b = C(V5, client_id=cid)
    wait_for(lambda: a.disconnects, T, "first connection closed")
    expect(a.disconnects[0].value == 0x8E, f"reason {a.disconnects[0]}")
    top = t("take")
    b.sub(top)
    b.pub(top, "still works")
    b.wait(1)
    b.bye()
    print("ok")


def v5_properties():
    """5.0 properties arrive intact: user properties (order, repeats), content type, response topic,
    correlation data (binary), message expiry, payload format indicator."""
    top = t("props")
    s = C(V5)
    s.sub(top)
    p = C(V5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k", "1"), ("k", "2"), ("other", "x")]
    props.ContentType = "application/json"
    props.ResponseTopic = f"{top}/reply"
    props.CorrelationData = b"\x00\xffcorr"
    props.MessageExpiryInterval = 3600
    props.PayloadFormatIndicator = 1
    p.pub(top, '{"a": 1}', props=props)
    m = s.wait(1)[0]
    mp = m.properties
    expect(mp.UserProperty == [("k", "1"), ("k", "2"), ("other", "x")], f"user properties {mp.UserProperty}")
    expect(mp.ContentType == "application/json", f"{mp.ContentType}")
    expect(mp.ResponseTopic == f"{top}/reply", f"{mp.ResponseTopic}")
    expect(mp.CorrelationData == b"\x00\xffcorr", f"{mp.CorrelationData}")
    expect(3590 <= mp.MessageExpiryInterval <= 3600, f"{mp.MessageExpiryInterval}")
    expect(mp.PayloadFormatIndicator == 1, f"{getattr(mp, 'PayloadFormatIndicator', None)}")
    s.bye()
    p.bye()
    print("ok")


def topic_alias_no_local_and_dollar():
    """Topic aliases resolve; no-local suppresses own messages; # does not match $ topics."""
    top = t("alias")
    s = C(V5)
    s.sub(f"{top}/#")
    s.sub("#", qos=0)
    s.sub("$SYS/sb-test/#", qos=0)
    p = C(V5)
    a = Properties(PacketTypes.PUBLISH)
    a.TopicAlias = 3
    p.pub(f"{top}/long/topic/name", "first", props=a)
    p.pub("", "second", props=a)
    # Overlapping subscriptions (top/# and #) deliver one copy at the highest QoS (allowed by
    # MQTT 3.1.1 §3.3.5 and 5.0 §3.3.4).
    got = s.wait(2)
    expect([m.topic for m in got] == [f"{top}/long/topic/name"] * 2, f"{[m.topic for m in got]}")
    expect([m.payload for m in got] == [b"first", b"second"], f"{[m.payload for m in got]}")
    expect(all(m.qos == 1 for m in got), "the highest QoS of the matching subscriptions")
    p.pub("$SYS/sb-test/x", "sys", qos=0)
    s.wait(3)
    expect(s.msgs[2].topic == "$SYS/sb-test/x", "$ topic via its explicit filter")
    s.nothing_more(3, p, f"{top}/marker")
    nl = C(V5)
    nl.sub(f"{top}/nl", noLocal=True)
    nl.pub(f"{top}/nl", "mine")
    other = C(V5)
    other.pub(f"{top}/nl", "theirs")
    # "mine" was acknowledged before "theirs" was sent: it would have come first.
    nl.nothing_more(1, other, f"{top}/nl")
    expect(nl.msgs[0].payload == b"theirs", f"{nl.msgs[0].payload}")
    for x in (s, p, nl, other):
        x.bye()
    print("ok")


def auth():
    """Users: bad password refused (5.0 0x86, 3.1.1 4); anonymous refused; ACL on publish (5.0 PUBACK 0x87) and subscribe."""
    bad = C(V5, user=args.user, password="wrong", connect=False)
    ack = bad.connect(expect_ok=False)
    expect(ack[1].value == 0x86, f"5.0 bad password: {ack[1]}")
    bad3 = C(V3, user=args.user, password="wrong", connect=False)
    ack = bad3.connect(expect_ok=False)
    expect(ack[1].value in (4, 0x86), f"3.1.1 bad password: {ack[1]}")
    anon = C(V5, connect=False)
    ack = anon.connect(expect_ok=False)
    expect(ack[1].value == 0x87, f"anonymous: {ack[1]}")
    guest = C(V5, user="guest", password="guest", connect=False)
    ack = guest.connect(expect_ok=False)
    expect(ack[1].value == 0x86, f"unknown user where users are configured: {ack[1]}")
    ok = C(V5, user=args.user, password=args.password)
    rcs = ok.sub("allowed/#")
    expect(not rcs[0].is_failure, f"allowed subscribe: {rcs}")
    rcs = ok.sub("secret/#")
    expect(rcs[0].value == 0x87, f"forbidden subscribe: {rcs}")
    info = ok.c.publish("secret/x", "no", qos=1)
    info.wait_for_publish(T)
    ok.pub("allowed/x", "yes")
    got = ok.wait(1)
    expect(got[0].payload == b"yes", f"{got[0].payload}")
    ok.nothing_more(1, ok, "allowed/marker")
    ok.bye()
    print("ok")


def keepalive_and_bad_input():
    """A silent client is dropped after 1.5× keep-alive; garbage after CONNECT closes the connection."""
    s, _ = raw_connect(f"ka-{uuid.uuid4().hex[:6]}", clean=True, keepalive=1)
    start = time.time()
    s.settimeout(10)
    expect(read_packet(s) is None, "closed")
    took = time.time() - start
    # Not before the keep-alive (1.5 s after the CONNECT, sent before `start`); the upper
    # bound only tells the keep-alive from the socket timeout (10 s), generously for a
    # loaded machine.
    expect(1.0 <= took <= 8.0, f"closed after {took:.1f}s")
    # An unsupported protocol level: CONNACK 0x01, then close.
    s = socket.create_connection((H, P), timeout=T)
    s.sendall(packet(0x10, enc_str("MQTT") + bytes([9, 2]) + struct.pack("!H", 30) + enc_str("lvl9")))
    ack = read_packet(s)
    expect(ack is not None and ack[0] == 0x20 and ack[1][1] == 1, f"CONNACK unacceptable protocol level: {ack}")
    s.close()
    # An empty client id with a persistent session: CONNACK 0x02 identifier rejected.
    s = socket.create_connection((H, P), timeout=T)
    s.sendall(packet(0x10, enc_str("MQTT") + bytes([4, 0]) + struct.pack("!H", 30) + enc_str("")))
    ack = read_packet(s)
    expect(ack is not None and ack[0] == 0x20 and ack[1][1] == 2, f"CONNACK identifier rejected: {ack}")
    s.close()
    s, _ = raw_connect(f"bad-{uuid.uuid4().hex[:6]}", clean=True)
    s.sendall(b"\xf0\x00\xff\xff")  # reserved packet type 15
    s.settimeout(5)
    expect(read_packet(s) is None, "closed after a malformed packet")
    # A 5.0 client gets a DISCONNECT with a reason code first.
    c = C(V5)
    c.c.socket().sendall(b"\x30\x06\x00\x03a+b\x00")  # QoS 0 PUBLISH to a topic with a wildcard
    wait_for(lambda: c.disconnects, T, "DISCONNECT")
    expect(c.disconnects[0].value == 0x90, f"topic name invalid: {c.disconnects[0]}")
    print("ok")


def cross_protocol():
    """MQTT 5 → STOMP and STOMP → MQTT 5: headers, content type, correlation id and reply-to carried."""
    import stomp
    top = t("x")
    internal = top.replace("/", ".")
    sc = stomp.Connection12([(H, args.stomp_port)])
    got = []

    receipts = []

    class L(stomp.ConnectionListener):
        def on_message(self, f):
            got.append(f)

        def on_receipt(self, f):
            receipts.append(f.headers.get("receipt-id"))
    sc.set_listener("l", L())
    sc.connect(wait=True)
    sc.subscribe(f"/topic/{internal}.#", id="s", ack="auto", receipt="r")
    wait_for(lambda: "r" in receipts, T, "SUBSCRIBE receipt")
    p = C(V5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("x-trace", "abc")]
    props.ContentType = "text/plain"
    props.ResponseTopic = f"{top}/reply"
    props.CorrelationData = b"c-1"
    p.pub(f"{top}/m", "from mqtt", props=props)
    wait_for(lambda: got, T, "STOMP got the MQTT message")
    h = got[0].headers
    expect(got[0].body == "from mqtt", got[0].body)
    for k, v in {"x-trace": "abc", "content-type": "text/plain", "correlation-id": "c-1",
                 "reply-to": f"/topic/{internal}.reply", "destination": f"/topic/{internal}.m"}.items():
        expect(h.get(k) == v, f"{k}: {h.get(k)!r} in {h}")
    # And back: STOMP SEND to the reply-to reaches the MQTT requester on its response topic.
    p.sub(f"{top}/reply")
    sc.send(h["reply-to"], "answer", headers={"correlation-id": h["correlation-id"], "x-k": "v"}, content_type="text/plain")
    m = p.wait(1)[0]
    expect(m.topic == f"{top}/reply" and m.payload == b"answer", f"{m.topic} {m.payload}")
    expect(m.properties.CorrelationData == b"c-1", f"{m.properties.CorrelationData}")
    expect(("x-k", "v") in m.properties.UserProperty, f"{m.properties.UserProperty}")
    expect(m.properties.ContentType == "text/plain", f"{m.properties.ContentType}")
    sc.disconnect()
    p.bye()
    print("ok")


def rpc_stomp_to_mqtt5():
    """A STOMP requester (reply-to /temp-queue/…) and an MQTT 5 responder: the responder sees a
    response topic and correlation data it can publish to; the reply reaches the requester's
    temporary queue with the correlation id."""
    import stomp
    svc = t("svc")
    replies = []

    class L(stomp.ConnectionListener):
        def on_message(self, f):
            replies.append(f)
    sc = stomp.Connection12([(H, args.stomp_port)])
    sc.set_listener("l", L())
    sc.connect(wait=True)
    r = C(V5)
    r.sub(svc)
    sc.send(f"/topic/{svc.replace('/', '.')}", "ping", headers={"reply-to": "/temp-queue/rpc", "correlation-id": "c-7"})
    req = r.wait(1)[0]
    rt, cd = req.properties.ResponseTopic, req.properties.CorrelationData
    expect(rt and rt.startswith("$queue/"), f"a response topic to publish to: {rt!r}")
    expect(cd == b"c-7", f"correlation data {cd!r}")
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = cd
    r.pub(rt, "pong", props=props)
    wait_for(lambda: replies, T, "the reply on the temporary queue")
    expect(replies[0].body == "pong" and replies[0].headers.get("correlation-id") == "c-7", f"{replies[0].headers} {replies[0].body}")
    sc.disconnect()
    r.bye()
    print("ok")


def rpc_mqtt5_to_mqtt5():
    """MQTT 5 request/reply between two clients: response topic and binary correlation data
    arrive intact and the reply comes back on the response topic."""
    svc, back = t("svc"), t("back")
    resp, req = C(V5), C(V5)
    resp.sub(svc)
    req.sub(back)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = back
    props.CorrelationData = b"\x00\x01bin"
    req.pub(svc, "question", props=props)
    m = resp.wait(1)[0]
    expect(m.properties.ResponseTopic == back and m.properties.CorrelationData == b"\x00\x01bin", f"{m.properties}")
    p2 = Properties(PacketTypes.PUBLISH)
    p2.CorrelationData = m.properties.CorrelationData
    resp.pub(m.properties.ResponseTopic, "answer", props=p2)
    a = req.wait(1)[0]
    expect(a.payload == b"answer" and a.properties.CorrelationData == b"\x00\x01bin", f"{a.payload} {a.properties}")
    resp.bye()
    req.bye()
    print("ok")


def private_queues():
    """$queue/NAME reaches internal queues, but never the router's own ($-named) ones."""
    victim = C(V5, client_id=f"victim-{uuid.uuid4().hex[:6]}", clean=False)
    victim.sub("v/#")
    thief = C(V5)
    rcs = thief.sub(f"$queue/$mqtt.s.{victim.cid}")
    expect(rcs[0].value == 0x87, f"refused: {rcs}")
    q = f"jobs-{uuid.uuid4().hex[:6]}"
    w = C(V5)
    w.sub(f"$queue/{q}")
    w.pub(f"$queue/{q}", "to the queue")
    got = w.wait(1)
    expect(got[0].payload == b"to the queue" and got[0].topic == f"$queue/{q}", f"{got[0].topic}")
    for x in (victim, thief, w):
        x.bye()
    print("ok")


def tls():
    """MQTT over TLS, the server certificate verified against the test CA (both versions)."""
    for version in (V3, V5):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tls-{uuid.uuid4().hex[:6]}", protocol=version)
        c.tls_set(ca_certs=args.ca)
        got = []
        done = threading.Event()
        c.on_message = lambda cl, u, m: (got.append(m.payload), done.set())
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("tls/t", 1)
        c.on_subscribe = lambda cl, u, mid, rcs, p: cl.publish("tls/t", "secret", qos=1)
        c.connect(H, P)
        c.loop_start()
        expect(done.wait(T), f"{version}: message over TLS")
        expect(got == [b"secret"], f"{got}")
        c.disconnect()
        c.loop_stop()
    print("ok")


def wss():
    """MQTT over WebSocket over TLS (paho's websockets transport, certificate verified)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"wss-{uuid.uuid4().hex[:6]}", protocol=V5, transport="websockets")
    c.ws_set_options(path="/mqtt")
    c.tls_set(ca_certs=args.ca)
    got = []
    done = threading.Event()
    c.on_message = lambda cl, u, m: (got.append(m.payload), done.set())
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("wss/t", 1)
    c.on_subscribe = lambda cl, u, mid, rcs, p: cl.publish("wss/t", "over wss", qos=1)
    c.connect(H, P)
    c.loop_start()
    expect(done.wait(T), "message over wss")
    expect(got == [b"over wss"], f"{got}")
    c.disconnect()
    c.loop_stop()
    print("ok")


def server_keep_alive():
    """With mqtt.max_keep_alive 5: a 5.0 client asking 60 s is told 5 s (Server Keep Alive);
    a 3.1.1 client asking 60 s is refused (it could not be told)."""
    c = C(V5, keepalive=60)
    props = c.connack[2]
    expect(getattr(props, "ServerKeepAlive", None) == 5, f"server keep alive: {props}")
    c.bye()
    ok3 = C(V3, keepalive=5)
    ok3.bye()
    s, _ = None, None
    sock = socket.create_connection((H, P), timeout=T)
    sock.sendall(packet(0x10, enc_str("MQTT") + bytes([4, 2]) + struct.pack("!H", 60) + enc_str("ka-" + uuid.uuid4().hex[:6])))
    ack = read_packet(sock)
    expect(ack is not None and ack[0] == 0x20 and ack[1][1] == 2, f"3.1.1 refused: {ack}")
    print("ok")


def retained_tracked():
    """A retained message sent at QoS 1 on SUBSCRIBE is tracked like any delivery: left
    unacknowledged, it comes again (DUP, retain flag, same packet id) on reconnect."""
    top = t("rt")
    p = C(V3)
    p.pub(f"{top}/a", "kept", qos=1, retain=True)
    cid = f"rt-{uuid.uuid4().hex[:6]}"
    s, _ = raw_connect(cid, clean=False)
    s.sendall(packet(0x82, struct.pack("!H", 1) + enc_str(f"{top}/#") + bytes([1])))
    ack = read_packet(s)
    expect(ack[0] == 0x90, f"SUBACK {ack}")
    first, body = read_packet(s)
    m = parse_publish(first, body)
    expect(m["retain"] and m["qos"] == 1 and m["payload"] == b"kept" and m["topic"] == f"{top}/a", f"{m}")
    s.close()
    s, present = raw_connect(cid, clean=False)
    expect(present == 1, "session present")
    first, body = read_packet(s)
    m2 = parse_publish(first, body)
    expect(m2["dup"] and m2["retain"] and m2["pid"] == m["pid"] and m2["payload"] == b"kept", f"{m2}")
    s.sendall(packet(0x40, struct.pack("!H", m2["pid"])))
    s.sendall(packet(0xE0, b""))
    s.close()
    p.pub(f"{top}/a", b"", retain=True)
    p.bye()
    print("ok")


def admin_parked():
    """Connections the router holds parked in its idle-connection poller (GET /mqtt)."""
    return admin_json("/mqtt")["parked"]


def wait_parked(n, what):
    wait_for(lambda: admin_parked() >= n, T, lambda: f"{what}: {admin_parked()} parked, expected {n}")


def parked():
    """With mqtt.park_idle_after 300ms idle connections leave their tasks for the shared poller and
    behave as live ones: a parked subscriber gets deliveries (QoS 0, 1 and 2, in order), a parked
    publisher's packets are read, a connection holding half a packet stays live and reads it whole, keep-alive is
    enforced, a vanished client's will goes out, and a takeover reaches a parked session."""
    p = t("park")
    sub = C(V5)
    sub.sub(f"{p}/#", 2)
    pub = C(V3)
    wait_parked(2, "subscriber and publisher idle")
    pub.pub(f"{p}/a", b"one", qos=1)
    sub.wait(1)
    expect(sub.msgs[0].payload == b"one", f"payload {sub.msgs[0].payload}")
    wait_parked(2, "parked again after the message")
    # A burst into parked connections: every message, in order per QoS (MQTT orders a
    # topic per QoS only, and paho hands a QoS 2 message over at PUBREL, so QoS levels
    # interleave on the way in).
    for i in range(300):
        pub.pub(f"{p}/b", f"m{i}".encode(), qos=i % 3)
    sub.wait(301)
    got = [m.payload.decode() for m in sub.msgs[1:]]
    expect(sorted(got) == sorted(f"m{i}" for i in range(300)), f"burst lost or duplicated: {len(got)} messages")
    for q in range(3):
        per_qos = [g for g in got if int(g[1:]) % 3 == q]
        expect(per_qos == [f"m{i}" for i in range(q, 300, 3)], f"QoS {q} burst out of order: {per_qos[:8]}…")
    # A PUBLISH cut in two: a connection holding half a packet stays in its task (it is
    # not idle), and the packet is read whole when the rest comes.
    wait_parked(2, "subscriber and publisher parked after the burst")
    raw, _ = raw_connect(f"cut-{uuid.uuid4().hex[:6]}", clean=True)
    whole = packet(0x30, enc_str(f"{p}/cut") + b"halves")
    raw.sendall(whole[:5])
    # The cut connection must not be parked. An idle connection opened after it is parked
    # after its own 300 ms (a third parked), when the cut one's 300 ms have passed too.
    # The count cannot tell the two apart, so it must also stay at 3 for a further 0.5 s
    # (the absence of a fourth: only a window can show it).
    idle, _ = raw_connect(f"idle-{uuid.uuid4().hex[:6]}", clean=True)
    wait_parked(3, "a later idle connection")
    expect(wait_for(lambda: admin_parked() > 3, 0.5) is None, f"half a packet read: {admin_parked()} parked, expected 3")
    idle.close()
    raw.sendall(whole[5:])
    sub.wait(302)
    expect(sub.msgs[301].payload == b"halves", f"cut packet: {sub.msgs[301].payload}")
    raw.close()
    wait_for(lambda: admin_parked() == 2, T, lambda: f"closed ones unparked: {admin_parked()} parked, expected 2")
    # Keep-alive while parked: 1 s keep-alive, silent: closed after 1.5 s, parked in between.
    ka, _ = raw_connect(f"ka-{uuid.uuid4().hex[:6]}", clean=True, keepalive=1)
    start = time.time()
    wait_parked(3, "silent client parked")
    ka.settimeout(10)
    expect(read_packet(ka) is None, "silent parked client closed")
    took = time.time() - start
    # Not before the keep-alive (1.5 s); the upper bound only tells a parked session's
    # deadline from the socket timeout (10 s), generously for a loaded machine.
    expect(1.0 <= took <= 8.0, f"keep-alive closed after {took:.1f}s")
    # A will from a client that vanishes while parked.
    wsub = C(V3)
    wsub.sub(f"{p}/will", 1)
    willed = C(V3, will=(f"{p}/will", b"gone", 1))
    wait_parked(4, "client with a will parked")
    willed.vanish()
    wsub.wait(1, "will")
    expect(wsub.msgs[0].payload == b"gone", f"will {wsub.msgs[0].payload}")
    # A takeover reaches a parked session: the first gets DISCONNECT 0x8E at once.
    cid = f"take-{uuid.uuid4().hex[:6]}"
    first = C(V5, client_id=cid)
    wait_parked(4, "first holder parked")
    second = C(V5, client_id=cid)
    wait_for(lambda: first.disconnects, T, "parked holder told to leave")
    expect(first.disconnects[0].value == 0x8E, f"reason {first.disconnects[0]}")
    second.sub(f"{p}/t", 1)
    pub.pub(f"{p}/t", b"to the new holder", qos=1)
    second.wait(1)
    for c in (sub, pub, wsub, second):
        c.bye()
    print("ok")


# ---- MQTT 5 conformance (issue 24), with raw 5.0 packets where exact bytes matter -------

def raw5_connect(cid, props=b"", clean=True, keepalive=30, expect_ok=True, ws=False):
    """A raw 5.0 CONNECT; returns the socket and the CONNACK (flags, code, properties)."""
    s = WsSocket() if ws else socket.create_connection((H, P), timeout=T)
    body = enc_str("MQTT") + bytes([5, 0x02 if clean else 0]) + struct.pack("!H", keepalive)
    s.sendall(packet(0x10, body + enc_len(len(props)) + props + enc_str(cid)))
    ack = read_packet(s)
    expect(ack is not None and ack[0] == 0x20, f"CONNACK: {ack}")
    flags, code = ack[1][0], ack[1][1]
    if expect_ok:
        expect(code == 0, f"CONNACK code {code:#x}: {ack}")
    return s, (flags, code, parse_props5(ack[1][2:])[0])


def raw5_subscribe(s, pid, filt, qos=0):
    s.sendall(packet(0x82, struct.pack("!H", pid) + b"\x00" + enc_str(filt) + bytes([qos])))
    ack = read_packet(s)
    expect(ack is not None and ack[0] == 0x90 and ack[1][-1] == qos, f"SUBACK {ack}")


def var_int(b, i):
    n, mult = 0, 1
    while True:
        n += (b[i] & 0x7F) * mult
        mult *= 128
        i += 1
        if not b[i - 1] & 0x80:
            return n, i


def parse_props5(b):
    """5.0 properties at the start of b: ({id: value, 0x26: [(k, v)...]}, bytes consumed)."""
    n, i = var_int(b, 0)
    end, props = i + n, {}
    while i < end:
        pid = b[i]
        i += 1
        if pid in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):
            props[pid] = b[i]
            i += 1
        elif pid in (0x13, 0x21, 0x22, 0x23):
            props[pid] = struct.unpack("!H", b[i:i + 2])[0]
            i += 2
        elif pid in (0x02, 0x11, 0x18, 0x27):
            props[pid] = struct.unpack("!I", b[i:i + 4])[0]
            i += 4
        elif pid == 0x0B:
            props.setdefault(pid, []).append(var_int(b, i)[0])
            i = var_int(b, i)[1]
        elif pid == 0x26:
            kl = struct.unpack("!H", b[i:i + 2])[0]
            k = b[i + 2:i + 2 + kl].decode()
            i += 2 + kl
            vl = struct.unpack("!H", b[i:i + 2])[0]
            props.setdefault(pid, []).append((k, b[i + 2:i + 2 + vl].decode()))
            i += 2 + vl
        else:  # strings and binary data: two-byte length
            ln = struct.unpack("!H", b[i:i + 2])[0]
            props[pid] = b[i + 2:i + 2 + ln]
            i += 2 + ln
    return props, end


def read_publish5(s):
    """The next PUBLISH (5.0): topic, alias, properties, payload and its size on the wire."""
    pk = read_packet(s)
    expect(pk is not None and pk[0] >> 4 == 3, f"expected PUBLISH, got {pk}")
    first, body = pk
    qos = (first >> 1) & 3
    tl = struct.unpack("!H", body[:2])[0]
    rest = body[2 + tl:]
    pid = None
    if qos:
        pid = struct.unpack("!H", rest[:2])[0]
        rest = rest[2:]
    props, used = parse_props5(rest)
    return {"topic": body[2:2 + tl].decode(), "alias": props.get(0x23), "props": props, "qos": qos, "pid": pid,
            "payload": rest[used:], "size": 1 + len(enc_len(len(body))) + len(body)}




def resume_without_expiry():
    """MQTT 5: a session resumed with clean start 0 and NO Session Expiry Interval gets
    the messages queued while it was away (with the remaining message expiry) and the
    ones published while it is connected; the session then ends with that connection."""
    top = t("resume")
    cid = f"re-{uuid.uuid4().hex[:8]}"
    a = C(V5, client_id=cid, clean=False)
    a.sub(f"{top}/#", qos=1)
    a.bye()
    p = C(V5)
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 60
    p.pub(f"{top}/x", "m0", qos=1, props=props)
    p.pub(f"{top}/x", "m1", qos=1)
    b = C(V5, client_id=cid, clean=False, expiry=None, connect=False)
    expect(b.connect()[0].session_present, "session present on resume")
    got = b.wait(2, "messages queued while away")
    expect([m.payload for m in got[:2]] == [b"m0", b"m1"], f"queued: {[m.payload for m in got]}")
    left = getattr(got[0].properties, "MessageExpiryInterval", None)
    expect(left is not None and 0 < left <= 60, f"remaining message expiry: {left}")
    p.pub(f"{top}/x", "m2", qos=1)
    p.pub(f"{top}/x", "end", qos=1)
    got = b.wait(4, "messages published while connected")
    expect([m.payload for m in got] == [b"m0", b"m1", b"m2", b"end"], f"each once, in order: {[m.payload for m in got]}")
    b.bye()
    # m3 would wait in the session if it had outlived the expiry-0 connection; a marker
    # published after the new subscription shows it did not.
    p.pub(f"{top}/x", "m3", qos=1)
    c = C(V5, client_id=cid, clean=False, expiry=None, connect=False)
    expect(not c.connect()[0].session_present, "the session ended with the expiry-0 connection")
    c.sub(f"{top}/#", qos=1)
    p.pub(f"{top}/x", "marker", qos=1)
    got = c.wait(1, "the marker")
    expect([m.payload for m in got] == [b"marker"], f"nothing of the old session: {[m.payload for m in got]}")
    c.bye()
    p.bye()
    print("ok")


def max_packet_size_exact():
    """MQTT 5 Maximum Packet Size 64: a PUBLISH of exactly 64 bytes is delivered, one of
    65 is not (and counted), and delivery goes on after it."""
    top = t("mps")
    s, _ = raw5_connect(f"mps-{uuid.uuid4().hex[:6]}", props=b"\x27" + struct.pack("!I", 64))
    raw5_subscribe(s, 1, top, 0)
    p = C(V5)
    p.pub(top, b"x" * 10, qos=0)
    small = read_publish5(s)
    overhead = small["size"] - 10
    fits = 64 - overhead
    expect(fits > 10, f"overhead {overhead}")
    p.pub(top, b"a" * fits, qos=0)
    p.pub(top, b"b" * (fits + 1), qos=0)
    p.pub(top, b"end", qos=0)
    got = read_publish5(s)
    expect(got["payload"] == b"a" * fits and got["size"] == 64, f"the 64-byte PUBLISH: {got}")
    got = read_publish5(s)
    expect(got["payload"] == b"end", f"the 65-byte PUBLISH was skipped, delivery went on: {got}")
    expect(admin_json("/mqtt")["oversize_dropped"] == 1, f"counted: {admin_json('/mqtt')}")
    s.close()
    p.bye()
    print("ok")


def outbound_topic_aliases():
    """MQTT 5 Topic Alias Maximum 2: the router names a topic once, then sends its alias;
    when both are taken the least recently used one is reassigned. MQTT.js (which
    resolves aliases; libmosquitto 2.0 does not) sees every topic right."""
    import subprocess
    top = t("ta")
    s, _ = raw5_connect(f"ta-{uuid.uuid4().hex[:6]}", props=b"\x22" + struct.pack("!H", 2))
    raw5_subscribe(s, 1, f"{top}/#", 0)
    node_dir = os.environ.get("SWITCHBOARD_NODE_DIR", os.path.join(os.path.dirname(__file__), "..", "browser"))
    sub = subprocess.Popen(["node", os.path.join(node_dir, "mqtt_subscriber.mjs"), str(P), f"{top}/#"],
                           stdout=subprocess.PIPE, text=True)
    lines = []
    threading.Thread(target=lambda: [lines.append(ln.rstrip("\n")) for ln in sub.stdout], daemon=True).start()
    try:
        wait_for(lambda: "subscribed" in lines, T, lambda: f"MQTT.js subscribed: {lines}")
        p = C(V5)
        sent = ["aa", "aa", "bb", "cc", "bb", "aa"]
        for name in sent:
            p.pub(f"{top}/{name}", name, qos=1)
        got = [read_publish5(s) for _ in sent]
        want = [(f"{top}/aa", 1), ("", 1), (f"{top}/bb", 2), (f"{top}/cc", 1), ("", 2), (f"{top}/aa", 1)]
        expect([(g["topic"], g["alias"]) for g in got] == want,
               f"topics and aliases: {[(g['topic'], g['alias']) for g in got]}")
        expect([g["payload"].decode() for g in got] == sent, "payloads in order")
        wait_for(lambda: len(lines) > len(sent), T, lambda: f"MQTT.js printed {lines!r}")
        expect(lines[1:] == [f"{top}/{n} {n}" for n in sent], f"MQTT.js printed {lines!r}")
        expect(admin_json("/mqtt")["topic_alias_bytes_saved"] > 0, f"bytes saved: {admin_json('/mqtt')}")
    finally:
        sub.terminate()
    s.close()
    p.bye()
    print("ok")


def assigned_client_id():
    """MQTT 5: an empty client id with clean start 0 gets an assigned, random id (CONNACK
    Assigned Client Identifier) and a session that can be resumed with it; 3.1.1 still
    refuses it with 0x02 as its specification requires."""
    expiry = b"\x11" + struct.pack("!I", 3600)
    s, (_, _, props) = raw5_connect("", props=expiry, clean=False)
    cid = props.get(0x12, b"").decode()
    expect(cid.startswith("sb-") and len(cid) == 27, f"assigned client id: {props}")
    s2, (_, _, props2) = raw5_connect("", props=expiry, clean=False)
    expect(props2.get(0x12, b"").decode() not in ("", cid), "each connection gets its own id")
    s2.close()
    top = t("assigned")
    raw5_subscribe(s, 1, top, 1)
    s.sendall(b"\xe0\x00")
    s.close()
    p = C(V5)
    p.pub(top, "kept", qos=1)
    s, (flags, _, _) = raw5_connect(cid, props=expiry, clean=False)
    expect(flags & 1 == 1, "session present with the assigned id")
    got = read_publish5(s)
    expect(got["payload"] == b"kept", f"queued message: {got}")
    s.close()
    p.bye()
    v3 = socket.create_connection((H, P), timeout=T)
    v3.sendall(packet(0x10, enc_str("MQTT") + bytes([4, 0]) + struct.pack("!H", 30) + enc_str("")))
    ack = read_packet(v3)
    expect(ack is not None and ack[1][1] == 2, f"3.1.1 empty id, persistent: {ack}")
    print("ok")


def server_keep_alive_default():
    """Default mqtt.max_keep_alive (65535): a 5.0 client asking for no keep-alive is told
    65535 s; one asking 30 s is told 30 s (always announced); a 3.1.1 client asking for
    none is accepted."""
    s, (_, _, props) = raw5_connect(f"ka-{uuid.uuid4().hex[:6]}", keepalive=0)
    expect(props.get(0x13) == 65535, f"server keep alive for 0: {props}")
    s.close()
    s, (_, _, props) = raw5_connect(f"ka-{uuid.uuid4().hex[:6]}", keepalive=30)
    expect(props.get(0x13) == 30, f"server keep alive for 30: {props}")
    s.close()
    s, _ = raw_connect(f"ka-{uuid.uuid4().hex[:6]}", True, keepalive=0)
    s.close()
    print("ok")


def guest_login():
    """guest/guest on a loopback router without users (RabbitMQ tutorials): accepted as anonymous, 5.0 and 3.1.1."""
    for v in (V5, V3):
        c = C(v, user="guest", password="guest")
        topic = t(f"guest{v}")
        c.sub(f"{topic}/#")
        c.pub(f"{topic}/x", "hi")
        got = c.wait(1)
        expect(got[0].payload == b"hi", f"{got[0].payload}")
        c.bye()
    print("ok")


def batched_publishes(ws=False):
    """QoS 0 PUBLISHes that arrive together are published as one batch (one fan-out per
    run): subscribers still get every message in the order sent, with what ends a run
    in its place (another topic, a retained message, a QoS 1 publish and its PUBACK, a
    5.0 topic alias being set and used, a DISCONNECT in the same write). With `ws`, over
    the WebSocket listener, each packet its own WebSocket message, sent back to back."""
    for version in (V3, V5):
        top = t(f"batch{version}")
        a, b = f"{top}/a", f"{top}/b"
        sub = C(version)
        sub.sub(f"{top}/#", qos=1)

        def publish(topic, payload, qos=0, retain=False, pid=None, alias=None):
            body = enc_str(topic)
            if qos:
                body += struct.pack("!H", pid)
            if version == V5:
                props = b"" if alias is None else b"\x23" + struct.pack("!H", alias)
                body += enc_len(len(props)) + props
            return packet(0x30 | (qos << 1) | int(retain), body + payload.encode())

        wire, sent = [], []

        def add(topic, payload, shown_topic=None, **kw):
            wire.append(publish(topic, payload, **kw))
            sent.append((shown_topic or topic, payload.encode()))

        for i in range(40):
            add(a, f"a{i}")
        add(a, "retained", retain=True)
        for i in range(40, 60):
            add(a, f"a{i}")
        add(a, "qos1", qos=1, pid=7)
        for i in range(10):
            add(b, f"b{i}")
        if version == V5:
            add(a, "alias-set", alias=1)
            for i in range(5):
                add("", f"alias{i}", shown_topic=a, alias=1)
        for i in range(60, 70):
            add(a, f"a{i}")
        wire.append(b"\xe0\x00")  # DISCONNECT
        cid = f"batch-{uuid.uuid4().hex[:6]}"
        s = raw_connect(cid, True, ws=ws)[0] if version == V3 else raw5_connect(cid, ws=ws)[0]
        if ws:
            for p in wire:
                s.sendall(p)
        else:
            s.sendall(b"".join(wire))
        back = []
        while (p := read_packet(s)) is not None:
            back.append(p)
        s.close()
        expect(len(back) == 1 and back[0][0] == 0x40 and back[0][1][:2] == b"\x00\x07" and back[0][1][2:3] in (b"", b"\x00"),
               f"{version}: one PUBACK (success) for the QoS 1 publish, then the close: {back}")
        got = sub.wait(len(sent))
        expect([(m.topic, m.payload) for m in got] == sent,
               f"{version}: in order: {[(m.topic, m.payload) for m in got]}")
        sub.bye()
    print("ok")


def batched_publishes_ws():
    batched_publishes(ws=True)


SCENARIOS = {f.__name__: f for f in [batched_publishes, batched_publishes_ws, parked, qos_levels, retained, will, will_delay, persistent_session, qos2_across_reconnect,
                                     shared_subscriptions, takeover, v5_properties, topic_alias_no_local_and_dollar,
                                     auth, keepalive_and_bad_input, cross_protocol, rpc_stomp_to_mqtt5, rpc_mqtt5_to_mqtt5, private_queues, tls, wss, server_keep_alive, retained_tracked,
                                     resume_without_expiry, max_packet_size_exact, outbound_topic_aliases, assigned_client_id,
                                     server_keep_alive_default, guest_login]}
if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}")
SCENARIOS[args.scenario]()
