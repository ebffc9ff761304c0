"""Schema checks and rate limits in routes with real clients (tests/route_schema.rs and
tests/route_rate.rs write the routes and start the router).

Usage: guard_scenarios.py --port STOMP_PORT --mqtt-port PORT [--prefix P] SCENARIO
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
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


class Publisher:
    """A paho client that publishes at QoS 1 and records when each PUBACK came."""

    def __init__(self, cid):
        self.acked = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid)
        self.c.on_publish = self.on_publish
        self.c.connect("127.0.0.1", args.mqtt_port)
        self.c.loop_start()

    def on_publish(self, client, userdata, mid, reason_code, properties):
        with self.lock:
            self.acked[mid] = time.monotonic()

    def publish(self, topic, bodies):
        """Publishes every body at once (paho keeps up to 20 in flight); returns the mids."""
        return [self.c.publish(topic, b, qos=1).mid for b in bodies]

    def wait_acked(self, mids):
        wait_for(lambda: all(m in self.acked for m in mids), T,
                 lambda: f"PUBACKs: {len([m for m in mids if m in self.acked])} of {len(mids)}")
        return [self.acked[m] for m in mids]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def drain(dest, n):
    """The bodies (and headers) of n messages consumed from a STOMP destination."""
    c, col = stomp_conn()
    c.subscribe(dest, id="d", ack="auto")
    col.wait_messages(n, f"messages on {dest}")
    time.sleep(0.2)  # absence window: nothing more than n arrives
    c.disconnect()
    return col.messages


def schema_routes():
    """paho publishes readings: valid ones go where the route sends them; invalid ones (a
    wrong type, a missing field, a body that is not JSON) are dead-lettered with why in
    x-schema-error. On the strict route (no dead letter) invalid messages are not taken:
    they stay on the queue they were sent to."""
    pub = Publisher(f"{P}-sensor")
    bodies = [
        json.dumps({"device": "k1", "t": 21.5}),
        json.dumps({"device": "k1", "t": "hot"}),
        json.dumps({"t": 3}),
        "not json",
        json.dumps({"device": "k2", "t": -4}),
    ]
    pub.wait_acked(pub.publish(f"{P}/sensors/k1", bodies))
    pub.close()
    good = [m.body for m in drain(f"/queue/{P}.readings", 2)]
    expect(good == [bodies[0], bodies[4]], f"routed {good!r}")
    bad = drain(f"/queue/{P}.invalid", 3)
    expect([m.body for m in bad] == bodies[1:4], f"dead-lettered {[m.body for m in bad]!r}")
    why = [m.headers.get("x-schema-error", "") for m in bad]
    expect(why[0] == '/t: value is not of type "number"', f"error header {why[0]!r}")
    expect(why[1] == '"device" is a required property', f"error header {why[1]!r}")
    expect(why[2].startswith("body is not JSON"), f"error header {why[2]!r}")

    c, col = stomp_conn()
    for i, b in enumerate(['{"device": "k3", "t": 1}', '{"t": "x"}']):
        c.send(f"/queue/{P}.strict", b, headers={"receipt": f"s{i}", "content-type": "application/json"})
        col.wait_receipt(f"s{i}")
    c.disconnect()
    expect([m.body for m in drain(f"/queue/{P}.checked", 1)] == ['{"device": "k3", "t": 1}'], "strict route")
    expect([m.body for m in drain(f"/queue/{P}.strict", 1)] == ['{"t": "x"}'], "not taken: as addressed")
    print("ok")


def schema_edited():
    """After the schema file changed (a unit is now required), the reading that was valid is
    dead-lettered."""
    pub = Publisher(f"{P}-sensor2")
    body = json.dumps({"device": "k1", "t": 21.5})
    pub.wait_acked(pub.publish(f"{P}/sensors/k1", [body]))
    pub.close()
    bad = drain(f"/queue/{P}.invalid", 1)
    expect(bad[0].body == body, f"dead-lettered {bad[0].body!r}")
    expect(bad[0].headers.get("x-schema-error") == '"unit" is a required property',
           f"error header {bad[0].headers.get('x-schema-error')!r}")
    print("ok")


RATE, BURST, N = 5.0, 2, 12


def rate_hold():
    """A paho publisher over its route's limit (5/s, burst 2, hold) is held back: its PUBACKs
    come at the rate, none early, and every message arrives in order. Meanwhile another
    client publishing through the same route has its own bucket and is served at once."""
    greedy = Publisher(f"{P}-greedy")
    t0 = time.monotonic()
    mids = greedy.publish(f"{P}/limited/greedy", [f"g{i}" for i in range(N)])
    # The honest client starts while the greedy one is being held.
    wait_for(lambda: len(greedy.acked) >= BURST + 1, T, "the greedy client's first acks")
    honest = Publisher(f"{P}-honest")
    h0 = time.monotonic()
    honest_acks = honest.wait_acked(honest.publish(f"{P}/limited/honest", ["h0", "h1"]))
    acks = greedy.wait_acked(mids)
    for k, at in enumerate(acks):
        # Message k needs k + 1 tokens: BURST at the start, then one every 1/RATE s.
        due = max(0.0, (k + 1 - BURST) / RATE)
        expect(at - t0 >= due - 0.02, f"ack {k} after {at - t0:.3f} s, due at {due:.3f} s")
    total = acks[-1] - t0
    expect(total >= (N - BURST) / RATE - 0.02, f"{N} messages took {total:.3f} s")
    expect(max(honest_acks) < acks[-1], "the honest client was served while the greedy one was held")
    print(f"greedy: {N} acks in {total:.2f} s; honest: 2 acks in {max(honest_acks) - h0:.3f} s")
    got = [m.body for m in drain(f"/queue/{P}.limited", N + 2)]
    expect([b for b in got if b.startswith("g")] == [f"g{i}" for i in range(N)], f"greedy's messages {got!r}")
    expect(sorted(b for b in got if b.startswith("h")) == ["h0", "h1"], f"honest's messages {got!r}")
    greedy.close()
    honest.close()
    print("ok")


def rate_drop():
    """Over a drop limit (1/s, burst 3) a QoS 1 publisher is still acknowledged; what the route
    dropped never arrives. Prints how many arrived (tests/route_rate.rs checks the counter)."""
    pub = Publisher(f"{P}-dropper")
    pub.wait_acked(pub.publish(f"{P}/dropped/x", [f"d{i}" for i in range(10)]))
    pub.close()
    c, col = stomp_conn()
    c.subscribe(f"/queue/{P}.dropped", id="d", ack="auto")
    col.wait_messages(3, "the burst")
    time.sleep(0.3)  # absence window: what was dropped does not come later
    c.disconnect()
    got = col.bodies()
    # The burst passes; a later one only if a token came back while the ten were sent.
    expect(got[:3] == ["d0", "d1", "d2"], f"the burst passes, in order: {got!r}")
    order = [int(b[1:]) for b in got]
    expect(order == sorted(order), f"in order: {got!r}")
    expect(len(got) < 10, f"nothing dropped: {got!r}")
    print(f"delivered={len(got)}")
    print("ok")


{"schema_routes": schema_routes, "schema_edited": schema_edited, "rate_hold": rate_hold,
 "rate_drop": rate_drop}[args.scenario]()
