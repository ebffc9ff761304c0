"""jq in routes with real clients (tests/jq.rs writes the routes and starts the router).

Usage: jq_scenarios.py --port STOMP_PORT [--mqtt-port PORT] [--prefix P] SCENARIO
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import stomp  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--prefix", default="t"),
                             p.add_argument("--mqtt-port", type=int)))
P = args.prefix
T = args.timeout


def stomp_conn():
    c = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


def mqtt_to_amqp():
    """paho publishes sensor JSON (QoS 1); the route's jq reshapes it into the job format a worker
    expects and sets a header; pika consumes it from the RabbitMQ queue the route declares."""
    import paho.mqtt.client as mqtt
    import pika
    params = pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest"))
    conn = pika.BlockingConnection(params)
    ch = conn.channel()

    def declared():
        try:
            pika.BlockingConnection(params).channel().queue_declare(f"{P}.work", passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False
    wait_for(declared, T, "the route declares the worker queue")
    m = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{P}-sensor")
    m.connect("127.0.0.1", args.mqtt_port)
    m.loop_start()
    readings = [{"id": "kitchen", "temp_f": 212.0, "hum": 40, "ts": 1700000000 + i} for i in range(3)]
    for r in readings:
        m.publish(f"{P}/sensors/{r['id']}/reading", json.dumps(r), qos=1).wait_for_publish(T)
    got = []
    deadline = time.monotonic() + T
    for method, props, body in ch.consume(f"{P}.work", inactivity_timeout=0.2):
        if method is not None:
            got.append((props, body))
            ch.basic_ack(method.delivery_tag)
        if len(got) >= 3 or time.monotonic() > deadline:
            break
    ch.cancel()
    expect(len(got) == 3, f"got {len(got)} of 3")
    for (props, body), r in zip(got, readings):
        job = json.loads(body)
        expect(job == {"task": "record-temperature", "device": "kitchen", "celsius": 100,
                       "measured_at": r["ts"]}, f"job {job!r}")
        expect(props.content_type == "application/json", f"content type {props.content_type}")
        expect((props.headers or {}).get("job-kind") == "temperature", f"headers {props.headers}")
    m.loop_stop()
    m.disconnect()
    conn.close()
    print("ok")


def stomp_filter():
    """when.jq: hot readings are diverted to alarms; cool ones, and a body that is not JSON, stay
    on the queue they were sent to."""
    c, col = stomp_conn()
    c.subscribe(f"/queue/{P}.alarms", id="a", ack="auto")
    c.subscribe(f"/queue/{P}.temps", id="t", ack="auto")
    for i, body in enumerate(['{"t": 31}', '{"t": 3}', 'not json', '{"t": 45}']):
        c.send(f"/queue/{P}.temps", body, headers={"receipt": f"r{i}"})
        col.wait_receipt(f"r{i}")
    col.wait_messages(4)
    by_dest = {}
    for f in col.messages:
        by_dest.setdefault(f.headers["destination"], []).append(f.body)
    expect(sorted(by_dest.get(f"/queue/{P}.alarms", [])) == ['{"t": 31}', '{"t": 45}'], f"alarms {by_dest}")
    expect(sorted(by_dest.get(f"/queue/{P}.temps", [])) == ['not json', '{"t": 3}'], f"temps {by_dest}")
    c.disconnect()
    print("ok")


def split():
    """A batch becomes three messages, in order; a batch over jq_max_outputs is refused (ERROR)
    and nothing of it is delivered."""
    c, col = stomp_conn()
    c.subscribe(f"/queue/{P}.items", id="i", ack="auto")
    batch = {"batch": 7, "items": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]}
    c.send(f"/queue/{P}.batches", json.dumps(batch), headers={"receipt": "b1", "content-type": "application/json"})
    col.wait_receipt("b1")
    col.wait_messages(3)
    items = [json.loads(b) for b in col.bodies()]
    expect(items == [{"batch": 7, "n": i, "sku": s} for i, s in enumerate("abc")], f"items {items}")
    expect(all(m.headers.get("content-type") == "application/json" for m in col.messages), "content type")
    big = {"batch": 8, "items": [{"sku": s} for s in "abcd"]}
    c.send(f"/queue/{P}.batches", json.dumps(big), headers={"receipt": "b2"})
    wait_for(lambda: col.errors, T, "an ERROR for the batch over the limit")
    msg = col.errors[0].headers.get("message", "") + col.errors[0].body
    expect("jq_max_outputs" in msg, f"error {msg!r}")
    expect("b2" not in col.receipts, "no receipt for the refused batch")
    # Nothing of the refused batch was delivered: a marker sent to the queue after it comes
    # first (the queue is FIFO).
    c2, col2 = stomp_conn()
    c2.subscribe(f"/queue/{P}.items", id="i2", ack="auto")
    c2.send(f"/queue/{P}.items", "end", headers={"receipt": "m"})
    col2.wait_messages(1)
    expect(col2.bodies() == ["end"], f"leftovers {col2.bodies()}")
    c2.disconnect()
    print("ok")


{"mqtt_to_amqp": mqtt_to_amqp, "stomp_filter": stomp_filter, "split": split}[args.scenario]()
