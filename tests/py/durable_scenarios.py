"""Durability scenarios with stomp.py and paho-mqtt, in phases around a daemon restart.

Usage: durable_scenarios.py --port STOMP_PORT --mqtt-port MQTT_PORT SCENARIO
The Rust test (tests/durability.rs) runs a `*_before` phase, kills and restarts the daemon
over the same data directory, then runs the matching `*_after` phase.
"""

import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import stomp  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--mqtt-port", type=int),
                             p.add_argument("--admin-port", type=int)))
HP = [(args.host, args.port)]
T = args.timeout


def stomp_conn():
    c = stomp.Connection12(HP, heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


def admin_json(path):
    """GET `path` of the router's admin API (--admin-port)."""
    expect(args.admin_port, "this scenario needs --admin-port")
    with urllib.request.urlopen(f"http://{args.host}:{args.admin_port}{path}", timeout=5) as r:
        return json.load(r)


def queue_stats(name):
    return next((q for q in admin_json("/queues")["queues"] if q["name"] == name), None)


def until_marker(c, col, dest, n):
    """The first n messages on `dest` and nothing after them: a marker sent now (not
    persistent) comes right after anything else still in the queue."""
    c.send(dest, "marker", headers={"receipt": "r-marker"})
    col.wait_messages(n + 1, f"{n} then the marker")
    bodies = [m.body for m in col.messages]
    expect(len(bodies) == n + 1 and bodies[-1] == "marker", f"expected {n} messages then the marker: {bodies}")
    return col.messages[:n]


def send(c, col, dest, body, persistent=True, rid=None):
    rid = rid or f"r-{body}"
    headers = {"receipt": rid}
    if persistent:
        headers["persistent"] = "true"
    c.send(dest, body, headers=headers)
    col.wait_receipt(rid)


class M:
    """A paho MQTT 5 client recording messages and PUBACK reason codes."""

    def __init__(self, cid, clean=True, expiry=0):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        self.msgs, self.acks, self.subacks = [], {}, {}
        self.connack = None
        self.c.on_message = lambda c, u, m: self.msgs.append(m)
        self.c.on_publish = lambda c, u, mid, rc, props: self.acks.__setitem__(mid, rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.__setitem__(mid, rcs)
        self.c.on_connect = lambda c, u, flags, rc, props: setattr(self, "connack", (flags, rc))
        props = None
        if expiry:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
        self.c.connect(args.host, args.mqtt_port, clean_start=clean, properties=props)
        self.c.loop_start()
        wait_for(lambda: self.connack, T, f"{cid}: no CONNACK")

    def sub(self, topic, qos=1):
        _, mid = self.c.subscribe(topic, qos)
        wait_for(lambda: mid in self.subacks, T, f"no SUBACK for {topic}")

    def pub(self, topic, payload, qos=1, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        wait_for(lambda: info.mid in self.acks, T, f"no PUBACK for {topic}")
        return self.acks[info.mid]

    def bye(self):
        self.c.disconnect()
        self.c.loop_stop()


# ---------------------------------------------------------------------------------------


def stomp_before():
    """Persistent messages on a queue, two of them delivered and left unacknowledged, one
    acked; a transient one; a durable topic subscription that is away when a message
    arrives for it."""
    c, col = stomp_conn()
    for i in range(10):
        send(c, col, "/queue/dur.q", f"p{i}")
    send(c, col, "/queue/dur.q", "transient", persistent=False)
    c.subscribe("/queue/dur.q", id="1", ack="client-individual", headers={"prefetch-count": "3"})
    col.wait_messages(3)
    # The router's own count: three handed out, the other eight waiting.
    st = queue_stats("dur.q")
    expect(st["unacked"] == 3 and st["ready"] == 8, f"prefetch 3 kept: {st}")
    expect([m.body for m in col.messages] == ["p0", "p1", "p2"], f"got {[m.body for m in col.messages]}")
    c.ack(col.messages[0].headers["ack"], receipt="acked")
    col.wait_receipt("acked")
    # The ack freed credit: p3 is delivered too (and so comes back flagged).
    col.wait_messages(4)
    c.subscribe("/topic/dur.alerts", id="2", ack="client-individual", headers={"durable": "true", "subscription-name": "alerts"})
    c.unsubscribe(id="2")  # leaves the durable subscription in place (no durable header)
    send(c, col, "/topic/dur.alerts", "t1")
    # Leave without acknowledging p1, p2: the kill finds them unacknowledged.
    c.disconnect()


def stomp_after(clean=False):
    """After kill -9 every recovered message may have been delivered (delivery marks are
    written behind the delivery), so all come back flagged; after an orderly stop
    (`clean`) only those that were handed out are."""
    c, col = stomp_conn()
    c.subscribe("/queue/dur.q", id="1", ack="client-individual")
    got = [(m.body, m.headers.get("redelivered") == "true") for m in until_marker(c, col, "/queue/dur.q", 9)]
    want = [("p1", True), ("p2", True), ("p3", True)] + [(f"p{i}", not clean) for i in range(4, 10)]
    expect(got == want, f"after restart: {got}")
    for m in col.messages:
        c.ack(m.headers["ack"])
    c.subscribe("/topic/dur.alerts", id="2", ack="auto", headers={"durable": "true", "subscription-name": "alerts"})
    col.wait_messages(11)
    expect(col.messages[10].body == "t1", f"durable subscription: {col.messages[10].body}")
    c.disconnect()


def stomp_after_clean():
    stomp_after(clean=True)


def mqtt_before():
    """A persistent session with a subscription, away when a QoS 1 message arrives; a
    retained message."""
    s = M("dur-session", clean=False, expiry=3600)
    s.sub("dur/+/x", qos=1)
    s.bye()
    p = M("dur-pub")
    expect(p.pub("dur/a/x", "m1") == 0, "PUBACK")
    expect(not p.pub("dur/retained", "r1", retain=True).is_failure, "PUBACK retained")
    p.bye()


def mqtt_after():
    s = M("dur-session", clean=False, expiry=3600)
    expect(s.connack[0].session_present, "session present after restart")
    wait_for(lambda: len(s.msgs) >= 1, T, "queued message after restart")
    expect(s.msgs[0].payload == b"m1" and s.msgs[0].qos == 1, f"got {s.msgs[0].payload} qos {s.msgs[0].qos}")
    p = M("dur-pub2")
    p.pub("dur/b/x", "m2")
    wait_for(lambda: len(s.msgs) >= 2, T, "the restored subscription still routes")
    expect(s.msgs[1].payload == b"m2", f"got {s.msgs[1].payload}")
    r = M("dur-reader")
    r.sub("dur/retained")
    wait_for(lambda: r.msgs, T, "retained message after restart")
    expect(r.msgs[0].payload == b"r1" and r.msgs[0].retain, f"retained: {r.msgs[0].payload}")
    for c in (s, p, r):
        c.bye()


def torn_before():
    c, col = stomp_conn()
    for i in range(5):
        send(c, col, "/queue/torn.q", f"t{i}")
    c.disconnect()


def torn_after():
    """The last message's record was cut in half: the four before it are intact."""
    c, col = stomp_conn()
    c.subscribe("/queue/torn.q", id="1", ack="auto")
    got = [m.body for m in until_marker(c, col, "/queue/torn.q", 4)]
    expect(got == ["t0", "t1", "t2", "t3"], f"after the torn tail: {got}")
    send(c, col, "/queue/torn.q", "t5")
    col.wait_messages(6)
    c.disconnect()


def full_refuses():
    """The store cannot write: persistent STOMP SEND gets an ERROR naming the cause, MQTT 5
    QoS 1 gets a failure PUBACK; transient messages still flow."""
    c, col = stomp_conn()
    send(c, col, "/queue/ro.q", "transient-ok", persistent=False)
    # Larger than a page, so it cannot slip into the journal's last half-used page.
    c.send("/queue/ro.q", "refused" + "x" * 16384, headers={"persistent": "true", "receipt": "r-refused"})
    wait_for(lambda: col.errors, T, "an ERROR frame for the refused persistent SEND")
    msg = col.errors[0].headers.get("message", "") + " " + col.errors[0].body
    expect("store" in msg, f"ERROR says why: {msg!r}")
    expect("r-refused" not in col.receipts, "no RECEIPT for the refused message")
    m = M("ro-pub")
    rc = m.pub("$queue/ro.q", "mqtt-refused" + "x" * 16384)
    expect(rc.is_failure, f"MQTT PUBACK reason code: {rc}")
    m.bye()
    print(f"refusal: {msg.strip()!r}; MQTT: {rc}", file=sys.stderr)


def ack_refused():
    """The store cannot write: an ACK asking for a receipt gets an ERROR, not a RECEIPT
    that would promise the message is gone for good."""
    c, col = stomp_conn()
    c.subscribe("/queue/ro.q", id="1", ack="client-individual", headers={"prefetch-count": "1"})
    col.wait_messages(1)
    c.ack(col.messages[0].headers["ack"], receipt="r-ack")
    wait_for(lambda: col.errors, T, "an ERROR frame for the ACK that cannot be stored")
    err = col.errors[0]
    expect(err.headers.get("message") == "acknowledgement not stored", f"ERROR: {err.headers} {err.body!r}")
    expect(err.headers.get("receipt-id") == "r-ack", f"the ERROR names the receipt: {err.headers}")
    expect("r-ack" not in col.receipts, "no RECEIPT for the ACK")
    print(f"ack refusal: {err.body.strip()!r}", file=sys.stderr)


def full_recovers():
    """Writable again: persistent publishes are accepted again (within the probe period)."""
    def attempt():
        c, col = stomp_conn()
        c.send("/queue/ro.q", "accepted", headers={"persistent": "true", "receipt": "r-acc"})
        ok = wait_for(lambda: "r-acc" in col.receipts or col.errors, T)
        c.disconnect()
        return ok and "r-acc" in col.receipts
    wait_for(attempt, 10, "persistent publishes accepted again")


def expect_accepted(want=("before", "accepted")):
    """After a restart: exactly the persistent messages that were accepted."""
    c, col = stomp_conn()
    c.subscribe("/queue/ro.q", id="1", ack="auto")
    # (A transient message sent in this run may be there too.)
    c.send("/queue/ro.q", "marker")
    wait_for(lambda: "marker" in [m.body for m in col.messages], T, lambda: f"the marker: {[m.body for m in col.messages]}")
    got = [m.body for m in col.messages if m.body != "transient-ok"]
    expect(got == list(want) + ["marker"], f"after restart, then the marker: {got}")
    c.disconnect()


def expect_accepted_but_acked():
    """As `expect_accepted` after `ack_refused`: the ACK took effect in memory (the
    ERROR says it is not stored, so the message may come back after a restart)."""
    expect_accepted(want=("accepted",))


def before():
    c, col = stomp_conn()
    send(c, col, "/queue/ro.q", "before")
    c.disconnect()


def blocked():
    """Why publishers are blocked, if they are (GET /memory)."""
    return admin_json("/memory")["publishers_blocked"]


def memory_watermark():
    """1 KiB messages to a queue nobody reads until the router says publishers are
    blocked (the memory watermark); a publish then waits; a consumer draining the queue
    lets it through."""
    c, col = stomp_conn()
    body = "x" * 1024
    n = 0
    why = None
    while not why:
        expect(n < 5000, f"{n} messages and never blocked")
        rid = f"w{n}"
        c.send("/queue/wm.q", body, headers={"receipt": rid})
        n += 1
        # Accepted, or caught by the gate closing meanwhile (then it waits too). The admin
        # API is asked only when a RECEIPT is late: a request per message would exceed
        # its connection rate limit (429).
        deadline = time.monotonic() + T
        while not wait_for(lambda: rid in col.receipts, 0.2, interval=0.001):
            why = blocked()
            if why:
                break
            expect(time.monotonic() < deadline, f"no RECEIPT {rid} and not blocked")
    expect("memory watermark" in why, f"blocked by the memory watermark: {why}")
    expect(n * 1024 >= 100_000, f"blocked after only {n} messages")
    # Sent after the gate closed: it must NOT be accepted while the watermark is up (an
    # absence, watched for 1 s).
    stalled = "w-stalled"
    c.send("/queue/wm.q", body, headers={"receipt": stalled})
    n += 1
    expect(not wait_for(lambda: stalled in col.receipts, 1.0), "a publish went through above the watermark")
    d, dcol = stomp_conn()
    d.subscribe("/queue/wm.q", id="1", ack="auto")
    wait_for(lambda: stalled in col.receipts, T, "the blocked publish completes once the queue drains")
    for i in range(10):
        send(c, col, "/queue/wm.q", f"after{i}")
    dcol.wait_messages(n + 10)
    print(f"blocked after {n} messages", file=sys.stderr)
    c.disconnect()
    d.disconnect()


def blocked_then_resumes():
    """A publish that waits (a watermark is up) and completes when it comes down."""
    c, col = stomp_conn()
    t0 = time.monotonic()
    c.send("/queue/disk.q", "waited", headers={"receipt": "r-w", "persistent": "true"})
    # It must NOT be accepted while the watermark is up: an absence, watched for 1 s.
    expect(not wait_for(lambda: "r-w" in col.receipts, 1.0), "the publish was not held back")
    # Tells the test the publish has been held: it frees the disk on this line.
    print("held", flush=True)
    col.wait_receipt("r-w")
    print(f"held for {time.monotonic() - t0:.2f}s", file=sys.stderr)
    c.disconnect()


globals()[args.scenario]()
print("ok")
