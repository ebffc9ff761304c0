"""W3C trace context across protocols, with real clients: paho (MQTT 5), pika (AMQP, through
RabbitMQ and the router's AMQP link) and stomp.py. The Rust test (tests/trace.rs) writes the routes,
starts the router, runs one scenario, and then looks for the printed trace ids in the router's log.

Prints `trace TRACE_ID SPAN_ID` for each trace that should be in the router's log (SPAN_ID: the
parent id the receiver saw, which must be the router's span id), then `ok`.

Usage: trace_scenarios.py --port STOMP_PORT --mqtt-port PORT --prefix P SCENARIO
"""

import os
import re
import secrets
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import pika  # noqa: E402
import stomp  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--prefix", required=True),
                             p.add_argument("--mqtt-port", type=int, required=True),
                             p.add_argument("--amqp-port", type=int, default=5672)))
P = args.prefix
T = args.timeout
AMQP = pika.ConnectionParameters("127.0.0.1", args.amqp_port, "/", pika.PlainCredentials("guest", "guest"))
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_traceparent(flags="01"):
    trace, parent = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace}-{parent}-{flags}", trace, parent


def check_reparented(got, trace, parent, flags, what):
    """got is the traceparent a receiver saw: same trace and flags, a new parent id. Printed."""
    m = TRACEPARENT.match(got or "")
    expect(m is not None, f"{what}: no valid traceparent: {got!r}")
    expect(m.group(1) == trace, f"{what}: trace id {m.group(1)} != {trace}")
    expect(m.group(2) != parent, f"{what}: the parent id was not replaced: {got}")
    expect(m.group(3) == flags, f"{what}: flags {m.group(3)} != {flags}")
    print(f"trace {trace} {m.group(2)}", flush=True)
    return m.group(2)


def mqtt5(client_id):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", args.mqtt_port)
    c.loop_start()
    return c


def user_props(**kv):
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = list(kv.items())
    return props


def queue_exists(name):
    c = pika.BlockingConnection(AMQP)
    try:
        c.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if c.is_open:
            c.close()


def consume(ch, queue, n):
    got = []
    for method, props, body in ch.consume(queue, inactivity_timeout=T):
        if method is None:
            break
        got.append((props, body))
        ch.basic_ack(method.delivery_tag)
        if len(got) >= n:
            break
    ch.cancel()
    expect(len(got) == n, f"{queue}: got {len(got)} of {n}")
    return got


def stomp_conn():
    c = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


def mqtt5_to_amqp():
    """An MQTT 5 publisher's traceparent user property reaches a pika consumer (AMQP header) and a
    STOMP subscriber (the route's second copy): one trace id, the router's span as parent on both,
    tracestate unchanged. An invalid traceparent, and its tracestate, reach neither."""
    wait_for(lambda: queue_exists(f"{P}.traced"), T, "route topology declared")
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.copy", id="1", ack="auto", receipt="sub")
    col.wait_receipt("sub")
    tp, trace, parent = new_traceparent()
    m = mqtt5(f"{P}-pub")
    m.publish(f"{P}/traced", "valid", qos=1,
              properties=user_props(traceparent=tp, tracestate="vendor=abc,other=1", kept="yes")).wait_for_publish(T)
    m.publish(f"{P}/traced", "invalid", qos=1,
              properties=user_props(traceparent="00-" + "0" * 32 + f"-{parent}-01", tracestate="vendor=x",
                                    kept="yes")).wait_for_publish(T)
    c = pika.BlockingConnection(AMQP)
    ch = c.channel()
    got = consume(ch, f"{P}.traced", 2)
    (props, body), (bad_props, bad_body) = got
    expect((body, bad_body) == (b"valid", b"invalid"), f"order {body!r} {bad_body!r}")
    h = props.headers or {}
    span = check_reparented(h.get("traceparent"), trace, parent, "01", "pika")
    expect(h.get("tracestate") == "vendor=abc,other=1" and h.get("kept") == "yes", f"pika headers {h}")
    bh = bad_props.headers or {}
    expect("traceparent" not in bh and "tracestate" not in bh and bh.get("kept") == "yes",
           f"an invalid traceparent is not propagated: {bh}")
    c.close()
    col.wait_messages(2, "STOMP copies")
    sh = col.messages[0].headers
    expect(TRACEPARENT.match(sh.get("traceparent", "")) and sh["traceparent"].split("-")[2] == span,
           f"the STOMP copy has the same router span as parent: {sh.get('traceparent')} vs {span}")
    expect("traceparent" not in col.messages[1].headers, f"{col.messages[1].headers}")
    m.loop_stop()
    m.disconnect()
    s.disconnect()
    print("ok")


def stomp_to_mqtt5():
    """A STOMP SEND header traceparent reaches an MQTT 5 subscriber as a user property."""
    got = []
    subscribed = threading.Event()
    m = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{P}-sub", protocol=mqtt.MQTTv5)
    m.on_message = lambda _c, _u, msg: got.append(msg)
    m.on_subscribe = lambda *_a: subscribed.set()
    m.connect("127.0.0.1", args.mqtt_port)
    m.loop_start()
    m.subscribe(f"{P}/s2m", qos=1)
    expect(subscribed.wait(T), "SUBACK")
    s, col = stomp_conn()
    tp, trace, parent = new_traceparent("00")
    s.send(f"/queue/{P}.s2m", "hello", headers={"traceparent": tp, "tracestate": "a=1"}, receipt="r")
    col.wait_receipt("r")
    wait_for(lambda: got, T, "MQTT 5 delivery")
    up = dict(got[0].properties.UserProperty)
    check_reparented(up.get("traceparent"), trace, parent, "00", "MQTT 5 subscriber")
    expect(up.get("tracestate") == "a=1", f"user properties {up}")
    m.loop_stop()
    m.disconnect()
    s.disconnect()
    print("ok")


def amqp_to_stomp():
    """A pika publisher's traceparent AMQP header reaches a STOMP subscriber."""
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.a2s_out", id="1", ack="auto", receipt="sub")
    col.wait_receipt("sub")
    wait_for(lambda: queue_exists(f"{P}.a2s"), T, "route topology declared")
    c = pika.BlockingConnection(AMQP)
    ch = c.channel()
    tp, trace, parent = new_traceparent()
    ch.basic_publish("", f"{P}.a2s", b"from-amqp", pika.BasicProperties(headers={"traceparent": tp}))
    c.close()
    col.wait_messages(1, "STOMP delivery")
    check_reparented(col.messages[0].headers.get("traceparent"), trace, parent, "01", "STOMP subscriber")
    s.disconnect()
    print("ok")


def stomp_to_nowhere():
    """A traced STOMP message routed to an AMQP routing key no queue is bound to: RabbitMQ returns
    it, the link gives up after its attempts and dead-letters it; the copy read from the link's
    dead-letter queue still carries the router's traceparent (whose trace the link's warning names)."""
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.dead", id="1", ack="auto", receipt="sub")
    col.wait_receipt("sub")
    tp, trace, parent = new_traceparent()
    s.send(f"/queue/{P}.lost", "lost", headers={"traceparent": tp}, receipt="r")
    col.wait_receipt("r")
    col.wait_messages(1, "dead-lettered copy")
    h = col.messages[0].headers
    expect(h.get("x-death-reason") == "unroutable", f"dead-letter headers {h}")
    check_reparented(h.get("traceparent"), trace, parent, "01", "dead-lettered copy")
    s.disconnect()
    print("ok")


SCENARIOS = {f.__name__: f for f in [mqtt5_to_amqp, stomp_to_mqtt5, amqp_to_stomp, stomp_to_nowhere]}
if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}")
SCENARIOS[args.scenario]()
