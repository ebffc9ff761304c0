"""The stomp.py listener the Python peer scripts share: records messages, errors and
receipts, and waits for them.

    from stomptest import Collector
    c = stomp.Connection12([(host, port)]); col = Collector(timeout); c.set_listener("c", col)
"""

import threading

import stomp

from sbtest import wait_for


class Collector(stomp.ConnectionListener):
    def __init__(self, timeout=10.0):
        self.timeout = timeout
        self.messages, self.errors, self.receipts = [], [], []
        self.disconnected = threading.Event()
        self.lock = threading.Lock()

    def on_message(self, frame):
        with self.lock:
            self.messages.append(frame)

    def on_error(self, frame):
        with self.lock:
            self.errors.append(frame)

    def on_receipt(self, frame):
        with self.lock:
            self.receipts.append(frame.headers.get("receipt-id"))

    def on_disconnected(self):
        self.disconnected.set()

    def bodies(self):
        with self.lock:
            return [m.body for m in self.messages]

    def _errors(self):
        return [(e.headers, e.body) for e in self.errors]

    def wait_messages(self, n, what="messages", timeout=None):
        wait_for(lambda: len(self.messages) >= n, timeout or self.timeout,
                 lambda: f"{what}: got {len(self.messages)} of {n}: {self.bodies()[:20]!r}; errors {self._errors()}")

    def wait_receipt(self, r):
        wait_for(lambda: r in self.receipts, self.timeout,
                 lambda: f"no RECEIPT {r}; have {self.receipts}; errors {self._errors()}")
