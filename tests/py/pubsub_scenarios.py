"""PubSub (XEP-0060) scenarios: slixmpp (its xep_0060 plugin) as the PubSub users on Prosody's or
ejabberd's mod_pubsub (service pubsub.localhost) and PEP, paho-mqtt and stomp.py on the router's
side. The Rust test (tests/xmpp_pubsub.rs) writes the routes, starts the router and runs one step at
a time.

Usage: pubsub_scenarios.py --port STOMP_PORT --mqtt-port PORT --prefix P --jid USER@localhost
                           --password PW [--c2s-port 5222] [--bot BOT@localhost] SCENARIO
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
                             p.add_argument("--c2s-port", type=int, default=5222),
                             p.add_argument("--bot", default="")))
P = args.prefix
T = args.timeout
SERVICE = "pubsub.localhost"
NS_JSON = "urn:xmpp:json:0"
NS_TEXT = "urn:switchboard:text:0"
# The service's admin (prosody.cfg.lua): Prosody lets only admins create nodes (ejabberd: any
# local account).
ADMIN = ("pubsub-admin@localhost", "pw")


class PubsubUser(User):
    def __init__(self, jid, password, timeout):
        super().__init__(jid, password, timeout)
        self.register_plugin("xep_0060")
        self.events = []  # (node, item id, payload element) in arrival order
        self.add_event_handler("pubsub_publish", self._event)

    def _event(self, m):
        if m.xml.find("{urn:xmpp:delay}delay") is not None:
            return  # ejabberd sends a node's last item again to each new subscription
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
    the item, and it reaches the link's dead-letter queue with the reason and the condition (the
    scenario's argument; default item-not-found)."""
    condition = args.rest[0] if args.rest else "item-not-found"
    s, col = stomp_conn()
    s.subscribe("/queue/dead.im", id="1", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    mqtt_publish(f"{P}/missing", "lost")
    wait_for(lambda: col.messages, T, "the dead-lettered item")
    f = col.messages[0]
    expect(f.body == "lost", f"body {f.body!r}")
    expect(f.headers.get("x-death-reason") == "pubsub-refused", f"headers {f.headers}")
    expect(f"refused the item: {condition}" in f.headers.get("x-death-detail", ""), f"headers {f.headers}")
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


def text_item(t):
    x = ET.Element(f"{{{NS_TEXT}}}text")
    x.text = t
    return x


async def publish_texts(node, *texts, service=SERVICE, user=ADMIN):
    """Publishes each text as one item (id = the text) and returns once the service stored them."""
    u = await login(*user)
    for t in texts:
        await u.plugin["xep_0060"].publish(service, node, id=t, payload=text_item(t), timeout=T)
    u.disconnect()


def drain(queue, n):
    """The first n messages of a STOMP queue, and whatever else is there by the time the n-th came
    (a duplicate delivered with them would be)."""
    s, col = stomp_conn()
    s.subscribe(queue, id="1", ack="auto", receipt="sub")
    wait_for(lambda: "sub" in col.receipts, T, "SUBSCRIBE receipt")
    wait_for(lambda: len(col.messages) >= n, T, lambda: f"{n} STOMP messages on {queue}, got "
             f"{[m.body for m in col.messages]}")
    s.disconnect()
    return col.messages


async def away_before():
    """Before the router starts: the node PFX-away with two items (old-1, old-2)."""
    u = await login(*ADMIN)
    await u.plugin["xep_0060"].create_node(SERVICE, f"{P}-away", timeout=T)
    u.disconnect()
    await publish_texts(f"{P}-away", "old-1", "old-2")


async def away_publish():
    """While the link is away: three items."""
    await publish_texts(f"{P}-away", "away-1", "away-2", "away-3")


async def away_check():
    """After the link came back: one live item, then the STOMP queue holds exactly old-2 (the
    route's catch_up: 1 on the first subscription), the three missed items in order, then the live
    one, each once."""
    await publish_texts(f"{P}-away", "live-1")
    got = drain(f"/queue/{P}.away", 5)
    bodies = [m.body for m in got]
    expect(bodies == ["old-2", "away-1", "away-2", "away-3", "live-1"], f"bodies {bodies}")
    ids = [m.headers.get("x-xmpp-pubsub-item") for m in got]
    expect(ids == bodies, f"item ids {ids}")
    expect(all(m.headers.get("x-xmpp-pubsub-event") == "item" for m in got), f"{[m.headers for m in got]}")


async def restart_drained():
    """Before the router restarts: the first subscription's catch_up delivered old-2 alone."""
    bodies = [m.body for m in drain(f"/queue/{P}.away", 1)]
    expect(bodies == ["old-2"], f"bodies {bodies}")


async def restart_publish():
    """While the router is stopped: two items."""
    await publish_texts(f"{P}-away", "stopped-1", "stopped-2")


async def restart_check():
    """After the router restarted: one live item, then the STOMP queue holds the two items
    published while it was stopped, in order, then the live one, each once (old-1 and old-2,
    delivered or skipped before the restart, not again)."""
    await publish_texts(f"{P}-away", "live-1")
    got = drain(f"/queue/{P}.away", 3)
    bodies = [m.body for m in got]
    expect(bodies == ["stopped-1", "stopped-2", "live-1"], f"bodies {bodies}")
    ids = [m.headers.get("x-xmpp-pubsub-item") for m in got]
    expect(ids == bodies, f"item ids {ids}")


async def retract():
    """An item published to PFX-cmd, then retracted (with notify), then another: the route asking
    for retractions gets the item, the retraction (empty body, its id), the other item; the other
    route only the items."""
    node = f"{P}-cmd"
    u = await login(*ADMIN)
    await u.plugin["xep_0060"].publish(SERVICE, node, id="r-1", payload=text_item("doomed"), timeout=T)
    await u.plugin["xep_0060"].retract(SERVICE, node, "r-1", notify=True, timeout=T)
    await publish_texts(node, "after")
    u.disconnect()
    got = drain(f"/queue/{P}.ret", 3)
    kinds = [(m.headers.get("x-xmpp-pubsub-event"), m.headers.get("x-xmpp-pubsub-item"), m.body) for m in got]
    expect(kinds == [("item", "r-1", "doomed"), ("retract", "r-1", ""), ("item", "after", "after")],
           f"with retractions: {kinds}")
    r = got[1]
    expect(r.headers.get("x-xmpp-pubsub-node") == node and r.headers.get("x-xmpp-pubsub-service") == SERVICE,
           f"headers {r.headers}")
    plain = [m.body for m in drain(f"/queue/{P}.plain", 2)]
    expect(plain == ["doomed", "after"], f"without retractions: {plain}")


async def pep_roster():
    """The user and the bot subscribe to each other's presence (the bot accepts and asks back;
    slixmpp accepts), as PEP's default access model (presence) needs."""
    u = await login(args.jid, args.password)
    u.send_presence_subscription(pto=args.bot)
    await u.wait(lambda: u.client_roster[args.bot]["subscription"] == "both",
                 lambda: f"mutual subscription, roster says {u.client_roster[args.bot]['subscription']!r}")
    u.disconnect()


async def pep_publish():
    """The user publishes pep-N items to its PEP node PFX-pep (created on the first publish, access
    model presence)."""
    await publish_texts(f"{P}-pep", *args.rest, service=args.jid, user=(args.jid, args.password))


async def pep_check():
    """The PEP items reach the STOMP consumer, in order, with the user's bare JID as the service."""
    got = drain(f"/queue/{P}.pep", 2)
    bodies = [m.body for m in got]
    expect(bodies == ["pep-1", "pep-2"], f"bodies {bodies}")
    expect(got[0].headers.get("x-xmpp-pubsub-service") == args.jid, f"headers {got[0].headers}")


SCENARIOS = {f.__name__: f for f in (mqtt_to_node, mqtt_missing, create_node, node_to_stomp, bridge_subscribed,
                                     away_before, away_publish, away_check, retract, pep_roster, pep_publish,
                                     pep_check, restart_drained, restart_publish, restart_check)}

if __name__ == "__main__":
    f = SCENARIOS.get(args.scenario) or fail(f"unknown scenario {args.scenario}")
    asyncio.run(f())
    print("ok")
