"""AMQP link scenarios: pika (an independent AMQP 0-9-1 client) on the RabbitMQ side, stomp.py on
the router side. The Rust test (tests/amqp.rs) writes the routes and settings, starts the router,
and runs one scenario.

Usage: amqp_scenarios.py --port STOMP_PORT --admin-port PORT --prefix P SCENARIO [--ctl rabbitmq-ctl.sh]
Names in RabbitMQ and in the router start with P, so scenarios can share one RabbitMQ.
"""

import datetime
import decimal
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, expect_traffic, fail, mqtt5_responder, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import pika  # noqa: E402
import stomp  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--prefix", required=True),
                             p.add_argument("--admin-port", type=int, required=True),
                             p.add_argument("--amqp-port", type=int, default=5672),
                             p.add_argument("--mqtt-port", type=int),
                             p.add_argument("--ctl")))
P = args.prefix
T = args.timeout
UTC = datetime.timezone.utc
AMQP = pika.ConnectionParameters("127.0.0.1", args.amqp_port, "/", pika.PlainCredentials("guest", "guest"),
                                 heartbeat=30, blocked_connection_timeout=60)


def amqp():
    c = pika.BlockingConnection(AMQP)
    return c, c.channel()


def links():
    with urllib.request.urlopen(f"http://127.0.0.1:{args.admin_port}/links", timeout=5) as r:
        return {l["name"]: l for l in json.load(r)}


def queue_exists(name):
    c, ch = amqp()
    try:
        ch.queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if c.is_open:
            c.close()


def queue_depth(name):
    c, ch = amqp()
    try:
        return ch.queue_declare(name, passive=True).method.message_count
    finally:
        c.close()


def stomp_conn():
    c = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


def consume_n(ch, queue, n, timeout=None):
    """Consume n messages from queue with pika (acking), return [(method, props, body)]."""
    got = []
    deadline = time.monotonic() + (timeout or T)
    for method, props, body in ch.consume(queue, inactivity_timeout=0.2):
        if method is not None:
            got.append((method, props, body))
            ch.basic_ack(method.delivery_tag)
        if len(got) >= n or time.monotonic() > deadline:
            break
    ch.cancel()
    expect(len(got) >= n, f"{queue}: got {len(got)} of {n}: {[b for _, _, b in got][:10]!r}")
    return got


# ---------------------------------------------------------------------------------------


def inbound():
    """pika → exchange → declared queue → router → STOMP, in order with properties mapped; acked only
    once accepted (queue drains to 0); an untranslatable message is rejected and RabbitMQ dead-letters it."""
    wait_for(lambda: queue_exists(f"{P}.in") and queue_exists(f"{P}.dlq"), T, "route topology declared")
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.out", id="1", ack="auto")
    c, ch = amqp()
    ch.confirm_delivery()
    n = 200
    for i in range(n):
        ch.basic_publish(f"{P}.x", f"order.created.{i % 3}", f"m{i}".encode(), pika.BasicProperties(
            content_type="text/plain", correlation_id=f"c{i}", delivery_mode=2, priority=3,
            message_id=f"id{i}", type="order", app_id="shop",
            headers={"region": "eu", "count": i, "ok": True}))
    # This one names no `region`: the route's target template cannot render → rejected, dead-lettered.
    ch.basic_publish(f"{P}.x", "order.bad", b"bad", pika.BasicProperties(headers={"kind": "bad"}))
    col.wait_messages(n)
    bodies = col.bodies()
    expect(bodies == [f"m{i}" for i in range(n)], f"order kept: {bodies[:10]}")
    h = col.messages[5].headers
    for k, v in {"content-type": "text/plain", "correlation-id": "c5", "persistent": "true", "priority": "3",
                 "region": "eu", "count": "5", "ok": "true", "x-amqp-type": "order", "x-amqp-app-id": "shop",
                 "x-amqp-routing-key": "order.created.2", "x-amqp-exchange": f"{P}.x"}.items():
        expect(h.get(k) == v, f"header {k}: {h.get(k)!r} != {v!r} in {h}")
    types = json.loads(h["x-amqp-types"])
    expect(types.get("count") in ("i8", "i16", "i32", "i64") and types.get("ok") == "bool", f"types {types}")
    got = consume_n(ch, f"{P}.dlq", 1)
    _, props, body = got[0]
    expect(body == b"bad", f"dead-lettered body {body!r}")
    death = props.headers["x-death"][0]
    expect(death["reason"] == "rejected" and death["queue"] == f"{P}.in", f"x-death {death}")
    wait_for(lambda: queue_depth(f"{P}.in") == 0, T, "every message acked in RabbitMQ")
    st = links()["rabbit"]
    expect(st["counters"]["received"] >= n and st["counters"]["rejected"] >= 1, f"counters {st}")
    # 200 taken from RabbitMQ (bodies m0…m199: 690 bytes; the rejected one not counted)
    # and written to the STOMP subscriber.
    body_bytes = sum(len(f"m{i}") for i in range(n))
    expect_traffic(args.admin_port, T, amqp=(n, body_bytes, 0, 0), stomp=(0, 0, n, body_bytes))
    c.close()
    s.disconnect()
    print("ok")


def durable_before():
    """Persistent (delivery_mode 2) and transient messages consumed by the link into a
    router queue nobody reads: RabbitMQ's queue drains, i.e. the link acked every one,
    which it does only once the router has them (the persistent ones on disk)."""
    wait_for(lambda: queue_exists(f"{P}.in"), T, "route topology declared")
    c, ch = amqp()
    ch.confirm_delivery()
    for i in range(100):
        ch.basic_publish(f"{P}.x", "order.created", f"p{i}".encode(), pika.BasicProperties(delivery_mode=2))
    for i in range(10):
        ch.basic_publish(f"{P}.x", "order.created", f"t{i}".encode(), pika.BasicProperties(delivery_mode=1))
    # Ready *and* unacknowledged: zero once the link has acked every one.
    wait_for(lambda: queue_total(f"{P}.in") == 0, T, "every message acked by the link")
    c.close()
    print("ok")


def queue_total(name):
    """Messages in a queue, ready and unacknowledged (rabbitmqctl's `messages`)."""
    for line in ctl("list_queues", "-q", "name", "messages").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return int(parts[1])
    return None


def durable_after():
    """After kill -9 and a restart: the 100 persistent messages, in order; the transient
    ones were in memory only."""
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.out", id="1", ack="auto")
    # A marker sent to the queue now comes after everything recovered into it.
    s.send(f"/queue/{P}.out", "marker")
    col.wait_messages(101)
    bodies = col.bodies()
    expect(bodies == [f"p{i}" for i in range(100)] + ["marker"], f"after restart: {bodies[:5]}… ({len(bodies)}) …{bodies[-3:]}")
    s.disconnect()
    print("ok")


def outbound():
    """STOMP → router → exchange + templated routing key with confirms; properties mapped; an unroutable
    message (mandatory return) and one for a missing exchange end in the internal dead-letter queue."""
    wait_for(lambda: queue_exists(f"{P}.q2"), T, "route topology declared")
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.dead", id="d", ack="auto")
    n = 100
    exp = int(time.time() * 1000) + 600_000
    # Unroutable messages interleaved with routable ones: RabbitMQ confirms them in batches
    # (multiple acks), and each return must still be paired with its own message.
    lost = 20
    for i in range(n):
        headers = {"kind": "created", "persistent": "true", "priority": "6", "correlation-id": f"k{i}",
                   "expires": str(exp), "x-trace": f"t{i}"}
        if i == 7:
            headers["message-id"] = "mid-7"
        if i == 8:
            del headers["priority"]
        s.send(f"/queue/{P}.send", f"e{i}", content_type="application/json", headers=headers)
        if i % 5 == 0:
            s.send(f"/queue/{P}.send", f"lost{i // 5}", headers={"kind": "nowhere"})
    s.send(f"/queue/{P}.nox", "nox", receipt="r")
    col.wait_receipt("r")
    c, ch = amqp()
    got = consume_n(ch, f"{P}.q2", n)
    expect([b.decode() for _, _, b in got] == [f"e{i}" for i in range(n)], "order kept")
    m, props, _ = got[7]
    expect(m.routing_key == "ev.created" and m.exchange == f"{P}.x2", f"{m}")
    expect(props.delivery_mode == 2 and props.priority == 6 and props.correlation_id == "k7"
           and props.content_type == "application/json", f"{props}")
    expect(props.headers.get("x-trace") == "t7" and "kind" in props.headers, f"{props.headers}")
    expect(props.expiration is not None and 0 < int(props.expiration) <= 600_000, f"expiration {props.expiration}")
    expect(props.message_id == "mid-7", f"the publisher's message id: {props.message_id}")
    # Only what the message carries: no router-made id, no priority for none given
    # (RabbitMQ reads a missing priority as 0; 4, the default, would jump the queue).
    _, props8, _ = got[8]
    expect(props8.message_id is None and props8.priority is None, f"{props8}")
    # Every message sent is accounted for (confirmed or dead-lettered) before a marker
    # goes to the dead-letter queue: it comes after every dead letter.
    accounted = lambda: (lambda c: c["published"] + c["dead_lettered"])(links()["rabbit"]["counters"])  # noqa: E731
    wait_for(lambda: accounted() >= n + lost + 1, T + 10, lambda: f"messages accounted for: {links()['rabbit']['counters']}")
    s.send(f"/queue/{P}.dead", "marker")
    col.wait_messages(lost + 2, "dead-lettered")
    expect(col.messages[-1].body == "marker", f"nothing after the marker: {col.bodies()}")
    reasons = sorted((m.body, m.headers.get("x-death-reason")) for m in col.messages[:-1])
    want = sorted([(f"lost{j}", "unroutable") for j in range(lost)] + [("nox", "no-exchange")])
    expect(reasons == want, f"dead letters {reasons}")
    d = next(m for m in col.messages if m.body == "lost0").headers
    expect(d.get("x-death-destination") == f"amqp:rabbit/{P}.x2/ev.nowhere" and "NO_ROUTE" in d.get("x-death-detail", ""),
           f"dead-letter headers {d}")
    st = links()["rabbit"]["counters"]
    expect(st["published"] == n and st["dead_lettered"] == lost + 1 and st["publish_failures"] == 3 * lost, f"{st}")
    # STOMP in: the n events, the unroutable ones, `nox` and the marker. AMQP out: only the
    # n RabbitMQ confirmed and did not return (a return after its confirm is taken back).
    # STOMP out: the dead letters and the marker.
    events = sum(len(f"e{i}") for i in range(n))
    dead = sum(len(f"lost{j}") for j in range(lost)) + len("nox")
    expect_traffic(args.admin_port, T, stomp=(n + lost + 2, events + dead + len("marker"), lost + 2, dead + len("marker")),
                   amqp=(0, 0, n, events))
    c.close()
    s.disconnect()
    print("ok")


def nacked():
    """RabbitMQ nacks publishes to a full queue with x-overflow reject-publish: each is retried
    (bounded), then dead-lettered with reason `nacked`; the one that fits is published."""
    wait_for(lambda: queue_exists(f"{P}.full"), T, "topology")
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.dead", id="d", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    for i in range(3):
        s.send(f"/queue/{P}.fill", f"f{i}")
    col.wait_messages(2, "dead-lettered", timeout=T)
    reasons = sorted((m.body, m.headers.get("x-death-reason")) for m in col.messages)
    expect(reasons == [("f1", "nacked"), ("f2", "nacked")], f"dead letters {reasons}")
    expect(queue_depth(f"{P}.full") == 1, "the first fits")
    st = links()["rabbit"]["counters"]
    expect(st["published"] == 1 and st["dead_lettered"] == 2 and st["publish_failures"] == 6, f"{st}")
    s.disconnect()
    print("ok")


def roundtrip():
    """AMQP → router → AMQP: every property and typed header (nested tables, arrays, widths) survives."""
    wait_for(lambda: queue_exists(f"{P}.rt_in") and queue_exists(f"{P}.rt_out"), T, "topology")
    c, ch = amqp()
    headers = {"s": "text", "i": 42, "neg": -7, "big": 2**40, "dec": decimal.Decimal("1.50"), "b": False,
               "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "raw": b"\x00\xff", "none": None,
               "nested": {"k": "v", "n": 1, "arr": [1, "two", {"x": True}], "t": datetime.datetime(2020, 1, 1, tzinfo=UTC),
                          "d": decimal.Decimal("-0.25")},
               "list": ["a", 3]}
    ts = 1_700_000_000
    props = pika.BasicProperties(content_type="application/json", content_encoding="utf-8", headers=headers,
                                 delivery_mode=2, priority=9, correlation_id="corr", reply_to=f"{P}.replies",
                                 expiration="600000", message_id="mid-1", timestamp=ts, type="t", user_id="guest",
                                 app_id="app")
    ch.basic_publish("", f"{P}.rt_in", b"\x00\x01binary\xff", props)
    _, got, body = consume_n(ch, f"{P}.rt_out", 1)[0]
    expect(body == b"\x00\x01binary\xff", f"body {body!r}")
    for f in ["content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "message_id",
              "timestamp", "type", "user_id", "app_id", "reply_to"]:
        expect(getattr(got, f) == getattr(props, f), f"{f}: {getattr(got, f)!r} != {getattr(props, f)!r}")
    expect(0 < int(got.expiration) <= 600000, f"expiration {got.expiration}")
    expect(got.headers == headers, f"headers {got.headers} != {headers}")
    c.close()
    print("ok")


def rpc_stomp_to_amqp():
    """A STOMP requester with reply-to reaches a pika worker; the worker replies to reply_to with the
    correlation id (RabbitMQ direct reply-to on the router's side); the reply reaches the requester
    with its own correlation id."""
    wait_for(lambda: queue_exists(f"{P}.work"), T, "topology")
    stop = threading.Event()

    def worker():
        c, ch = amqp()
        for method, props, body in ch.consume(f"{P}.work", inactivity_timeout=0.1):
            if stop.is_set():
                break
            if method is None:
                continue
            ch.basic_publish("", props.reply_to, b"re:" + body,
                             pika.BasicProperties(correlation_id=props.correlation_id))
            ch.basic_ack(method.delivery_tag)
        c.close()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    s, col = stomp_conn()
    # (a /temp-queue/ is the connection's own: replies arrive without a SUBSCRIBE)
    for i in range(20):
        s.send(f"/queue/{P}.ask", f"q{i}", headers={"reply-to": "/temp-queue/answers", "correlation-id": f"c{i}"})
    col.wait_messages(20, "replies")
    pairs = sorted((m.body, m.headers.get("correlation-id")) for m in col.messages)
    expect(pairs == sorted((f"re:q{i}", f"c{i}") for i in range(20)), f"replies {pairs}")
    stop.set()
    t.join(5)
    s.disconnect()
    expect(links()["rabbit"]["counters"]["replies"] >= 20, "replies counted")
    print("ok")


def rpc_mqtt5_to_amqp():
    """An MQTT 5 requester (response topic + binary correlation data) reaches a pika worker through
    the router; the worker's reply comes back on the response topic with the correlation data."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    wait_for(lambda: queue_exists(f"{P}.work5"), T, "topology")
    stop = threading.Event()

    def worker():
        c, ch = amqp()
        for method, props, body in ch.consume(f"{P}.work5", inactivity_timeout=0.1):
            if stop.is_set():
                break
            if method is None:
                continue
            ch.basic_publish("", props.reply_to, b"re:" + body,
                             pika.BasicProperties(correlation_id=props.correlation_id, content_type="text/plain"))
            ch.basic_ack(method.delivery_tag)
        c.close()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    got = []
    subscribed = threading.Event()
    m = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{P}-req", protocol=mqtt.MQTTv5)
    m.on_message = lambda _c, _u, msg: got.append(msg)
    m.on_subscribe = lambda *_a: subscribed.set()
    m.connect("127.0.0.1", args.mqtt_port)
    m.loop_start()
    m.subscribe(f"{P}/answers", qos=1)
    expect(subscribed.wait(T), "SUBACK")
    for i in range(5):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{P}/answers"
        props.CorrelationData = bytes([0, 255, i])
        m.publish(f"{P}/ask", f"q{i}", qos=1, properties=props).wait_for_publish(T)
    wait_for(lambda: len(got) >= 5, T, lambda: f"replies: {[g.payload for g in got]}")
    pairs = sorted((g.payload, g.properties.CorrelationData) for g in got)
    expect(pairs == sorted((f"re:q{i}".encode(), bytes([0, 255, i])) for i in range(5)), f"replies {pairs}")
    expect(all(g.topic == f"{P}/answers" for g in got), "on the response topic")
    stop.set()
    t.join(5)
    m.loop_stop()
    m.disconnect()
    print("ok")


def direct_reply_requests(n=10):
    """pika sends n requests `jobI` to P.req with direct reply-to and correlation ids `rI`;
    every reply must come back as `done:jobI` with its correlation id."""
    c, ch = amqp()
    replies = []
    ch.basic_consume("amq.rabbitmq.reply-to", lambda _c, _m, p, b: replies.append((p.correlation_id, b)),
                     auto_ack=True)
    for i in range(n):
        ch.basic_publish("", f"{P}.req", f"job{i}".encode(),
                         pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=f"r{i}"))
    deadline = time.monotonic() + T
    while len(replies) < n and time.monotonic() < deadline:
        c.process_data_events(time_limit=0.1)
    c.close()
    expect(sorted(replies) == sorted((f"r{i}", f"done:job{i}".encode()) for i in range(n)), f"replies {replies}")


def rpc_amqp_to_stomp():
    """A pika requester using direct reply-to reaches a STOMP responder through the router; the
    responder replies to the reply-to header it got; pika gets the reply with its correlation id."""
    wait_for(lambda: queue_exists(f"{P}.req"), T, "topology")
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.jobs", id="j", ack="auto")

    class Responder(stomp.ConnectionListener):
        def on_message(self, frame):
            s.send(frame.headers["reply-to"], "done:" + frame.body,
                   headers={"correlation-id": frame.headers.get("correlation-id", "")})

    s.set_listener("r", Responder())
    direct_reply_requests()
    s.disconnect()
    print("ok")


def rpc_amqp_to_mqtt5():
    """A pika requester using direct reply-to reaches an MQTT 5 responder through the router: the
    responder gets a response topic and correlation data, publishes its answer there, and pika
    gets it with its correlation id."""
    wait_for(lambda: queue_exists(f"{P}.req"), T, "topology")
    resp = mqtt5_responder(args.mqtt_port, f"$queue/{P}.jobs", lambda body: b"done:" + body, T)
    direct_reply_requests()
    resp.loop_stop()
    resp.disconnect()
    print("ok")


def rpc_amqp_to_amqp():
    """A pika requester (direct reply-to) and a pika worker on different queues, the router in
    between: the worker replies to the reply_to it got (the router's), the requester gets it."""
    wait_for(lambda: queue_exists(f"{P}.req") and queue_exists(f"{P}.work"), T, "topology")
    stop = threading.Event()

    def worker():
        wc, wch = amqp()
        for method, props, body in wch.consume(f"{P}.work", inactivity_timeout=0.1):
            if stop.is_set():
                break
            if method is None:
                continue
            wch.basic_publish("", props.reply_to, b"done:" + body, pika.BasicProperties(correlation_id=props.correlation_id))
            wch.basic_ack(method.delivery_tag)
        wc.close()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        direct_reply_requests()
    finally:
        stop.set()
        t.join(5)
    print("ok")


def topology():
    """A conflicting declaration (PRECONDITION_FAILED) is reported with its route and does not stop the
    link's other routes; a reload declares the new route's topology."""
    wait_for(lambda: links().get("rabbit", {}).get("topology_errors", {}).get(f"{P}-conflict"), T,
             lambda: f"conflict reported: {links()}")
    err = links()["rabbit"]["topology_errors"][f"{P}-conflict"]
    expect("PRECONDITION_FAILED" in err or "406" in err, f"error text: {err}")
    # The other route works: pika → P.ok → router → STOMP.
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.ok_out", id="1", ack="auto")
    c, ch = amqp()
    ch.basic_publish("", f"{P}.ok", b"fine")
    col.wait_messages(1)
    expect(col.bodies() == ["fine"], f"{col.bodies()}")
    c.close()
    s.disconnect()
    print("ok")


def after_reload():
    """Run after the test added a route file: its exchange and queue get declared and consumed."""
    wait_for(lambda: queue_exists(f"{P}.late"), T, "declared on reload")
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.late_out", id="1", ack="auto")
    c, ch = amqp()
    ch.basic_publish(f"{P}.late_x", "k", b"late")
    col.wait_messages(1)
    c.close()
    s.disconnect()
    print("ok")


def ctl(*a):
    r = subprocess.run([args.ctl, "ctl", *a], capture_output=True, text=True, timeout=120)
    expect(r.returncode == 0, f"rabbitmqctl {a}: {r.stdout} {r.stderr}")
    return r.stdout


def restart_under_load():
    """RabbitMQ stop_app/start_app while messages flow both ways: every message arrives (duplicates
    allowed and counted), the link reconnects and re-declares, consumers resume."""
    wait_for(lambda: queue_exists(f"{P}.fi") and queue_exists(f"{P}.fo"), T, "topology")
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.fi_out", id="1", ack="auto")
    n = 3000
    confirmed = set()
    done = threading.Event()

    def publisher():
        # pika publishes into RabbitMQ with confirms, reconnecting through the restart.
        i = 0
        while i < n:
            try:
                c, ch = amqp()
                ch.confirm_delivery()
                while i < n:
                    ch.basic_publish("", f"{P}.fi", f"in{i}".encode(), pika.BasicProperties(delivery_mode=2))
                    confirmed.add(f"in{i}")
                    i += 1
                    time.sleep(0.001)  # a steady stream, not a burst
                c.close()
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.2)  # the unconfirmed one is sent again: duplicates are allowed
        done.set()

    t = threading.Thread(target=publisher, daemon=True)
    t.start()
    # Meanwhile the STOMP side sends through the router to RabbitMQ.
    sender_done = threading.Event()

    sent = [0]

    def stomp_sender():
        for i in range(n):
            s.send(f"/queue/{P}.fo_in", f"out{i}", headers={"persistent": "true"})
            sent[0] = i + 1
            time.sleep(0.001)  # a steady stream, not a burst
        sender_done.set()

    t2 = threading.Thread(target=stomp_sender, daemon=True)
    t2.start()
    wait_for(lambda: len(confirmed) > n // 5, T, "some traffic before the restart")
    ctl("stop_app")
    try:
        # Down until the link has noticed and the STOMP side has sent on into the outage.
        wait_for(lambda: links()["rabbit"]["state"] != "connected", T, lambda: f"the link noticed: {links()['rabbit']}")
        at = sent[0]
        wait_for(lambda: sent[0] >= min(n, at + 200), T, lambda: f"STOMP sends during the outage: {sent[0] - at}")
    finally:
        # Whatever failed, RabbitMQ comes back: every later test needs it.
        ctl("start_app")
    expect(done.wait(120) and sender_done.wait(120), "publishers finished")
    col.wait_messages(len(confirmed), "inbound after restart", timeout=90)
    wait_for(lambda: confirmed <= set(col.bodies()), 60, lambda: f"missing inbound {sorted(confirmed - set(col.bodies()))[:10]}")
    in_dupes = len(col.bodies()) - len(set(col.bodies()))
    c, ch = amqp()
    seen = []
    deadline = time.monotonic() + 90
    want = {f"out{i}" for i in range(n)}
    for method, _props, body in ch.consume(f"{P}.fo", inactivity_timeout=0.5):
        if method is not None:
            seen.append(body.decode())
            ch.basic_ack(method.delivery_tag)
        if want <= set(seen) or time.monotonic() > deadline:
            break
    missing = want - set(seen)
    expect(not missing, f"outbound lost {len(missing)}: {sorted(missing)[:10]}")
    out_dupes = len(seen) - len(set(seen))
    # On a loaded machine the traffic can be through before RabbitMQ is back: the link
    # must still reconnect, however long RabbitMQ takes to start.
    reconnected = lambda st: st["counters"]["reconnects"] >= 1 and st["state"] == "connected"
    wait_for(lambda: reconnected(links()["rabbit"]), 60, lambda: f"link {links()['rabbit']}")
    st = links()["rabbit"]
    print(f"inbound {len(confirmed)} confirmed, {in_dupes} duplicates; outbound {n}, {out_dupes} duplicates; "
          f"counters {st['counters']}", file=sys.stderr)
    c.close()
    s.disconnect()
    print("ok")


def blocked():
    """A memory alarm blocks the router's connection: messages wait in the core (nothing lost), the
    link reports `blocked`, and everything flows once the alarm clears."""
    wait_for(lambda: queue_exists(f"{P}.bq"), T, "topology")
    ctl("set_vm_memory_high_watermark", "0.000001")
    try:
        s, col = stomp_conn()
        for i in range(50):
            s.send(f"/queue/{P}.b_in", f"b{i}")
        wait_for(lambda: links()["rabbit"]["state"] == "blocked", T, lambda: f"link state {links()['rabbit']}")
    finally:
        ctl("set_vm_memory_high_watermark", "0.4")
    wait_for(lambda: links()["rabbit"]["state"] == "connected", T, "unblocked")
    c, ch = amqp()
    got = consume_n(ch, f"{P}.bq", 50, timeout=30)
    expect(sorted(b.decode() for _, _, b in got) == sorted(f"b{i}" for i in range(50)), "all delivered")
    c.close()
    s.disconnect()
    print("ok")


def tls_publish():
    """STOMP → router → (AMQPS link) → RabbitMQ → pika."""
    wait_for(lambda: queue_exists(f"{P}.tls"), T, "declared over TLS")
    s, col = stomp_conn()
    for i in range(10):
        s.send(f"/queue/{P}.tls_in", f"t{i}")
    c, ch = amqp()
    got = consume_n(ch, f"{P}.tls", 10)
    expect([b.decode() for _, _, b in got] == [f"t{i}" for i in range(10)], "in order")
    c.close()
    s.disconnect()
    print("ok")


def router_queue(name):
    with urllib.request.urlopen(f"http://127.0.0.1:{args.admin_port}/queues", timeout=5) as r:
        return next((q for q in json.load(r)["queues"] if q["name"] == name), None)


def paced():
    """A RabbitMQ source feeding a link that cannot publish (link `down`) stops pulling once that
    link's queue holds 1,000 waiting messages (+1 on its way in): the rest waits in RabbitMQ. Another
    source of the same link keeps flowing meanwhile."""
    wait_for(lambda: queue_exists(f"{P}.pace") and queue_exists(f"{P}.other"), T, "topology")
    c, ch = amqp()
    for i in range(3000):
        ch.basic_publish("", f"{P}.pace", f"m{i}".encode())
    state = lambda: ((router_queue("$sb.link.down") or {}).get("ready"), queue_total(f"{P}.pace"))  # noqa: E731
    wait_for(lambda: state() == (1001, 1999), T, lambda: f"(link queue ready, RabbitMQ's messages): {state()}")
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.out", id="o", ack="auto")
    for i in range(5):
        ch.basic_publish("", f"{P}.other", f"o{i}".encode())
    col.wait_messages(5, "the other source's messages")
    expect(col.bodies() == [f"o{i}" for i in range(5)], f"{col.bodies()}")
    expect(state() == (1001, 1999), f"still paced: {state()}")
    c.close()
    s.disconnect()
    print("ok")


SCENARIOS = {f.__name__: f for f in [inbound, outbound, nacked, roundtrip, rpc_stomp_to_amqp, rpc_mqtt5_to_amqp, rpc_amqp_to_stomp, rpc_amqp_to_mqtt5, rpc_amqp_to_amqp, topology,
                                     after_reload, restart_under_load, blocked, tls_publish, durable_before, durable_after, paced]}
if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}")
SCENARIOS[args.scenario]()
