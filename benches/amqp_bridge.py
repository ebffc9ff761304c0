"""AMQP bridge throughput, driven by pika (the same client for both paths), one run each:

  direct:  pika publisher → RabbitMQ queue D → pika consumer
  bridged: pika publisher → RabbitMQ queue A → Switchboard (consume, route, confirmed publish)
           → RabbitMQ queue B → pika consumer

The publisher and the consumer run in separate processes; the figure is messages over the time
from the first publish to the last message consumed. Prints one JSON line per path.
Usage: amqp_bridge.py --count N --size BYTES --prefix P
"""

import argparse
import json
import multiprocessing as mp
import time

import pika

PARAMS = pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest"))


def publish(queue, count, size, start_evt):
    c = pika.BlockingConnection(PARAMS)
    ch = c.channel()
    body = b"x" * size
    props = pika.BasicProperties(delivery_mode=1, content_type="application/octet-stream")
    start_evt.wait()
    for _ in range(count):
        ch.basic_publish("", queue, body, props)
    c.close()


def consume(queue, count, ready_evt, out):
    c = pika.BlockingConnection(PARAMS)
    ch = c.channel()
    ch.basic_qos(prefetch_count=1000)
    got = 0
    ready_evt.set()
    for method, _props, _body in ch.consume(queue, inactivity_timeout=30):
        if method is None:
            break
        got += 1
        if got % 100 == 0 or got == count:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if got >= count:
            break
    out.put((got, time.monotonic()))
    c.close()


def run(src, dst, count, size):
    ready, start, out = mp.Event(), mp.Event(), mp.Queue()
    cons = mp.Process(target=consume, args=(dst, count, ready, out))
    pub = mp.Process(target=publish, args=(src, count, size, start))
    cons.start()
    pub.start()
    ready.wait(30)
    t0 = time.monotonic()
    start.set()
    got, t1 = out.get(timeout=600)
    pub.join()
    cons.join()
    return got, t1 - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=50000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--prefix", required=True)
    a = ap.parse_args()
    c = pika.BlockingConnection(PARAMS)
    ch = c.channel()
    for q in ("direct", "a", "b"):
        ch.queue_declare(f"{a.prefix}.{q}", durable=True, arguments={"x-expires": 600000})
        ch.queue_purge(f"{a.prefix}.{q}")
    c.close()
    for name, src, dst in (("direct", "direct", "direct"), ("bridged", "a", "b")):
        got, secs = run(f"{a.prefix}.{src}", f"{a.prefix}.{dst}", a.count, a.size)
        print(json.dumps({"path": name, "messages": got, "seconds": round(secs, 3),
                          "msgs_per_s": round(got / secs)}), flush=True)


if __name__ == "__main__":
    main()
