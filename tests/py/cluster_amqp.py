"""The AMQP link on three clustered routers A, B, C (tests/cluster_amqp.rs): pika on the RabbitMQ
side, stomp.py on the routers' side. Routes (pushed by the Rust test):
  P.fi (RabbitMQ queue, every router's link consumes it) -> /queue/P.fi_out (shared in the cluster)
  /queue/P.fo_in on any router, MQTT topic P/fo on any router -> the link -> RabbitMQ queue P.fo

    cluster_amqp.py --port A_STOMP --stomp A,B,C --mqtt A,B,C --admin A,B,C --prefix P --ctl rabbitmq-ctl.sh
                    [--kill-pid B_PID] SCENARIO

Scenarios:
  restart  pika publishes into P.fi with confirms while STOMP clients on A, B and C send to P.fo_in
           with receipts (and a paho QoS 1 publisher on C to P/fo); RabbitMQ is stopped (stop_app) mid-stream and started again: every
           confirmed message arrives (inbound on a STOMP consumer on A, outbound in P.fo), duplicates
           counted; more than one router's link received and published.
  kill     the same traffic; router B is killed (-9) once its link has published part of it: every
           confirmed message arrives, and A's or C's link republishes what B had taken unconfirmed.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import pika  # noqa: E402
import stomp  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--prefix", required=True),
                             p.add_argument("--stomp", required=True), p.add_argument("--admin", required=True),
                             p.add_argument("--mqtt", required=True),
                             p.add_argument("--ctl", required=True), p.add_argument("--kill-pid", type=int)))
P = args.prefix
STOMP = [int(x) for x in args.stomp.split(",")]
ADMIN = [int(x) for x in args.admin.split(",")]
MQTT = [int(x) for x in args.mqtt.split(",")]
NAMES = "ABC"
AMQP = pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest"),
                                 heartbeat=30, blocked_connection_timeout=60)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def link(i):
    """Router i's link `rabbit` as GET /links shows it (None when the router is gone)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN[i]}/links", timeout=5) as r:
            return {l["name"]: l for l in json.load(r)}["rabbit"]
    except OSError:
        return None


def counters(alive):
    return {i: link(i)["counters"] for i in alive}


def delta(after, before, key):
    return {NAMES[i]: after[i][key] - before[i][key] for i in after}


def ctl(*a):
    r = subprocess.run([args.ctl, "ctl", *a], capture_output=True, text=True, timeout=120)
    expect(r.returncode == 0, f"rabbitmqctl {a}: {r.stdout} {r.stderr}")


class Inbound:
    """pika publishing `n` persistent messages into P.fi with confirms, reconnecting through an
    outage; `confirmed` holds the bodies RabbitMQ confirmed."""

    def __init__(self, tag, n):
        self.tag, self.n = tag, n
        self.confirmed = set()
        self.done = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        i = 0
        while i < self.n:
            try:
                c = pika.BlockingConnection(AMQP)
                ch = c.channel()
                ch.confirm_delivery()
                while i < self.n:
                    body = f"{self.tag}-in{i}"
                    ch.basic_publish("", f"{P}.fi", body.encode(), pika.BasicProperties(delivery_mode=2))
                    self.confirmed.add(body)
                    i += 1
                    time.sleep(0.001)
                c.close()
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.2)  # the unconfirmed one is sent again: duplicates are allowed
        self.done.set()


class Outbound:
    """A STOMP client on router `i` sending `n` persistent messages to P.fo_in, each with a
    receipt; `confirmed` holds the bodies whose RECEIPT came. Stops at the first error (its
    router was killed)."""

    def __init__(self, tag, i, n):
        self.tag, self.i, self.n = tag, i, n
        self.sent = 0
        self.col = Collector(args.timeout)
        self.conn = stomp.Connection12([("127.0.0.1", STOMP[i])], heartbeats=(0, 0))
        self.conn.set_listener("c", self.col)
        self.conn.connect(wait=True)
        self.done = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        try:
            for k in range(self.n):
                body = f"{self.tag}-{NAMES[self.i]}-out{k}"
                self.conn.send(f"/queue/{P}.fo_in", body, headers={"persistent": "true", "receipt": body})
                self.sent = k + 1
                time.sleep(0.002)
        except Exception as e:  # noqa: BLE001 - the router was killed under it
            log(f"sender on {NAMES[self.i]} stopped: {e!r}")
        self.done.set()

    def confirmed(self):
        with self.col.lock:
            return set(self.col.receipts)

    def close(self):
        try:
            self.conn.disconnect()
        except Exception:  # noqa: BLE001
            pass


class MqttOut:
    """A paho client on router `i` publishing `n` messages at QoS 1 to P/fo; `confirmed()` is
    the bodies whose PUBACK came."""

    def __init__(self, tag, i, n):
        self.tag, self.i, self.n = tag, i, n
        self.sent = 0
        self.mids, self.acked = {}, set()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{P}-{tag}-pub")
        self.c.on_publish = self.on_publish
        self.c.connect("127.0.0.1", MQTT[i])
        self.c.loop_start()
        self.done = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def on_publish(self, _c, _u, mid, _rc, _props):
        # No lock of ours here: paho calls this holding its own, which publish() takes too.
        self.acked.add(mid)

    def run(self):
        for k in range(self.n):
            body = f"{self.tag}-mqtt{NAMES[self.i]}-out{k}"
            info = self.c.publish(f"{P}/fo", body.encode(), qos=1)
            self.mids[info.mid] = body
            self.sent = k + 1
            time.sleep(0.002)
        self.done.set()

    def confirmed(self):
        wait_for(lambda: len(self.acked) >= self.n, 30, lambda: f"PUBACKs {len(self.acked)} of {self.n}")
        return {self.mids[m] for m in list(self.acked)}

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def drain(queue, want, timeout=120):
    """Consumes `queue` with pika until every body of `want` came; returns what came."""
    c = pika.BlockingConnection(AMQP)
    ch = c.channel()
    seen = []
    deadline = time.monotonic() + timeout
    for method, _props, body in ch.consume(queue, inactivity_timeout=0.5):
        if method is not None:
            seen.append(body.decode())
            ch.basic_ack(method.delivery_tag)
        if want <= set(seen) or time.monotonic() > deadline:
            break
    ch.cancel()
    c.close()
    return seen


def check(tag, inbound, senders, col, started_at):
    expect(inbound.done.wait(180) and all(s.done.wait(180) for s in senders), "publishers finished")
    got_in = lambda: [b for b in col.bodies() if b.startswith(tag + "-")]
    wait_for(lambda: inbound.confirmed <= set(got_in()), 120,
             lambda: f"inbound lost {len(inbound.confirmed - set(got_in()))}: "
                     f"{sorted(inbound.confirmed - set(got_in()))[:10]}")
    confirmed_out = set().union(*(s.confirmed() for s in senders))
    seen = drain(f"{P}.fo", confirmed_out)
    lost_out = confirmed_out - set(seen)
    expect(not lost_out, f"outbound lost {len(lost_out)} confirmed: {sorted(lost_out)[:10]}")
    ins = got_in()
    in_dupes = len(ins) - len(set(ins))
    out_dupes = len(seen) - len(set(seen))
    log(f"{tag}: inbound {len(inbound.confirmed)} confirmed by RabbitMQ, all arrived, {in_dupes} duplicates; "
        f"outbound {len(confirmed_out)} confirmed by RECEIPT or PUBACK (of {sum(s.sent for s in senders)} sent), "
        f"all in RabbitMQ, {out_dupes} duplicates, {len(set(seen) - confirmed_out)} unconfirmed ones arrived too; "
        f"{time.monotonic() - started_at:.1f} s")


def consumer():
    c = stomp.Connection12([("127.0.0.1", STOMP[0])], heartbeats=(0, 0))
    col = Collector(args.timeout)
    c.set_listener("c", col)
    c.connect(wait=True)
    c.subscribe(f"/queue/{P}.fi_out", id="1", ack="auto")
    return c, col


def restart():
    started = time.monotonic()
    before = counters(range(3))
    c, col = consumer()
    inbound = Inbound("r", 3000)
    senders = [Outbound("r", i, 1000) for i in range(3)] + [MqttOut("r", 2, 1000)]
    wait_for(lambda: len(inbound.confirmed) > 600, args.timeout, "traffic before the restart")
    ctl("stop_app")
    try:
        wait_for(lambda: all(link(i)["state"] != "connected" for i in range(3)), args.timeout,
                 lambda: f"every link noticed: {[link(i)['state'] for i in range(3)]}")
        at = sum(s.sent for s in senders)
        wait_for(lambda: sum(s.sent for s in senders) >= at + 300 or all(s.done.is_set() for s in senders),
                 args.timeout, lambda: f"sends during the outage: {[(s.sent, s.done.is_set()) for s in senders]}")
    finally:
        ctl("start_app")  # whatever failed, RabbitMQ comes back: every later test needs it
    check("r", inbound, senders, col, started)
    wait_for(lambda: all(link(i)["state"] == "connected" for i in range(3)), 60, "every link reconnected")
    after = counters(range(3))
    received, published = delta(after, before, "received"), delta(after, before, "published")
    log(f"per router: received {received}, published {published}, "
        f"republished {delta(after, before, 'republished')}, reconnects {delta(after, before, 'reconnects')}")
    expect(sum(1 for v in received.values() if v > 0) >= 2, f"one router's link received everything: {received}")
    expect(sum(1 for v in published.values() if v > 0) >= 2, f"one router's link published everything: {published}")
    expect(all(v >= 1 for v in delta(after, before, "reconnects").values()), "every link reconnected once at least")
    for s in senders:
        s.close()
    c.disconnect()
    print("ok")


def kill():
    expect(args.kill_pid, "--kill-pid")
    started = time.monotonic()
    before = counters(range(3))
    c, col = consumer()
    inbound = Inbound("k", 3000)
    senders = [Outbound("k", i, 1500) for i in range(3)] + [MqttOut("k", 2, 1500)]
    b_published = lambda: link(1)["counters"]["published"] - before[1]["published"]
    wait_for(lambda: b_published() >= 100, args.timeout, "B's link publishing")
    expect(not all(s.done.is_set() for s in senders), "the stream is still on when B is killed")
    last_b = link(1)["counters"]
    os.kill(args.kill_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    log(f"killed B after its link published {last_b['published'] - before[1]['published']}")
    check("k", inbound, senders, col, started)
    after = counters([0, 2])
    after[1] = last_b
    republished = delta({0: after[0], 2: after[2]}, before, "republished")
    log(f"per router: received {delta(after, before, 'received')}, published {delta(after, before, 'published')}"
        f" (B: until killed), republished by A and C {republished}; {time.monotonic() - killed_at:.1f} s after the kill")
    expect(sum(republished.values()) > 0, f"nothing of B's was republished by A or C: {republished}")
    for s in (senders[0], senders[2], senders[3]):
        s.close()
    c.disconnect()
    print("ok")


SCENARIOS = {"restart": restart, "kill": kill}
SCENARIOS[args.scenario]()
