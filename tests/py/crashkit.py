"""What the crash tests share (crash_load.py: one router; cluster_crash.py: three clustered
routers): a router process killed with SIGKILL and started again, the stomp.py listener
that waits for receipts, and the ledger of what was confirmed and what was delivered,
with the checks of the crash semantics.

Bodies are `...:SEQ:TOKEN`: each send attempt has its own token, so a publisher's resend
is a different message and "the same body again" always means a redelivery.
"""

import ctypes
import json
import os
import signal
import subprocess
import threading
import time

import stomp

from sbtest import fail

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """A router outlives nothing: killed when the driver dies, however it dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Router:
    """A switchboard process on loopback port 0, started again over the same data directory
    after each kill. `addr` maps each listener to (host, port) while it runs; `up` is set
    while it runs."""

    def __init__(self, bin, workdir, name="router"):
        self.bin, self.workdir, self.name = bin, workdir, name
        self.proc, self.starts = None, 0
        self.addr = {}
        self.up = threading.Event()
        self.log_path = os.path.join(workdir, f"{name}.log")
        os.makedirs(workdir, exist_ok=True)

    def start(self, args, listeners=("admin", "stomp", "mqtt"), timeout=20):
        """Starts it with `args` (after `run`) and waits for its ready file (its listeners
        are bound)."""
        ready = os.path.join(self.workdir, f"ready-{self.starts}.json")
        self.starts += 1
        cmd = [self.bin, "run", *args, "--data-dir", os.path.join(self.workdir, "data"), "--ready-file", ready]
        for name in ["admin", "stomp", "mqtt", "stomp-ws", "mqtt-ws"]:
            cmd += ["--listen", f"{name}=127.0.0.1:0" if name in listeners else f"{name}=off"]
        with open(self.log_path, "a") as log:
            log.write(f"\n===== {self.name} start {self.starts}: {' '.join(args)} =====\n")
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=_die_with_parent,
                                         env={**os.environ, "SWITCHBOARD_LOG": os.environ.get("SWITCHBOARD_LOG", "info")})
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                fail(f"{self.name} exited on start {self.starts} with {self.proc.returncode}; log {self.log_path}")
            if time.monotonic() > deadline:
                fail(f"{self.name} not ready on start {self.starts}; log {self.log_path}")
            time.sleep(0.01)
        with open(ready) as f:
            listening = json.load(f)["listeners"]
        self.addr = {k: (v.rsplit(":", 1)[0], int(v.rsplit(":", 1)[1])) for k, v in listening.items()}
        self.up.set()

    def kill(self):
        self.up.clear()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=20):
        """SIGTERM; returns the exit code."""
        self.up.clear()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail(f"{self.name} did not stop on SIGTERM")

    def panicked(self):
        with open(self.log_path) as f:
            return "panicked" in f.read()


class Listener(stomp.ConnectionListener):
    """Notes receipts (telling `ledger` about those of ACKs) and the connection's end; hands
    MESSAGE frames to `on_msg`."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.receipts = set()
        self.gone = threading.Event()
        # Set by its owner before it disconnects: frames read from then on were written
        # before the router saw it leave (see `Ledger.delivered`, `late`).
        self.leaving = threading.Event()
        self.cond = threading.Condition()
        self.on_msg = None

    def on_receipt(self, frame):
        rid = frame.headers.get("receipt-id")
        self.ledger.ack_receipted(rid)
        with self.cond:
            self.receipts.add(rid)
            self.cond.notify_all()

    def on_error(self, frame):
        self.on_disconnected()

    def on_disconnected(self):
        with self.cond:
            self.gone.set()
            self.cond.notify_all()

    def on_message(self, frame):
        if self.on_msg:
            self.on_msg(frame)

    def wait_receipt(self, rid, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while rid not in self.receipts and not self.gone.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return rid in self.receipts


def seq_of(body):
    return int(body.rsplit(":", 2)[-2])


class Ledger:
    """What was confirmed and what was delivered, per key (a queue, or a queue and a
    producer: whatever the order is checked over), and the checks of the crash semantics.

    `strict_acks` (True: every key; or the keys listed): on those keys a message whose ACK
    was confirmed with a RECEIPT must never come again (one router: the ACK is journaled
    before the RECEIPT; clustered: it reached NATS); elsewhere such a delivery is counted,
    not a violation. Every method takes the ledger's lock itself."""

    def __init__(self, keys, strict_acks=True):
        self.lock = threading.RLock()
        self.strict_acks = set(keys) if strict_acks is True else set(strict_acks or ())
        self.confirmed = {k: [] for k in keys}        # seqs whose publisher got its confirmation
        self.confirmed_bodies = {k: set() for k in keys}
        self.received = {k: [] for k in keys}         # (seq, body, flagged, connection) as delivered
        self.seen = {k: set() for k in keys}          # bodies delivered so far
        self.unflagged = {k: set() for k in keys}     # bodies delivered without the flag
        self.acked = {k: set() for k in keys}         # bodies whose ACK was confirmed with a RECEIPT
        self.pending_acks = {}                        # receipt id -> (key, body) of an ACK sent
        self.violations = []
        self.counts = {"redelivered": 0, "acks_receipted": 0, "after_receipted_ack": 0, "late_unflagged": 0}
        self._ack_ids = iter(range(1 << 62))

    def violation(self, what):
        with self.lock:
            if len(self.violations) < 20:
                self.violations.append(what)

    def confirm(self, key, body):
        with self.lock:
            self.confirmed[key].append(seq_of(body))
            self.confirmed_bodies[key].add(body)

    def confirmed_count(self, key):
        with self.lock:
            return len(self.confirmed[key])

    def delivered(self, key, body, flagged, flag, conn=None, check_flag=True, late=False):
        """Records a delivery on connection `conn` and checks it: a body delivered before
        must carry `flag` (unless not `check_flag`: a path that may store a message twice).

        `late`: read by a connection that was already leaving. The router wrote it before
        it saw the connection leave, so before it gave the message back; its redelivery
        elsewhere (flagged) may still be read first by a client thread that got the GIL
        sooner. Such a delivery may come unflagged after a flagged one (counted), but
        never after another unflagged one: one delivery of a message only is the first."""
        with self.lock:
            self.received[key].append((seq_of(body), body, flagged, conn))
            if body in self.acked[key]:
                self.counts["after_receipted_ack"] += 1
                if key in self.strict_acks:
                    self.violation(f"{key}: {body} delivered again after its ACK was confirmed with a RECEIPT ({flag}={flagged})")
            if body in self.seen[key]:
                self.counts["redelivered"] += 1
                if check_flag and not flagged:
                    if late and body not in self.unflagged[key]:
                        self.counts["late_unflagged"] += 1
                    else:
                        self.violation(f"{key}: {body} delivered again without {flag} on {conn} "
                                       f"(late: {late}; its deliveries so far: {[r for r in self.received[key] if r[1] == body]})")
            self.seen[key].add(body)
            if not flagged:
                self.unflagged[key].add(body)

    def ack_sent(self, key, body):
        """A receipt id for the ACK of `body`."""
        with self.lock:
            rid = f"ack-{next(self._ack_ids)}"
            self.pending_acks[rid] = (key, body)
            return rid

    def ack_receipted(self, rid):
        with self.lock:
            done = self.pending_acks.pop(rid, None)
            if done is not None:
                self.acked[done[0]].add(done[1])
                self.counts["acks_receipted"] += 1

    def missing(self):
        """Per key, the confirmed seqs never received."""
        with self.lock:
            return {k: sorted(set(c) - {r[0] for r in self.received[k]}) for k, c in self.confirmed.items()}

    def first_deliveries(self, key):
        """The seqs of each body's first delivery, in delivery order."""
        with self.lock:
            firsts, seen = [], set()
            for seq, body, _, _ in self.received[key]:
                if body not in seen:
                    seen.add(body)
                    firsts.append(seq)
            return firsts

    def out_of_order(self, key, flagged_too=False):
        """Order as the cluster documents it ("kept except across redelivery"): each
        connection sees the confirmed messages that were not flagged redelivered in
        publish order. Returns the breaches, as (connection, seq before, seq after);
        `flagged_too` counts what the flag excuses (first deliveries only)."""
        with self.lock:
            last, breaches, seen = {}, [], set()
            for seq, body, flagged, conn in self.received[key]:
                again = body in seen
                seen.add(body)
                if (flagged and not flagged_too) or again or body not in self.confirmed_bodies[key]:
                    continue
                if seq < last.get(conn, -1):
                    breaches.append((conn, last[conn], seq))
                last[conn] = max(seq, last.get(conn, -1))
            return breaches

    def figures(self, key):
        with self.lock:
            got = self.received[key]
            bodies = {r[1] for r in got}
            return {"confirmed": len(self.confirmed[key]), "received": len(got), "duplicates": len(got) - len(bodies),
                    "flagged": sum(1 for r in got if r[2]),
                    "unconfirmed_received": len(bodies - self.confirmed_bodies[key]),
                    "reordered_flagged": len(self.out_of_order(key, flagged_too=True))}
