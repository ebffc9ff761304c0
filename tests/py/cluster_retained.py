"""Retained messages across clustered routers (tests/cluster_queues.rs, the retained
test): one step per run, against the router whose MQTT port is given.

    cluster_retained.py --port P set TOPIC PAYLOAD [--code N]
        a retained QoS 1 PUBLISH (MQTT 5); passes when its PUBACK carries reason code N
        (default: success, 0x00 or 0x10). An empty PAYLOAD clears the topic.
    cluster_retained.py --port P read FILTER --marker TOPIC [--expect TOPIC=PAYLOAD ...]
        a new subscriber to FILTER; it then publishes a live (not retained) marker to
        TOPIC, which FILTER matches, itself: the marker comes after whatever retained
        messages the SUBSCRIBE brought. Passes when those are exactly the expected
        ones, each flagged retained.
"""

import os
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, parse_args, wait_for  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.subscribeoptions import SubscribeOptions  # noqa: E402

args = parse_args(lambda p: (p.add_argument("step"), p.add_argument("topic"), p.add_argument("payload", nargs="?"),
                             p.add_argument("--code", type=lambda s: int(s, 0)), p.add_argument("--marker"),
                             p.add_argument("--expect", action="append", default=[])))


class Client:
    def __init__(self):
        self.cid = f"r-{uuid.uuid4().hex[:8]}"
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cid, protocol=mqtt.MQTTv5)
        self.lock = threading.Lock()
        self.msgs, self.acks, self.subacks = [], {}, {}
        self.connected = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.c.on_message = self._msg
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        self.c.connect(args.host, args.port)
        self.c.loop_start()
        expect(self.connected.wait(args.timeout), f"{self.cid}: no CONNACK")

    def _msg(self, c, u, m):
        with self.lock:
            self.msgs.append(m)

    def publish(self, topic, payload, retain):
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        wait_for(lambda: info.mid in self.acks, args.timeout, f"{self.cid}: no PUBACK for {topic}")
        return self.acks[info.mid]

    def bye(self):
        self.c.disconnect()
        self.c.loop_stop()


def step_set():
    c = Client()
    code = c.publish(args.topic, (args.payload or "").encode(), retain=True)
    wanted = [args.code] if args.code is not None else [0x00, 0x10]
    expect(code in wanted, f"PUBACK reason code {code:#x}, expected {[hex(w) for w in wanted]}")
    c.bye()


def step_read():
    expect(args.marker, "--marker TOPIC needed")
    c = Client()
    _, mid = c.c.subscribe(args.topic, options=SubscribeOptions(qos=1))
    wait_for(lambda: mid in c.subacks, args.timeout, f"no SUBACK for {args.topic}")
    expect(all(not rc.is_failure for rc in c.subacks[mid]), f"SUBACK {c.subacks[mid]}")
    marker = uuid.uuid4().hex.encode()
    c.publish(args.marker, marker, retain=False)
    wait_for(lambda: any(m.payload == marker for m in c.msgs), args.timeout,
             lambda: f"the marker did not come back; got {[(m.topic, m.payload) for m in c.msgs]}")
    with c.lock:
        before = c.msgs[:next(i for i, m in enumerate(c.msgs) if m.payload == marker)]
    got = sorted((m.topic, m.payload.decode(), m.retain) for m in before)
    wanted = sorted((t, p, True) for t, p in (e.split("=", 1) for e in args.expect))
    expect(got == wanted, f"retained messages on subscribe: got {got}, expected {wanted}")
    c.bye()


{"set": step_set, "read": step_read}[args.step]()
print("ok")
