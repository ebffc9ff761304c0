"""The slixmpp user the XMPP scenarios share (xmpp_scenarios.py, cluster_xmpp.py): an IM account on
the test servers (Prosody or ejabberd on loopback), asking receipts for what it sends and recording
every message, receipt and error stanza it gets.

    from xmpptest import User
    u = User(jid, password, timeout); u.connect("127.0.0.1", c2s_port); await u.started()
"""

import asyncio
import ssl
import time

import slixmpp

from sbtest import fail


class User(slixmpp.ClientXMPP):
    def __init__(self, jid, password, timeout):
        super().__init__(jid, password)
        self.timeout = timeout
        # The servers' test certificates are self-signed: no verification on loopback.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for p in ("xep_0030", "xep_0045", "xep_0184", "xep_0199"):
            self.register_plugin(p)
        self.plugin["xep_0184"].auto_request = True
        self.plugin["xep_0184"].auto_ack = True
        # Messages (not errors), receipt ids, error stanzas, room messages: in arrival order.
        self.messages, self.receipts, self.errors, self.said = [], [], [], []
        self.online = asyncio.Event()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", self._message)
        self.add_event_handler("message_error", lambda m: self.errors.append(m))
        self.add_event_handler("receipt_received", lambda m: self.receipts.append(m["receipt"]))
        self.add_event_handler("groupchat_message", lambda m: self.said.append(m))

    async def _start(self, _event):
        self.send_presence()
        await self.get_roster()
        self.online.set()

    def _message(self, m):
        if m["type"] != "error":
            self.messages.append(m)

    async def started(self):
        """Waits until the session started (presence sent, roster fetched)."""
        await asyncio.wait_for(self.online.wait(), self.timeout)

    async def wait(self, pred, what, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not pred():
            if time.monotonic() > deadline:
                fail(f"timed out: {what}")
            await asyncio.sleep(0.05)
