"""Hostile clients that try to make the router hold memory (issue 19), with an honest
client served beside them and the daemon's RSS watched from /proc.

Usage: abuse_memory.py --port PORT SCENARIO --pid PID --rss-limit-mib N [--mqtt-port P]
  unacked      STOMP: a consumer with a huge prefetch on many queues never reads while a
               publisher fills them; the publisher must be refused (queue full) and the
               daemon's RSS must stay under the limit.
  transaction  STOMP: one open transaction is fed large SENDs; ERROR must come early.
  retained     MQTT 5: large retained messages on many topics; PUBACK 0x97 once the
               retained store's byte limit is reached (--expect-max N retained at most).
  retained_count  MQTT: count the retained messages under r/# (must be <= --expect-max).
  overflow     STOMP: a topic subscriber that never reads while a publisher floods the
               topic (the Rust test counts the daemon's log lines).
  subscriptions  MQTT 5 (and 3.1.1): a session subscribing to more filters than allowed
               (--expect-max N) gets SUBACK 0x97 (0x80) beyond N; re-subscribing a held
               filter still works; an honest client subscribes and receives beside it.
"""

import os
import socket
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import stomp  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--pid", type=int, required=True),
                             p.add_argument("--rss-limit-mib", type=int, default=0),
                             p.add_argument("--mqtt-port", type=int), p.add_argument("--expect-max", type=int, default=0),
                             p.add_argument("--topic-prefix", default="r")))
H, P, T = args.host, args.port, args.timeout
MIB = 1024 * 1024


def rss():
    """The daemon's resident set size in bytes (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{args.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    fail("no VmRSS")


peak = [0]


def check_rss(what):
    r = rss()
    peak[0] = max(peak[0], r)
    if args.rss_limit_mib and r > args.rss_limit_mib * MIB:
        fail(f"{what}: daemon RSS {r / MIB:.1f} MiB over the limit of {args.rss_limit_mib} MiB")


# ---- raw STOMP ------------------------------------------------------------------------


def frame(command, headers, body=b""):
    h = "".join(f"{k}:{v}\n" for k, v in headers.items())
    return command.encode() + b"\n" + h.encode() + b"\n" + body + b"\0"


class Raw:
    """A raw STOMP 1.2 socket; `reader` collects what comes back (unless it must not read)."""

    def __init__(self, read=True, rcvbuf=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.connect((H, P))
        self.s.sendall(frame("CONNECT", {"accept-version": "1.2", "host": "localhost", "heart-beat": "0,0"}))
        self.buf = b""
        self.frames = []
        self.closed = threading.Event()
        # CONNECTED
        while b"\0" not in self.buf:
            chunk = self.s.recv(65536)
            expect(chunk, "closed before CONNECTED")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\0", 1)
        expect(head.startswith(b"CONNECTED"), f"no CONNECTED: {head[:200]!r}")
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                chunk = self.s.recv(1 << 16)
                if not chunk:
                    break
                self.buf += chunk
                while b"\0" in self.buf:
                    f, self.buf = self.buf.split(b"\0", 1)
                    f = f.lstrip(b"\r\n")
                    if f:
                        self.frames.append(f)
        except OSError:
            pass
        self.closed.set()

    def send(self, data):
        """False once the server closed the connection."""
        try:
            self.s.sendall(data)
            return True
        except OSError:
            return False

    def errors(self):
        return [f for f in self.frames if f.startswith(b"ERROR")]


def honest_round(c, col, q, n):
    """The honest client sends one message with a receipt and gets it back."""
    body = f"honest {n}"
    c.send(q, body, receipt=f"h{n}")
    col.wait_receipt(f"h{n}")
    wait_for(lambda: body in col.bodies(), T, lambda: f"honest client did not get {body!r}: {col.bodies()[-3:]}")


def honest():
    c = stomp.Connection12([(H, P)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    q = f"/queue/honest.{uuid.uuid4().hex[:8]}"
    c.subscribe(q, id="h", ack="auto")
    return c, col, q


def flood(pub, dests, size, total, also=None, tx=None):
    """Sends `total` bytes of `size`-byte SENDs round-robin to `dests`, checking RSS
    as it goes; returns how many were sent before the server refused (or all)."""
    body = b"x" * size
    n = 0
    while n * size < total:
        headers = {"destination": dests[n % len(dests)], "content-length": str(size)}
        if tx:
            headers["transaction"] = tx
        if not pub.send(frame("SEND", headers, body)) or pub.errors():
            break
        n += 1
        if n % 16 == 0:
            check_rss(f"after {n} SENDs of {size} bytes")
            if also:
                also(n)
    return n


def unacked():
    c, col, hq = honest()
    honest_round(c, col, hq, 0)
    queues = [f"/queue/hog.{i}.{uuid.uuid4().hex[:6]}" for i in range(8)]
    # The hostile consumer: a tiny receive buffer, huge prefetch on 8 queues, never reads.
    hog = Raw(read=False, rcvbuf=4096)
    for i, q in enumerate(queues):
        hog.send(frame("SUBSCRIBE", {"id": f"s{i}", "destination": q, "ack": "client-individual", "prefetch-count": "65535"}))
    pub = Raw()
    rounds = [0]

    def also(n):
        if n % 256 == 0:
            rounds[0] += 1
            honest_round(c, col, hq, rounds[0])

    sent = flood(pub, queues, 64 * 1024, 256 * MIB, also)
    wait_for(lambda: pub.errors() or pub.closed.is_set(), T, lambda: f"publisher never refused after {sent} SENDs")
    errs = pub.errors()
    expect(errs, f"publisher not refused with ERROR after {sent} SENDs of 64 KiB")
    expect(b"full" in errs[0], f"ERROR is not about a full queue: {errs[0][:300]!r}")
    check_rss("after the refusal")
    honest_round(c, col, hq, 10_000)
    check_rss("at the end")
    print(f"publisher refused after {sent} SENDs; peak RSS {peak[0] / MIB:.1f} MiB")
    print("ok")


def transaction():
    c, col, hq = honest()
    honest_round(c, col, hq, 0)
    pub = Raw()
    pub.send(frame("BEGIN", {"transaction": "t1"}))
    rounds = [0]

    def also(n):
        if n % 64 == 0:
            rounds[0] += 1
            honest_round(c, col, hq, rounds[0])

    sent = flood(pub, [f"/queue/tx.{uuid.uuid4().hex[:6]}"], 64 * 1024, 64 * MIB, also, tx="t1")
    wait_for(lambda: pub.errors() or pub.closed.is_set(), T, lambda: f"transaction never refused after {sent} SENDs")
    errs = pub.errors()
    expect(errs, f"no ERROR after {sent} transactional SENDs of 64 KiB")
    expect(b"transaction" in errs[0], f"ERROR is not about the transaction: {errs[0][:300]!r}")
    wait_for(lambda: pub.closed.is_set(), T, "connection not closed after the ERROR")
    check_rss("after the refusal")
    honest_round(c, col, hq, 10_000)
    print(f"transaction refused after {sent} SENDs; peak RSS {peak[0] / MIB:.1f} MiB")
    print("ok")


def overflow():
    """A subscriber that never acknowledges on a topic whose subscription buffer is
    small; a publisher sends 3000 messages, then one with a receipt. The Rust test
    counts the daemon's log lines about the overflow."""
    topic = f"/topic/flood.{uuid.uuid4().hex[:6]}"
    hog = Raw(read=False)
    hog.send(frame("SUBSCRIBE", {"id": "s", "destination": topic, "ack": "client-individual",
                                 "prefetch-count": "1", "receipt": "sub"}))
    while b"RECEIPT" not in hog.buf:
        chunk = hog.s.recv(65536)
        expect(chunk, "closed before the SUBSCRIBE receipt")
        hog.buf += chunk
    c = stomp.Connection12([(H, P)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    for i in range(3000):
        c.send(topic, f"m{i}")
    c.send(topic, "last", receipt="done")
    col.wait_receipt("done")
    print("ok")


# ---- MQTT -----------------------------------------------------------------------------


def retained():
    import paho.mqtt.client as mqtt

    codes = {}
    done = threading.Event()
    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ret-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    connected = threading.Event()
    cl.on_connect = lambda c, u, f, rc, p: connected.set()

    def on_publish(c, u, mid, rc, props):
        codes[mid] = rc.value if hasattr(rc, "value") else rc
        done.set()

    cl.on_publish = on_publish
    cl.connect(H, args.mqtt_port)
    cl.loop_start()
    expect(connected.wait(T), "no CONNACK")
    payload = b"r" * (64 * 1024)
    refused = None
    accepted = 0
    for i in range(64):
        info = cl.publish(f"{args.topic_prefix}/{i}", payload, qos=1, retain=True)
        wait_for(lambda: info.mid in codes, T, f"no PUBACK for retained publish {i}")
        check_rss(f"after retained publish {i}")
        code = codes[info.mid]
        if code >= 0x80:
            expect(code == 0x97, f"retained publish {i} refused with {code:#x}, expected 0x97")
            refused = i
            break
        accepted += 1
    expect(refused is not None, f"all {accepted} retained publishes of 64 KiB accepted")
    expect(accepted <= args.expect_max, f"{accepted} retained messages accepted, at most {args.expect_max} expected")
    # A plain publish (not retained) still goes through.
    info = cl.publish(f"{args.topic_prefix}/plain", b"p", qos=1)
    wait_for(lambda: info.mid in codes, T, "no PUBACK for a plain publish")
    expect(codes[info.mid] < 0x80, f"plain publish refused: {codes[info.mid]:#x}")
    cl.disconnect()
    cl.loop_stop()
    print(f"retained refused at {refused} with {accepted} accepted")
    print("ok")


def retained_count():
    import paho.mqtt.client as mqtt

    got = []
    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rc-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    connected = threading.Event()
    cl.on_connect = lambda c, u, f, rc, p: connected.set()
    cl.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    cl.on_message = lambda c, u, m: got.append(m.topic)
    cl.connect(H, args.mqtt_port)
    cl.loop_start()
    expect(connected.wait(T), "no CONNACK")
    cl.subscribe(f"{args.topic_prefix}/#", qos=0)
    expect(subscribed.wait(T), "no SUBACK")
    # Retained messages are queued before the SUBACK; a marker published after it
    # arrives after them.
    cl.publish(f"{args.topic_prefix}/zz-marker", b"m", qos=0)
    wait_for(lambda: f"{args.topic_prefix}/zz-marker" in got, T, "marker not received")
    n = len([t for t in got if t != f"{args.topic_prefix}/zz-marker"])
    expect(n <= args.expect_max, f"{n} retained messages came back, at most {args.expect_max} expected")
    expect(n > 0, "no retained message came back at all")
    cl.disconnect()
    cl.loop_stop()
    print(f"{n} retained")
    print("ok")


def subscriptions():
    import paho.mqtt.client as mqtt

    def client(name, proto):
        acks, got, connected = {}, [], threading.Event()
        cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:6]}", protocol=proto)
        cl.on_connect = lambda c, u, f, rc, p: connected.set()
        cl.on_subscribe = lambda c, u, mid, rcs, p: acks.__setitem__(mid, [getattr(r, "value", r) for r in rcs])
        cl.on_message = lambda c, u, m: got.append(m.payload)
        cl.connect(H, args.mqtt_port)
        cl.loop_start()
        expect(connected.wait(T), f"{name}: no CONNACK")
        return cl, acks, got

    def sub(cl, acks, flt):
        _, mid = cl.subscribe(flt, qos=0)
        wait_for(lambda: mid in acks, T, f"no SUBACK for {flt}")
        return acks[mid][0]

    n = args.expect_max
    for proto, refusal in ((mqtt.MQTTv5, 0x97), (mqtt.MQTTv311, 0x80)):
        cl, acks, _ = client("greedy", proto)
        codes = [sub(cl, acks, f"s/{i}") for i in range(n + 3)]
        expect(codes[:n] == [0] * n, f"the first {n} filters refused: {codes}")
        expect(codes[n:] == [refusal] * 3, f"filters beyond {n} not refused with {refusal:#x}: {codes}")
        expect(sub(cl, acks, "s/0") == 0, "re-subscribing a held filter refused")
        cl.disconnect()
        cl.loop_stop()
    honest, hacks, hgot = client("honest", mqtt.MQTTv5)
    expect(sub(honest, hacks, "h/x") == 0, "an honest client's subscription refused")
    honest.publish("h/x", b"hello", qos=1).wait_for_publish(T)
    wait_for(lambda: b"hello" in hgot, T, "the honest client got nothing")
    honest.disconnect()
    honest.loop_stop()
    print(f"{n} filters per session held, the rest refused in 5.0 and 3.1.1")
    print("ok")


{"unacked": unacked, "transaction": transaction, "retained": retained,
 "retained_count": retained_count, "overflow": overflow, "subscriptions": subscriptions}[args.scenario]()
