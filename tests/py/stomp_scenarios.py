"""STOMP scenarios driven by stomp.py, an independent client, against Switchboard.

Usage: stomp_scenarios.py --port PORT SCENARIO [--user U --password P] [--admin-port P]
Each scenario asserts behaviour and exits 0 on success, 1 with a reason otherwise.
"""

import json
import os
import sys
import threading
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import stomp  # noqa: E402
from stomp.exception import ConnectFailedException  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--user"), p.add_argument("--password"), p.add_argument("--ca"),
                             p.add_argument("--admin-port", type=int)))
HP = [(args.host, args.port)]
T = args.timeout


def conn(version="1.2", heartbeats=(0, 0), user=None, password=None, **kw):
    cls = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}[version]
    c = cls(HP, heartbeats=heartbeats, **kw) if version != "1.0" else cls(HP, **kw)
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(user, password, wait=True)
    return c, col


def admin_json(path):
    """GET `path` of the router's admin API (--admin-port)."""
    expect(args.admin_port, "this scenario needs --admin-port")
    with urllib.request.urlopen(f"http://{args.host}:{args.admin_port}{path}", timeout=5) as r:
        return json.load(r)


def temp_queues():
    """The router's temporary reply queues: names shown redacted to a non-admin, so only
    the prefix is compared."""
    return [q["name"] for q in admin_json("/queues")["queues"] if q["name"].startswith("$sb.tmp.")]


def reply_dropped():
    """Replies dropped because their temporary queue was gone (GET /memory)."""
    return admin_json("/memory")["limits"].get("stomp.reply_to_gone", 0)


def uniq(prefix):
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def nothing_more(c, col, dest, count, marker="marker"):
    """Nothing beyond `count` messages came or is still coming on `dest`: a marker sent
    there now arrives right after them (it queues behind anything else still on its way)."""
    c.send(dest, marker)
    col.wait_messages(count + 1, f"the marker after {count}")
    bodies = col.bodies()
    expect(len(bodies) == count + 1 and bodies[-1] in (marker, marker.encode()),
           f"expected exactly {count} messages before the marker, got {bodies!r}")
    return col.messages[-1]


# ---------------------------------------------------------------------------------------


def versions():
    """CONNECT with each version; CONNECTED names it; frames flow in each."""
    for v in ["1.0", "1.1", "1.2"]:
        c, col = conn(v)
        q = f"/queue/{uniq('ver')}"
        if v == "1.0":
            c.subscribe(q, id="s")
        else:
            c.subscribe(q, id="s", ack="auto")
        c.send(q, f"hello {v}", receipt="r1")
        col.wait_receipt("r1")
        col.wait_messages(1)
        expect(col.bodies() == [f"hello {v}"], f"{v}: {col.bodies()}")
        c.disconnect(receipt="bye")
        expect(col.disconnected.wait(T), f"{v}: no disconnect")
    print("ok")


def frames_and_headers():
    """SEND headers map through; custom headers repeat; binary body with NUL; UNSUBSCRIBE stops delivery."""
    c, col = conn("1.2", auto_decode=False)
    q = f"/queue/{uniq('hdr')}"
    c.subscribe(q, id="s1", ack="auto")
    body = b"bin\x00ary\xff\xfe"
    c.send(q, body, content_type="application/octet-stream",
           headers={"correlation-id": "corr-1", "persistent": "true", "priority": "7", "x-custom": "v:1", "reply-to": "/queue/replies"},
           receipt="r1")
    col.wait_receipt("r1")
    col.wait_messages(1)
    m = col.messages[0]
    expect(m.body == body, f"body {m.body!r}")
    h = m.headers
    for k, v in {"content-type": "application/octet-stream", "correlation-id": "corr-1", "persistent": "true",
                 "priority": "7", "x-custom": "v:1", "reply-to": "/queue/replies", "destination": q,
                 "subscription": "s1", "content-length": str(len(body))}.items():
        expect(h.get(k) == v, f"header {k}: {h.get(k)!r} != {v!r} in {h}")
    expect("message-id" in h and "timestamp" in h, f"{h}")
    c.unsubscribe("s1", receipt="u1")
    col.wait_receipt("u1")
    c.send(q, b"after", receipt="r2")
    col.wait_receipt("r2")
    # The message sent after UNSUBSCRIBE waits in the queue for the next consumer (so s1
    # did not take it), and comes once.
    c.subscribe(q, id="s2", ack="auto")
    col.wait_messages(2)
    m = col.messages[1]
    expect(m.body == b"after" and m.headers.get("subscription") == "s2", f"queued message delivered to the new subscription: {m.headers}")
    nothing_more(c, col, q, 2)
    c.disconnect()
    print("ok")


def ack_modes():
    """client-individual acks one; client acks cumulatively; unacked come back redelivered on reconnect."""
    q = f"/queue/{uniq('ack')}"
    c, col = conn("1.2")
    c.subscribe(q, id="s", ack="client-individual")
    for i in range(4):
        c.send(q, f"m{i}")
    col.wait_messages(4)
    # Ack m1 and m3 individually; m0 and m2 stay unacked.
    c.ack(col.messages[1].headers["ack"])
    c.ack(col.messages[3].headers["ack"], receipt="a")
    col.wait_receipt("a")
    c.disconnect()
    c2, col2 = conn("1.2")
    c2.subscribe(q, id="s", ack="client")
    col2.wait_messages(2)
    expect(col2.bodies() == ["m0", "m2"], f"redelivered in order: {col2.bodies()}")
    for m in col2.messages:
        expect(m.headers.get("redelivered") == "true", f"redelivered flag: {m.headers}")
    # client mode: acking the last acks both.
    c2.ack(col2.messages[1].headers["ack"], receipt="b")
    col2.wait_receipt("b")
    c2.disconnect()
    c3, col3 = conn("1.2")
    c3.subscribe(q, id="s", ack="client")
    nothing_more(c3, col3, q, 0)
    c3.disconnect()
    print("ok")


def ack_v11():
    """STOMP 1.1 ACK/NACK by subscription + message-id."""
    q = f"/queue/{uniq('ack11')}"
    c, col = conn("1.1")
    c.subscribe(q, id="s", ack="client-individual")
    c.send(q, "a")
    c.send(q, "b")
    col.wait_messages(2)
    expect(all("ack" not in m.headers for m in col.messages), "no ack header before 1.2")
    c.ack(col.messages[0].headers["message-id"], "s")
    c.nack(col.messages[1].headers["message-id"], "s")
    col.wait_messages(3, "NACK requeues")
    expect(col.messages[2].body == "b" and col.messages[2].headers.get("redelivered") == "true", f"{col.messages[2].headers}")
    c.ack(col.messages[2].headers["message-id"], "s", receipt="r")
    col.wait_receipt("r")
    c.disconnect()
    print("ok")


def nack_requeue_and_reject():
    """NACK requeues to the head with redelivered; NACK requeue:false removes it."""
    q = f"/queue/{uniq('nack')}"
    c, col = conn("1.2")
    c.subscribe(q, id="s", ack="client-individual", headers={"prefetch-count": "1"})
    c.send(q, "first")
    c.send(q, "second")
    col.wait_messages(1)
    c.nack(col.messages[0].headers["ack"])
    col.wait_messages(2)
    expect(col.messages[1].body == "first" and col.messages[1].headers.get("redelivered") == "true", f"{col.messages[1].headers}")
    c.nack(col.messages[1].headers["ack"], requeue="false")
    col.wait_messages(3)
    expect(col.messages[2].body == "second", f"{col.bodies()}")
    c.ack(col.messages[2].headers["ack"], receipt="r")
    col.wait_receipt("r")
    nothing_more(c, col, q, 3)
    c.disconnect()
    print("ok")


def transactions():
    """SEND and ACK in a transaction take effect on COMMIT only; ABORT discards."""
    q = f"/queue/{uniq('tx')}"
    c, col = conn("1.2")
    c.subscribe(q, id="s", ack="client-individual")
    tx = c.begin()
    c.send(q, "t1", transaction=tx)
    c.send(q, "t2", transaction=tx)
    nothing_more(c, col, q, 0, "m1")  # not before COMMIT
    c.commit(tx)
    col.wait_messages(3)
    expect(col.bodies() == ["m1", "t1", "t2"], f"{col.bodies()}")
    tx2 = c.begin()
    c.send(q, "aborted", transaction=tx2)
    c.ack(col.messages[1].headers["ack"], transaction=tx2)
    c.abort(tx2)
    nothing_more(c, col, q, 3, "m2")
    tx3 = c.begin()
    for m in col.messages:
        c.ack(m.headers["ack"], transaction=tx3)
    c.commit(tx3, receipt="done")
    col.wait_receipt("done")
    c.disconnect()
    # Everything acked, the aborted send never happened.
    c2, col2 = conn("1.2")
    c2.subscribe(q, id="s", ack="auto")
    nothing_more(c2, col2, q, 0)
    c2.disconnect()
    print("ok")


def temp_reply_queue():
    """Request/reply: reply-to /temp-queue/NAME; the responder replies to the reply-to it gets."""
    service = f"/queue/{uniq('svc')}"
    responder, rcol = conn("1.2")
    responder.subscribe(service, id="svc", ack="auto")
    requester, qcol = conn("1.2")
    requester.send(service, "ping", headers={"reply-to": "/temp-queue/answers", "correlation-id": "c-42"})
    rcol.wait_messages(1)
    req = rcol.messages[0]
    reply_to = req.headers.get("reply-to")
    expect(reply_to and reply_to != "/temp-queue/answers", f"the responder sees a routable reply-to: {req.headers}")
    responder.send(reply_to, "pong", headers={"correlation-id": req.headers["correlation-id"]})
    qcol.wait_messages(1)
    rep = qcol.messages[0]
    expect(rep.body == "pong", f"{rep.body}")
    expect(rep.headers.get("destination") == "/temp-queue/answers", f"{rep.headers}")
    expect(rep.headers.get("subscription") == "/temp-queue/answers", f"{rep.headers}")
    expect(rep.headers.get("correlation-id") == "c-42", f"{rep.headers}")
    expect(len(temp_queues()) == 1, f"the requester's temp queue is listed: {temp_queues()}")
    requester.disconnect()
    # The temp queue goes with its owner; a late reply is dropped and counted, not queued
    # forever (no temp queue comes back for it) nor delivered to anyone, and the
    # responder's connection is not harmed. (tests/stomp.rs checks the log line.)
    wait_for(lambda: not temp_queues(), T, lambda: f"the temp queue outlived its owner: {temp_queues()}")
    expect(reply_dropped() == 0, f"nothing dropped yet: {reply_dropped()}")
    responder.send(reply_to, "late", receipt="late")
    rcol.wait_receipt("late")
    expect(reply_dropped() == 1, f"the late reply is counted as dropped: {reply_dropped()}")
    expect(not temp_queues(), f"the late reply was queued: {temp_queues()}")
    expect(not rcol.errors, f"the responder got an ERROR: {rcol._errors()}")
    # A new requester using the same temp-queue name gets its own queue: its reply is the
    # only message it sees, and the responder saw only the two requests.
    again, acol = conn("1.2")
    again.send(service, "ping2", headers={"reply-to": "/temp-queue/answers"})
    rcol.wait_messages(2)
    req2 = rcol.messages[1]
    expect(req2.body == "ping2" and req2.headers["reply-to"] != reply_to, f"a new temp queue: {req2.headers}")
    responder.send(req2.headers["reply-to"], "pong2")
    acol.wait_messages(1)
    expect(acol.bodies() == ["pong2"], f"only its own reply: {acol.bodies()}")
    queued = {q["name"]: q["ready"] + q["unacked"] for q in admin_json("/queues")["queues"]}
    expect(not any(queued.values()), f"the late reply waits nowhere: {queued}")
    expect(rcol.bodies() == ["ping", "ping2"], f"the responder got only the requests: {rcol.bodies()}")
    again.disconnect()
    responder.disconnect()
    print("ok")


def topics():
    """Every subscriber gets a copy; wildcards; a durable subscription keeps messages while away."""
    base = uniq("news")
    a, acol = conn("1.2")
    b, bcol = conn("1.2")
    a.subscribe(f"/topic/{base}.*", id="a", ack="auto")
    b.subscribe(f"/topic/{base}.#", id="b", ack="auto", receipt="sb")
    bcol.wait_receipt("sb")
    a.send(f"/topic/{base}.sport", "s1")
    a.send(f"/topic/{base}.sport.football", "f1")
    # A marker both filters match: `.*` did not take the two-level name before it.
    nothing_more(a, acol, f"/topic/{base}.marker", 1)
    bcol.wait_messages(3)
    expect(bcol.bodies() == ["s1", "f1", "marker"], f"{bcol.bodies()}")
    expect(acol.messages[0].headers["destination"] == f"/topic/{base}.sport", f"{acol.messages[0].headers}")
    # Durable: subscribe, leave, messages wait, come back.
    d, dcol = conn("1.2", user=None)
    d.subscribe(f"/topic/{base}.#", id="dur", ack="client-individual", headers={"durable": "true"}, receipt="ds")
    dcol.wait_receipt("ds")
    d.disconnect()
    a.send(f"/topic/{base}.x", "while-away", receipt="w")
    acol.wait_receipt("w")
    d2, d2col = conn("1.2")
    d2.subscribe(f"/topic/{base}.#", id="dur", ack="client-individual", headers={"durable": "true"})
    d2col.wait_messages(1)
    expect(d2col.bodies() == ["while-away"], f"{d2col.bodies()}")
    d2.ack(d2col.messages[0].headers["ack"])
    d2.unsubscribe("dur", headers={"durable": "true"}, receipt="gone")
    d2col.wait_receipt("gone")
    for x in (a, b, d2):
        x.disconnect()
    print("ok")


def competing_consumers():
    """A queue gives each message to exactly one of several consumers, round-robin."""
    q = f"/queue/{uniq('work')}"
    conns = [conn("1.2") for _ in range(3)]
    for i, (c, col) in enumerate(conns):
        c.subscribe(q, id="w", ack="auto", receipt=f"s{i}")
        col.wait_receipt(f"s{i}")
    p, _ = conn("1.2")
    for i in range(30):
        p.send(q, str(i))
    # One marker more for each consumer: each one's marker comes after all it was given.
    for i in range(3):
        p.send(q, f"end{i}")
    wait_for(lambda: all(col.bodies()[-1:] and col.bodies()[-1].startswith("end") for _, col in conns), T,
             lambda: f"a marker to each: {[col.bodies() for _, col in conns]}")
    counts = [len(col.messages) - 1 for _, col in conns]
    allb = sorted(int(b) for _, col in conns for b in col.bodies()[:-1])
    expect(allb == list(range(30)), f"each exactly once: {allb}")
    expect(counts == [10, 10, 10], f"fair dispatch: {counts}")
    for c, _ in conns + [(p, None)]:
        c.disconnect()
    print("ok")


def auth():
    """With users configured and anonymous refused: bad creds → ERROR; good → CONNECTED; permissions enforced."""
    c = stomp.Connection12(HP)
    col = Collector(T)
    c.set_listener("c", col)
    try:
        c.connect(None, None, wait=True)
        fail("anonymous CONNECT was accepted")
    except ConnectFailedException:
        pass
    wait_for(lambda: col.errors, T, "ERROR frame for anonymous")
    expect(col.errors[0].headers.get("message") == "access refused", f"{col.errors[0].headers}")
    c2 = stomp.Connection12(HP)
    col2 = Collector(T)
    c2.set_listener("c", col2)
    try:
        c2.connect(args.user, "wrong", wait=True)
        fail("wrong password accepted")
    except ConnectFailedException:
        pass
    wait_for(lambda: col2.errors, T, "ERROR frame for bad password")
    expect("bad credentials" in col2.errors[0].body, f"{col2.errors[0].body!r}")
    ok, okcol = conn("1.2", user=args.user, password=args.password)
    ok.subscribe("/queue/allowed.in", id="s", ack="auto")
    ok.send("/queue/allowed.in", "fine", receipt="r")
    okcol.wait_receipt("r")
    okcol.wait_messages(1)
    ok.send("/queue/forbidden", "nope", receipt="r2")
    wait_for(lambda: okcol.errors, T, "ERROR for a forbidden destination")
    e = okcol.errors[0]
    expect(e.headers.get("message") == "access refused" and e.headers.get("receipt-id") == "r2", f"{e.headers}")
    expect("/queue/forbidden" in e.body, f"{e.body!r}")
    expect(okcol.disconnected.wait(T), "closed after ERROR")
    print("ok")


def tls():
    """STOMP over TLS, the certificate verified against the test CA."""
    c = stomp.Connection12(HP)
    c.set_ssl(for_hosts=HP, ca_certs=args.ca)
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    q = f"/queue/{uniq('tls')}"
    c.subscribe(q, id="s", ack="auto")
    c.send(q, "secret", receipt="r")
    col.wait_receipt("r")
    col.wait_messages(1)
    expect(col.bodies() == ["secret"], f"{col.bodies()}")
    c.disconnect()
    print("ok")


def wss():
    """STOMP over WebSocket over TLS (a Python websockets client, certificate verified)."""
    import ssl
    from websockets.sync.client import connect as ws_connect
    ctx = ssl.create_default_context(cafile=args.ca)
    with ws_connect(f"wss://{args.host}:{args.port}/ws", ssl=ctx, subprotocols=["v12.stomp"]) as ws:
        expect(ws.subprotocol == "v12.stomp", f"subprotocol {ws.subprotocol}")
        ws.send("CONNECT\naccept-version:1.2\nhost:x\n\n\0")
        f = ws.recv(timeout=T)
        expect(f.startswith("CONNECTED\nversion:1.2"), f)
        ws.send("SUBSCRIBE\nid:1\ndestination:/queue/wss\n\n\0")
        ws.send("SEND\ndestination:/queue/wss\n\nover tls\0")
        f = ws.recv(timeout=T)
        expect(f.startswith("MESSAGE\n") and f.endswith("over tls\0"), f)
    print("ok")


# ---- what RabbitMQ users send (issue 24) ------------------------------------------------


def guest_login():
    """guest/guest (the RabbitMQ tutorials' credentials) on a loopback router without users: accepted as anonymous."""
    c, col = conn("1.2", user="guest", password="guest")
    q = f"/queue/{uniq('guest')}"
    c.subscribe(q, id="s", ack="auto")
    c.send(q, "hello guest", receipt="r")
    col.wait_receipt("r")
    col.wait_messages(1)
    expect(col.bodies() == ["hello guest"], f"{col.bodies()}")
    # Durable subscriptions of such a client belong to `anonymous`, like any anonymous one's.
    c.subscribe(f"/topic/{uniq('g')}", id="d", ack="auto", headers={"durable": "true", "subscription-name": "gd"}, receipt="d")
    col.wait_receipt("d")
    c.unsubscribe("d", headers={"durable": "true"}, receipt="u")
    col.wait_receipt("u")
    c.disconnect()
    print("ok")


def redelivered_false_first():
    """A first delivery says redelivered:false (RabbitMQ does; clients read it); a redelivery says true."""
    c, col = conn("1.2")
    q = f"/queue/{uniq('redel')}"
    c.subscribe(q, id="s", ack="client-individual")
    c.send(q, "once")
    col.wait_messages(1)
    expect(col.messages[0].headers.get("redelivered") == "false", f"first delivery: {col.messages[0].headers}")
    c.nack(col.messages[0].headers["ack"])
    col.wait_messages(2)
    expect(col.messages[1].headers.get("redelivered") == "true", f"redelivery: {col.messages[1].headers}")
    c.ack(col.messages[1].headers["ack"], receipt="r")
    col.wait_receipt("r")
    # auto subscriptions and topics too.
    t = f"/topic/{uniq('redelt')}"
    c.subscribe(t, id="t", ack="auto", receipt="st")
    col.wait_receipt("st")
    c.send(t, "topic")
    col.wait_messages(3)
    expect(col.messages[2].headers.get("redelivered") == "false", f"topic delivery: {col.messages[2].headers}")
    c.disconnect()
    print("ok")


def requeue_any_case():
    """NACK requeue:False / FALSE rejects (not requeues); requeue:TRUE requeues; SEND persistent:True is persistent."""
    c, col = conn("1.2")
    q = f"/queue/{uniq('rq')}"
    c.subscribe(q, id="s", ack="client-individual", headers={"prefetch-count": "1"})
    for body in ["a", "b", "c"]:
        c.send(q, body, headers={"persistent": "True"})
    col.wait_messages(1)
    expect(col.messages[0].headers.get("persistent") == "true", f"persistent:True: {col.messages[0].headers}")
    c.nack(col.messages[0].headers["ack"], requeue="False")
    col.wait_messages(2)
    expect(col.messages[1].body == "b", f"requeue:False rejected `a`: {col.bodies()}")
    c.nack(col.messages[1].headers["ack"], requeue="FALSE")
    col.wait_messages(3)
    expect(col.messages[2].body == "c", f"requeue:FALSE rejected `b`: {col.bodies()}")
    c.nack(col.messages[2].headers["ack"], requeue="TRUE")
    col.wait_messages(4)
    expect(col.messages[3].body == "c" and col.messages[3].headers.get("redelivered") == "true",
           f"requeue:TRUE requeued `c`: {col.bodies()} {col.messages[3].headers}")
    c.ack(col.messages[3].headers["ack"], receipt="r")
    col.wait_receipt("r")
    c.ack(nothing_more(c, col, q, 4, "m1").headers["ack"])
    # In a transaction too.
    c.send(q, "d")
    col.wait_messages(6)
    tx = c.begin()
    c.nack(col.messages[5].headers["ack"], transaction=tx, requeue="False")
    c.commit(tx, receipt="done")
    col.wait_receipt("done")
    nothing_more(c, col, q, 6, "m2")
    c.disconnect()
    print("ok")


def batched_sends():
    """SENDs to a topic that one read brings, asking for no receipt, are published as one
    batch: a subscriber still gets every message in the order sent, with what ends a
    run in its place (a SEND with a receipt, one to another topic, one in a
    transaction, a SUBSCRIBE), receipts come back in order, and a DISCONNECT in the same
    write comes after all of them. A bad header in a run ends the connection with an
    ERROR once the SENDs before it are out."""
    import socket
    base = uniq("batch")
    a, b = f"/topic/{base}.a", f"/topic/{base}.b"
    sub, col = conn("1.2")
    sub.subscribe(f"/topic/{base}.#", id="s", ack="auto", receipt="s")
    col.wait_receipt("s")
    sent, wire = [], b""

    def send(dest, body, headers=""):
        nonlocal wire
        wire += f"SEND\ndestination:{dest}\ncontent-length:{len(body)}\n{headers}\n{body}\0".encode()
        sent.append(body)

    for i in range(40):
        send(a, f"a{i}")
    send(a, "with-receipt", "receipt:r1\n")
    for i in range(40, 60):
        send(a, f"a{i}")
    for i in range(10):
        send(b, f"b{i}")
    wire += b"\n\n"  # heart-beats between frames
    wire += b"BEGIN\ntransaction:t1\n\n\0"
    send(a, "in-tx", "transaction:t1\n")
    sent.pop()  # published at COMMIT, after what follows
    for i in range(60, 70):
        send(a, f"a{i}")
    wire += b"COMMIT\ntransaction:t1\nreceipt:r2\n\n\0"
    sent.append("in-tx")
    for i in range(70, 80):
        send(a, f"a{i}")
    wire += b"DISCONNECT\nreceipt:bye\n\n\0"
    s = socket.create_connection((args.host, args.port), timeout=T)
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\n\n\0" + wire)
    back = b""
    while chunk := s.recv(65536):
        back += chunk
    s.close()
    frames = [f.lstrip(b"\n").split(b"\n", 1)[0] + b" " + b"".join(
        l for l in f.split(b"\n") if l.startswith(b"receipt-id:")) for f in back.split(b"\0") if f.strip(b"\n")]
    expect(frames == [b"CONNECTED ", b"RECEIPT receipt-id:r1", b"RECEIPT receipt-id:r2", b"RECEIPT receipt-id:bye"],
           f"CONNECTED, then the receipts in order: {frames}")
    col.wait_messages(len(sent))
    expect(col.bodies() == sent, f"in order: {col.bodies()}")

    # A bad header within a run: the SENDs before it are published, then the ERROR.
    s = socket.create_connection((args.host, args.port), timeout=T)
    bad = b"".join(f"SEND\ndestination:{a}\n\nok{i}\0".encode() for i in range(5))
    bad += f"SEND\ndestination:{a}\nexpires:soon\n\nbad\0".encode()
    bad += f"SEND\ndestination:{a}\n\nafter\0".encode()
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\n\n\0" + bad)
    back = b""
    while chunk := s.recv(65536):
        back += chunk
    s.close()
    expect(b"ERROR" in back, f"an ERROR for the bad header: {back!r}")
    nothing_more(sub, col, a, len(sent) + 5)
    expect(col.bodies()[len(sent):len(sent) + 5] == [f"ok{i}" for i in range(5)], f"{col.bodies()[len(sent):]}")
    sub.disconnect()
    print("ok")


SCENARIOS = {f.__name__: f for f in [batched_sends, versions, frames_and_headers, ack_modes, ack_v11, nack_requeue_and_reject,
                                     transactions, temp_reply_queue, topics, competing_consumers, auth, tls, wss,
                                     guest_login, redelivered_false_first, requeue_any_case]}

if args.scenario not in SCENARIOS:
    fail(f"unknown scenario {args.scenario}; known: {', '.join(SCENARIOS)}")
SCENARIOS[args.scenario]()
