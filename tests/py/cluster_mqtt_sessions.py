"""MQTT persistent sessions across three clustered routers A, B and C (tests/cluster_sessions.rs),
with paho-mqtt (MQTT 5): message ids are checked end to end.

    cluster_mqtt_sessions.py --port A_MQTT --mqtt-b P --mqtt-c P [--kill-pid B_PID] [--count N]
        [--qos 1|2] [--logs A,B,C] [--client-id ID] SCENARIO

Scenarios:
  resume    a QoS 1 subscriber with a persistent session on B, a QoS 1 publisher on A; B is
            killed (-9) mid-stream; the subscriber reconnects to C with the same client id and
            clean start 0 (no new SUBSCRIBE): every confirmed message arrives, a message
            received twice is flagged DUP the second time, the first redelivery within 10 s
  resume --qos 2   the same with QoS 2 (publisher and subscription): paho sends PUBREC itself
            and hands a message over at PUBREL, so "acknowledged" is what got its PUBREL; what
            paho held between PUBREC and PUBREL when B died comes again on C, flagged DUP
  wills     clients with wills (MQTT 5) on B, a subscriber to the will topics on A; B is killed:
            the will without delay (clean session) and the one with a 2 s delay (persistent
            session) arrive on A exactly once, within a bound; a client that reconnects to C
            right after the kill (delay 2 s), or 9 s after it (delay 15 s, by then the record
            was taken over), has no will published; a client that disconnected cleanly
            (DISCONNECT 0x00) before the kill neither
  expiry    a session with expiry 3 s on B (subscribed, messages queued after the kill); B is
            killed: exactly one of A and C takes its record over and ends it once the expiry has
            run (their logs), and a clean start 0 on C then finds no session
  pubrel-kill    QoS 2 deliveries whose PUBREL a raw-socket subscriber on B leaves unanswered
            (the others completed); B is killed; the subscriber resumes on C: each unanswered one
            comes again, flagged DUP, once; none lost
  pubrel-resume  the same subscriber leaves B with PUBRELs unanswered and resumes on B, then is
            taken over on B: the PUBRELs come again, the messages never; then it moves to C (B
            alive): those messages come again there (DUP), the completed ones never
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
from rawmqtt import RawSub  # noqa: E402

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
    p.add_argument("--qos", type=int, default=1),
    p.add_argument("--logs"),
    p.add_argument("--client-id"),
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

    def __init__(self, port, name, client_id, clean=False, connect=True, ack_first=None,
                 expiry=None, will=None):
        """`ack_first`: acknowledge (PUBACK) only the first N messages, the later ones never.
        `expiry`: the session expiry interval (default 0 if `clean`, else 300 s); `will`:
        (topic, payload, delay in s), sent with a user property from=b."""
        self.name, self.port, self.clean = name, port, clean
        self.expiry = expiry if expiry is not None else (0 if clean else 300)
        self.full = []  # (topic, payload, user properties)
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
        if will:
            topic, payload, delay = will
            wp = Properties(PacketTypes.WILLMESSAGE)
            wp.WillDelayInterval = delay
            wp.UserProperty = [("from", "b")]
            self.c.will_set(topic, payload, qos=1, properties=wp)
        if connect:
            self.connect()

    def connect(self):
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.expiry
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
        user = dict(getattr(m.properties, "UserProperty", None) or [])
        with self.lock:
            self.msgs.append((m.payload.decode(), m.dup, time.monotonic()))
            self.full.append((m.topic, m.payload.decode(), user, time.monotonic()))
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

    def sub(self, topic, qos=1):
        _, mid = self.c.subscribe(topic, qos)
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

    def __init__(self, port, qos=1):
        self.qos = qos
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uniq("pub"),
                             protocol=mqtt.MQTTv311, clean_session=True)
        ok = threading.Event()
        self.c.on_connect = lambda *a: ok.set()
        self.c.max_inflight_messages_set(20)
        self.c.connect(args.host, port)
        self.c.loop_start()
        expect(ok.wait(T), "publisher: no CONNACK")

    def publish(self, topic, payload):
        return self.c.publish(topic, payload, qos=self.qos)

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
    sub.sub(topic, args.qos)
    pub = Publisher(args.port, args.qos)
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
    # QoS 2: paho answered PUBREC itself and hands a message to the application only at
    # PUBREL; what it holds between the two when B dies is the PUBREL window.
    held_by_paho = ({m.payload.decode() for m in sub.c._in_messages.values()}
                    if args.qos == 2 else set())

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
    # (QoS 2: paho acknowledges by itself; what it held between PUBREC and PUBREL, not
    # handed over, must come again: the router settles those at PUBCOMP.)
    unacked = {p for p, _, _ in sub.got() if p.isdigit()} - sub.acked
    if args.qos == 2:
        unacked = {p for p in held_by_paho if p.isdigit()}
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
    print(f"{n} QoS {args.qos} messages confirmed on A; subscriber got {len(seen_on_b)} on B "
          f"({len(before)} when B was killed, {len(unacked)} of them not acknowledged), {len(on_c)} on C after resuming there "
          f"{resumed_at - kill_at:.2f} s after the kill (session present); 0 lost; "
          f"{len(dups)} received twice, all flagged DUP ({len(flagged)} DUP-flagged on C); "
          f"first message on C {first - kill_at:.2f} s after the kill"
          + (f", first redelivery {min(redelivered) - kill_at:.2f} s" if redelivered else "")
          + f" ({probes} probes first)"
          + (f"; paho held {len(held_by_paho)} PUBREC'd messages awaiting PUBREL when B "
             f"died, all of them again on C (DUP)"
             if args.qos == 2 else ""))
    again.close()
    pub.bye()


def logged(paths, *words):
    """True once a line of one of the router logs `paths` holds every one of `words`."""
    for path in paths:
        with open(path) as f:
            if any(all(w in line for w in words) for line in f):
                return True
    return False


def wills():
    expect(args.kill_pid, "this scenario needs --kill-pid (router B)")
    base = uniq("wl")
    wt = f"{base}/will"
    watch = Client(args.port, "watch@A", uniq("watch"), clean=True)
    watch.wait_connack()
    watch.sub(f"{wt}/#")
    pub = Publisher(args.mqtt_c)
    probe_until_received(pub, watch, f"{wt}/probe")
    ids = {k: uniq(k) for k in ("x0", "x2", "y2", "y15", "d")}
    delays = {"x0": 0, "x2": 2, "y2": 2, "y15": 15, "d": 0}
    on_b = {k: Client(args.mqtt_b, f"{k}@B", ids[k], clean=(k == "x0"),
                      will=(f"{wt}/{k}", f"{k} gone", delays[k])) for k in ids}
    for c in on_b.values():
        c.wait_connack()
    # d leaves cleanly (DISCONNECT 0x00): its will must never be published.
    on_b["d"].c.disconnect()
    wait_for(lambda: on_b["d"].gone.is_set(), T, "d@B: no clean disconnect")
    on_b["d"].close()
    # B must have recorded the clean end before it dies (its log says when), or its
    # record still holds the will of a connected client.
    if args.logs:
        wait_for(lambda: logged([args.logs.split(",")[1]], "session record written", ids["d"]), T,
                 "B did not record d's clean disconnect")

    kill_at = time.monotonic()
    os.kill(args.kill_pid, signal.SIGKILL)
    wait_for(lambda: dead(args.kill_pid), T, "router B still running after SIGKILL")
    for c in on_b.values():
        c.close()
    # y2 comes back on C at once, before its will's delay has passed anywhere.
    y2 = Client(args.mqtt_c, "y2@C", ids["y2"])
    y2.wait_connack()
    expect(y2.connack[1], f"y2@C: session present not set: {y2.connack}")

    def arrived(k):
        return [(p, u, at) for t, p, u, at in watch.full if t == f"{wt}/{k}"]
    wait_for(lambda: arrived("x0"), 15, "the will of x0 (no delay) did not arrive within 15 s of the kill")
    # y15 comes back on C 9 s after the kill: B's record was taken over by then (B is seen
    # dead 4 to 6 s after its death, plus a sweep of 1 s), its will is due 15 s after that.
    time.sleep(max(0.0, kill_at + 9 - time.monotonic()))
    y15 = Client(args.mqtt_c, "y15@C", ids["y15"])
    y15.wait_connack()
    expect(y15.connack[1], f"y15@C: session present not set: {y15.connack}")
    wait_for(lambda: arrived("x2"), 20 - (time.monotonic() - kill_at),
             "the will of x2 (delay 2 s) did not arrive within 20 s of the kill")
    # Count over a window past every will that could still come (y15's would be due at
    # most ~8 + 15 s after the kill).
    time.sleep(max(0.0, kill_at + 26 - time.monotonic()))
    counts = {k: len(arrived(k)) for k in ids}
    expect(counts == {"x0": 1, "x2": 1, "y2": 0, "y15": 0, "d": 0},
           f"wills published (expected x0 1, x2 1, others 0): {counts}")
    if args.logs:
        log_a, _, log_c = args.logs.split(",")
        expect(logged([log_a, log_c], "session of a dead router taken over", ids["y15"]),
               "y15's record was not taken over before it came back on C 9 s after the kill")
        for k in ("x0", "x2"):
            expect(sum(logged([p], "session of a dead router taken over", ids[k]) for p in (log_a, log_c)) == 1,
                   f"{k}'s record not taken over by exactly one of A and C")
    (p0, u0, at0), = arrived("x0")
    expect(p0 == "x0 gone" and u0.get("from") == "b", f"x0's will: {p0!r} {u0}")
    (_, _, at2), = arrived("x2")
    expect(at2 - at0 >= 1.5, f"x2's will (delay 2 s) {at2 - at0:.2f} s after x0's (no delay)")
    print(f"B killed: the will without delay arrived on A {at0 - kill_at:.2f} s after the kill, "
          f"the one with a 2 s delay {at2 - kill_at:.2f} s after it, each once (counted until "
          f"26 s); none for the clients back on C at once (delay 2 s) and after 9 s (delay 15 s), "
          f"none for the one that had disconnected cleanly")
    for c in (watch, y2, y15):
        c.close()
    pub.bye()


def expiry():
    expect(args.kill_pid and args.logs and args.client_id,
           "this scenario needs --kill-pid (router B), --logs (A, B, C) and --client-id")
    cid = args.client_id
    log_a, log_b, log_c = args.logs.split(",")
    topic = f"{uniq('ex')}/data"
    e = Client(args.mqtt_b, "e@B", cid, expiry=3)
    e.wait_connack()
    e.sub(topic)
    pub = Publisher(args.mqtt_c)
    probe_until_received(pub, e, topic)
    expect(logged([log_b], "shared queue open", f"$mqtt.s.{cid}"), "B: the session queue is not in the cluster")
    kill_at = time.monotonic()
    os.kill(args.kill_pid, signal.SIGKILL)
    wait_for(lambda: dead(args.kill_pid), T, "router B still running after SIGKILL")
    e.close()
    # Queued for the offline session meanwhile.
    for i in range(5):
        pub.publish(topic, f"m{i}").wait_for_publish(T)
    # One router (A or C) takes B's record over and ends the session at its expiry.
    wait_for(lambda: logged([log_a, log_c], "session expired", cid), 20,
             "no router ended the session within 20 s of the kill (session expiry 3 s)", interval=0.2)
    gone_at = time.monotonic()
    expect(gone_at - kill_at >= 3, f"session ended {gone_at - kill_at:.2f} s after the kill, before its expiry")
    adopters = [n for n, path in (("A", log_a), ("C", log_c))
                if logged([path], "session of a dead router taken over", cid)]
    expect(len(adopters) == 1, f"routers that took the session over: {adopters}")
    again = Client(args.mqtt_c, "e@C", cid, expiry=0)
    again.wait_connack()
    expect(not again.connack[1], f"e@C: session present after the session expired: {again.connack}")
    # An absence window: nothing of the expired session may arrive.
    time.sleep(1)
    expect(not again.got(), f"e@C: messages of the expired session: {again.got()[:5]}")
    print(f"session with expiry 3 s on B, B killed: taken over by {adopters[0]} alone, ended "
          f"{gone_at - kill_at:.2f} s after the kill; clean start 0 on C: session present 0, nothing queued")
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
        # An absence window: the other client must stay connected, not be kicked late.
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


def held_setup(port, name, n):
    """A raw subscriber (persistent session) on `port` that answers PUBREC to every message and
    PUBCOMP only to even ones; `n` QoS 2 messages published on A, confirmed, and a PUBREL
    received for each: the router had every PUBREC. Returns (client id, topic, subscriber,
    publisher, the odd payloads: their PUBREL unanswered)."""
    cid, topic = uniq("sess"), f"{uniq('q2')}/data"
    held = {str(i) for i in range(n) if i % 2}
    sub = RawSub(args.host, port, cid, complete=lambda p: p not in held, timeout=T, name=name)
    expect(sub.connect() == (0, False), f"{name}: CONNACK {sub.connack}")
    expect(sub.subscribe(topic, 2) == 2, f"{name}: SUBACK {sub.subacks}")
    pub = Publisher(args.port, 2)
    probe_until_received(pub, sub, topic)
    for i in range(n):
        info = pub.publish(topic, str(i))
        info.wait_for_publish(T)
        expect(info.is_published(), f"message {i}: not confirmed")
    wait_for(lambda: {p for _, p in sub.pubrels()} >= {str(i) for i in range(n)}, T,
             lambda: f"{name}: PUBREL for {sorted({p for _, p in sub.pubrels() if p})} only")
    return cid, topic, sub, pub, held


def published(c, payloads, dup=None):
    return [p for p, d, _ in c.got() if p in payloads and (dup is None or d == dup)]


def pubrel_kill():
    """QoS 2 messages whose PUBREL the subscriber has not answered (a client handing messages
    over at PUBREL, which never got it, has not handed them over) when B is killed: the client
    resumes on C and gets each again, flagged DUP; none lost."""
    expect(args.kill_pid, "this scenario needs --kill-pid (router B)")
    n = args.count
    cid, topic, sub, pub, held = held_setup(args.mqtt_b, "sub@B", n)
    kill_at = time.monotonic()
    os.kill(args.kill_pid, signal.SIGKILL)
    wait_for(lambda: dead(args.kill_pid), T, "router B still running after SIGKILL")
    sub.close()
    again = RawSub(args.host, args.mqtt_c, cid, timeout=T, known=sub.pids, name="sub@C")
    expect(again.connect() == (0, True), f"sub@C: CONNACK {again.connack} (want session present)")
    wait_for(lambda: held <= set(published(again, held, dup=True)), 3 * T,
             lambda: f"awaiting PUBCOMP on B, lost: {sorted(held - set(published(again, held)), key=int)} "
                     f"of {sorted(held, key=int)} (on C: {[(p, d) for p, d, _ in again.got()]})")
    arrived = max(at for p, d, at in again.got() if p in held)
    # Let late redeliveries come in before counting duplicates.
    pub.publish(topic, "marker").wait_for_publish(T)
    wait_for(lambda: published(again, {"marker"}), T, "sub@C: no marker")
    time.sleep(1)
    twice = [p for p in published(again, held) if published(again, {p}).count(p) > 1]
    expect(not twice, f"received twice on C: {twice}")
    done_again = published(again, {str(i) for i in range(n)} - held)
    expect(set(done_again) == set(published(again, set(done_again), dup=True)),
           f"completed on B, received again on C without DUP: {done_again}")
    print(f"{n} QoS 2 messages on B, PUBREC'd, {len(held)} of them with their PUBREL unanswered "
          f"when B was killed: all {len(held)} again on C flagged DUP (last "
          f"{arrived - kill_at:.2f} s after the kill), 0 lost, none twice on C; "
          f"{len(done_again)} completed on B came again (DUP)")
    again.close()
    pub.bye()


def pubrel_resume():
    """Pending PUBRELs on the same router: the subscriber leaves (no DISCONNECT) with PUBRELs
    unanswered and resumes on B; then a second connection takes the session over on B: each
    time the PUBRELs come again and the messages do not (no duplicate PUBLISH). Then the session
    moves to C with B alive: B gives those messages back, and C delivers them (DUP); the ones
    completed on B never come again."""
    n = args.count
    cid, topic, sub, pub, held = held_setup(args.mqtt_b, "sub@B", n)
    keep = lambda p: p not in held  # noqa: E731
    pids = {pid for pid, p in sub.pids.items() if p in held}
    conns = [sub]

    def no_publish_again(c, marker):
        wait_for(lambda: {pid for pid, _ in c.pubrels()} >= pids, T,
                 lambda: f"{c.name}: PUBRELs not sent again: {c.pubrels()} (want {sorted(pids)})")
        pub.publish(topic, marker).wait_for_publish(T)
        wait_for(lambda: published(c, {marker}), T, f"{c.name}: no {marker}")
        time.sleep(1)
        again = published(c, {str(i) for i in range(n)})
        expect(not again, f"{c.name}: PUBLISHed again although their PUBREL was resent: {again}")

    sub.close()
    again = RawSub(args.host, args.mqtt_b, cid, complete=keep, timeout=T, known=sub.pids,
                   name="sub@B again")
    expect(again.connect() == (0, True), f"{again.name}: CONNACK {again.connack}")
    conns.append(again)
    no_publish_again(again, "marker-1")
    over = RawSub(args.host, args.mqtt_b, cid, complete=keep, timeout=T, known=sub.pids,
                  name="sub@B takeover")
    expect(over.connect() == (0, True), f"{over.name}: CONNACK {over.connack}")
    conns.append(over)
    wait_for(lambda: again.closed.is_set(), T, "the connection taken over is still open")
    expect(again.disconnect == TAKEN_OVER, f"taken over with {again.disconnect}, not 0x8E")
    no_publish_again(over, "marker-2")
    over.close()
    moved = RawSub(args.host, args.mqtt_c, cid, timeout=T, known=sub.pids, name="sub@C")
    expect(moved.connect() == (0, True), f"{moved.name}: CONNACK {moved.connack}")
    conns.append(moved)
    wait_for(lambda: held <= set(published(moved, held, dup=True)), 3 * T,
             lambda: f"awaiting PUBCOMP on B, not given back to C: "
                     f"{sorted(held - set(published(moved, held)), key=int)}")
    pub.publish(topic, "marker-3").wait_for_publish(T)
    wait_for(lambda: published(moved, {"marker-3"}), T, "sub@C: no marker-3")
    time.sleep(1)
    twice = [p for p in held if published(moved, {p}).count(p) > 1]
    expect(not twice, f"received twice on C: {twice}")
    done = {str(i) for i in range(n)} - held
    back = [p for c in conns[1:] for p in published(c, done)]
    expect(not back, f"completed on B, delivered again: {back}")
    print(f"{n} QoS 2 messages on B, {len(held)} with their PUBREL unanswered: resumed on B and "
          f"taken over on B, the PUBRELs came again ({len(pids)} each time) and no message was "
          f"published again; moved to C: the {len(held)} came again there (DUP), once each; "
          f"the {len(done)} completed never again")
    moved.close()
    pub.bye()


{"resume": resume, "race": race, "wills": wills, "expiry": expiry,
 "pubrel-kill": pubrel_kill, "pubrel-resume": pubrel_resume}[args.scenario]()
print("ok")
