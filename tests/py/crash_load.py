"""Crash test: persistent load from STOMP (stomp.py) and MQTT (paho-mqtt) publishers while
the daemon is killed with SIGKILL at random moments and restarted, with a STOMP consumer
(acknowledging each message with a receipt) and an MQTT QoS 1 consumer (persistent
session) taking messages as they go. At the end:
- every message whose publisher was confirmed (STOMP RECEIPT, MQTT PUBACK) was received at
  least once, in publish order per queue;
- no message whose ACK was confirmed with a RECEIPT was ever delivered again;
- every delivery of a message the consumer had already received carried the flag
  (STOMP `redelivered:true`, MQTT DUP), across restarts too.
Each send attempt has its own body (`SEQ:TOKEN`), so a publisher's resend is a different
message and "the same message again" always means a redelivery.

Usage: crash_load.py --bin SWITCHBOARD --dir WORKDIR [--kills N] [--seed S]
Prints one JSON summary line, then "ok"; exits 1 with a reason otherwise.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, wait_for  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import stomp  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--bin", required=True)
p.add_argument("--dir", required=True)
p.add_argument("--kills", type=int, default=20)
p.add_argument("--seed", type=int, default=None)
args = p.parse_args()
seed = args.seed if args.seed is not None else random.randrange(1 << 30)
rng = random.Random(seed)
crng = random.Random(seed + 1)

STOMP_QUEUES = ["crash.s0", "crash.s1"]
MQTT_QUEUE = "crash.m"
ALL = STOMP_QUEUES + [MQTT_QUEUE]
# Who consumes what: STOMP -> STOMP, STOMP -> MQTT, MQTT -> STOMP.
STOMP_CONSUMED = ["crash.s0", MQTT_QUEUE]
MQTT_CONSUMED = "crash.s1"

lock = threading.Lock()
confirmed = {q: [] for q in ALL}   # seqs whose publisher got its confirmation
received = {q: [] for q in ALL}    # seqs as delivered, duplicates included
seen = {q: set() for q in ALL}     # bodies delivered so far
acked = {q: set() for q in ALL}    # bodies whose ACK was confirmed with a RECEIPT
pending_acks = {}                  # receipt id -> (queue, body) of an ACK sent
violations = []                    # what broke the crash semantics
counts = {"redelivered": 0, "acks_receipted": 0}
stop = threading.Event()
up = threading.Event()
addr = {}
log_path = os.path.join(args.dir, "daemon.log")


class Daemon:
    def __init__(self):
        self.proc = None
        self.starts = 0

    def start(self):
        ready = os.path.join(args.dir, f"ready-{self.starts}.json")
        self.starts += 1
        cmd = [args.bin, "run", "--routes", os.path.join(args.dir, "routes"), "--data-dir", os.path.join(args.dir, "data"), "--ready-file", ready]
        for name in ["admin", "stomp", "mqtt"]:
            cmd += ["--listen", f"{name}=127.0.0.1:0"]
        for name in ["stomp-ws", "mqtt-ws"]:
            cmd += ["--listen", f"{name}=off"]
        log = open(log_path, "a")
        log.write(f"\n===== start {self.starts} =====\n")
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "SWITCHBOARD_LOG": "info"})
        deadline = time.monotonic() + 20
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                fail(f"daemon exited on start {self.starts} with {self.proc.returncode}; log {log_path}")
            if time.monotonic() > deadline:
                fail(f"daemon not ready on start {self.starts}")
            time.sleep(0.01)
        with open(ready) as f:
            listeners = json.load(f)["listeners"]
        with lock:
            for k, v in listeners.items():
                host, port = v.rsplit(":", 1)
                addr[k] = (host, int(port))
        up.set()

    def kill(self):
        up.clear()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("daemon did not stop on SIGTERM")


class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.receipts = set()
        self.gone = threading.Event()
        self.cond = threading.Condition()
        self.on_msg = None

    def on_receipt(self, frame):
        rid = frame.headers.get("receipt-id")
        with lock:
            done = pending_acks.pop(rid, None)
            if done is not None:
                acked[done[0]].add(done[1])
                counts["acks_receipted"] += 1
        with self.cond:
            self.receipts.add(rid)
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.gone.set()
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.gone.set()
            self.cond.notify_all()

    def on_message(self, frame):
        if self.on_msg:
            self.on_msg(frame)

    def wait_receipt(self, rid, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while rid not in self.receipts and not self.gone.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return rid in self.receipts


def stomp_connect():
    up.wait()
    with lock:
        hp = addr["stomp"]
    c = stomp.Connection12([hp], heartbeats=(0, 0), reconnect_attempts_max=1, timeout=2)
    lis = Listener()
    c.set_listener("l", lis)
    c.connect(wait=True)
    return c, lis


def stomp_publisher(queue):
    seq = 0
    tag = uuid.uuid4().hex[:6]
    while not stop.is_set():
        c = None
        try:
            c, lis = stomp_connect()
            while not stop.is_set():
                rid = f"{tag}-{seq}"
                body = f"{seq}:{uuid.uuid4().hex[:8]}"
                c.send(f"/queue/{queue}", body, headers={"persistent": "true", "receipt": rid})
                if not lis.wait_receipt(rid, 5):
                    break  # resend the same seq on a new connection
                with lock:
                    confirmed[queue].append(seq)
                seq += 1
        except Exception:
            time.sleep(0.02)
        finally:
            if c is not None:
                try:
                    c.disconnect()
                except Exception:
                    pass


def mqtt_publisher():
    seq = 0
    while not stop.is_set():
        up.wait()
        with lock:
            host, port = addr["mqtt"]
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crash-pub-" + uuid.uuid4().hex[:6], protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        try:
            c.connect(host, port, keepalive=30)
            c.loop_start()
            while not stop.is_set():
                info = c.publish(f"$queue/{MQTT_QUEUE}", f"{seq}:{uuid.uuid4().hex[:8]}", qos=1)
                info.wait_for_publish(timeout=5)
                if not info.is_published():
                    break
                with lock:
                    confirmed[MQTT_QUEUE].append(seq)
                seq += 1
        except Exception:
            time.sleep(0.02)
        finally:
            try:
                c.loop_stop()
                c.disconnect()
            except Exception:
                pass


def violation(what):
    if len(violations) < 20:
        violations.append(what)


def delivered(q, body, flagged, flag):
    """Records a delivery (under `lock`) and checks the crash semantics."""
    received[q].append(int(body.split(":")[0]))
    if body in acked[q]:
        violation(f"{q}: {body} delivered again after its ACK was confirmed with a RECEIPT ({flag}={flagged})")
    elif body in seen[q]:
        counts["redelivered"] += 1
        if not flagged:
            violation(f"{q}: {body} delivered again without {flag}")
    seen[q].add(body)


ack_ids = iter(range(1 << 62))


def consumer():
    while not stop.is_set() or consumer_more.is_set():
        c = None
        try:
            c, lis = stomp_connect()

            def on_msg(frame, c=c):
                q = frame.headers["destination"].rsplit("/", 1)[-1]
                with lock:
                    delivered(q, frame.body, frame.headers.get("redelivered") == "true", "redelivered:true")
                    rid = f"ack-{next(ack_ids)}"
                    pending_acks[rid] = (q, frame.body)
                c.ack(frame.headers["ack"], receipt=rid)

            lis.on_msg = on_msg
            for i, q in enumerate(STOMP_CONSUMED):
                c.subscribe(f"/queue/{q}", id=str(i), ack="client-individual", headers={"prefetch-count": "50"})
            # Leave now and then with deliveries unacknowledged, and stay away a little,
            # so kills find a backlog and unacknowledged messages, not just empty queues.
            lis.gone.wait(crng.uniform(0.2, 1.0) if consumer_more.is_set() and not stop.is_set() else None)
            if not lis.gone.is_set() and not stop.is_set():
                c.disconnect()
                time.sleep(crng.uniform(0.0, 0.5))
        except Exception:
            time.sleep(0.02)
        finally:
            if c is not None:
                try:
                    c.disconnect()
                except Exception:
                    pass


def mqtt_consumer():
    """QoS 1 from a persistent session (paho PUBACKs each message after on_message)."""
    while not stop.is_set() or consumer_more.is_set():
        up.wait()
        with lock:
            host, port = addr["mqtt"]
        gone = threading.Event()
        subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crash-sub", protocol=mqtt.MQTTv311, clean_session=False, reconnect_on_failure=False)

        def on_message(_c, _u, m):
            with lock:
                delivered(MQTT_CONSUMED, m.payload.decode(), m.dup, "DUP")

        c.on_message = on_message
        c.on_disconnect = lambda *a: gone.set()
        c.on_subscribe = lambda *a: subscribed.set()
        try:
            c.connect(host, port, keepalive=30)
            c.loop_start()
            c.subscribe(f"$queue/{MQTT_CONSUMED}", qos=1)
            # Leave now and then, as the STOMP consumer does.
            gone.wait(crng.uniform(0.3, 1.5) if consumer_more.is_set() and not stop.is_set() else None)
        except Exception:
            time.sleep(0.02)
        finally:
            try:
                c.disconnect()
                c.loop_stop()
            except Exception:
                pass
            if not gone.is_set() and not stop.is_set():
                time.sleep(crng.uniform(0.0, 0.5))


consumer_more = threading.Event()
consumer_more.set()
os.makedirs(os.path.join(args.dir, "routes"), exist_ok=True)
d = Daemon()
d.start()
threads = [threading.Thread(target=stomp_publisher, args=(q,), daemon=True) for q in STOMP_QUEUES]
threads.append(threading.Thread(target=mqtt_publisher, daemon=True))
threads.append(threading.Thread(target=consumer, daemon=True))
threads.append(threading.Thread(target=mqtt_consumer, daemon=True))
for t in threads:
    t.start()

# The kills come at random moments, down for a random while: these sleeps are the
# schedule of the chaos (seeded, so a failure can be replayed), not waits for an event.
for k in range(args.kills):
    time.sleep(rng.uniform(0.3, 1.2))
    d.kill()
    time.sleep(rng.uniform(0.0, 0.2))
    d.start()


def confirmed_counts():
    with lock:
        return {q: len(confirmed[q]) for q in ALL}


# Let the last run carry load on every queue, then stop publishing and drain.
at_last_start = confirmed_counts()
wait_for(lambda: all(n >= at_last_start[q] + 10 for q, n in confirmed_counts().items()), 30,
         lambda: f"load after the last restart: {at_last_start} then {confirmed_counts()} (seed {seed})")
stop.set()
for t in threads[:-2]:
    t.join(15)


def missing():
    with lock:
        return {q: sorted(set(confirmed[q]) - set(received[q])) for q in ALL}


wait_for(lambda: not any(missing().values()), 30, lambda: f"confirmed but never received: { {q: v[:10] for q, v in missing().items()} } (seed {seed})")
consumer_more.clear()
code = d.stop()

with lock:
    summary = {"seed": seed, "kills": args.kills, "starts": d.starts, **counts}
    for q in ALL:
        got = received[q]
        firsts, seen = [], set()
        for s in got:
            if s not in seen:
                seen.add(s)
                firsts.append(s)
        expect(firsts == sorted(firsts), f"{q}: out of order: first receipts {firsts[:50]} (seed {seed})")
        summary[q] = {"confirmed": len(confirmed[q]), "received": len(got), "duplicates": len(got) - len(seen), "unconfirmed_received": len(seen - set(confirmed[q]))}
    for q in ALL:
        expect(summary[q]["confirmed"] > 20, f"{q}: too little load got through: {summary[q]}")
    expect(not violations, f"crash semantics broken (seed {seed}, {summary}):\n" + "\n".join(violations))
with open(log_path) as f:
    text = f.read()
expect("panicked" not in text, f"the daemon panicked; see {log_path}")
expect(code == 0, f"final daemon exit {code}")
print(json.dumps(summary))
print("ok")
