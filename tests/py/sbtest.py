"""Tiny helpers for the Python peer scripts that Switchboard's Rust tests run ($SWITCHBOARD_PYTHON).

    import sys, os; sys.path.insert(0, os.path.dirname(__file__))   # when the script lives in tests/py/
    from sbtest import fail, expect, parse_args, wait_for

    args = parse_args(lambda p: p.add_argument("--count", type=int, default=10))
    got = []
    ... connect to (args.host, args.port) ...
    wait_for(lambda: len(got) >= args.count, args.timeout, lambda: f"got {len(got)} of {args.count}")
    expect(got == sent, f"bodies differ: {got!r}")
    print("ok")

Exit status: 0 = pass, 1 = fail (message on stderr, prefixed 'FAIL:').
"""

import argparse
import sys
import time


def fail(msg):
    """Print msg to stderr and exit 1."""
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def expect(cond, msg):
    """fail(msg) unless cond."""
    if not cond:
        fail(msg)


def parse_args(extra=None, argv=None):
    """--host (default 127.0.0.1), --port (required), --timeout seconds (default 10).

    extra: optional function(parser) adding the script's own options. Unknown
    arguments are kept, not rejected, in args.rest.
    """
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    if extra:
        extra(p)
    args, rest = p.parse_known_args(argv)
    args.rest = rest
    return args


def wait_for(predicate, timeout=10.0, msg=None, interval=0.05):
    """Poll predicate() until it returns a truthy value (returned) or timeout seconds pass.

    On timeout: fail("timed out ...: " + msg) if msg is given (a string, or a function returning one,
    called at the timeout), else return None.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if msg is not None:
                fail(f"timed out after {timeout:g} s: {msg() if callable(msg) else msg}")
            return None
        time.sleep(interval)


TRAFFIC = ["switchboard_messages_received_total", "switchboard_payload_received_bytes_total",
           "switchboard_messages_delivered_total", "switchboard_payload_delivered_bytes_total"]
PROTOCOLS = ("stomp", "mqtt", "amqp", "xmpp")


def traffic(admin_port):
    """The router's traffic counters from `GET /metrics` (parsed by prometheus_client):
    protocol → (received, received bytes, delivered, delivered bytes)."""
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    got = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name in TRAFFIC:
                got.setdefault(smp.labels["protocol"], {})[smp.name] = smp.value
    return {p: tuple(v[n] for n in TRAFFIC) for p, v in got.items()}


def expect_traffic(admin_port, timeout, **want):
    """A fresh router's traffic counters reach exactly `want` (protocol=(received, bytes,
    delivered, bytes); protocols not named: all 0). A delivery is counted once written,
    which may be a moment after the client read it: waits; more than said never passes."""
    want = {p: want.get(p, (0, 0, 0, 0)) for p in PROTOCOLS}
    wait_for(lambda: traffic(admin_port) == want, timeout,
             lambda: f"traffic {traffic(admin_port)}, expected {want}")


def mqtt5_responder(port, topic, answer, timeout=10.0):
    """An MQTT 5 responder (paho): subscribes to `topic` and answers every request by
    publishing answer(payload) to its response topic with its correlation data. Returns the
    running client (loop_stop() and disconnect() it when done)."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    resp = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()

    def on_message(c, _u, m):
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = m.properties.CorrelationData
        c.publish(m.properties.ResponseTopic, answer(m.payload), qos=1, properties=props)

    resp.on_message = on_message
    resp.on_subscribe = lambda *a: subscribed.set()
    resp.connect("127.0.0.1", port)
    resp.loop_start()
    resp.subscribe(topic, qos=1)
    expect(subscribed.wait(timeout), f"SUBACK for {topic}")
    return resp
