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
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from crashkit import Ledger, Listener, Router  # noqa: E402
from sbtest import expect, wait_for  # noqa: E402

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

ledger = Ledger(ALL)
stop = threading.Event()
d = Router(args.bin, args.dir, "daemon")
ROUTES = ["--routes", os.path.join(args.dir, "routes")]


def stomp_connect():
    d.up.wait()
    c = stomp.Connection12([d.addr["stomp"]], heartbeats=(0, 0), reconnect_attempts_max=1, timeout=2)
    lis = Listener(ledger)
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
                ledger.confirm(queue, body)
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
        d.up.wait()
        host, port = d.addr["mqtt"]
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crash-pub-" + uuid.uuid4().hex[:6], protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        try:
            c.connect(host, port, keepalive=30)
            c.loop_start()
            while not stop.is_set():
                body = f"{seq}:{uuid.uuid4().hex[:8]}"
                info = c.publish(f"$queue/{MQTT_QUEUE}", body, qos=1)
                info.wait_for_publish(timeout=5)
                if not info.is_published():
                    break
                ledger.confirm(MQTT_QUEUE, body)
                seq += 1
        except Exception:
            time.sleep(0.02)
        finally:
            try:
                c.loop_stop()
                c.disconnect()
            except Exception:
                pass


def consumer():
    while not stop.is_set() or consumer_more.is_set():
        c = None
        try:
            c, lis = stomp_connect()

            def on_msg(frame, c=c):
                q = frame.headers["destination"].rsplit("/", 1)[-1]
                ledger.delivered(q, frame.body, frame.headers.get("redelivered") == "true", "redelivered:true")
                rid = ledger.ack_sent(q, frame.body)
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
        d.up.wait()
        host, port = d.addr["mqtt"]
        gone = threading.Event()
        subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crash-sub", protocol=mqtt.MQTTv311, clean_session=False, reconnect_on_failure=False)

        def on_message(_c, _u, m):
            ledger.delivered(MQTT_CONSUMED, m.payload.decode(), m.dup, "DUP")

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
d.start(ROUTES)
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
    d.start(ROUTES)


def confirmed_counts():
    return {q: ledger.confirmed_count(q) for q in ALL}


# Let the last run carry load on every queue, then stop publishing and drain.
at_last_start = confirmed_counts()
wait_for(lambda: all(n >= at_last_start[q] + 10 for q, n in confirmed_counts().items()), 30,
         lambda: f"load after the last restart: {at_last_start} then {confirmed_counts()} (seed {seed})")
stop.set()
for t in threads[:-2]:
    t.join(15)


wait_for(lambda: not any(ledger.missing().values()), 30,
         lambda: f"confirmed but never received: { {q: v[:10] for q, v in ledger.missing().items()} } (seed {seed})")
consumer_more.clear()
code = d.stop()

summary = {"seed": seed, "kills": args.kills, "starts": d.starts, **ledger.counts}
for q in ALL:
    firsts = ledger.first_deliveries(q)
    expect(firsts == sorted(firsts), f"{q}: out of order: first receipts {firsts[:50]} (seed {seed})")
    summary[q] = ledger.figures(q)
for q in ALL:
    expect(summary[q]["confirmed"] > 20, f"{q}: too little load got through: {summary[q]}")
expect(not ledger.violations, f"crash semantics broken (seed {seed}, {summary}):\n" + "\n".join(ledger.violations))
expect(not d.panicked(), f"the daemon panicked; see {d.log_path}")
expect(code == 0, f"final daemon exit {code}")
print(json.dumps(summary))
print("ok")
