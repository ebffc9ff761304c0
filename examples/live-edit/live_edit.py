"""The live-edit example's client side (stomp.py): publish continuously to work.in, rewrite
the route file halfway, and check that every message arrived exactly once — before the
edit on work.v1, after it on work.v2 with the header the new route sets."""

import argparse
import json
import os
import threading
import time

import stomp

p = argparse.ArgumentParser()
p.add_argument("--ready", required=True)
p.add_argument("--routes", required=True)
p.add_argument("--count", type=int, default=3000)
args = p.parse_args()

with open(args.ready) as f:
    host, port = json.load(f)["listeners"]["stomp"].rsplit(":", 1)
HP = [(host, int(port))]

EDITED = """routes:
  - name: intake
    from: { queue: work.in }
    to: [ { queue: work.v2 } ]
    transform: { set_headers: { edited: "yes" } }
"""


class Inbox(stomp.ConnectionListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.got = {"work.v1": [], "work.v2": []}
        self.receipts = set()
        self.edited_headers = 0

    def on_message(self, f):
        q = f.headers["destination"].rsplit("/", 1)[-1]
        with self.lock:
            self.got[q].append(int(f.body))
            if f.headers.get("edited") == "yes":
                self.edited_headers += 1

    def on_receipt(self, f):
        with self.lock:
            self.receipts.add(f.headers["receipt-id"])


inbox = Inbox()
consumer = stomp.Connection12(HP)
consumer.set_listener("in", inbox)
consumer.connect(wait=True)
consumer.subscribe("/queue/work.v1", id="1", ack="auto")
consumer.subscribe("/queue/work.v2", id="2", ack="auto")

sender = stomp.Connection12(HP)
sent_box = Inbox()
sender.set_listener("r", sent_box)
sender.connect(wait=True)

edited_at = None
start = time.monotonic()
for i in range(args.count):
    sender.send("/queue/work.in", str(i), headers={"persistent": "true", "receipt": str(i)})
    if i % 100 == 99:
        # Keep the publisher honest: every message up to here was accepted.
        deadline = time.monotonic() + 10
        while str(i) not in sent_box.receipts:
            if time.monotonic() > deadline:
                raise SystemExit(f"no receipt for message {i}")
            time.sleep(0.001)
    if i == args.count // 2:
        # Edit the route file the way an editor saves it: write a new file, rename it over.
        tmp = os.path.join(args.routes, ".intake.yaml.tmp")
        with open(tmp, "w") as f:
            f.write(EDITED)
        os.replace(tmp, os.path.join(args.routes, "intake.yaml"))
        edited_at = i
        print(f"message {i}: route file edited (work.v1 → work.v2) while publishing")
    time.sleep(0.0005)

deadline = time.monotonic() + 15
while True:
    with inbox.lock:
        total = len(inbox.got["work.v1"]) + len(inbox.got["work.v2"])
    if total >= args.count or time.monotonic() > deadline:
        break
    time.sleep(0.05)
time.sleep(0.3)
with inbox.lock:
    v1, v2 = list(inbox.got["work.v1"]), list(inbox.got["work.v2"])
    edited = inbox.edited_headers
all_got = sorted(v1 + v2)
lost = sorted(set(range(args.count)) - set(all_got))
dups = len(all_got) - len(set(all_got))
print(f"{args.count} messages sent in {time.monotonic() - start:.1f} s: {len(v1)} via work.v1, "
      f"{len(v2)} via work.v2 (all {edited} with the new route's header)")
ok = not lost and dups == 0 and v1 and v2 and edited == len(v2) and v1 == sorted(v1) and v2 == sorted(v2) \
    and (not v2 or not v1 or max(v1) < min(v2))
print(f"lost: {len(lost)}, duplicated: {dups}, order kept: {v1 == sorted(v1) and v2 == sorted(v2)}")
consumer.disconnect()
sender.disconnect()
if not ok:
    raise SystemExit("FAILED: " + (f"lost {lost[:10]}" if lost else "") + (f" {dups} duplicates" if dups else ""))
print("none lost, none duplicated: the edit took effect without a restart")
