"""The real clients around the console test in headless Chromium (tests/console.rs): a
paho-mqtt publisher that keeps a queue filling, and stomp.py dead-lettering a message
(NACK with requeue:false) and receiving it again once the console replayed it.

Usage: console_clients.py --port PORT SCENARIO [--body B] [--topic T] [--every S]
  publish      (MQTT port) QoS 1 to --topic, `fill-N` bodies every --every seconds, until killed
  dead_letter  (STOMP port) --body to /queue/work, received and rejected for good
  receive      (STOMP port) subscribes to /queue/work, prints `subscribed`, then waits for
               --body (the replayed dead letter, without its x-death headers)
"""

import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, parse_args  # noqa: E402
from stomptest import Collector  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--body", default=""),
                             p.add_argument("--topic", default="console/fill"),
                             p.add_argument("--every", type=float, default=0.1)))
H, P, T = args.host, args.port, args.timeout
U = uuid.uuid4().hex[:8]


def stomp_conn():
    import stomp
    c = stomp.Connection12([(H, P)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


def publish():
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"console-pub-{U}", protocol=mqtt.MQTTv311)
    c.connect(H, P)
    c.loop_start()
    i = 0
    deadline = time.monotonic() + 120  # never outlive a test that forgot to stop it
    while time.monotonic() < deadline:
        c.publish(args.topic, f"fill-{i}", qos=1).wait_for_publish(T)
        print(f"published {i}", flush=True)
        i += 1
        time.sleep(args.every)
    c.loop_stop()
    c.disconnect()
    print("ok")


def dead_letter():
    c, col = stomp_conn()
    c.send("/queue/work", args.body, receipt="sent", persistent="true")
    col.wait_receipt("sent")
    c.subscribe("/queue/work", id="w", ack="client-individual")
    col.wait_messages(1)
    m = col.messages[0]
    expect(m.body == args.body, f"got {m.body!r}")
    c.nack(m.headers["ack"], requeue="false", receipt="rejected")
    col.wait_receipt("rejected")
    c.disconnect()
    print("ok")


def receive():
    c, col = stomp_conn()
    c.subscribe("/queue/work", id="w", ack="client-individual", receipt="subscribed")
    col.wait_receipt("subscribed")
    print("subscribed", flush=True)
    col.wait_messages(1, "the replayed dead letter", timeout=90)
    m = col.messages[0]
    expect(m.body == args.body, f"got {m.body!r}")
    expect("x-death-reason" not in m.headers, f"x-death headers kept: {m.headers}")
    c.ack(m.headers["ack"])
    c.disconnect()
    print("ok")


{"publish": publish, "dead_letter": dead_letter, "receive": receive}[args.scenario]()
