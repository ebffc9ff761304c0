"""The crash test, clustered (tests/cluster_crash.rs): three routers A, B, C over the NATS
JetStream rig under mixed persistent load, one of them killed with SIGKILL at random (N
times) and started again over its data directory under a new node name (a killed
router's name stays taken for up to 6 s: docs/cluster.md, "Running"). Its clients go to
another router. The flows, each client on a router picked at random and moving on when
its router dies or now and then on its own:

- STOMP: two publishers SEND persistent messages with receipts to the durable queue
  `cc.s`; two consumers (client-individual, ACKs with receipts) take `cc.s` and `cc.a`;
- MQTT 5: two QoS 1 publishers to the topic `cc/m`; two subscribers with persistent
  sessions (clean start 0 after the first connection, resumed wherever they reconnect);
- AMQP in: pika publishes with confirms to the RabbitMQ queue `P.ain`, which every
  router's AMQP link consumes (RabbitMQ spreads it over them), routed to `cc.a`;
- AMQP out: a STOMP publisher SENDs to `cc.o`, routed by the entering router's link to
  the RabbitMQ queue `P.aout`, which pika consumes.

At the end, publishing stops, everything is drained, and:
- every confirmed message (RECEIPT, PUBACK, RabbitMQ confirm) was received at least once
  (by each MQTT session);
- order as docs/cluster.md documents it ("order is kept except across redelivery"): on
  each consumer connection, the confirmed messages of one producer that were not flagged
  redelivered come in publish order (the AMQP flows are exempt: RabbitMQ spreads `P.ain`
  over three links, each a separate publisher into the stream, and `cc.o` goes out
  through the link of whichever router the publisher was on);
- a STOMP or MQTT message delivered again carries `redelivered:true` / DUP (the AMQP
  flows may store a message twice, unflagged: a link killed between storing and
  acknowledging gets it again from RabbitMQ). A consumer leaving may read a delivery
  the router wrote before it saw it leave after another thread read that message's
  flagged redelivery: allowed once per message (crashkit.Ledger.delivered, `late`);
- the session of each MQTT subscriber is present on every resumption;
- no router panicked, each stops cleanly at the end.
Duplicates and counts are printed as one JSON line, then "ok".

Usage: cluster_crash.py --bin SWITCHBOARD --dir WORKDIR --config SETTINGS --cluster URLS
                        --amqp-prefix P [--kills N] [--seed S]
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
from sbtest import expect, fail, wait_for  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import pika  # noqa: E402
import stomp  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--bin", required=True)
p.add_argument("--dir", required=True)
p.add_argument("--config", required=True)
p.add_argument("--cluster", required=True)
p.add_argument("--amqp-prefix", required=True)
p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
p.add_argument("--kills", type=int, default=20)
p.add_argument("--seed", type=int, default=None)
args = p.parse_args()
seed = args.seed if args.seed is not None else random.randrange(1 << 30)
rng = random.Random(seed)    # the kills: which router, when
crng = random.Random(seed + 1)  # the clients' moves (threads: not replayable exactly)
began = time.monotonic()

STOMP_PRODUCERS = ["s0", "s1"]
MQTT_PRODUCERS = ["m0", "m1"]
MQTT_SUBSCRIBERS = ["sub0", "sub1"]
AMQP_IN, AMQP_OUT = f"{args.amqp_prefix}.ain", f"{args.amqp_prefix}.aout"
# Ledger keys: what order is checked over (a queue or a session, and a producer).
ORDERED = [f"cc.s/{s}" for s in STOMP_PRODUCERS] + [f"{sub}/{m}" for sub in MQTT_SUBSCRIBERS for m in MQTT_PRODUCERS]
UNORDERED = ["cc.a/a0", "rabbit/o0"]
# A message whose ACK was confirmed with a RECEIPT never comes back: the RECEIPT waits
# until the acknowledgement reached the NATS server (only routers are killed here). Not
# checked on cc.a: a link killed between storing a RabbitMQ delivery and acking it gets
# it again from RabbitMQ and stores it a second time, a new message with the same body.
ledger = Ledger(ORDERED + UNORDERED, strict_acks=[k for k in ORDERED + UNORDERED if k != "cc.a/a0"])
# Paces each publisher (the load's schedule, not a wait for an event): the rig shares
# two cores with the routers and NATS.
PACE = 0.03

stop = threading.Event()          # publishers stop
consuming = threading.Event()     # consumers go on while set
consuming.set()
settled = threading.Event()       # consumers stay where they are (the drain)
subscribed = {s: threading.Event() for s in MQTT_SUBSCRIBERS}
connections = iter(range(1 << 62))
moves = {"stomp": 0, "mqtt": 0, "resumed": 0}
routes_dir = os.path.join(args.dir, "routes")
os.makedirs(routes_dir, exist_ok=True)
routers = [Router(args.bin, os.path.join(args.dir, n), n) for n in "abc"]


def start(r):
    """Starts `r` under a node name it has not used (`a0`, `a1`...)."""
    r.start(["--routes", routes_dir, "--config", args.config, "--cluster", args.cluster, "--node", f"{r.name}{r.starts}"])


def pick(avoid=None):
    """A running router, not `avoid` when another runs: (router, its addresses)."""
    while True:
        up = [r for r in routers if r.up.is_set()]
        choice = [r for r in up if r is not avoid] or up
        if choice:
            r = crng.choice(choice)
            return r, dict(r.addr)
        time.sleep(0.01)


def note(what):
    print(f"[{time.monotonic() - began:6.1f}] {what}", file=sys.stderr, flush=True)


# --- STOMP --------------------------------------------------------------------------------

def stomp_connect(addr):
    c = stomp.Connection12([addr["stomp"]], heartbeats=(0, 0), reconnect_attempts_max=1, timeout=2)
    lis = Listener(ledger)
    c.set_listener("l", lis)
    c.connect(wait=True)
    return c, lis


def quietly(f):
    try:
        f()
    except Exception:
        pass


def stomp_publisher(producer, dest, key):
    seq, last = 0, None
    while not stop.is_set():
        c = None
        last, addr = pick(last)
        try:
            c, lis = stomp_connect(addr)
            while not stop.is_set():
                body = f"{producer}:{seq}:{uuid.uuid4().hex[:8]}"
                rid = f"{producer}-{body}"
                c.send(dest, body, headers={"persistent": "true", "receipt": rid})
                if not lis.wait_receipt(rid, 5):
                    break  # the same seq again, as another message, on another router
                ledger.confirm(key, body)
                seq += 1
                time.sleep(PACE)
        except Exception:
            time.sleep(0.02)
        finally:
            if c is not None:
                quietly(c.disconnect)
            moves["stomp"] += 1


def stomp_consumer(name):
    last = None
    while consuming.is_set():
        c = None
        last, addr = pick(last)
        conn = f"{name}#{next(connections)}@{last.name}{last.starts - 1}"
        try:
            c, lis = stomp_connect(addr)

            def on_msg(frame, c=c, conn=conn, lis=lis):
                q = frame.headers["destination"].rsplit("/", 1)[-1]
                key = f"{q}/{frame.body.split(':', 1)[0]}"
                ledger.delivered(key, frame.body, frame.headers.get("redelivered") == "true", "redelivered:true",
                                 conn=conn, check_flag=q == "cc.s", late=lis.leaving.is_set())
                c.ack(frame.headers["ack"], receipt=ledger.ack_sent(key, frame.body))

            lis.on_msg = on_msg
            for i, q in enumerate(["cc.s", "cc.a"]):
                c.subscribe(f"/queue/{q}", id=str(i), ack="client-individual", headers={"prefetch-count": "20"})
            # Now and then leave with deliveries unacknowledged (given back, flagged) and
            # come back elsewhere: the schedule of the load.
            lis.gone.wait(None if settled.is_set() else crng.uniform(1.0, 4.0))
            while settled.is_set() and consuming.is_set() and not lis.gone.is_set():
                lis.gone.wait(0.1)
        except Exception:
            time.sleep(0.02)
        finally:
            if c is not None:
                lis.leaving.set()
                quietly(c.disconnect)
            moves["stomp"] += 1


# --- MQTT ---------------------------------------------------------------------------------

def mqtt_client(client_id, on_connack):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                    reconnect_on_failure=False)
    gone = threading.Event()
    c.on_connect = on_connack
    c.on_disconnect = lambda *a: gone.set()
    return c, gone


def mqtt_publisher(producer):
    for ev in subscribed.values():
        ev.wait()
    seq, last = 0, None
    while not stop.is_set():
        last, addr = pick(last)
        connected = threading.Event()
        c, gone = mqtt_client(f"{args.amqp_prefix}-{producer}-{uuid.uuid4().hex[:6]}",
                              lambda _c, _u, _f, rc, _p: connected.set() if not rc.is_failure else None)
        try:
            c.connect(*addr["mqtt"], keepalive=30, clean_start=True)
            c.loop_start()
            if not connected.wait(5):
                continue
            while not stop.is_set() and not gone.is_set():
                body = f"{producer}:{seq}:{uuid.uuid4().hex[:8]}"
                info = c.publish("cc/m", body, qos=1)
                info.wait_for_publish(timeout=5)
                if not info.is_published():
                    break
                for sub in MQTT_SUBSCRIBERS:
                    ledger.confirm(f"{sub}/{producer}", body)
                seq += 1
                time.sleep(PACE)
        except Exception:
            time.sleep(0.02)
        finally:
            quietly(c.disconnect)
            quietly(c.loop_stop)
            moves["mqtt"] += 1


def mqtt_subscriber(sub):
    """A persistent session (expiry 600 s): made with clean start 1 and subscribed once,
    then resumed with clean start 0 on whichever router it reconnects to."""
    last, fresh = None, True
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    while consuming.is_set():
        last, addr = pick(last)
        conn = f"{sub}#{next(connections)}@{last.name}{last.starts - 1}"
        connack = {}
        connected = threading.Event()

        def on_connack(_c, _u, flags, rc, _p, connack=connack, connected=connected):
            connack.update(rc=rc, present=flags.session_present)
            connected.set()

        c, gone = mqtt_client(f"{args.amqp_prefix}-{sub}", on_connack)

        def on_message(_c, _u, m, conn=conn):
            body = m.payload.decode()
            ledger.delivered(f"{sub}/{body.split(':', 1)[0]}", body, m.dup, "DUP", conn=conn)

        c.on_message = on_message
        suback = threading.Event()
        c.on_subscribe = lambda *a: suback.set()
        try:
            c.connect(*addr["mqtt"], keepalive=30, clean_start=fresh, properties=props)
            c.loop_start()
            if not connected.wait(5) or connack["rc"].is_failure:
                continue
            if fresh:
                c.subscribe("cc/m", qos=1)
                if not suback.wait(5):
                    continue
                fresh = False
                subscribed[sub].set()
            elif not connack["present"]:
                ledger.violation(f"{sub}: session not present on {conn}")
            else:
                moves["resumed"] += 1
            gone.wait(None if settled.is_set() else crng.uniform(2.0, 5.0))
            while settled.is_set() and consuming.is_set() and not gone.is_set():
                gone.wait(0.1)
        except Exception:
            time.sleep(0.02)
        finally:
            quietly(c.disconnect)
            quietly(c.loop_stop)
            moves["mqtt"] += 1


# --- AMQP (pika against RabbitMQ) -----------------------------------------------------------

def rabbit():
    return pika.BlockingConnection(pika.URLParameters(args.amqp_url))


def amqp_publisher():
    seq = 0
    while not stop.is_set():
        conn = None
        try:
            conn = rabbit()
            ch = conn.channel()
            ch.confirm_delivery()
            while not stop.is_set():
                body = f"a0:{seq}:{uuid.uuid4().hex[:8]}"
                ch.basic_publish("", AMQP_IN, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
                ledger.confirm("cc.a/a0", body)  # basic_publish returned: confirmed (raises otherwise)
                seq += 1
                time.sleep(PACE)
        except Exception as e:
            note(f"amqp publisher: {e!r}")
            time.sleep(0.1)
        finally:
            if conn is not None:
                quietly(conn.close)


def amqp_consumer():
    while consuming.is_set():
        conn = None
        try:
            conn = rabbit()
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)

            def on_msg(ch, method, _props, body):
                ledger.delivered("rabbit/o0", body.decode(), method.redelivered, "redelivered", conn="pika", check_flag=False)
                ch.basic_ack(method.delivery_tag)

            ch.basic_consume(AMQP_OUT, on_msg)
            while consuming.is_set():
                conn.process_data_events(time_limit=0.2)
        except Exception as e:
            note(f"amqp consumer: {e!r}")
            time.sleep(0.1)
        finally:
            if conn is not None:
                quietly(conn.close)


def declare_rabbit_queues():
    conn = rabbit()
    ch = conn.channel()
    for q in (AMQP_IN, AMQP_OUT):
        ch.queue_declare(q, durable=True, arguments={"x-expires": 600000})
    conn.close()


def delete_rabbit_queues():
    try:
        conn = rabbit()
        ch = conn.channel()
        for q in (AMQP_IN, AMQP_OUT):
            ch.queue_delete(q)
        conn.close()
    except Exception as e:
        note(f"deleting the RabbitMQ queues: {e!r}")


# --- the run ------------------------------------------------------------------------------

def confirmed_counts():
    return {k: ledger.confirmed_count(k) for k in ORDERED + UNORDERED}


def run():
    declare_rabbit_queues()
    for r in routers:
        start(r)
    publishers = [threading.Thread(target=stomp_publisher, args=(s, "/queue/cc.s", f"cc.s/{s}"), daemon=True)
                  for s in STOMP_PRODUCERS]
    publishers.append(threading.Thread(target=stomp_publisher, args=("o0", "/queue/cc.o", "rabbit/o0"), daemon=True))
    publishers += [threading.Thread(target=mqtt_publisher, args=(m,), daemon=True) for m in MQTT_PRODUCERS]
    publishers.append(threading.Thread(target=amqp_publisher, daemon=True))
    consumers = [threading.Thread(target=stomp_consumer, args=(f"c{i}",), daemon=True) for i in range(2)]
    consumers += [threading.Thread(target=mqtt_subscriber, args=(s,), daemon=True) for s in MQTT_SUBSCRIBERS]
    consumers.append(threading.Thread(target=amqp_consumer, daemon=True))
    for t in consumers + publishers:
        t.start()
    for s in MQTT_SUBSCRIBERS:
        expect(subscribed[s].wait(20), f"{s}: never subscribed")
    note("load running")

    # The kills come at random moments, down for a random while: the schedule of the
    # chaos (seeded: the same routers at the same moments on a replay).
    kills = {r.name: 0 for r in routers}
    for k in range(args.kills):
        time.sleep(rng.uniform(1.5, 4.0))
        r = rng.choice(routers)
        r.kill()
        kills[r.name] += 1
        note(f"kill {k + 1}: {r.name}{r.starts - 1}; {confirmed_counts()}")
        time.sleep(rng.uniform(0.0, 0.5))
        t0 = time.monotonic()
        start(r)
        note(f"  {r.name}{r.starts - 1} ready after {time.monotonic() - t0:.2f} s")
    loaded = time.monotonic()

    at_last = confirmed_counts()
    wait_for(lambda: all(n >= at_last[k] + 5 for k, n in confirmed_counts().items()), 30,
             lambda: f"load after the last restart: {at_last} then {confirmed_counts()} (seed {seed})")
    stop.set()
    settled.set()
    for t in publishers:
        t.join(15)
    note(f"publishers stopped; draining {confirmed_counts()}")
    t0 = time.monotonic()
    wait_for(lambda: not any(ledger.missing().values()), 45,
             lambda: f"confirmed but never received: { {k: v[:10] for k, v in ledger.missing().items() if v} } (seed {seed})")
    drained = time.monotonic() - t0
    consuming.clear()
    for t in consumers:
        t.join(10)
    codes = {r.name: r.stop() for r in routers}

    summary = {"seed": seed, "kills": kills, "load_s": round(loaded - began, 1), "drain_s": round(drained, 1),
               "run_s": round(time.monotonic() - began, 1), **ledger.counts, **moves}
    for k in ORDERED + UNORDERED:
        summary[k] = ledger.figures(k)
    flows = {"stomp": [k for k in ORDERED if k.startswith("cc.s/")], "mqtt": [k for k in ORDERED if k.startswith("sub")],
             "amqp_in": ["cc.a/a0"], "amqp_out": ["rabbit/o0"]}
    summary["totals"] = {f: {x: sum(summary[k][x] for k in keys)
                             for x in ("confirmed", "received", "duplicates", "flagged", "reordered_flagged")}
                         for f, keys in flows.items()}
    note(json.dumps(summary))
    for k in ORDERED:
        breaches = ledger.out_of_order(k)
        expect(not breaches, f"{k}: unflagged deliveries out of publish order on one connection "
                             f"(connection, seq before, seq after): {breaches[:10]} (seed {seed})")
    for k in ORDERED + UNORDERED:
        expect(summary[k]["confirmed"] > 20, f"{k}: too little load got through: {summary[k]}")
    expect(not ledger.violations, f"crash semantics broken (seed {seed}):\n" + "\n".join(ledger.violations))
    for r in routers:
        expect(not r.panicked(), f"{r.name} panicked; see {r.log_path}")
    expect(all(c == 0 for c in codes.values()), f"exit codes at the end: {codes}")
    print(json.dumps(summary))
    print("ok")


try:
    run()
except SystemExit:
    raise
except BaseException as e:
    fail(f"driver error: {e!r}")
finally:
    for r in routers:
        if r.proc is not None and r.proc.poll() is None:
            r.proc.kill()
    delete_rabbit_queues()
