"""XMPP throughput, slixmpp on both paths, one run each:

  ceiling: user A → Prosody c2s → user B (Prosody's own c2s → c2s rate)
  router:  user A → Prosody → component (Switchboard) → queue → STOMP consumer

Prints one JSON line per path. Usage: xmpp_bench.py --stomp-port P --a JID --b JID --password PW --count N
"""

import argparse
import asyncio
import json
import ssl
import threading
import time

import slixmpp
import stomp

ap = argparse.ArgumentParser()
ap.add_argument("--stomp-port", type=int, required=True)
ap.add_argument("--a", required=True)
ap.add_argument("--b", required=True)
ap.add_argument("--password", required=True)
ap.add_argument("--count", type=int, default=20000)
ap.add_argument("--queue", required=True)
args = ap.parse_args()
N = args.count


class User(slixmpp.ClientXMPP):
    def __init__(self, jid):
        super().__init__(jid, args.password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.online = asyncio.Event()
        self.got = 0
        self.done = asyncio.Event()
        self.last = 0.0
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", self._message)

    async def _start(self, _e):
        self.send_presence()
        self.online.set()

    def _message(self, _m):
        self.got += 1
        if self.got >= N:
            self.last = time.monotonic()
            self.done.set()


async def login(jid):
    u = User(jid)
    u.connect("127.0.0.1", 5222)
    await asyncio.wait_for(u.online.wait(), 20)
    return u


async def send_all(a, to):
    for i in range(N):
        a.send_message(mto=to, mbody=f"m{i}", mtype="chat")
        if i % 200 == 0:
            await asyncio.sleep(0)


async def main():
    a = await login(args.a)
    b = await login(args.b)
    t0 = time.monotonic()
    await send_all(a, args.b)
    await asyncio.wait_for(b.done.wait(), 600)
    secs = b.last - t0
    print(json.dumps({"path": "ceiling", "messages": b.got, "seconds": round(secs, 3), "msgs_per_s": round(b.got / secs)}), flush=True)
    b.disconnect()

    got = [0]
    last = [0.0]
    done = threading.Event()

    class L(stomp.ConnectionListener):
        def on_message(self, _f):
            got[0] += 1
            if got[0] >= N:
                last[0] = time.monotonic()
                done.set()

    s = stomp.Connection12([("127.0.0.1", args.stomp_port)], heartbeats=(0, 0))
    s.set_listener("l", L())
    s.connect(wait=True)
    s.subscribe(f"/queue/{args.queue}", id="1", ack="auto")
    t0 = time.monotonic()
    await send_all(a, "bench@bridge.localhost")
    while not done.is_set():
        await asyncio.sleep(0.05)
        if time.monotonic() - t0 > 600:
            break
    secs = last[0] - t0
    print(json.dumps({"path": "router", "messages": got[0], "seconds": round(secs, 3), "msgs_per_s": round(got[0] / secs)}), flush=True)
    s.disconnect()
    a.disconnect()


asyncio.run(main())
