"""The XMPP link moving between clustered routers (tests/cluster_xmpp.rs starts routers A, B, C on
the NATS rig, pushes the routes and finds which router holds the link's lease).

slixmpp is the IM user on Prosody; stomp.py clients sit on the two routers that survive. The
user subscribes to alerts@bridge (presence-driven push), joins a room with the router and chats
to echo@bridge (routed to a shared queue) every 50 ms, asking receipts; a STOMP client sends
notifications to the user through the link every 100 ms, with receipts. The holder is killed
(-9). Then:

- another router takes the lease and connects (the failover time is measured from the kill);
- every chat the user got a receipt for, and every chat sent after the new holder connected,
  reaches the STOMP consumer; chats sent in between are bounced by the server (service
  unavailable: no component connected) or arrive; what is neither is counted as lost at the
  moment of death and printed (XEP-0114 has no acknowledgement: see docs/cluster.md);
- every notification whose SEND was confirmed reaches the user (duplicates counted);
- the new holder rejoined the room (what it says there arrives, which a non-occupant could not
  do), knows the presence subscription (pushes alerts again) and publishes presence events.

Usage: cluster_xmpp.py --prefix P --jid U --password PW --c2s-port N --stomp-ports A,B,C
                       --admin-ports A,B,C --holder I --holder-pid PID [--timeout S] failover
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, fail, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402
from xmpptest import User  # noqa: E402

import stomp  # noqa: E402

ap = argparse.ArgumentParser()
for a in ("--prefix", "--jid", "--password", "--stomp-ports", "--admin-ports"):
    ap.add_argument(a, required=True)
for a in ("--c2s-port", "--holder", "--holder-pid"):
    ap.add_argument(a, type=int, required=True)
ap.add_argument("--timeout", type=float, default=20.0)
ap.add_argument("scenario")
args = ap.parse_args()
P, T = args.prefix, args.timeout
BRIDGE = "bridge.localhost"
ROOM = f"{P}@conference.localhost"
STOMP = [int(x) for x in args.stomp_ports.split(",")]
ADMIN = [int(x) for x in args.admin_ports.split(",")]
NODES = ["a", "b", "c"]
DEAD = NODES[args.holder]
S, S2 = [i for i in range(3) if i != args.holder]


def admin(i, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN[i]}{path}", timeout=5) as r:
        return json.load(r)


def holder(i):
    for lease in admin(i, "/cluster").get("leases", []):
        if lease["lease"] == f"xmpp:{BRIDGE}":
            return lease["holder"]
    return None


def stomp_conn(i):
    c = stomp.Connection12([("127.0.0.1", STOMP[i])], heartbeats=(0, 0))
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


def on(col, dest):
    with col.lock:
        return [m for m in col.messages if m.headers.get("destination") == dest]


def bodies_from(u, local):
    """Bodies of the messages the user got from local@bridge."""
    return [m["body"] for m in u.messages if str(m["from"]).startswith(f"{local}@{BRIDGE}")]


async def failover():
    s, col = stomp_conn(S)
    for sid, dest in (("c", f"/queue/{P}.chats"), ("p", f"/topic/{P}.presence.#"), ("r", f"/topic/{P}.room")):
        s.subscribe(dest, id=sid, ack="auto", receipt=sid)
        col.wait_receipt(sid)
    s2, col2 = stomp_conn(S2)

    def events():
        return [json.loads(m.body) for m in on(col, f"/topic/{P}.presence.{args.jid.split('@')[0]}")]

    u = User(args.jid, args.password, T)
    u.connect("127.0.0.1", args.c2s_port)
    await u.started()
    errors = lambda: {m["id"] for m in u.errors}  # noqa: E731
    u.send_presence_subscription(pto=f"alerts@{BRIDGE}")
    await u.wait(lambda: any(e["available"] for e in events()), "an available event before the move")
    s2.send(f"/topic/{P}.alerts", "before")
    await u.wait(lambda: "before" in bodies_from(u, "alerts"), "the alert pushed before the move")
    await u.plugin["xep_0045"].join_muc_wait(ROOM, "alice", maxstanzas=0, timeout=T)
    await u.wait(lambda: "switchboard" in u.plugin["xep_0045"].get_roster(ROOM), "router in the room")

    sent = {}  # chat id -> time sent
    notified = []  # notification ids sent
    t_kill = t_up = None
    stop = asyncio.Event()

    async def chats():
        i = 0
        while not stop.is_set():
            m = u.make_message(mto=f"echo@{BRIDGE}", mbody=f"c{i}", mtype="chat")
            m["id"] = f"c{i}"
            sent[f"c{i}"] = time.monotonic()
            m.send()
            i += 1
            await asyncio.sleep(0.05)

    async def notifications():
        i = 0
        while not stop.is_set():
            s2.send(f"/queue/{P}.notify", f"n{i}", headers={"user": args.jid}, receipt=f"n{i}")
            notified.append(f"n{i}")
            i += 1
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(chats()), asyncio.create_task(notifications())]
    await u.wait(lambda: len(u.receipts) >= 30, "receipts for the first chats")
    os.kill(args.holder_pid, signal.SIGKILL)
    t_kill = time.monotonic()
    new = None
    while new is None:
        if time.monotonic() - t_kill > 30:
            fail("no router took the XMPP link over within 30 s")
        h = holder(S)
        if h not in (None, DEAD):
            i = NODES.index(h)
            if [l for l in admin(i, "/links") if l["state"] == "connected"]:
                new, t_up = i, time.monotonic()
        await asyncio.sleep(0.1)
    after_up = len(sent)
    await u.wait(lambda: len(sent) >= after_up + 40, "40 chats after the move")
    stop.set()
    await asyncio.gather(*tasks)
    last = f"c{len(sent) - 1}"
    await u.wait(lambda: last in u.receipts or last in errors(), "the last chat settled")

    # Chats: what was receipted, and all sent after the move, arrive.
    got = [m.body for m in on(col, f"/queue/{P}.chats")]
    await u.wait(lambda: set(u.receipts) <= {m.body for m in on(col, f"/queue/{P}.chats")},
                 "every receipted chat on the queue")
    got = [m.body for m in on(col, f"/queue/{P}.chats")]
    delivered = set(got)
    after = [c for c, t in sent.items() if t >= t_up]
    missing_after = [c for c in after if c not in delivered]
    expect(not missing_after, f"chats sent after the move that never arrived: {missing_after}")
    gap = [c for c, t in sent.items() if t_kill <= t < t_up]
    before = [c for c, t in sent.items() if t < t_kill]
    bounced = [c for c in gap + before if c in errors() and c not in delivered]
    lost = [c for c in gap + before if c not in delivered and c not in errors()]
    first_after_kill = min((c for c in u.receipts if sent[c] >= t_kill), key=lambda c: sent[c], default=None)

    # Notifications: every confirmed one reaches the user.
    col2.wait_receipt(notified[-1])
    confirmed = [n for n in notified if n in col2.receipts]
    await u.wait(lambda: set(confirmed) <= set(bodies_from(u, "notify")),
                 f"every confirmed notification at the user: missing "
                 f"{sorted(set(confirmed) - set(bodies_from(u, 'notify')))[:20]}")
    nb = bodies_from(u, "notify")

    # The new holder is in the room (only an occupant may say something there).
    s2.send(f"/topic/{P}.say", "after the move")
    await u.wait(lambda: any(m["body"] == "after the move" for m in u.said), "the new holder speaking in the room")
    u.send_message(mto=ROOM, mbody="to the new holder", mtype="groupchat")
    await u.wait(lambda: any(m.body == "to the new holder" for m in on(col, f"/topic/{P}.room")),
                 "a room message through the new holder")
    # It knows the presence subscription: alerts are pushed again, and presence changes are events.
    s2.send(f"/topic/{P}.alerts", "after")
    await u.wait(lambda: "after" in bodies_from(u, "alerts"), "an alert pushed by the new holder")
    u.send_presence(pshow="away", pstatus="moved")
    await u.wait(lambda: any(e.get("status") == "moved" for e in events()), "a presence event from the new holder")

    print(f"holder {DEAD} killed; {NODES[new]} connected after {t_up - t_kill:.2f} s; "
          f"first receipted chat sent {(sent[first_after_kill] - t_kill) if first_after_kill else float('nan'):.2f} s after the kill")
    print(f"chats: {len(sent)} sent ({len(before)} before the kill, {len(gap)} in the gap, {len(after)} after), "
          f"{len(delivered)} delivered, {len(got) - len(delivered)} duplicates, {len(bounced)} bounced by the server, "
          f"{len(lost)} lost at the moment of death {lost}")
    print(f"notifications: {len(notified)} sent, {len(confirmed)} confirmed, {len(set(nb))} at the user, "
          f"{len(nb) - len(set(nb))} duplicates")
    u.disconnect()
    s.disconnect()
    s2.disconnect()
    print("ok")


if args.scenario != "failover":
    fail(f"unknown scenario {args.scenario}")
asyncio.run(failover())
