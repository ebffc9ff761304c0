"""The translation matrix: every source protocol {STOMP, MQTT 3.1.1, MQTT 5, AMQP, XMPP} to every
target {the same five}, with text, JSON and binary bodies, a custom header, content type,
correlation id and reply-to, checked against docs/mapping.md, each case delivered exactly once
(copies counted behind a marker per source); then the loss policies (encode, reject) on the
fields targets cannot carry, and the /loss counters.

Clients: stomp.py, paho-mqtt (3.1.1 and 5), pika on a real RabbitMQ, slixmpp on a real Prosody or ejabberd.
The Rust test (tests/matrix.rs) writes the routes (see there) and starts the router.

Usage: matrix.py --port STOMP --mqtt-port P --admin-port P --prefix P --jid USER@localhost --password PW
                 [--c2s-port 5222]
"""

import asyncio
import base64
import json
import os
import ssl
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args  # noqa: E402
from stomptest import Collector  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import pika  # noqa: E402
import slixmpp  # noqa: E402
import stomp  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

args = parse_args(lambda p: (p.add_argument("--prefix", required=True), p.add_argument("--mqtt-port", type=int, required=True),
                             p.add_argument("--admin-port", type=int, required=True),
                             p.add_argument("--jid", required=True), p.add_argument("--password", required=True),
                             p.add_argument("--c2s-port", type=int, default=5222)))
P, T = args.prefix, args.timeout
BRIDGE = "bridge.localhost"
SOURCES = ["stomp", "mqtt3", "mqtt5", "amqp", "xmpp"]
# XMPP bodies are text: a binary body cannot start there.
BODIES = {s: ["text", "json", "binary"] for s in SOURCES}
BODIES["xmpp"] = ["text", "json"]


def body_of(src, kind, policy="drop", mark=""):
    tag = f"{policy}-{src}-{kind}{mark}"
    if kind == "text":
        return f"text {tag} ✓".encode()
    if kind == "json":
        return json.dumps({"case": tag, "n": [1, 2]}).encode()
    return b"\xff\xfe\x00" + tag.encode()


def tag_of(body):
    """The case a received body belongs to (None: not one of ours)."""
    try:
        if body.startswith(b"\xff\xfe\x00"):
            return body[3:].decode()
        t = body.decode()
        if t.startswith("{"):
            return json.loads(t).get("case")
        if t.startswith("text "):
            return t.split(" ")[1]
    except (UnicodeDecodeError, ValueError, AttributeError):
        return None
    return None


CT = {"text": "text/plain", "json": "application/json", "binary": "application/octet-stream"}


def admin(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{args.admin_port}{path}", timeout=5) as r:
        return json.load(r)


# ---- targets -------------------------------------------------------------------------------

got = {t: {} for t in SOURCES}   # target → tag → what arrived (the first copy)
copies = {t: {} for t in SOURCES}   # target → tag → how many copies arrived
lock = threading.Lock()


def record(target, tag, what):
    if tag:
        with lock:
            got[target].setdefault(tag, what)
            copies[target][tag] = copies[target].get(tag, 0) + 1


class StompTarget(Collector):
    def on_message(self, frame):
        super().on_message(frame)
        record("stomp", tag_of(frame.body), {"body": frame.body, "headers": dict(frame.headers)})


def mqtt_target(version, name):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{P}-{name}", protocol=version)
    ready = threading.Event()

    def on_message(_c, _u, m):
        props = {}
        if version == mqtt.MQTTv5 and m.properties is not None:
            for k in ("ContentType", "CorrelationData", "ResponseTopic", "UserProperty"):
                if hasattr(m.properties, k):
                    props[k] = getattr(m.properties, k)
        body = m.payload
        tag = tag_of(body)
        if tag is None and body.startswith(b"{"):       # a loss: encode envelope
            env = json.loads(body)
            inner = env.get("body", "").encode() if "body" in env else base64.b64decode(env["body_base64"])
            tag = tag_of(inner)
            props["envelope"] = env
        record(name, tag, {"body": body, "props": props, "topic": m.topic})

    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    c.connect("127.0.0.1", args.mqtt_port)
    c.loop_start()
    c.subscribe(f"{P}/seen/#", qos=1)
    expect(ready.wait(T), f"{name}: no SUBACK")
    return c


class XmppUser(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(args.jid, args.password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for p in ("xep_0030", "xep_0131"):
            self.register_plugin(p)
        self.online = asyncio.Event()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", self._message)

    async def _start(self, _e):
        self.send_presence()
        await self.get_roster()
        self.online.set()

    def _message(self, m):
        if m["type"] == "error":
            return
        shim = {}
        for h in m.xml.findall("{http://jabber.org/protocol/shim}headers/{http://jabber.org/protocol/shim}header"):
            shim.setdefault(h.get("name"), []).append(h.text or "")
        body = m["body"].encode()
        if shim.get("Content-Transfer-Encoding") == ["base64"]:
            body = base64.b64decode(body)
        json_el = m.xml.find("{urn:xmpp:json:0}json")
        record("xmpp", tag_of(body), {"body": body, "shim": shim, "thread": m["thread"],
                                      "json": json_el.text if json_el is not None else None,
                                      "from": str(m["from"])})


def amqp_drain(ch, queue, into="amqp"):
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return
        record(into, tag_of(body), {"body": body, "props": props})


# ---- sources -------------------------------------------------------------------------------

def publish_stomp(conn, policy, kind, extra=None, mark=""):
    h = {"k": "v", "correlation-id": f"c-stomp-{kind}", "reply-to": f"/queue/{P}.replies"}
    h.update(extra or {})
    conn.send(destination=f"/topic/{P}.{policy}.stomp", body=body_of("stomp", kind, policy, mark),
              content_type=h.pop("content-type", CT[kind]), headers=h)


def mqtt_source(version, name):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{P}-{name}-pub", protocol=version)
    c.connect("127.0.0.1", args.mqtt_port)
    c.loop_start()
    return c


def publish_mqtt5(c, policy, kind, user=(("k", "v"),), mark=""):
    pr = Properties(PacketTypes.PUBLISH)
    pr.ContentType = CT[kind]
    pr.CorrelationData = f"c-mqtt5-{kind}".encode()
    pr.ResponseTopic = f"{P}/replies"
    pr.UserProperty = list(user)
    c.publish(f"{P}/{policy}/mqtt5", body_of("mqtt5", kind, policy, mark), qos=1, properties=pr).wait_for_publish(T)


def main_sync(user_loop_send):
    stomp_t = StompTarget(T)
    sc = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0), auto_decode=False)
    sc.set_listener("t", stomp_t)
    sc.connect(wait=True)
    sc.subscribe(f"/topic/{P}.seen.#", id="m", ack="auto", headers={"receipt": "sub-m"})
    dead = Collector(T)
    dc = stomp.Connection12([("127.0.0.1", args.port)], heartbeats=(0, 0), auto_decode=False)
    dc.set_listener("d", dead)
    dc.connect(wait=True)
    dc.subscribe(f"/queue/{P}.dead", id="d", ack="auto", headers={"receipt": "sub-d"})
    m3 = mqtt_target(mqtt.MQTTv311, "mqtt3")   # each waits for its SUBACK
    m5 = mqtt_target(mqtt.MQTTv5, "mqtt5")
    stomp_t.wait_receipt("sub-m")   # the router answers a SUBSCRIBE's receipt once it is bound
    dead.wait_receipt("sub-d")

    pub3 = mqtt_source(mqtt.MQTTv311, "mqtt3")
    pub5 = mqtt_source(mqtt.MQTTv5, "mqtt5")
    ac = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    ch = ac.channel()

    # Loss policies first; the drop matrix after them doubles as the sentinel that shows a
    # rejected message is not merely late.
    lossy = {"priority": "7", "content-type": "text/x-custom"}
    publish_stomp(sc, "encode", "text", lossy)
    publish_stomp(sc, "reject", "text", lossy)
    publish_mqtt5(pub5, "encode", "text", user=(("k", "v1"), ("k", "v2")))
    publish_mqtt5(pub5, "reject", "text", user=(("k", "v1"), ("k", "v2")))

    def publish_drop(kinds, mark=""):
        for kind in kinds["stomp"]:
            publish_stomp(sc, "drop", kind, mark=mark)
        for kind in kinds["mqtt3"]:
            pub3.publish(f"{P}/drop/mqtt3", body_of("mqtt3", kind, mark=mark), qos=1).wait_for_publish(T)
        for kind in kinds["mqtt5"]:
            publish_mqtt5(pub5, "drop", kind, mark=mark)
        for kind in kinds["amqp"]:
            ch.basic_publish("", f"{P}.in", body_of("amqp", kind, mark=mark), pika.BasicProperties(
                content_type=CT[kind], headers={"k": "v"}, correlation_id=f"c-amqp-{kind}", reply_to=f"{P}.amqp-replies"))
        for kind in kinds["xmpp"]:
            user_loop_send(kind, mark)

    def wait_delivered(kinds, mark=""):
        expected = {t: [f"drop-{s}-{k}{mark}" for s in SOURCES for k in kinds[s]] for t in SOURCES}
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            amqp_drain(ch, f"{P}.out")
            missing = {t: [x for x in tags if x not in got[t]] for t, tags in expected.items()}
            if not any(missing.values()):
                return
            time.sleep(0.1)
        fail(f"not delivered (target: cases): { {t: m for t, m in missing.items() if m} }")

    publish_drop(BODIES)
    wait_delivered(BODIES)
    # Then one marker from every source to every target: whatever a path would deliver
    # twice, or late, arrives before its marker, so once all markers are in the copies can
    # be counted (no guessed sleep).
    markers = {s: ["text"] for s in SOURCES}
    publish_drop(markers, mark="-end")
    wait_delivered(markers, mark="-end")
    amqp_drain(ch, f"{P}.out")
    with lock:
        twice = {t: {tag: n for tag, n in c.items() if n != 1} for t, c in copies.items()}
    expect(not any(twice.values()), f"delivered more than once (target: case → copies): "
                                    f"{ {t: d for t, d in twice.items() if d} }")
    check_drop_matrix()
    check_policies(dead)
    ac.close()
    for c in (m3, m5, pub3, pub5):
        c.loop_stop()
        c.disconnect()
    sc.disconnect()
    dc.disconnect()


def check_drop_matrix():
    for src in SOURCES:
        for kind in BODIES[src]:
            tag = f"drop-{src}-{kind}"
            sent = body_of(src, kind)
            has_props = src not in ("mqtt3",)
            corr = f"c-{src}-{kind}" if src != "xmpp" else f"th-{kind}"
            for target in SOURCES:
                g = got[target][tag]
                where = f"{src} → {target} ({kind})"
                expect(g["body"] == sent, f"{where}: body {g['body']!r}, sent {sent!r}")
                if target == "stomp":
                    h = g["headers"]
                    want_ct = {"mqtt3": None, "xmpp": "text/plain; charset=utf-8"}.get(src, CT[kind])
                    expect(h.get("content-type") == want_ct, f"{where}: content-type {h.get('content-type')!r}, want {want_ct!r}")
                    if has_props:
                        expect(h.get("k") == "v", f"{where}: header k missing: {h}")
                        expect(h.get("correlation-id") == corr, f"{where}: correlation-id {h.get('correlation-id')!r}")
                        expect(h.get("reply-to", "").startswith("/queue/") or h.get("reply-to", "").startswith("/topic/"),
                               f"{where}: reply-to {h.get('reply-to')!r}")
                    else:
                        expect("k" not in h and "correlation-id" not in h and "reply-to" not in h, f"{where}: {h}")
                elif target == "mqtt3":
                    expect(g["props"] == {}, f"{where}: 3.1.1 has no properties: {g['props']}")
                elif target == "mqtt5":
                    pr = g["props"]
                    if has_props:
                        expect(("k", "v") in pr.get("UserProperty", []), f"{where}: user properties {pr}")
                        expect(pr.get("CorrelationData") == corr.encode(), f"{where}: correlation data {pr}")
                        expect("ResponseTopic" in pr, f"{where}: no response topic: {pr}")
                        want_ct = "text/plain; charset=utf-8" if src == "xmpp" else CT[kind]
                        expect(pr.get("ContentType") == want_ct, f"{where}: content type {pr}")
                    else:
                        expect("UserProperty" not in pr and "CorrelationData" not in pr, f"{where}: {pr}")
                elif target == "amqp":
                    pr = g["props"]
                    if has_props:
                        expect((pr.headers or {}).get("k") == "v", f"{where}: headers {pr.headers}")
                        if src == "amqp":
                            # Through the same link: the AMQP reply_to and correlation_id stay.
                            expect(pr.reply_to == f"{P}.amqp-replies" and pr.correlation_id == corr, f"{where}: {pr}")
                        else:
                            # A request from elsewhere: RabbitMQ direct reply-to, the router's own id.
                            expect(pr.reply_to.startswith("amq.rabbitmq.reply-to") and pr.correlation_id.startswith("sb-"),
                                   f"{where}: reply_to {pr.reply_to!r} correlation_id {pr.correlation_id!r}")
                    else:
                        expect(pr.reply_to is None and pr.correlation_id is None, f"{where}: {pr}")
                elif target == "xmpp":
                    if has_props:
                        expect(g["shim"].get("k") == ["v"], f"{where}: SHIM headers {g['shim']}")
                        if src != "xmpp":
                            expect(g["thread"] == corr, f"{where}: thread {g['thread']!r}, want {corr!r}")
                    if kind == "json" and src not in ("mqtt3", "xmpp"):
                        expect(json.loads(g["json"]) == json.loads(sent), f"{where}: JSON container {g['json']!r}")
    print("drop matrix ok")


def check_policies(dead):
    # encode, from STOMP (priority 7, a content type XMPP cannot carry).
    e3 = got["mqtt3"]["encode-stomp-text"]["props"]["envelope"]
    expect(e3.get("content-type") == "text/x-custom" and e3.get("correlation-id") == "c-stomp-text"
           and e3.get("reply-to") == f"$queue/{P}.replies" and e3.get("priority") == 7
           and ["k", "v"] in e3.get("headers", []), f"3.1.1 envelope: {e3}")
    expect(("priority", "7") in got["mqtt5"]["encode-stomp-text"]["props"].get("UserProperty", []),
           f"MQTT 5 priority: {got['mqtt5']['encode-stomp-text']['props']}")
    shim = got["xmpp"]["encode-stomp-text"]["shim"]
    expect(shim.get("content-type") == ["text/x-custom"] and shim.get("priority") == ["7"]
           and shim.get("reply-to") == [f"queue:{P}.replies"], f"XMPP SHIM: {shim}")
    # encode, from MQTT 5 (a repeated user property): an AMQP array.
    expect(got["amqp"]["encode-mqtt5-text"]["props"].headers.get("k") == [b"v1", b"v2"]
           or got["amqp"]["encode-mqtt5-text"]["props"].headers.get("k") == ["v1", "v2"],
           f"AMQP array: {got['amqp']['encode-mqtt5-text']['props'].headers}")
    # reject: not delivered where fields would be lost, delivered where nothing is.
    for target in ("mqtt3", "mqtt5", "xmpp"):
        expect("reject-stomp-text" not in got[target], f"reject-stomp-text reached {target}")
    expect("reject-stomp-text" in got["stomp"] and "reject-stomp-text" in got["amqp"], "reject-stomp-text lost where it fits")
    expect("reject-mqtt5-text" not in got["amqp"] and "reject-mqtt5-text" in got["mqtt5"], "reject-mqtt5-text")
    reasons = {(m.headers.get("x-death-queue", ""), m.headers.get("x-death-reason")) for m in dead.messages}
    expect(any(r == "untranslatable" and q.startswith("$sb.link.im") for q, r in reasons), f"XMPP dead letter: {reasons}")
    expect(any(r == "untranslatable" and q.startswith("$sb.link.rabbit") for q, r in reasons), f"AMQP dead letter: {reasons}")
    loss = admin("/loss")
    for outcome, edge, field in [("dropped", "mqtt-3.1.1", "headers"), ("dropped", "mqtt-3.1.1", "correlation_id"),
                                 ("encoded", "mqtt-3.1.1", "priority"), ("encoded", "mqtt-5", "priority"),
                                 ("encoded", "xmpp", "content_type"), ("encoded", "amqp", "headers"),
                                 ("rejected", "mqtt-5", "priority"), ("rejected", "xmpp", "priority"),
                                 ("rejected", "amqp", "headers"), ("dropped", "xmpp", "reply_to")]:
        expect(loss[outcome].get(edge, {}).get(field, 0) >= 1, f"/loss {outcome} {edge} {field}: {loss}")
    print("policies ok")


async def main():
    user = XmppUser()
    user.connect("127.0.0.1", args.c2s_port)
    await asyncio.wait_for(user.online.wait(), T)
    loop = asyncio.get_running_loop()

    def send(kind, mark=""):
        def go():
            m = user.make_message(mto=f"{P.lower()}-in@{BRIDGE}", mbody=body_of("xmpp", kind, mark=mark).decode(),
                                  mtype="chat")
            m["thread"] = f"th-{kind}"
            m["headers"] = {"k": "v"}
            m.send()
        loop.call_soon_threadsafe(go)

    await asyncio.to_thread(main_sync, send)
    user.disconnect()
    print("ok")


asyncio.run(main())
