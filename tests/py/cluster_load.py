"""Route-table push under load (tests/cluster.rs): a stomp.py publisher sends numbered
messages to /queue/in on one router while `switchboard routes push` runs; a consumer on
the same router reads /queue/out1 (every table routes `in` there) and /queue/out2 (only
the pushed table does).

    cluster_load.py --port STOMP swap --admin ADMIN --count N --version V -- PUSH_ARGV...

Passes when out1 got every message once, in order, and out2 got exactly the messages
sent after the swap (a suffix, without gaps or duplicates)."""

import json
import os
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import stomp  # noqa: E402

from sbtest import expect, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402


def main():
    args = parse_args(lambda p: (
        p.add_argument("scenario"),
        p.add_argument("--admin", type=int, required=True),
        p.add_argument("--count", type=int, default=400),
        p.add_argument("--version", type=int, required=True),
    ))
    push = [a for a in args.rest if a != "--"]

    def version():
        with urllib.request.urlopen(f"http://127.0.0.1:{args.admin}/routes", timeout=5) as r:
            return json.load(r)["status"]["version"]

    col = Collector(args.timeout)
    c = stomp.Connection12([(args.host, args.port)])
    c.set_listener("c", col)
    c.connect(wait=True)
    c.subscribe("/queue/out1", id="1", ack="auto")
    c.subscribe("/queue/out2", id="2", ack="auto", headers={"receipt": "subscribed"})
    wait_for(lambda: "subscribed" in col.receipts, args.timeout, "no RECEIPT for SUBSCRIBE")

    sent = 0

    def send(n):
        nonlocal sent
        for _ in range(n):
            c.send("/queue/in", str(sent))
            sent += 1

    half = args.count // 2
    send(half - 1)
    # The router has routed the first half (by the table in force) before the push starts.
    c.send("/queue/in", str(sent), headers={"receipt": "half"})
    sent += 1
    wait_for(lambda: "half" in col.receipts, args.timeout, "no RECEIPT for the first half")
    pusher = subprocess.Popen(push, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Keep publishing while the push is stored and the router swaps.
    while version() < args.version:
        send(10)
        expect(sent < 100 * args.count, "the pushed table never came into force")
    out, err = pusher.communicate(timeout=args.timeout)
    expect(pusher.returncode == 0, f"routes push failed ({pusher.returncode}): {out} {err}")
    send(half)
    c.send("/queue/in", str(sent), headers={"receipt": "last"})
    sent += 1
    wait_for(lambda: "last" in col.receipts, args.timeout, "no RECEIPT for the last SEND")

    def by_sub(sub):
        with col.lock:
            return [int(m.body) for m in col.messages if m.headers.get("subscription") == sub]

    wait_for(lambda: len(by_sub("1")) >= sent and sent - 1 in by_sub("2"), args.timeout,
             lambda: f"out1 {len(by_sub('1'))} of {sent}; out2 {len(by_sub('2'))}")
    out1, out2 = by_sub("1"), by_sub("2")
    expect(out1 == list(range(sent)), f"out1 lost, duplicated or reordered: {len(out1)} of {sent}")
    expect(out2, "the pushed table sent nothing to out2")
    first = out2[0]
    expect(half <= first < sent, f"out2 starts at {first}: before the push")
    expect(out2 == list(range(first, sent)), f"out2 has gaps or duplicates from {first}")
    expect(not col.errors, f"ERROR frames: {col.errors}")
    c.disconnect()
    print(f"sent {sent}; swapped at message {first}")
    print("ok")


main()
