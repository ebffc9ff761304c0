"""MQTT persistent sessions across three clustered routers A, B and C (tests/cluster_sessions.rs),
with paho-mqtt (MQTT 5): message ids are checked end to end.

    cluster_mqtt_sessions.py --port A_MQTT --mqtt-b P --mqtt-c P [--kill-pid B_PID] [--count N] SCENARIO

Scenarios:
  resume    a QoS 1 subscriber with a persistent session on B, a QoS 1 publisher on A; B is
            killed (-9) mid-stream; the subscriber reconnects to C with the same client id and
            clean start 0 (no new SUBSCRIBE): every confirmed message arrives, a message
            received twice is flagged DUP the second time, the first redelivery within 10 s
  race      two clients with one client id connect at once to A and C (several rounds): exactly
            one keeps the session, the other is disconnected with reason 0x8E (session taken
            over); the survivor gets what is published; then a plain takeover from A to C keeps
            the subscription (session present)

The clients run their own network loop (no paho auto-reconnect: a client taken over must not
take the session back).
"""

import os
import signal
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, parse_args, wait_for  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

args = parse_args(lambda p: (
    p.add_argument("scenario"),
    p.add_argument("--mqtt-b", type=int, required=True),
    p.add_argument("--mqtt-c", type=int, required=True),
    p.add_argument("--kill-pid", type=int),
    p.add_argument("--count", type=int, default=300),
    p.add_argument("--rounds", type=int, default=5),
))
T = args.timeout
TAKEN_OVER = 0x8E


def uniq(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def dead(pid):
    """True once `pid` has exited (a zombie counts: the test that started it reaps it later)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Client:
    """A paho MQTT 5 client on `port` with a persistent session (clean start 0, expiry 300 s
    unless `clean`), recording messages (payload, dup, arrival time) and how it was
    disconnected."""

    def __init__(self, port, name, client_id, clean=False, connect=True, ack_first=None):
        """`ack_first`: acknowledge (PUBACK) only the first N messages, the later ones never."""
        self.name, self.port, self.clean = name, port, clean
        self.ack_first, self.acked = ack_first, set()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5, manual_ack=ack_first is not None)
        self.msgs, self.subacks, self.lock = [], {}, threading.Lock()
        self.connack = None  # (reason code, session present)
        self.disconnected = None  # reason code value
        self.connected = threading.Event()
        self.gone = threading.Event()
        self.stop = False
        self.c.on_message = self._msg
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.__setitem__(mid, rcs)
        self.c.on_connect = self._connected
        self.c.on_disconnect = self._disconnected
        self.c.max_inflight_messages_set(50)
        if connect:
            self.connect()

    def connect(self):
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if self.clean else 300
        self.c.connect(args.host, self.port, clean_start=self.clean, properties=props, keepalive=30)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop:
            rc = self.c.loop(0.05)
            if rc in (mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST, mqtt.MQTT_ERR_CONN_REFUSED):
                self.gone.set()
                return
            if rc != mqtt.MQTT_ERR_SUCCESS:
                log(f"{self.name}: loop: {mqtt.error_string(rc)}")
                time.sleep(0.05)

    def _connected(self, c, u, flags, rc, props):
        self.connack = (rc.value, flags.session_present)
        self.connected.set()

    def _disconnected(self, c, u, flags, rc, props):
        self.disconnected = rc.value
        self.gone.set()

    def _msg(self, c, u, m):
        with self.lock:
            self.msgs.append((m.payload.decode(), m.dup, time.monotonic()))
            n = len(self.msgs)
        if self.ack_first is not None and n <= self.ack_first:
            c.ack(m.mid, m.qos)
            self.acked.add(m.payload.decode())

    def wait_connack(self):
        expect(self.connected.wait(T), f"{self.name}: no CONNACK")
        expect(self.connack[0] == 0, f"{self.name}: CONNACK {self.connack}")

    def got(self):
        with self.lock:
            return list(self.msgs)

    def sub(self, topic):
        _, mid = self.c.subscribe(topic, 1)
        wait_for(lambda: mid in self.subacks, T, f"{self.name}: no SUBACK for {topic}")
        expect(not self.subacks[mid][0].is_failure, f"{self.name}: SUBACK {self.subacks[mid]}")

    def close(self):
        """Stops the loop without a DISCONNECT (the session stays as the router keeps it)."""
        self.stop = True
        if getattr(self, "thread", None):
            self.thread.join(5)
        try:
            self.c.socket() and self.c.socket().close()
        except Exception:
            pass


class Publisher:
    """paho MQTT 3.1.1 QoS 1 publisher (paho's own loop: A is never killed)."""

    def __init__(self, port):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uniq("pub"),
                             protocol=mqtt.MQTTv311, clean_session=True)
        ok = threading.Event()
        self.c.on_connect = lambda *a: ok.set()
        self.c.max_inflight_messages_set(20)
        self.c.connect(args.host, port)
        self.c.loop_start()
        expect(ok.wait(T), "publisher: no CONNACK")

    def publish(self, topic, payload):
        return self.c.publish(topic, payload, qos=1)

    def bye(self):
        self.c.disconnect()
        self.c.loop_stop()


def probe_until_received(pub, sub, topic):
    """A new subscription takes effect in the cluster shortly after its SUBACK: publish probes
    until one arrives."""
    k = 0

    def probed():
        nonlocal k
        k += 1
        pub.publish(topic, f"probe-{k}").wait_for_publish(T)
        return wait_for(lambda: any(p.startswith("probe") for p, _, _ in sub.got()), 0.5)
    wait_for(probed, T, f"{sub.name}: no probe arrived")
    return k


def resume():
    expect(args.kill_pid, "this scenario needs --kill-pid (router B)")
    base, cid = uniq("rs"), uniq("sess")
    topic = f"{base}/data"
    # On B the subscriber acknowledges only what arrives before a quarter of the stream;
    # what follows stays unacknowledged (B holds up to its in-flight window of them).
    n = args.count
    sub = Client(args.mqtt_b, "sub@B", cid, ack_first=n // 4)
    sub.wait_connack()
    sub.sub(topic)
    pub = Publisher(args.port)
    probes = probe_until_received(pub, sub, topic)

    confirmed, infos = [], []
    kill_at = None

    def publish_all():
        for i in range(n):
            infos.append((str(i), pub.publish(topic, str(i))))
            time.sleep(0.01)
    t = threading.Thread(target=publish_all, daemon=True)
    t.start()
    # Kill B mid-stream, once it has sent 20 messages the subscriber did not acknowledge.
    wait_for(lambda: sum(p.isdigit() for p, _, _ in sub.got()) >= n // 4 + 20, T,
             lambda: f"sub@B got {len(sub.got())} before the kill")
    before = sub.got()
    kill_at = time.monotonic()
    os.kill(args.kill_pid, signal.SIGKILL)
    wait_for(lambda: dead(args.kill_pid), T, "router B still running after SIGKILL")
    sub.close()
    got_on_b = [p for p, _, _ in sub.got() if p.isdigit()]

    # The same client id on C, clean start 0, no SUBSCRIBE: the session resumes there.
    again = Client(args.mqtt_c, "sub@C", cid)
    again.wait_connack()
    resumed_at = time.monotonic()
    expect(again.connack[1], f"sub@C: session present not set: {again.connack}")

    t.join(T)
    for p, info in infos:
        info.wait_for_publish(T)
        expect(info.is_published(), f"message {p}: no PUBACK")
        confirmed.append(p)
    expect(len(confirmed) == n, f"{len(confirmed)} of {n} confirmed")

    def received():
        return {p for p, _, _ in sub.got() + again.got() if p.isdigit()}
    wait_for(lambda: received() >= set(confirmed), 3 * T,
             lambda: f"lost: {sorted(set(confirmed) - received(), key=int)[:30]} "
                     f"({len(set(confirmed) - received())} of {n})")
    # What B held unacknowledged comes again once JetStream's ack wait ran out for B.
    unacked = {p for p, _, _ in sub.got() if p.isdigit()} - sub.acked
    wait_for(lambda: unacked <= {p for p, dup, _ in again.got() if dup}, 3 * T,
             lambda: f"not acknowledged on B, not (yet) redelivered with DUP on C: "
                     f"{sorted(unacked - {p for p, dup, _ in again.got() if dup}, key=int)[:20]}")
    # Let late redeliveries come in before counting duplicates.
    time.sleep(1)
    on_c = [(p, dup, at) for p, dup, at in again.got() if p.isdigit()]
    seen_on_b = set(got_on_b)
    dups = [p for p, _, _ in on_c if p in seen_on_b]
    flagged = [p for p, dup, _ in on_c if dup]
    unflagged_dups = [p for p, dup, _ in on_c if p in seen_on_b and not dup]
    dups_on_b = len(got_on_b) - len(seen_on_b)
    dups_on_c = len(on_c) - len({p for p, _, _ in on_c})
    expect(not unflagged_dups, f"received again without DUP: {unflagged_dups[:20]}")
    flagged_set = set(flagged)
    expect(unacked <= flagged_set,
           f"not acknowledged on B, not redelivered with DUP on C: {sorted(unacked - flagged_set, key=int)[:20]}")
    expect(dups_on_b == 0 and dups_on_c == 0,
           f"duplicates within one connection: B {dups_on_b}, C {dups_on_c}")
    redelivered = [at for p, dup, at in on_c if dup]
    first = min((at for _, _, at in on_c), default=None)
    expect(first is not None, "nothing arrived on C")
    if redelivered:
        expect(min(redelivered) - kill_at < 10,
               f"first redelivery {min(redelivered) - kill_at:.2f} s after the kill (limit 10 s)")
    print(f"{n} QoS 1 messages confirmed on A; subscriber got {len(seen_on_b)} on B "
          f"({len(before)} when B was killed, {len(unacked)} of them not acknowledged), {len(on_c)} on C after resuming there "
          f"{resumed_at - kill_at:.2f} s after the kill (session present); 0 lost; "
          f"{len(dups)} received twice, all flagged DUP ({len(flagged)} DUP-flagged on C); "
          f"first message on C {first - kill_at:.2f} s after the kill"
          + (f", first redelivery {min(redelivered) - kill_at:.2f} s" if redelivered else "")
          + f" ({probes} probes first)")
    again.close()
    pub.bye()


def race():
    base = uniq("rc")
    topic = f"{base}/data"
    pub = Publisher(args.mqtt_b)
    winners = {"A": 0, "C": 0}
    for r in range(args.rounds):
        cid = uniq(f"race{r}")
        a = Client(args.port, f"A{r}", cid, connect=False)
        c = Client(args.mqtt_c, f"C{r}", cid, connect=False)
        go = threading.Barrier(2)

        def start(x):
            go.wait()
            x.connect()
        ts = [threading.Thread(target=start, args=(x,)) for x in (a, c)]
        for x in ts:
            x.start()
        for x in ts:
            x.join(T)
        for x in (a, c):
            x.wait_connack()
        # Exactly one is taken over (0x8E); the other stays.
        wait_for(lambda: a.gone.is_set() or c.gone.is_set(), T,
                 f"round {r}: both clients still connected: one client id served by two routers")
        time.sleep(1.0)
        gone = [x for x in (a, c) if x.gone.is_set()]
        expect(len(gone) == 1, f"round {r}: {len(gone)} clients disconnected: "
                               f"{[(x.name, x.disconnected) for x in (a, c)]}")
        loser = gone[0]
        winner = c if loser is a else a
        expect(loser.disconnected == TAKEN_OVER,
               f"round {r}: {loser.name} disconnected with {loser.disconnected}, not 0x8E")
        winners[winner.name[0]] += 1
        # The survivor serves the session: it subscribes and gets a message from B.
        winner.sub(topic)
        probe_until_received(pub, winner, topic)
        expect(not winner.gone.is_set(), f"round {r}: {winner.name} lost its connection")
        loser.close()
        winner.close()
    # A plain takeover: the session (and its subscription) moves from A to C.
    cid = uniq("move")
    a = Client(args.port, "A", cid)
    a.wait_connack()
    a.sub(topic)
    probe_until_received(pub, a, topic)
    c = Client(args.mqtt_c, "C", cid)
    c.wait_connack()
    expect(c.connack[1], f"C: session present not set: {c.connack}")
    wait_for(lambda: a.gone.is_set(), T, "A still connected after C took the session")
    expect(a.disconnected == TAKEN_OVER, f"A disconnected with {a.disconnected}, not 0x8E")
    pub.publish(topic, "after-move").wait_for_publish(T)
    wait_for(lambda: any(p == "after-move" for p, _, _ in c.got()), T,
             lambda: f"C did not get what its resumed subscription matches: {c.got()}")
    print(f"{args.rounds} races for one client id on A and C: exactly one kept it each time "
          f"(A won {winners['A']}, C {winners['C']}), the other disconnected with 0x8E; "
          f"a takeover from A to C kept the subscription")
    a.close()
    c.close()
    pub.bye()


{"resume": resume, "race": race}[args.scenario]()
print("ok")
