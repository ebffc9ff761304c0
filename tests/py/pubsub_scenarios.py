"""PubSub (XEP-0060) scenarios: slixmpp (its xep_0060 plugin) as the PubSub users on Prosody's
mod_pubsub (service pubsub.localhost), paho-mqtt and stomp.py on the router's side. The Rust test
(tests/xmpp_pubsub.rs) writes the routes, starts the router and runs one step at a time.

Usage: pubsub_scenarios.py --port STOMP_PORT --mqtt-port PORT --prefix P --jid USER@localhost
                           --password PW [--c2s-port 5222] SCENARIO
"""

import asyncio
import json
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402
from xmpptest import User  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import stomp  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from slixmpp.exceptions import IqError  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--prefix", required=True),
                             p.add_argument("--jid", required=True), p.add_argument("--password", required=True),
                             p.add_argument("--mqtt-port", type=int, required=True),
                             p.add_argument("--c2s-port", type=int, default=5222)))
P = args.prefix
T = args.timeout
SERVICE = "pubsub.localhost"
NS_JSON = "urn:xmpp:json:0"
NS_TEXT = "urn:switchboard:text:0"
# The service's admin (prosody.cfg.lua): Prosody lets only admins create nodes.
ADMIN = ("pubsub-admin@localhost", "pw")


class PubsubUser(User):
    def __init__(self, jid, password, timeout):
        super().__init__(jid, password, timeout)
        self.register_plugin("xep_0060")
        self.events = []  # (node, item id, payload element) in arrival order
        self.add_event_handler("pubsub_publish", self._event)

    def _event(self, m):
        # Not `for item in items`: slixmpp's own handler is iterating over that same object
        # (stanza iteration keeps its position in the object), and a nested loop restarts it.
        items = m["pubsub_event"]["items"]
        for item in list(items.iterables):
            self.events.append((items["node"], item["id"], item["payload"]))


async def login(jid, password):
    u = PubsubUser(jid, password, T)
    u.connect("127.0.0.1", args.c2s_port)
    await u.started()
    return u


def mqtt_publish(topic, payload, content_type=None):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{P}-pub", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", args.mqtt_port)
    c.loop_start()
    props = None
    if content_type:
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = content_type
    c.publish(topic, payload, qos=1, properties=props).wait_for_publish(T)
    c.disconnect()
    c.loop_stop()


def tag(e):
    return e.tag if e is not None else None


async def mqtt_to_node():
    """MQTT publishes on PFX/temp/+ reach the node PFX-temp (created by the router, item id the
    sensor): a JSON body as XEP-0335 <json/>, read back with get_items; then a slixmpp subscriber
    gets a plain-text publish as an event notification, in Switchboard's <text/> wrapper."""
    node = f"{P}-temp"
    mqtt_publish(f"{P}/temp/kitchen", json.dumps({"t": 21.5}), "application/json")
    u = await login(args.jid, args.password)
    items = []

    async def fetch():
        try:
            iq = await u.plugin["xep_0060"].get_items(SERVICE, node, timeout=T)
        except IqError:
            return []  # the node is not there yet
        return list(iq["pubsub"]["items"])

    for _ in range(int(T / 0.2)):
        items = await fetch()
        if items:
            break
        await asyncio.sleep(0.2)
    expect(len(items) == 1, f"one item on {node}: {items}")
    expect(items[0]["id"] == "kitchen", f"item id {items[0]['id']!r}")
    p = items[0]["payload"]
    expect(tag(p) == f"{{{NS_JSON}}}json", f"payload {ET.tostring(p) if p is not None else None!r}")
    expect(json.loads(p.text) == {"t": 21.5}, f"JSON {p.text!r}")

    await u.plugin["xep_0060"].subscribe(SERVICE, node, timeout=T)
    mqtt_publish(f"{P}/temp/garden", "hello <world> & co")
    await u.wait(lambda: u.events, "the event notification")
    n, item_id, payload = u.events[0]
    expect((n, item_id) == (node, "garden"), f"event {n} {item_id}")
    expect(tag(payload) == f"{{{NS_TEXT}}}text", f"payload {ET.tostring(payload)!r}")
    expect(payload.text == "hello <world> & co", f"text {payload.text!r}")
    expect(len(u.events) == 1, f"one event: {u.events}")
    u.disconnect()


async def mqtt_missing():
    """An MQTT publish routed to a node that does not exist, without `create`: the service refuses
    the item, and it reaches the link's dead-letter queue with the reason and the condition."""
    s, col = stomp_conn()
    s.subscribe("/queue/dead.im", id="1", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    mqtt_publish(f"{P}/missing", "lost")
    wait_for(lambda: col.messages, T, "the dead-lettered item")
    f = col.messages[0]
    expect(f.body == "lost", f"body {f.body!r}")
    expect(f.headers.get("x-death-reason") == "pubsub-refused", f"headers {f.headers}")
    expect(f.headers.get("x-death-detail", "").endswith("refused the item: item-not-found"), f"headers {f.headers}")
    s.disconnect()


async def create_node():
    """The service's admin creates the node PFX-cmd (before the router's route reads it)."""
    u = await login(*ADMIN)
    await u.plugin["xep_0060"].create_node(SERVICE, f"{P}-cmd", timeout=T)
    u.disconnect()


def stomp_conn():
    c = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


async def node_to_stomp():
    """Items slixmpp publishes to PFX-cmd reach a STOMP consumer: a <json/> item as a JSON body,
    another XML payload serialized, with the item id, node and service as headers."""
    s, col = stomp_conn()
    s.subscribe(f"/queue/{P}.cmd", id="1", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    u = await login(*ADMIN)
    j = ET.Element(f"{{{NS_JSON}}}json")
    j.text = json.dumps({"cmd": "restart", "unit": 7})
    await u.plugin["xep_0060"].publish(SERVICE, f"{P}-cmd", id="cmd-1", payload=j, timeout=T)
    x = ET.Element("{urn:example:cmd}stop")
    x.set("unit", "8")
    await u.plugin["xep_0060"].publish(SERVICE, f"{P}-cmd", id="cmd-2", payload=x, timeout=T)
    wait_for(lambda: len(col.messages) >= 2, T, lambda: f"2 STOMP messages, got {len(col.messages)}")
    a, b = col.messages[0], col.messages[1]
    expect(json.loads(a.body) == {"cmd": "restart", "unit": 7}, f"body {a.body!r}")
    expect(a.headers.get("content-type", "").startswith("application/json"), f"headers {a.headers}")
    for k, v in {"x-xmpp-pubsub-item": "cmd-1", "x-xmpp-pubsub-node": f"{P}-cmd",
                 "x-xmpp-pubsub-service": SERVICE}.items():
        expect(a.headers.get(k) == v, f"header {k}: {a.headers.get(k)!r} in {a.headers}")
    expect(b.headers.get("x-xmpp-pubsub-item") == "cmd-2", f"headers {b.headers}")
    expect(b.headers.get("content-type", "").startswith("application/xml"), f"headers {b.headers}")
    back = ET.fromstring(b.body)
    expect(back.tag == "{urn:example:cmd}stop" and back.get("unit") == "8", f"body {b.body!r}")
    expect(len(col.messages) == 2, f"two messages: {[m.body for m in col.messages]}")
    u.disconnect()
    s.disconnect()


async def bridge_subscribed():
    """Prints whether bridge.localhost is subscribed to PFX-cmd (the node's owner asks)."""
    u = await login(*ADMIN)
    iq = await u.plugin["xep_0060"].get_node_subscriptions(SERVICE, f"{P}-cmd", timeout=T)
    jids = [str(s["jid"]) for s in iq["pubsub_owner"]["subscriptions"]]
    print("subscribed:" + ",".join(sorted(jids)))
    u.disconnect()


SCENARIOS = {f.__name__: f for f in (mqtt_to_node, mqtt_missing, create_node, node_to_stomp, bridge_subscribed)}

if __name__ == "__main__":
    f = SCENARIOS.get(args.scenario) or fail(f"unknown scenario {args.scenario}")
    asyncio.run(f())
    print("ok")
