"""A raw-socket MQTT 5 subscriber for tests that must control the QoS 2 handshake packet by
packet (paho answers PUBREL itself): it answers every QoS 2 PUBLISH with PUBREC at once, and a
PUBREL with PUBCOMP only for the messages `complete(payload)` accepts; the others keep their
PUBREL unanswered, as a client that never received it (MQTT "method B": a client that hands a
message over at PUBREL has not handed these over).

    c = RawSub(host, port, "client-id", complete=lambda p: not p.startswith("held"))
    c.connect(clean=False, expiry=300)   # returns (reason code, session present)
    c.subscribe("topic/#", qos=2)
    c.got()        # [(payload, dup, arrival time)] of every PUBLISH, in order
    c.pubrels()    # [(packet id, payload or None)] of every PUBREL received, in order
"""

import socket
import struct
import threading
import time


def _varint(n):
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first, body):
    return bytes([first]) + _varint(len(body)) + body


class RawSub:
    def __init__(self, host, port, client_id, complete=lambda payload: True, timeout=10.0,
                 known=None, name=None):
        """`known`: packet id -> payload of QoS 2 messages an earlier connection of the session
        received (what the client keeps across connections to recognise a resent PUBREL)."""
        self.host, self.port, self.client_id = host, port, client_id
        self.name = name or client_id
        self.complete, self.timeout = complete, timeout
        self.lock = threading.Lock()
        self.msgs = []  # (payload, dup, monotonic time)
        self.rels = []  # (packet id, payload or None)
        self.pids = dict(known or {})  # packet id -> payload, of PUBLISHes received
        self.connack = None
        self.subacks = {}
        self.disconnect = None  # reason code of a DISCONNECT from the server
        self.closed = threading.Event()
        self.sock = None

    # -- outbound ----------------------------------------------------------------------

    def _send(self, data):
        with self.lock:
            self.sock.sendall(data)

    def connect(self, clean=False, expiry=300):
        self.sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock.settimeout(None)
        props = b"\x11" + struct.pack("!I", expiry)
        body = (_string("MQTT") + b"\x05" + bytes([0x02 if clean else 0])
                + struct.pack("!H", 60) + _varint(len(props)) + props + _string(self.client_id))
        self.sock.sendall(_packet(0x10, body))
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + self.timeout
        while self.connack is None:
            if time.monotonic() > deadline or self.closed.is_set():
                raise AssertionError(f"{self.client_id}: no CONNACK")
            time.sleep(0.01)
        return self.connack

    def subscribe(self, topic, qos=2, pid=1):
        body = struct.pack("!H", pid) + b"\x00" + _string(topic) + bytes([qos])
        self._send(_packet(0x82, body))
        deadline = time.monotonic() + self.timeout
        while pid not in self.subacks:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.client_id}: no SUBACK")
            time.sleep(0.01)
        return self.subacks[pid]

    def close(self):
        """Drops the connection without a DISCONNECT (the session stays)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.closed.wait(self.timeout)

    # -- inbound -----------------------------------------------------------------------

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _read(self):
        try:
            while True:
                first = self._recv_exact(1)[0]
                length, shift = 0, 0
                while True:
                    b = self._recv_exact(1)[0]
                    length += (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                self._on(first, self._recv_exact(length) if length else b"")
        except (EOFError, OSError):
            pass
        finally:
            self.closed.set()

    def _on(self, first, body):
        kind = first >> 4
        if kind == 2:  # CONNACK
            self.connack = (body[1], bool(body[0] & 1))
        elif kind == 9:  # SUBACK
            pid = struct.unpack("!H", body[:2])[0]
            self.subacks[pid] = body[-1]
        elif kind == 3:  # PUBLISH
            dup, qos = bool(first & 0x08), (first >> 1) & 3
            tlen = struct.unpack("!H", body[:2])[0]
            i = 2 + tlen
            pid = None
            if qos:
                pid = struct.unpack("!H", body[i:i + 2])[0]
                i += 2
            plen, shift = 0, 0
            while True:
                b = body[i]
                i += 1
                plen += (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            payload = body[i + plen:].decode()
            with self.lock:
                self.msgs.append((payload, dup, time.monotonic()))
                if pid is not None:
                    self.pids[pid] = payload
            if qos == 1:
                self._send(_packet(0x40, struct.pack("!H", pid)))
            elif qos == 2:
                self._send(_packet(0x50, struct.pack("!H", pid)))
        elif kind == 6:  # PUBREL
            pid = struct.unpack("!H", body[:2])[0]
            with self.lock:
                payload = self.pids.get(pid)
                self.rels.append((pid, payload))
            if payload is None or self.complete(payload):
                self._send(_packet(0x70, struct.pack("!H", pid)))
        elif kind == 14:  # DISCONNECT
            self.disconnect = body[0] if body else 0

    # -- what happened -----------------------------------------------------------------

    def got(self):
        with self.lock:
            return list(self.msgs)

    def pubrels(self):
        with self.lock:
            return list(self.rels)
