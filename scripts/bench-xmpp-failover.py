#!/usr/bin/env python3
"""XMPP link failover across clustered routers (issue 22), not a test: how long the link is gone
when the router holding it dies. `scripts/bench xmpp-failover` runs it (release build, the NATS rig
and Prosody up).

Three routers (release binary) join the NATS rig under a prefix of their own with the same XMPP
link (Prosody's component bridge.localhost); one holds the link's lease. A slixmpp user chats to
echo@bridge every 20 ms (routed to a shared queue read by stomp.py on a surviving router). Each
round kills the holder (-9) and measures, from the kill:

- **connected**: until another router holds the lease and its link is connected (GET /cluster and
  GET /links on the new holder, polled every 50 ms);
- **first chat**: until the first chat *sent after the kill* reaches the STOMP consumer (what a
  user sees: the chats in between are bounced by Prosody while no component is connected).

The killed router is started again under a new node name (a killed router's name stays taken
for 6 s) and the next round waits until it is on standby. Rounds: FAILOVER_ROUNDS (10). Prints
each round, then the median, p90, min and max of both figures. No peer is compared: a single
XMPP server connection has no failover of its own to compare with.

Holds Prosody's test lock exclusively and the NATS rig's shared (as tests/cluster_xmpp.rs does),
and deletes the run's streams and buckets at the end.
"""

import asyncio
import fcntl
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "py"))
from crashkit import Router  # noqa: E402

import slixmpp  # noqa: E402
import stomp  # noqa: E402

BIN = os.environ.get("SWITCHBOARD_BIN", os.path.join(ROOT, "target", "release", "switchboard"))
URLS = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
ROUNDS = int(os.environ.get("FAILOVER_ROUNDS", "10"))
BRIDGE = "bridge.localhost"
P = f"bxf{os.getpid()}{time.time_ns() % 100000}"
PREFIX = P + "_"


def lock(name, how):
    f = open(os.path.join(tempfile.gettempdir(), f"switchboard-tests-{name}.lock"), "w")
    fcntl.flock(f, how)
    return f


def admin(r, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{r.addr['admin'][1]}{path}", timeout=5) as resp:
        return json.load(resp)


def holder(r):
    for lease in admin(r, "/cluster").get("leases", []):
        if lease["lease"] == f"xmpp:{BRIDGE}":
            return lease["holder"]
    return None


def state(r):
    return admin(r, "/links")[0]["state"]


def nats_request(subject, payload=b""):
    """One JetStream API request over a plain NATS connection (no client library needed)."""
    s = socket.create_connection(("127.0.0.1", 4222), timeout=5)
    f = s.makefile("rb")
    f.readline()  # INFO
    s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.bxf 1\r\n'
              + f"PUB {subject} _INBOX.bxf {len(payload)}\r\n".encode() + payload + b"\r\n")
    while True:
        line = f.readline()
        if line.startswith(b"MSG"):
            body = f.read(int(line.split()[-1]) + 2)[:-2]
            s.close()
            return json.loads(body)
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")


def clean_up():
    names = nats_request("$JS.API.STREAM.NAMES", b"{}").get("streams") or []
    for n in names:
        if n.startswith(PREFIX) or n.startswith("KV_" + PREFIX):
            nats_request(f"$JS.API.STREAM.DELETE.{n}")


class User(slixmpp.ClientXMPP):
    def __init__(self, jid):
        super().__init__(jid, "pw")
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.online = asyncio.Event()
        self.add_event_handler("session_start", self._start)

    async def _start(self, _event):
        self.send_presence()
        await self.get_roster()
        self.online.set()


class Consumer(stomp.ConnectionListener):
    def __init__(self):
        self.arrived = {}  # body -> monotonic time
        self.lock = threading.Lock()

    def on_message(self, frame):
        with self.lock:
            self.arrived.setdefault(frame.body, time.monotonic())


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def main():
    work = tempfile.mkdtemp(prefix="bxf-")
    os.makedirs(os.path.join(work, "routes"))
    with open(os.path.join(work, "routes", "xmpp.yaml"), "w") as f:
        f.write(f"""routes:
  - name: chats
    from: {{xmpp: {{link: im, jid: "echo@{BRIDGE}"}}}}
    to: [{{stomp: /queue/{P}.chats}}]
""")
    cfg = os.path.join(work, "switchboard.yaml")
    with open(cfg, "w") as f:
        f.write(f"""cluster:
  prefix: {PREFIX}
  replicas: 3
links:
  im:
    xmpp:
      server: "127.0.0.1:5347"
      domain: {BRIDGE}
      secret: bridgesecret
      reconnect_initial: 100ms
      reconnect_max: 1s
""")
    subprocess.run([BIN, "routes", "push", os.path.join(work, "routes"), "--cluster", URLS, "--config", cfg],
                   check=True, stdout=subprocess.DEVNULL)
    jid = f"{P}@localhost"
    subprocess.run([os.path.join(ROOT, "scripts/peers/prosody-ctl.sh"), "adduser", jid, "pw"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    generation = {}

    def start(node):
        n = generation.get(node, 0)
        generation[node] = n + 1
        r = Router(BIN, os.path.join(work, f"{node}{n}"), f"{node}{n}")
        r.start(["--config", cfg, "--cluster", URLS, "--node", f"{node}{n}"], listeners=("admin", "stomp"))
        return r

    routers = {node: start(node) for node in "abc"}
    u = User(jid)
    u.connect("127.0.0.1", 5222)
    await asyncio.wait_for(u.online.wait(), 20)
    sent, connected, first = {}, [], []
    try:
        for rnd in range(ROUNDS):
            # The holder, connected; the others on standby.
            deadline = time.monotonic() + 30
            while True:
                any_router = next(iter(routers.values()))
                h = holder(any_router)
                node = next((k for k, r in routers.items() if r.name == h), None)
                if node and state(routers[node]) == "connected" and all(
                        state(r) == "standby" for k, r in routers.items() if k != node):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"round {rnd}: no settled holder: {h}")
                await asyncio.sleep(0.05)
            survivor = next(r for k, r in routers.items() if k != node)
            consumer = Consumer()
            c = stomp.Connection12([("127.0.0.1", survivor.addr["stomp"][1])], heartbeats=(0, 0))
            c.set_listener("c", consumer)
            c.connect(wait=True)
            c.subscribe(f"/queue/{P}.chats", id="1", ack="auto")
            stop = asyncio.Event()

            async def chats():
                i = 0
                while not stop.is_set():
                    body = f"r{rnd}-{i}"
                    sent[body] = time.monotonic()
                    u.send_message(mto=f"echo@{BRIDGE}", mbody=body, mtype="chat")
                    i += 1
                    await asyncio.sleep(0.02)

            task = asyncio.create_task(chats())
            while not any(b.startswith(f"r{rnd}-") for b in list(consumer.arrived)):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # a steady stream before the kill
            routers[node].kill()
            t0 = time.monotonic()
            t_conn = t_first = None
            while t_conn is None or t_first is None:
                if time.monotonic() - t0 > 30:
                    raise SystemExit(f"round {rnd}: no failover within 30 s")
                if t_conn is None:
                    h = holder(survivor)
                    new = next((r for k, r in routers.items() if r.name == h and k != node), None)
                    if new is not None and state(new) == "connected":
                        t_conn = time.monotonic() - t0
                if t_first is None:
                    with consumer.lock:
                        after = [t for b, t in consumer.arrived.items() if b.startswith(f"r{rnd}-") and sent[b] > t0]
                    if after:
                        t_first = min(after) - t0
                await asyncio.sleep(0.05)
            stop.set()
            await task
            c.disconnect()
            connected.append(t_conn)
            first.append(t_first)
            print(f"round {rnd + 1}/{ROUNDS}: killed {routers[node].name}; new holder connected after "
                  f"{t_conn:.2f} s, first chat through it {t_first:.2f} s after the kill", flush=True)
            routers[node] = start(node)
    finally:
        u.disconnect()
        for r in routers.values():
            if r.up.is_set():
                r.stop()
        clean_up()
    for what, xs in (("kill -9 → new holder connected", connected), ("kill -9 → first chat delivered", first)):
        print(f"{what}: median {statistics.median(xs):.2f} s, p90 {pct(xs, 0.9):.2f} s, "
              f"min {min(xs):.2f} s, max {max(xs):.2f} s ({len(xs)} failovers)")


if __name__ == "__main__":
    _p = lock("prosody", fcntl.LOCK_EX)
    _n = lock("nats", fcntl.LOCK_SH)
    asyncio.run(main())
