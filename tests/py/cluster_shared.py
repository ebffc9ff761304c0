"""Shared queues and topics across three clustered routers A, B and C (tests/cluster_queues.rs),
with stomp.py and paho-mqtt: every scenario checks message ids end to end.

    cluster_shared.py --port A_STOMP --b-stomp P --c-stomp P --mqtt-a P --mqtt-b P --mqtt-c P
                      --prefix CLUSTER_PREFIX [--kill-pid B_PID] [--nats-ctl PATH] [--user U --password P]
                      SCENARIO

Scenarios:
  compete      persistent SENDs on A, competing client-individual consumers on B and C
  redeliver    B holds unacked messages and is killed (-9): C gets them flagged redelivered
  mqtt_topic   QoS 1 publisher on A, QoS 1 subscribers on A, B and C: each gets every message once
  durable      a durable topic subscription on B outlives B (kill -9) and is resumed on A
  nats_outage  one NATS node killed mid-stream, then a second stopped, then started again
  reply        STOMP request/reply: requester on A (reply-to a /temp-queue/), responder on C
  share        an MQTT $share group with members on A and C, publisher on B: each message to one member
  in_force     a subscription is in force on every router once confirmed: no probe; 20 fresh MQTT
               subscribers on C and 10 durable STOMP subscriptions on B each get the message A
               publishes right after their SUBACK / RECEIPT

The JetStream side is read from the rig's monitoring ports (8222-8224, /jsz): which node leads
the queue's stream (`<prefix>SBQ_…`), and whether it is empty (every message acknowledged).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import stomp  # noqa: E402

args = parse_args(lambda p: (
    p.add_argument("scenario"),
    p.add_argument("--b-stomp", type=int, required=True),
    p.add_argument("--c-stomp", type=int, required=True),
    p.add_argument("--mqtt-a", type=int, required=True),
    p.add_argument("--mqtt-b", type=int, required=True),
    p.add_argument("--mqtt-c", type=int, required=True),
    p.add_argument("--prefix", required=True),
    p.add_argument("--kill-pid", type=int),
    p.add_argument("--nats-ctl"),
    p.add_argument("--user"),
    p.add_argument("--password"),
    p.add_argument("--count", type=int, default=200),
))
T = args.timeout
MONITOR = {"n1": 8222, "n2": 8223, "n3": 8224}


def uniq(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --- STOMP ---------------------------------------------------------------------------------

class Acking(Collector):
    """A collector that acknowledges every MESSAGE as it arrives (client-individual) and
    notes when it arrived (`frame.arrived`, monotonic)."""

    def __init__(self, timeout):
        super().__init__(timeout)
        self.conn = None

    def on_message(self, frame):
        frame.arrived = time.monotonic()
        super().on_message(frame)
        if self.conn is not None and "ack" in frame.headers:
            try:
                self.conn.ack(frame.headers["ack"])
            except Exception as e:  # the connection may be gone (a killed router)
                log(f"ack failed: {e}")


def conn(port, acking=False):
    c = stomp.Connection12([(args.host, port)], heartbeats=(0, 0), reconnect_attempts_max=1)
    col = Acking(T) if acking else Collector(T)
    c.set_listener("c", col)
    c.connect(args.user, args.password, wait=True)
    if acking:
        col.conn = c
    return c, col


def subscribe(c, col, dest, prefetch, rid, **headers):
    c.subscribe(dest, id="s", ack="client-individual",
                headers={"prefetch-count": str(prefetch), **headers}, receipt=rid)
    col.wait_receipt(rid)


def publish_all(c, col, dest, bodies):
    """Persistent SENDs, pipelined, each with a receipt: returns once every one is confirmed."""
    for b in bodies:
        c.send(dest, b, headers={"persistent": "true", "receipt": f"r-{b}"})
    wait_for(lambda: all(f"r-{b}" in col.receipts for b in bodies) or col.errors, T,
             lambda: f"receipts: {sum(f'r-{b}' in col.receipts for b in bodies)} of {len(bodies)}")
    expect(not col.errors, f"ERROR frames: {[(e.headers, e.body) for e in col.errors]}")


def bodies(col):
    return col.bodies()


def redelivered(m):
    return m.headers.get("redelivered") == "true"


def dead(pid):
    """True once `pid` has exited (a zombie counts: the test that started it reaps it later)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def kill_b():
    """kill -9 router B; returns the monotonic time of the kill."""
    expect(args.kill_pid, "this scenario needs --kill-pid")
    t0 = time.monotonic()
    os.kill(args.kill_pid, signal.SIGKILL)
    wait_for(lambda: dead(args.kill_pid), T, "router B still running after SIGKILL")
    return t0


# --- JetStream, as the rig's monitoring endpoints show it ----------------------------------

def jsz(node):
    url = f"http://127.0.0.1:{MONITOR[node]}/jsz?accounts=true&streams=true&consumers=true"
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return json.load(r)
    except OSError:
        return None


def stream_views(prefix):
    """{node: stream detail} of the streams whose name starts with `prefix`, on every node that
    answers and holds a replica."""
    views = {}
    for node in MONITOR:
        v = jsz(node)
        for acc in (v or {}).get("account_details", []):
            for s in acc.get("stream_detail", []) or []:
                if s["name"].startswith(prefix):
                    views.setdefault(node, []).append(s)
    return views


def queue_stream():
    """The one shared-queue stream of this run: (name, leader node)."""
    def found():
        for streams in stream_views(args.prefix + "SBQ_").values():
            for s in streams:
                leader = (s.get("cluster") or {}).get("leader")
                if leader:
                    return s["name"], leader
        return None
    return wait_for(found, T, f"no stream {args.prefix}SBQ_… with a leader in /jsz")


def drained(what):
    """Waits until every node holding the queue's stream shows it empty: each message was
    acknowledged (work-queue retention), so none can be delivered again."""
    def counts():
        return {n: [s["state"]["messages"] for s in ss] for n, ss in stream_views(args.prefix + "SBQ_").items()}
    wait_for(lambda: (c := counts()) and all(x == 0 for xs in c.values() for x in xs), 30,
             lambda: f"{what}: the queue's stream still holds messages: {counts()}")


def ctl(*cmd):
    expect(args.nats_ctl, "this scenario needs --nats-ctl")
    r = subprocess.run([args.nats_ctl, *cmd], capture_output=True, text=True, timeout=120)
    log(f"nats-ctl {' '.join(cmd)}: {r.stdout.strip()} {r.stderr.strip()}")
    expect(r.returncode == 0, f"nats-ctl {' '.join(cmd)} failed ({r.returncode}): {r.stdout} {r.stderr}")


# --- scenarios -----------------------------------------------------------------------------

def compete():
    """Each message exactly once across B and C, both get some, none flagged redelivered."""
    q = f"/queue/{uniq('compete')}"
    (b, bcol), (c, ccol) = conn(args.b_stomp, acking=True), conn(args.c_stomp, acking=True)
    subscribe(b, bcol, q, 5, "sub-b")
    subscribe(c, ccol, q, 5, "sub-c")
    a, acol = conn(args.port)
    n = args.count
    sent = [str(i) for i in range(n)]
    publish_all(a, acol, q, sent)
    got = lambda: bodies(bcol) + bodies(ccol)  # noqa: E731
    wait_for(lambda: len(set(got())) >= n, T, lambda: f"{len(set(got()))} of {n} distinct across B and C")
    drained("all consumed")
    all_got = got()
    dups = sorted({x for x in all_got if all_got.count(x) > 1}, key=int)
    expect(not dups, f"delivered more than once across B and C: {dups[:20]} ({len(all_got)} deliveries for {n})")
    expect(sorted(all_got, key=int) == sent, f"not the messages sent: {sorted(all_got, key=int)[:20]}")
    nb, nc = len(bodies(bcol)), len(bodies(ccol))
    expect(nb > 0 and nc > 0, f"one consumer got everything: B {nb}, C {nc}")
    again = [m.headers for m in bcol.messages + ccol.messages if redelivered(m)]
    expect(not again, f"redelivered with no failure: {again[:5]}")
    expect(not bcol.errors and not ccol.errors, f"ERROR frames: {bcol.errors + ccol.errors}")
    print(f"{n} messages from A: B got {nb}, C got {nc}, each once")
    for x in (a, b, c):
        x.disconnect()


def redeliver():
    """B fills its prefetch and never acks; C, on the same queue, gets the later messages; B is
    killed (-9) and C gets B's messages, each flagged, within 10 s, nothing lost or doubled."""
    q = f"/queue/{uniq('held')}"
    hold = 20
    b, bcol = conn(args.b_stomp)
    subscribe(b, bcol, q, hold, "sub-b")
    a, acol = conn(args.port)
    held = [f"m{i}" for i in range(hold)]
    publish_all(a, acol, q, held)
    bcol.wait_messages(hold, "B fills its prefetch")
    c, ccol = conn(args.c_stomp, acking=True)
    subscribe(c, ccol, q, 50, "sub-c")
    later = [f"n{i}" for i in range(10)]
    publish_all(a, acol, q, later)
    wait_for(lambda: set(later) <= set(bodies(ccol)), T,
             lambda: f"C (B is full) got {bodies(ccol)} of {later}")
    expect(sorted(bodies(bcol)) == sorted(held), f"B holds {bodies(bcol)}, not {held}")
    expect(not set(held) & set(bodies(ccol)), f"C got B's unacked messages while B lives: {bodies(ccol)}")

    t0 = kill_b()
    first = wait_for(lambda: next((m.arrived for m in list(ccol.messages) if redelivered(m)), None), 15,
                     lambda: f"no redelivered message at C 15 s after B's kill: {bodies(ccol)}")
    wait_for(lambda: set(held) <= set(bodies(ccol)), 20,
             lambda: f"B's messages at C: {sorted(set(held) & set(bodies(ccol)))} of {hold}")
    t_all = time.monotonic() - t0
    drained("C acknowledged everything")
    got = bodies(ccol)
    dups = sorted({x for x in got if got.count(x) > 1})
    expect(not dups, f"delivered twice at C: {dups}")
    expect(sorted(got) == sorted(held + later), f"C got {sorted(got)}")
    unflagged = [m.body for m in ccol.messages if m.body in held and not redelivered(m)]
    expect(not unflagged, f"B's messages redelivered without the flag: {unflagged}")
    flagged = [m.body for m in ccol.messages if m.body in later and redelivered(m)]
    expect(not flagged, f"first deliveries flagged redelivered: {flagged}")
    print(f"first redelivered message at C {first - t0:.2f} s after kill -9 of B; all {hold} in {t_all:.2f} s")
    expect(first - t0 < 10, f"redelivery took {first - t0:.2f} s (limit 10 s)")
    for x in (a, c):
        x.disconnect()


class MqttClient:
    """paho (MQTT 3.1.1, clean session) recording messages and SUBACKs."""

    def __init__(self, port, name):
        self.name = name
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uniq(f"cl-{name}"),
                             protocol=mqtt.MQTTv311, clean_session=True)
        self.msgs, self.subacks, self.lock = [], {}, threading.Lock()
        self.connected = threading.Event()
        self.c.on_message = self._msg
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.__setitem__(mid, rcs)
        self.c.on_connect = lambda c, u, flags, rc, props: self.connected.set()
        self.c.max_inflight_messages_set(50)
        self.c.connect(args.host, port)
        self.c.loop_start()
        expect(self.connected.wait(T), f"{name}: no CONNACK")

    def _msg(self, c, u, m):
        with self.lock:
            self.msgs.append(m)

    def payloads(self):
        with self.lock:
            return [m.payload.decode() for m in self.msgs]

    def sub(self, topic):
        _, mid = self.c.subscribe(topic, 1)
        wait_for(lambda: mid in self.subacks, T, f"{self.name}: no SUBACK for {topic}")
        expect(not self.subacks[mid][0].is_failure, f"{self.name}: SUBACK {self.subacks[mid]}")

    def bye(self):
        self.c.disconnect()
        self.c.loop_stop()


def mqtt_topic():
    """QoS 1 from A reaches subscribers on A, B and C: every message once, in order, at QoS 1."""
    base = uniq("mt")
    subs = [MqttClient(p, n) for p, n in ((args.mqtt_a, "A"), (args.mqtt_b, "B"), (args.mqtt_c, "C"))]
    for s in subs:
        s.sub(f"{base}/#")
    pub = MqttClient(args.mqtt_a, "pub")

    def publish(topic, payload):
        info = pub.c.publish(topic, payload, qos=1)
        return info

    # Remote subscriptions take effect shortly after their SUBACK: probe until all have one.
    k = 0

    def probed():
        nonlocal k
        k += 1
        publish(f"{base}/probe", f"probe-{k}").wait_for_publish(T)
        return wait_for(lambda: all(any(p.startswith("probe") for p in s.payloads()) for s in subs), 0.5)
    wait_for(probed, T, lambda: f"probes not everywhere: {[(s.name, s.payloads()) for s in subs]}")

    n = args.count
    t0 = time.monotonic()
    infos = [publish(f"{base}/data", str(i)) for i in range(n)]
    for i, info in enumerate(infos):
        info.wait_for_publish(T)
        expect(info.is_published(), f"message {i}: no PUBACK")
    publish(f"{base}/data", "end").wait_for_publish(T)
    for s in subs:
        wait_for(lambda: "end" in s.payloads(), T,
                 lambda: f"{s.name}: {len([p for p in s.payloads() if p.isdigit()])} of {n}, no end marker")
    elapsed = time.monotonic() - t0
    for s in subs:
        with s.lock:
            data = [(m.payload.decode(), m.qos) for m in s.msgs if m.topic == f"{base}/data"]
        got = [p for p, _ in data]
        dups = sorted({int(p) for p in got if p.isdigit() and got.count(p) > 1})
        expect(not dups, f"{s.name}: received more than once: {dups[:20]}")
        expect(got == [str(i) for i in range(n)] + ["end"],
               f"{s.name}: lost or out of order: {len(got)} messages, first differences "
               f"{[(i, p) for i, p in enumerate(got) if p != str(i)][:10]}")
        expect(all(q == 1 for _, q in data), f"{s.name}: not at QoS 1: {sorted({q for _, q in data})}")
    print(f"{n} QoS 1 messages from A to subscribers on A, B and C in {elapsed:.2f} s, each once and in order "
          f"({k} probes first)")
    for s in subs + [pub]:
        s.bye()


def durable():
    """A durable subscription made on B keeps receiving while B is dead; resumed on A (same
    login and name) it gets what was published meanwhile, each once, in publish order but for
    any that JetStream gave B's last pull before it saw B die (those come later, flagged)."""
    base = uniq("dur")
    pattern = f"/topic/{base}.#"
    name = {"durable": "true", "subscription-name": "keep"}
    b, bcol = conn(args.b_stomp)
    b.subscribe(pattern, id="d", ack="client-individual", headers=name, receipt="sub-b")
    bcol.wait_receipt("sub-b")
    a, acol = conn(args.port)
    k = 0

    def probed():
        nonlocal k
        k += 1
        publish_all(a, acol, f"/topic/{base}.probe", [f"probe-{k}"])
        return wait_for(lambda: bcol.messages, 0.5)
    wait_for(probed, T, "the durable subscription on B never got a probe from A")
    with bcol.lock:
        on_b = list(bcol.messages)
    for i, m in enumerate(on_b):
        b.ack(m.headers["ack"], receipt=f"ack-{i}")
    for i in range(len(on_b)):
        bcol.wait_receipt(f"ack-{i}")

    kill_b()
    n = 20
    sent = [f"d{i}" for i in range(n)]
    publish_all(a, acol, f"/topic/{base}.data", sent)

    r, rcol = conn(args.port, acking=True)
    r.subscribe(pattern, id="d", ack="client-individual", headers=name, receipt="sub-a")
    rcol.wait_receipt("sub-a")
    data = lambda: [m for m in list(rcol.messages) if not m.body.startswith("probe")]  # noqa: E731
    wait_for(lambda: len(data()) >= n, T,
             lambda: f"resumed on A: {[m.body for m in data()]} of the {n} published while B was dead")
    publish_all(a, acol, f"/topic/{base}.data", ["after"])
    wait_for(lambda: "after" in [m.body for m in data()], T, "a message published after the resume")
    got = [m.body for m in data()]
    expect(sorted(got) == sorted(sent + ["after"]), f"resumed subscription got {got}")
    # A publish that reached JetStream before it noticed B's death may have gone to B's
    # last pull: it comes ACK_WAIT later, flagged. Every other one comes in publish order.
    late = [m.body for m in data() if redelivered(m)]
    first = [b for b in got if b not in late]
    expect(first == [b for b in sent + ["after"] if b not in late],
           f"first deliveries out of publish order: {first} (flagged: {late})")
    expect(not rcol.errors and not acol.errors, f"ERROR frames: {rcol.errors + acol.errors}")
    probes_back = [m.body for m in rcol.messages if m.body.startswith("probe")]
    r.unsubscribe("d", headers={"durable": "true"}, receipt="gone")
    rcol.wait_receipt("gone")
    print(f"durable subscription from B resumed on A after kill -9: {n} messages published meanwhile, each once, "
          f"in order but {late} (flagged: delivered to B's last pull); {len(on_b)} acked probes came back: {probes_back}")
    for x in (a, r):
        x.disconnect()


class Publisher:
    """Sends persistent numbered messages to `dest` one at a time, each with a receipt, and
    records each outcome: 'ok' (RECEIPT), 'refused' (ERROR, the connection is then renewed)
    or 'silent' (neither within `wait` s). The receipted ones are the confirmed messages."""

    def __init__(self, port, dest, wait=15):
        self.port, self.dest, self.wait = port, dest, wait
        self.outcomes = []  # (id, outcome, monotonic time of the answer)
        self.reasons = []
        self.c = None
        self.connect()

    def connect(self):
        if self.c is not None:
            try:
                self.c.disconnect()
            except Exception:
                pass
        self.c, self.col = conn(self.port)

    def send(self):
        i = len(self.outcomes)
        errors = len(self.col.errors)
        try:
            self.c.send(self.dest, str(i), headers={"persistent": "true", "receipt": f"r{i}"})
        except stomp.exception.NotConnectedException:
            self.connect()
            self.c.send(self.dest, str(i), headers={"persistent": "true", "receipt": f"r{i}"})
        wait_for(lambda: f"r{i}" in self.col.receipts or len(self.col.errors) > errors
                 or self.col.disconnected.is_set(), self.wait)
        if f"r{i}" in self.col.receipts:
            outcome = "ok"
        elif len(self.col.errors) > errors:
            e = self.col.errors[-1]
            self.reasons.append(f"{e.headers.get('message')}: {e.body.strip()}")
            outcome = "refused"
        else:
            outcome = "silent"
        self.outcomes.append((i, outcome, time.monotonic()))
        if outcome != "ok":
            self.connect()
        return outcome

    def confirmed(self, since=0):
        return [i for i, o, _ in self.outcomes[since:] if o == "ok"]

    def count(self, outcome, since=0, until=None):
        return sum(1 for _, o, _ in self.outcomes[since:until] if o == outcome)


def nats_outage():
    """One NATS node (the queue stream's leader) killed mid-stream: publishing goes on, and
    every confirmed message is consumed. Two down: persistent SENDs are refused (ERROR, no
    RECEIPT). One back: SENDs are confirmed again. Nothing confirmed is lost."""
    q = f"/queue/{uniq('outage')}"
    c, ccol = conn(args.c_stomp, acking=True)
    subscribe(c, ccol, q, 20, "sub-c")
    stream, leader = queue_stream()
    second = next(n for n in MONITOR if n != leader)
    log(f"queue stream {stream}, leader {leader}; second node to stop: {second}")
    p = Publisher(args.port, q)

    def run_until(cond, limit, what):
        deadline = time.monotonic() + limit
        while not cond():
            if time.monotonic() > deadline:
                fail(f"{what} (after {limit} s): outcomes {summary()}; refusals {p.reasons[-3:]}")
            p.send()

    def summary():
        return {o: p.count(o) for o in ("ok", "refused", "silent")}

    # 1. Steady: 100 confirmed.
    run_until(lambda: len(p.confirmed()) >= 100, 60, "100 confirmed messages before any outage")
    # 2. Kill the stream's leader while publishing goes on; then 200 more confirmed.
    killer = threading.Thread(target=ctl, args=("kill", leader))
    kill_from = len(p.outcomes)
    killer.start()
    run_until(lambda: not killer.is_alive(), 60, f"nats-ctl kill {leader} did not return")
    killed_at = len(p.outcomes)
    run_until(lambda: len(p.confirmed(killed_at)) >= 200, 60,
              f"200 confirmed messages after {leader} was killed")
    one_down = {o: p.count(o, kill_from) for o in ("ok", "refused", "silent")}
    # 3. Stop a second node: no quorum, persistent publishes refused.
    ctl("stop", second)
    stopped_at = len(p.outcomes)
    t_stop = time.monotonic()
    run_until(lambda: len(p.outcomes) - stopped_at >= 3, 120, "3 answers with two nodes down")
    two_down = p.outcomes[stopped_at:]
    confirmed_without_quorum = [i for i, o, _ in two_down if o == "ok"]
    expect(not confirmed_without_quorum, f"confirmed with two of three nodes down: {confirmed_without_quorum}")
    silent = [i for i, o, _ in two_down if o == "silent"]
    expect(not silent, f"no RECEIPT and no ERROR within {p.wait} s with two nodes down: {silent}")
    refused_in = [t - t_stop for _, _, t in two_down]
    # 4. Start the second node again: publishing resumes.
    ctl("start", second)
    back_at = len(p.outcomes)
    t_back = time.monotonic()
    run_until(lambda: p.confirmed(back_at), 60, f"a confirmed message after {second} came back")
    resumed = next(t for _, o, t in p.outcomes[back_at:] if o == "ok") - t_back
    run_until(lambda: len(p.confirmed(back_at)) >= 100, 60, f"100 confirmed messages after {second} came back")
    p.c.disconnect()

    confirmed = {str(i) for i in p.confirmed()}
    wait_for(lambda: confirmed <= set(bodies(ccol)), 60,
             lambda: f"confirmed but not consumed: {sorted(confirmed - set(bodies(ccol)), key=int)[:30]} "
                     f"({len(confirmed - set(bodies(ccol)))} of {len(confirmed)})")
    drained("C acknowledged everything")
    got = bodies(ccol)
    dups = len(got) - len(set(got))
    unconfirmed = sorted(set(got) - confirmed, key=int)
    expect(not ccol.errors, f"ERROR frames at the consumer: {[(e.headers, e.body) for e in ccol.errors]}")
    print(f"sent {len(p.outcomes)}, confirmed {len(confirmed)}, all consumed at C ({dups} duplicates, "
          f"{len(unconfirmed)} unconfirmed ones delivered: {unconfirmed[:10]})")
    print(f"one node ({leader}) down: {one_down}")
    print(f"two down ({leader}, {second}): {len(two_down)} SENDs refused, answered {', '.join(f'{t:.1f}' for t in refused_in)} s "
          f"after the stop: {p.reasons[-1] if p.reasons else ''}")
    print(f"{second} back: first confirmed SEND {resumed:.2f} s after its start returned")
    c.disconnect()


def reply():
    """Requests from A carry `reply-to: /temp-queue/answers`; a responder on C answers each
    with a receipt: every answer reaches A's temporary queue once, each receipted at C;
    an answer to a requester that has gone is dropped, the responder kept connected."""
    q = f"/queue/{uniq('requests')}"
    c, ccol = conn(args.c_stomp)
    c.subscribe(q, id="s", ack="auto", receipt="sub-c")
    ccol.wait_receipt("sub-c")
    a, acol = conn(args.port)
    n = args.count
    for i in range(n):
        a.send(q, f"q{i}", headers={"reply-to": "/temp-queue/answers", "persistent": "true", "receipt": f"r{i}"})
    wait_for(lambda: len(ccol.messages) >= n or ccol.errors, T, lambda: f"{len(ccol.messages)} of {n} requests at C")
    reply_to = {m.headers.get("reply-to") for m in ccol.messages}
    expect(len(reply_to) == 1 and next(iter(reply_to)).startswith("/queue/$sb.tmp."),
           f"reply-to as C sees it: {reply_to}")
    for m in ccol.messages:
        c.send(m.headers["reply-to"], "re:" + m.body, headers={"receipt": "a-" + m.body})
    wait_for(lambda: all(f"a-q{i}" in ccol.receipts for i in range(n)) or ccol.errors, T,
             lambda: f"{sum(f'a-q{i}' in ccol.receipts for i in range(n))} of {n} answers receipted at C")
    expect(not ccol.errors, f"ERROR frames at C: {[(e.headers, e.body) for e in ccol.errors]}")
    wanted = sorted(f"re:q{i}" for i in range(n))
    wait_for(lambda: len(acol.bodies()) >= n, T, lambda: f"{len(acol.bodies())} of {n} answers at A")
    got = sorted(acol.bodies())
    expect(got == wanted, f"answers at A: {got[:10]} ({len(got)})")
    # The requester leaves: its temporary queue goes with it. An answer sent now reaches
    # nobody, and the responder is not failed for it (as on one router).
    gone = next(iter(reply_to))
    a.disconnect()
    c.send(gone, "late", headers={"receipt": "late"})
    ccol.wait_receipt("late")
    expect(not ccol.errors, f"ERROR frame for a reply to a gone requester: {ccol.errors}")
    print(f"{n} requests from A answered from C, each once; a late answer dropped")
    c.disconnect()


def share():
    """`$share/GROUP/FILTER` with one member on A and one on C, QoS 1 publisher on B: every
    message reaches exactly one member, and both members get some."""
    base = uniq("sh")
    members = [MqttClient(p, n) for p, n in ((args.mqtt_a, "A"), (args.mqtt_c, "C"))]
    for m in members:
        m.sub(f"$share/g1/{base}/#")
    pub = MqttClient(args.mqtt_b, "pub")
    # Each router starts pulling for the group shortly after its member's SUBACK: probe
    # until every member got one.
    k = 0

    def probed():
        nonlocal k
        k += 1
        pub.c.publish(f"{base}/probe", f"probe-{k}", qos=1).wait_for_publish(T)
        return wait_for(lambda: all(any(p.startswith("probe") for p in m.payloads()) for m in members), 0.2)
    wait_for(probed, T, lambda: f"probes: {[(m.name, m.payloads()) for m in members]}")
    n = args.count
    infos = [pub.c.publish(f"{base}/data", str(i), qos=1) for i in range(n)]
    for i, info in enumerate(infos):
        info.wait_for_publish(T)
        expect(info.is_published(), f"message {i}: no PUBACK")

    def data(m):
        with m.lock:
            return [x.payload.decode() for x in m.msgs if x.topic == f"{base}/data"]
    wait_for(lambda: len(set(data(members[0]) + data(members[1]))) >= n, T,
             lambda: f"{len(set(data(members[0]) + data(members[1])))} of {n} across the group")
    got = data(members[0]) + data(members[1])
    dups = sorted({int(p) for p in got if got.count(p) > 1})
    expect(not dups, f"delivered to more than one member: {dups[:20]}")
    expect(sorted(got, key=int) == [str(i) for i in range(n)], f"not the messages sent: {len(got)}")
    na, nc = len(data(members[0])), len(data(members[1]))
    expect(na > 0 and nc > 0, f"one member got everything: A {na}, C {nc}")
    print(f"{n} QoS 1 messages from B to a $share group: A got {na}, C got {nc}, each once ({k} probes first)")
    for m in members + [pub]:
        m.bye()


def in_force():
    """What a SUBACK or a subscription's RECEIPT promises holds across routers at once."""
    pub = MqttClient(args.mqtt_a, "pub")
    for i in range(20):
        topic = f"{uniq('if')}/x"
        sub = MqttClient(args.mqtt_c, f"C{i}")
        sub.sub(topic)
        info = pub.c.publish(topic, f"m{i}", qos=1)
        info.wait_for_publish(T)
        expect(info.is_published(), f"round {i}: no PUBACK")
        wait_for(lambda: f"m{i}" in sub.payloads(), T,
                 lambda: f"round {i}: the message published on A after C's SUBACK never came")
        sub.bye()
    a, acol = conn(args.port)
    for i in range(10):
        t = f"/topic/{uniq('ifd')}"
        b, bcol = conn(args.b_stomp)
        b.subscribe(t, id=f"d{i}", ack="auto", headers={"durable": "true"}, receipt=f"s{i}")
        bcol.wait_receipt(f"s{i}")
        a.send(t, f"d{i}", headers={"persistent": "true", "receipt": f"p{i}"})
        acol.wait_receipt(f"p{i}")
        wait_for(lambda: f"d{i}" in bcol.bodies(), T,
                 lambda: f"round {i}: the message published on A after B's durable RECEIPT never came")
        b.unsubscribe(f"d{i}", headers={"durable": "true"})
        b.disconnect()
    print("20 MQTT subscriptions on C and 10 durable STOMP subscriptions on B each got what A published right after")
    pub.bye()
    a.disconnect()


SCENARIOS = {f.__name__: f for f in [compete, redeliver, mqtt_topic, durable, nats_outage, reply, share, in_force]}
if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}")
SCENARIOS[args.scenario]()
print("ok")
