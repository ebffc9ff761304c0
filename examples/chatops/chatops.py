"""The chat-ops example's people and programs: an AMQP worker (pika) that answers
requests, and an IM user (slixmpp, an ordinary XMPP client account on Prosody) who asks
it questions by chatting with ops@bridge.localhost. --check exits 1 unless every answer
came back in its thread."""

import argparse
import asyncio
import ssl
import sys
import threading
import time

import pika
import slixmpp

p = argparse.ArgumentParser()
p.add_argument("--jid", required=True)
p.add_argument("--password", required=True)
p.add_argument("--check", action="store_true")
args = p.parse_args()

ANSWERS = {"status": "all 12 services up", "uptime": "41 days", "deploy": "last deploy 14:02 by ana"}


def worker(ready, stop):
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest")))
    ch = c.channel()
    ch.queue_declare("chatops.requests", arguments={"x-expires": 600000})
    ready.set()
    for method, props, body in ch.consume("chatops.requests", inactivity_timeout=0.1):
        if stop.is_set():
            break
        if method is None:
            continue
        question = body.decode().strip().lower()
        answer = ANSWERS.get(question, f"I don't know `{question}` (try: {', '.join(ANSWERS)})")
        print(f"worker  got {question!r} (correlation {props.correlation_id}), answering")
        ch.basic_publish("", props.reply_to, answer.encode(), pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)
    c.close()


class User(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(args.jid, args.password)
        self.ssl_context.check_hostname = False  # Prosody's test certificate is self-signed
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.replies = []
        self.online = asyncio.Event()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", lambda m: m["type"] != "error" and self.replies.append(m))

    async def start(self, _):
        self.send_presence()
        await self.get_roster()
        self.online.set()


async def main():
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=worker, args=(ready, stop), daemon=True)
    t.start()
    if not ready.wait(20):
        sys.exit("the worker could not reach RabbitMQ")
    u = User()
    u.connect("127.0.0.1", 5222)
    await asyncio.wait_for(u.online.wait(), 20)
    questions = ["status", "uptime", "coffee"]
    for i, q in enumerate(questions):
        m = u.make_message(mto="ops@bridge.localhost", mbody=q, mtype="chat")
        m["thread"] = f"ask-{i}"
        m.send()
        print(f"user    asks ops@bridge.localhost: {q}")
    deadline = time.monotonic() + 20
    while len(u.replies) < len(questions) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for r in u.replies:
        print(f"user    got from {r['from']} (thread {r['thread']}): {r['body']}")
    by_thread = {r["thread"]: r["body"] for r in u.replies}
    ok = (by_thread.get("ask-0") == ANSWERS["status"] and by_thread.get("ask-1") == ANSWERS["uptime"]
          and by_thread.get("ask-2", "").startswith("I don't know")
          and all(str(r["from"]) == "ops@bridge.localhost" for r in u.replies))
    print("every question answered in its own thread" if ok else "some answers are missing")
    stop.set()
    u.disconnect()
    t.join(5)
    if args.check and not ok:
        sys.exit(1)


asyncio.run(main())
