"""The admin API's operator actions (issue 23) driven against real stomp.py clients: peek
without consuming, dead letters listed, inspected, replayed and deleted, purge, move, a
connection closed, and a caller who is not an admin refused every action.

Usage: admin_actions.py --port STOMP_PORT --admin-port P --token T --user-auth USER:PASS SCENARIO

The daemon's settings (tests/admin_actions.rs): queue `work` dead-letters into `work.dlq`;
`--token` is an admin token, `--user-auth` a user who is not an admin.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import stomp  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--admin-port", type=int, required=True),
                             p.add_argument("--token", required=True), p.add_argument("--user-auth", required=True),
                             p.add_argument("--mqtt-port", type=int), p.add_argument("--mqtt-ws-port", type=int)))
H, P, T = args.host, args.port, args.timeout
U = uuid.uuid4().hex[:8]


def api(method, path, body=None, auth="admin"):
    """(status, parsed JSON or text) of an admin API request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{H}:{args.admin_port}{path}", data=data, method=method)
    if auth == "admin":
        req.add_header("Authorization", f"Bearer {args.token}")
    elif auth == "user":
        req.add_header("Authorization", "Basic " + base64.b64encode(args.user_auth.encode()).decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=T) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def ok(method, path, body=None):
    status, v = api(method, path, body)
    expect(status == 200, f"{method} {path}: {status} {v}")
    return v


def q(name):
    return urllib.parse.quote(name, safe="")


def stomp_conn(name="c"):
    c = stomp.Connection12([(H, P)], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener(name, col)
    c.connect(wait=True)
    return c, col


SENT = iter(range(1 << 30))


def send_all(c, col, queue, bodies, **headers):
    for b in bodies:
        r = f"r-{U}-{next(SENT)}"
        c.send(f"/queue/{queue}", b, receipt=r, **headers)
        col.wait_receipt(r)


def peek(queue, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return ok("GET", f"/queues/{q(queue)}/messages" + (f"?{query}" if query else ""))


def ready(queue):
    return [m["body"] for m in peek(queue, limit=1000)["messages"]]


def ready_soon(queue):
    """The ready bodies, or None while the queue does not exist yet (a dead letter on its way)."""
    status, v = api("GET", f"/queues/{q(queue)}/messages?limit=1000")
    return [m["body"] for m in v["messages"]] if status == 200 else None


def peek_does_not_consume():
    queue = f"peek.{U}"
    c, col = stomp_conn()
    bodies = [f"m{i}" for i in range(5)]
    send_all(c, col, queue, bodies)
    c.send(f"/queue/{queue}", b"\xff\x00\x01binary", receipt=f"bin-{U}", headers={"content-type": "application/octet-stream"})
    col.wait_receipt(f"bin-{U}")
    c.send(f"/queue/{queue}", "x" * 10000, receipt=f"big-{U}")
    col.wait_receipt(f"big-{U}")
    for _ in range(2):
        v = peek(queue, limit=100)
        got = v["messages"]
        expect([m["body"] for m in got[:5]] == bodies, f"peek: {got}")
        expect(v["ready"] == 7, f"ready {v['ready']}")
        expect(all(m["body_encoding"] == "text" and not m["truncated"] for m in got[:5]), f"{got[:5]}")
        expect(all(not m["redelivered"] and m["deliveries"] == 0 for m in got), f"{got}")
        expect(got[5]["body_encoding"] == "base64" and base64.b64decode(got[5]["body"]) == b"\xff\x00\x01binary",
               f"binary body: {got[5]}")
        expect(got[6]["truncated"] and len(got[6]["body"]) == 4096 and got[6]["body_size"] == 10000, "big body")
        expect(got[0]["destination"] == f"queue:{queue}" and got[0]["origin"]["protocol"] == "stomp", f"{got[0]}")
    expect(len(peek(queue, limit=2)["messages"]) == 2, "limit")
    one = ok("GET", f"/queues/{q(queue)}/messages/{q(got[6]['id'])}?body_max=20000")
    expect(one["body"] == "x" * 10000 and not one["truncated"], "one message, whole body")
    status, _ = api("GET", f"/queues/{q(queue)}/messages/nope-{U}")
    expect(status == 404, f"unknown id: {status}")
    # Two messages with one id: named by their seq.
    twin = f"twin-{U}"
    for b in ("t1", "t2"):
        c.send(f"/queue/{queue}.twins", b, receipt=f"{twin}-{b}", headers={"message-id": twin})
        col.wait_receipt(f"{twin}-{b}")
    status, v = api("DELETE", f"/queues/{q(queue)}.twins/messages/{twin}")
    expect(status == 409 and "seq" in v["error"], f"ambiguous id: {status} {v}")
    seqs = [m["seq"] for m in peek(f"{queue}.twins")["messages"]]
    ok("DELETE", f"/queues/{q(queue)}.twins/messages/{twin}?seq={seqs[1]}")
    expect(ready(f"{queue}.twins") == ["t1"], f"twins: {ready(queue + '.twins')}")
    # A consumer still gets everything, in order, none of it redelivered.
    c.subscribe(f"/queue/{queue}", id="s", ack="client-individual")
    col.wait_messages(7)
    got = col.messages
    expect([m.body for m in got[:5]] == bodies, f"received {[m.body for m in got]}")
    expect(all(m.headers.get("redelivered") == "false" for m in got), "redelivered after a peek")
    for m in got:
        c.ack(m.headers["ack"])
    c.disconnect()
    print("ok")


def dead_letters():
    c, col = stomp_conn()
    bodies = [f"w{i}-{U}" for i in range(3)]
    send_all(c, col, "work", bodies, persistent="true")
    c.subscribe("/queue/work", id="w", ack="client-individual", headers={"prefetch-count": "10"})
    col.wait_messages(3)
    for m in list(col.messages):
        c.nack(m.headers["ack"], requeue="false")
    wait_for(lambda: len(ready_soon("work.dlq") or []) == 3, T, lambda: f"dead letters: {ready_soon('work.dlq')}")
    dlqs = ok("GET", "/dead-letters")["dead_letter_queues"]
    entry = next((d for d in dlqs if d["queue"] == "work.dlq"), None)
    expect(entry and entry["ready"] == 3 and "work" in entry["from"], f"/dead-letters: {dlqs}")
    listed = peek("work.dlq")["messages"]
    expect([m["body"] for m in listed] == bodies, f"{listed}")
    for m in listed:
        d = m["death"]
        expect(d and d["reason"] == "rejected" and d["queue"] == "work" and d["destination"] == "queue:work"
               and d["deliveries"] == 1, f"death: {m}")
        expect(["x-death-reason", "rejected"] in m["headers"], f"headers: {m['headers']}")
    ids = [m["id"] for m in listed]

    # Replay one to where it died: the subscriber gets it again, without the x-death headers.
    before = len(col.messages)
    r = ok("POST", f"/queues/work.dlq/messages/{q(ids[0])}/replay")
    expect(r["moved"] == 1 and r["to"] == {"queue:work": 1} and r["failed"] is None, f"replay: {r}")
    col.wait_messages(before + 1, "the replayed message")
    again = col.messages[before]
    expect(again.body == bodies[0] and "x-death-reason" not in again.headers, f"{again.body} {again.headers}")
    c.ack(again.headers["ack"])

    # Replay another to another queue.
    c2, col2 = stomp_conn("c2")
    c2.subscribe(f"/queue/elsewhere.{U}", id="e", ack="auto")
    r = ok("POST", f"/queues/work.dlq/messages/{q(ids[1])}/replay", {"to": f"queue:elsewhere.{U}"})
    expect(r["moved"] == 1 and r["to"] == {f"queue:elsewhere.{U}": 1}, f"replay elsewhere: {r}")
    col2.wait_messages(1, "the message replayed elsewhere")
    expect(col2.messages[0].body == bodies[1], f"{col2.bodies()}")

    # Delete the third; nothing left, and it is gone for good (404 the second time).
    r = ok("DELETE", f"/queues/work.dlq/messages/{q(ids[2])}")
    expect(r["deleted"]["id"] == ids[2], f"delete: {r}")
    expect(ready("work.dlq") == [], "dead-letter queue empty")
    status, v = api("DELETE", f"/queues/work.dlq/messages/{q(ids[2])}")
    expect(status == 404, f"deleted twice: {status} {v}")
    status, v = api("POST", f"/queues/work.dlq/messages/{q(ids[2])}/replay")
    expect(status == 404, f"replay of a deleted one: {status} {v}")
    # Bad requests say why.
    status, v = api("POST", f"/queues/work/move", {"to": "nowhere"})
    expect(status == 400 and "queue:NAME" in v["error"], f"{status} {v}")
    status, v = api("POST", f"/queues/work/move", {"to": "queue:work"})
    expect(status == 400, f"move into itself: {status} {v}")
    status, v = api("POST", f"/queues/none.{U}/purge")
    expect(status == 404, f"{status} {v}")
    c.disconnect()
    c2.disconnect()
    print("ok")


def purge_and_move():
    queue, dest = f"pm.{U}", f"pm.dest.{U}"
    c, col = stomp_conn()
    bodies = [f"p{i}" for i in range(6)]
    send_all(c, col, queue, bodies)
    # One in flight (prefetch 1, not acknowledged): purge leaves it to its consumer.
    c.subscribe(f"/queue/{queue}", id="p", ack="client-individual", headers={"prefetch-count": "1"})
    col.wait_messages(1)
    r = ok("POST", f"/queues/{q(queue)}/purge")
    expect(r["purged"] == 5, f"purge: {r}")
    expect(ready(queue) == [], "nothing ready after purge")
    stats = next(s for s in ok("GET", "/queues")["queues"] if s["name"] == queue)
    expect(stats["unacked"] == 1 and stats["purged"] == 5, f"stats: {stats}")
    c.ack(col.messages[0].headers["ack"])
    c.unsubscribe("p")

    # Move: three of five, in order, then the rest; the source keeps nothing.
    more = [f"n{i}" for i in range(5)]
    send_all(c, col, queue, more, persistent="true")
    r = ok("POST", f"/queues/{q(queue)}/move", {"to": f"queue:{dest}", "count": 3})
    expect(r["moved"] == 3 and r["to"] == {f"queue:{dest}": 3}, f"move: {r}")
    expect(ready(queue) == more[3:], f"left: {ready(queue)}")
    r = ok("POST", f"/queues/{q(queue)}/move", {"to": f"queue:{dest}"})
    expect(r["moved"] == 2, f"move rest: {r}")
    c.subscribe(f"/queue/{dest}", id="d", ack="auto")
    wait_for(lambda: len(col.messages) >= 6, T, lambda: f"moved: {col.bodies()}")
    expect(col.bodies()[1:] == more, f"moved in order: {col.bodies()}")
    # A topic nobody subscribes to would lose the copy: refused, the message stays.
    send_all(c, col, queue, ["t0"])
    status, v = api("POST", f"/queues/{q(queue)}/move", {"to": f"topic:void.{U}"})
    expect(status == 409 and v["moved"] == 0 and "no subscriber" in v["failed"]["error"], f"{status} {v}")
    expect(ready(queue) == ["t0"], f"kept: {ready(queue)}")
    c.disconnect()
    print("ok")


def refused():
    """Every action with credentials of a user who is not an admin: 403; without any: 401."""
    queue = f"ref.{U}"
    c, col = stomp_conn()
    send_all(c, col, queue, ["keep"])
    mid = peek(queue)["messages"][0]["id"]
    calls = [("GET", f"/queues/{queue}/messages", None), ("GET", f"/queues/{queue}/messages/{q(mid)}", None),
             ("DELETE", f"/queues/{queue}/messages/{q(mid)}", None),
             ("POST", f"/queues/{queue}/messages/{q(mid)}/replay", {"to": "queue:x"}),
             ("POST", f"/queues/{queue}/replay", {"to": "queue:x"}), ("POST", f"/queues/{queue}/purge", None),
             ("POST", f"/queues/{queue}/move", {"to": "queue:x"}), ("GET", "/dead-letters", None),
             ("GET", "/connections", None), ("DELETE", "/connections/1", None)]
    for method, path, body in calls:
        status, v = api(method, path, body, auth="user")
        expect(status == 403, f"{method} {path} as a user: {status} {v}")
        status, v = api(method, path, body, auth=None)
        expect(status == 401, f"{method} {path} without credentials: {status} {v}")
    expect(ready(queue) == ["keep"], "a refused action changed nothing")
    c.disconnect()
    print("ok")


def close_connection():
    c, col = stomp_conn()
    conns = ok("GET", "/connections")["connections"]
    mine = [x for x in conns if x["protocol"] == "stomp" and x["peer"].endswith(f":{c.transport.socket.getsockname()[1]}")]
    expect(len(mine) == 1, f"this connection in {conns}")
    status, v = api("DELETE", f"/connections/{mine[0]['id']}")
    expect(status == 200 and v["closed"] == mine[0]["id"], f"close: {status} {v}")
    expect(col.disconnected.wait(T), "stomp.py did not see the disconnect")
    wait_for(lambda: all(x["id"] != mine[0]["id"] for x in ok("GET", "/connections")["connections"]), T,
             "the closed connection still listed")
    status, v = api("DELETE", f"/connections/{mine[0]['id']}")
    expect(status == 404, f"closed twice: {status} {v}")
    print("ok")


class Paho:
    """A paho client (MQTT 5 or 3.1.1, TCP or WebSocket) that records its messages and
    disconnects."""

    def __init__(self, version, cid, ws=False, will=None, clean=True, auth=None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.v5 = version == 5
        proto = mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311
        kw = {} if self.v5 else {"clean_session": clean}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto,
                             transport="websockets" if ws else "tcp", **kw)
        if ws:
            self.c.ws_set_options(path="/mqtt")
        if auth:
            self.c.username_pw_set(*auth.split(":", 1))
        if will:
            self.c.will_set(will[0], will[1], qos=1)
        self.msgs, self.disconnects, self.subacks = [], [], {}
        self.connack = None
        self.c.on_connect = lambda c, u, flags, rc, props: setattr(self, "connack", (flags, rc))
        self.c.on_message = lambda c, u, m: self.msgs.append(m)
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.append(rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.__setitem__(mid, rcs)
        props, ckw = None, {}
        if self.v5:
            ckw["clean_start"] = clean
            if not clean:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 60
        self.c.connect(H, args.mqtt_ws_port if ws else args.mqtt_port, keepalive=30, properties=props, **ckw)
        self.c.loop_start()
        wait_for(lambda: self.connack is not None, T, f"{cid}: no CONNACK")
        expect(not self.connack[1].is_failure, f"{cid}: CONNACK {self.connack[1]}")

    def local_port(self):
        return self.c.socket().getsockname()[1]

    def sub(self, topic):
        _, mid = self.c.subscribe(topic, qos=1)
        wait_for(lambda: mid in self.subacks, T, f"no SUBACK for {topic}")

    def bye(self):
        self.c.disconnect()
        self.c.loop_stop()


def listed(cid):
    """The admin API's entry for the MQTT connection with client id `cid`."""
    found = []
    wait_for(lambda: found.extend(x for x in ok("GET", "/connections")["connections"] if x["client_id"] == cid) or found,
             T, f"{cid} not listed")
    return found[0]


def parked():
    """Idle MQTT connections waiting in the router's poller, from GET /metrics."""
    req = urllib.request.Request(f"http://{H}:{args.admin_port}/metrics")
    req.add_header("Authorization", f"Bearer {args.token}")
    with urllib.request.urlopen(req, timeout=T) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("switchboard_mqtt_parked_connections "):
                return float(line.split()[1])
    return 0


def close_mqtt():
    """MQTT connections are listed with their client id and closed: 5.0 over TCP (parked
    in the poller when closed) sees DISCONNECT 0x98, 3.1.1 over WebSocket sees the
    connection closed; each session stays and each will is published, as on a
    network drop."""
    expect(args.mqtt_port and args.mqtt_ws_port, "needs --mqtt-port and --mqtt-ws-port")
    top = f"adm/{U}"
    watcher = Paho(5, f"watch-{U}")
    watcher.sub(f"{top}/#")
    user = args.user_auth.split(":", 1)[0]
    cid5 = f"adm5-{U}"
    a = Paho(5, cid5, will=(f"{top}/a", "a will"), clean=False, auth=args.user_auth)
    e = listed(cid5)
    expect(e["protocol"] == "mqtt" and e["listener"] == "mqtt" and e["user"] == user
           and e["peer"].endswith(f":{a.local_port()}") and e["since_unix_ms"] > 0, f"listed: {e}")
    # Both idle connections are parked (no task of their own): the close reaches them.
    wait_for(lambda: parked() >= 2, T, lambda: f"parked: {parked()}")
    status, v = api("DELETE", f"/connections/{e['id']}")
    expect(status == 200 and v["closed"] == e["id"], f"close: {status} {v}")
    wait_for(lambda: a.disconnects, T, "paho (5.0) did not see the disconnect")
    expect(a.disconnects[0].value == 0x98, f"reason: {a.disconnects[0]!r} ({a.disconnects[0].value:#x})")
    a.c.loop_stop()
    wait_for(lambda: watcher.msgs, T, "a's will not published")
    expect([(m.topic, m.payload) for m in watcher.msgs] == [(f"{top}/a", b"a will")], f"{watcher.msgs}")
    wait_for(lambda: all(x["id"] != e["id"] for x in ok("GET", "/connections")["connections"]), T,
             "the closed connection still listed")
    status, v = api("DELETE", f"/connections/{e['id']}")
    expect(status == 404, f"closed twice: {status} {v}")
    again = Paho(5, cid5, clean=False, auth=args.user_auth)
    expect(again.connack[0].session_present, "a's session kept")
    again.bye()

    cid3 = f"adm3-{U}"
    b = Paho(3, cid3, ws=True, will=(f"{top}/b", "b will"), clean=False)
    e = listed(cid3)
    expect(e["protocol"] == "mqtt" and e["listener"] == "mqtt-ws" and e["user"] == "anonymous", f"listed: {e}")
    ok("DELETE", f"/connections/{e['id']}")
    wait_for(lambda: b.disconnects, T, "paho (3.1.1, WebSocket) did not see the connection closed")
    expect(b.disconnects[0].is_failure, f"3.1.1 close: {b.disconnects[0]!r}")
    b.c.loop_stop()
    wait_for(lambda: len(watcher.msgs) == 2, T, "b's will not published")
    expect((watcher.msgs[1].topic, watcher.msgs[1].payload) == (f"{top}/b", b"b will"), f"{watcher.msgs[1]}")
    back = Paho(3, cid3, ws=True, clean=False)
    expect(back.connack[0].session_present, "b's session kept")
    back.bye()
    watcher.bye()
    print("ok")


def durable_before():
    """Persistent messages, then a delete, a move and a replay, each answered 200 just
    before the daemon is killed (-9) by the Rust test."""
    c, col = stomp_conn()
    for i in range(1, 5):
        c.send("/queue/keep", f"keep-{i}", receipt=f"k{i}", headers={"persistent": "true", "message-id": f"keep-{i}"})
        col.wait_receipt(f"k{i}")
    c.send("/queue/jobs", "job-1", receipt="j1", headers={"persistent": "true", "message-id": "job-1"})
    col.wait_receipt("j1")
    c.subscribe("/queue/jobs", id="j", ack="client-individual")
    col.wait_messages(1)
    c.nack(col.messages[0].headers["ack"], requeue="false")
    c.unsubscribe("j")
    wait_for(lambda: ready_soon("jobs.dlq") == ["job-1"], T, lambda: f"jobs.dlq: {ready_soon('jobs.dlq')}")
    c.disconnect()
    ok("DELETE", "/queues/keep/messages/keep-2")
    r = ok("POST", "/queues/keep/messages/keep-3/replay", {"to": "queue:keep.moved"})
    expect(r["moved"] == 1, f"{r}")
    r = ok("POST", "/queues/jobs.dlq/messages/job-1/replay")
    expect(r["to"] == {"queue:jobs": 1}, f"{r}")
    print("ok")


def durable_after():
    expect(ready("keep") == ["keep-1", "keep-4"], f"keep after restart: {ready('keep')}")
    expect(ready("keep.moved") == ["keep-3"], f"keep.moved: {ready('keep.moved')}")
    expect(ready("jobs.dlq") == [], f"jobs.dlq: {ready('jobs.dlq')}")
    jobs = peek("jobs")["messages"]
    expect([m["body"] for m in jobs] == ["job-1"] and jobs[0]["death"] is None, f"jobs: {jobs}")
    c, col = stomp_conn()
    c.subscribe("/queue/keep", id="k", ack="auto")
    col.wait_messages(2)
    expect(col.bodies() == ["keep-1", "keep-4"], f"{col.bodies()}")
    c.disconnect()
    print("ok")


SCENARIOS = {f.__name__: f for f in [peek_does_not_consume, dead_letters, purge_and_move, refused, close_connection,
                                     close_mqtt,
                                     durable_before, durable_after]}
if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}")
SCENARIOS[args.scenario]()
