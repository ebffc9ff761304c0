"""`GET /metrics` after real traffic (stomp.py, paho-mqtt), parsed by the Prometheus
project's own Python text parser (prometheus_client.parser): the counters must move
exactly as the traffic says.

Usage: metrics_scenarios.py --port STOMP_PORT --admin-port P --mqtt-port P traffic

The daemon must be fresh (no other client): connection gauges are compared with the
connections this script holds.
"""

import os
import sys
import threading
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sbtest import expect, parse_args, wait_for  # noqa: E402
from stomptest import Collector  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
import stomp  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

args = parse_args(lambda p: (p.add_argument("scenario"), p.add_argument("--admin-port", type=int, required=True),
                             p.add_argument("--mqtt-port", type=int, required=True)))
H, P, T = args.host, args.port, args.timeout
U = uuid.uuid4().hex[:8]

# Labels that would make a series per client or per topic: never in the plain scrape.
IDENTITY_LABELS = {"client", "client_id", "clientid", "topic", "user", "destination"}


class Scrape:
    """One parsed scrape: sample (name, labels) → value."""

    def __init__(self, per_object=False):
        url = f"http://{H}:{args.admin_port}/metrics" + ("?per_object=1" if per_object else "")
        with urllib.request.urlopen(url, timeout=T) as r:
            ctype = r.headers["Content-Type"]
            expect(ctype.startswith("text/plain; version=0.0.4"), f"Content-Type {ctype}")
            self.text = r.read().decode()
        self.samples = {}
        for fam in text_string_to_metric_families(self.text):
            expect(fam.name.startswith("switchboard_"), f"family {fam.name}")
            for s in fam.samples:
                counter = s.name.endswith("_total")
                expect(counter == (fam.type == "counter"), f"{s.name} is a {fam.type}: only counters end in _total")
                expect(per_object or not IDENTITY_LABELS & set(s.labels), f"{s.name}{s.labels}: an identity label")
                expect(s.value >= 0, f"{s.name}{s.labels} = {s.value}")
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name, default=None, **labels):
        v = self.samples.get((name, frozenset(labels.items())), default)
        expect(v is not None, f"no sample {name}{labels} in:\n{self.text}")
        return v

    def label_values(self, name, label):
        return [dict(k[1]).get(label) for k in self.samples if k[0] == name]


def delta(before, after, name, **labels):
    return after.get(name, 0, **labels) - before.get(name, 0, **labels)


def expect_deltas(before, after, want, **labels):
    got = {name: delta(before, after, name, **labels) for name in want}
    expect(got == want, f"moved {got}, traffic says {want}\n{after.text}")


def stomp_conn():
    c = stomp.Connection12([(H, P)])
    col = Collector(T)
    c.set_listener("c", col)
    c.connect(wait=True)
    return c, col


def stomp_gauge(s):
    return s.get("switchboard_connections", listener="stomp", protocol="stomp")


PROTOCOLS = ["stomp", "mqtt", "amqp", "xmpp"]


def expect_traffic(before, **moved):
    """Every protocol's traffic counters moved exactly as `moved` says (protocol=(received,
    received bytes, delivered, delivered bytes)); the others did not move. A delivery is
    counted once written, which may be a moment after the client read it: waits for the
    figures (more than said never passes)."""
    names = ["switchboard_messages_received_total", "switchboard_payload_received_bytes_total",
             "switchboard_messages_delivered_total", "switchboard_payload_delivered_bytes_total"]
    want = {p: moved.get(p, (0, 0, 0, 0)) for p in PROTOCOLS}

    def moved_now():
        s = Scrape()
        return {p: tuple(delta(before, s, n, protocol=p) for n in names) for p in PROTOCOLS}, s
    last = [None]

    def settled():
        got, s = moved_now()
        last[0] = got
        return got == want and s
    return wait_for(settled, T, lambda: f"traffic moved {last[0]}, traffic says {want}")


QUEUE_COUNTERS = ["published", "delivered", "acked", "redelivered", "dead_lettered", "expired", "dropped"]


def queue_counters(**n):
    return {f"switchboard_queue_messages_{k}_total": n.get(k, 0) for k in QUEUE_COUNTERS}


def stomp_queue(before):
    """Five persistent messages into a queue; a consumer takes two and leaves without acknowledging;
    another takes all five, acknowledges four, rejects one (no dead-letter queue: dropped);
    one topic publish nobody hears."""
    q = f"metrics.q.{U}"
    prod, pcol = stomp_conn()
    c1, col1 = stomp_conn()
    c2, col2 = stomp_conn()
    s = wait_for(lambda: (s := Scrape()) and stomp_gauge(s) == 3 and s, T,
                 lambda: f"3 STOMP connections open: {stomp_gauge(Scrape())}")
    expect_deltas(before, s, {"switchboard_connections_accepted_total": 3}, listener="stomp", protocol="stomp")
    for i in range(5):
        prod.send(f"/queue/{q}", f"m{i}", headers={"persistent": "true"}, **({"receipt": "sent"} if i == 4 else {}))
    pcol.wait_receipt("sent")
    # Persistent messages to a durable queue go through the journal (group commits: at
    # least one, how many depends on timing).
    wait_for(lambda: delta(before, Scrape(), "switchboard_journal_commits_total") >= 1, T, "a journal commit")
    expect(Scrape(per_object=True).get("switchboard_queue_messages_ready", queue=q) == 5, "per_object shows the depth")
    s = Scrape()
    expect_deltas(before, s, queue_counters(published=5))
    expect(s.get("switchboard_queue_messages_ready") == 5, f"ready summed:\n{s.text}")

    c1.subscribe(f"/queue/{q}", id="a", ack="client-individual", headers={"prefetch-count": "2"})
    col1.wait_messages(2)
    s = Scrape(per_object=True)
    expect((s.get("switchboard_queue_messages_unacked", queue=q), s.get("switchboard_queue_consumers", queue=q)) == (2, 1),
           f"two unacked, one consumer:\n{s.text}")
    c1.disconnect()
    wait_for(lambda: delta(before, Scrape(), "switchboard_queue_messages_redelivered_total") == 2, T,
             "the two unacknowledged messages put back")

    c2.subscribe(f"/queue/{q}", id="b", ack="client-individual")
    col2.wait_messages(5)
    for m in col2.messages[:4]:
        c2.ack(m.headers["ack"])
    c2.nack(col2.messages[4].headers["ack"], requeue="false", receipt="nacked")
    col2.wait_receipt("nacked")
    prod.send(f"/topic/metrics.nobody.{U}", "unheard", receipt="unheard")
    pcol.wait_receipt("unheard")

    # Six SENDs (five 2-byte bodies, one of 7 bytes); seven MESSAGE frames (two, then
    # those two again with the three others).
    after = expect_traffic(before, stomp=(6, 17, 7, 14))
    expect_deltas(before, after, queue_counters(published=5, delivered=7, acked=4, redelivered=2, dropped=1))
    expect_deltas(before, after, {"switchboard_topic_unrouted_messages_total": 1})
    expect_deltas(before, after, {"switchboard_drops_and_refusals_total": 1}, cause="dead_letter.none")
    expect((after.get("switchboard_queue_messages_ready"), after.get("switchboard_queue_messages_unacked")) == (0, 0),
           f"nothing left:\n{after.text}")
    s = Scrape(per_object=True)
    expect((s.get("switchboard_queue_messages_ready", queue=q), s.get("switchboard_queue_consumers", queue=q)) == (0, 1),
           f"per queue:\n{s.text}")
    for c in (prod, c2):
        c.disconnect()
    wait_for(lambda: stomp_gauge(Scrape()) == 0, T, "the STOMP connections closed")
    return after


def stomp_topic(before):
    """A topic subscription's private queue counts three deliveries; once the subscriber
    leaves and the queue is gone, the totals keep them."""
    sub, scol = stomp_conn()
    prod, pcol = stomp_conn()
    sub.subscribe(f"/topic/metrics.news.{U}", id="t", ack="auto", receipt="subscribed")
    scol.wait_receipt("subscribed")
    queues = Scrape().get("switchboard_queues")
    for i in range(3):
        prod.send(f"/topic/metrics.news.{U}", f"n{i}")
    scol.wait_messages(3)
    mid = Scrape()
    expect_deltas(before, mid, queue_counters(published=3, delivered=3, acked=3))
    expect_traffic(before, stomp=(3, 6, 3, 6))
    sub.disconnect()
    wait_for(lambda: Scrape().get("switchboard_queues") == queues - 1, T, "the subscription's queue deleted")
    end = Scrape()
    expect_deltas(before, end, queue_counters(published=3, delivered=3, acked=3))
    prod.disconnect()
    return end


def mqtt_oversize(before):
    """An MQTT 5 subscriber with a Maximum Packet Size of 200 bytes and a session that
    outlives it; a publisher sends a small, a large and a small message: the large one is
    not delivered, and counted."""
    cid = f"metrics-sub-{U}"
    got, connected = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    sub.on_connect = lambda *a: connected.set()
    sub.on_message = lambda c, u, m: got.append(m.payload)
    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = 200
    props.SessionExpiryInterval = 3600
    sub.connect(H, args.mqtt_port, clean_start=False, properties=props)
    sub.loop_start()
    expect(connected.wait(T), "subscriber CONNACK")
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe(f"metrics/{U}/#", qos=1)
    expect(subscribed.wait(T), "SUBACK")

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"metrics-pub-{U}", protocol=mqtt.MQTTv311)
    pub.connect(H, args.mqtt_port)
    pub.loop_start()
    s = wait_for(lambda: (s := Scrape()) and s.get("switchboard_connections", listener="mqtt", protocol="mqtt") == 2 and s,
                 T, "2 MQTT connections open")
    expect_deltas(before, s, {"switchboard_connections_accepted_total": 2}, listener="mqtt", protocol="mqtt")
    for payload in (b"small", b"x" * 1000, b"end"):
        pub.publish(f"metrics/{U}/t", payload, qos=1).wait_for_publish(T)
    wait_for(lambda: len(got) >= 2, T, lambda: f"got {got}")
    expect(got == [b"small", b"end"], f"the large message is not delivered: {got}")
    after = Scrape()
    expect_deltas(before, after, {"switchboard_mqtt_oversize_dropped_total": 1})
    # Three PUBLISHes in (5 + 1000 + 3 bytes); two out: the large one was never written.
    expect_traffic(before, mqtt=(3, 1008, 2, 8))
    expect_deltas(before, after, {"switchboard_drops_and_refusals_total": 1}, cause="mqtt.larger_than_client_max")
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    wait_for(lambda: Scrape().get("switchboard_connections", listener="mqtt", protocol="mqtt") == 0, T,
             "the MQTT connections closed")
    # The session's queue outlives the connection; a caller that is not an admin sees its
    # name redacted in the per-queue series.
    names = Scrape(per_object=True).label_values("switchboard_queue_messages_ready", "queue")
    expect(not any(cid in n for n in names), f"the client id shows: {names}")
    expect(any(n.startswith("$mqtt.s.~") for n in names), f"the session's queue, redacted: {names}")


def routed(before):
    """Through the routes of tests/metrics.rs: `m-fanout` copies what reaches queue
    metrics.in to queue metrics.out and MQTT topic metrics/out, `m-urgent` also to queue
    metrics.urgent when the header `class` is `urgent`, `m-by-kind` sends what reaches
    metrics.kind to metrics.k.{header:kind}. Three STOMP SENDs to metrics.in (one urgent),
    one to metrics.kind with a kind, one without (the route cannot render it: refused)."""
    got, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"metrics-routed-{U}", protocol=mqtt.MQTTv311)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect(H, args.mqtt_port)
    sub.loop_start()
    sub.subscribe("metrics/out", qos=0)
    expect(subscribed.wait(T), "SUBACK")
    cons, ccol = stomp_conn()
    for q in ("metrics.out", "metrics.urgent"):
        cons.subscribe(f"/queue/{q}", id=q, ack="auto", receipt=q)
        ccol.wait_receipt(q)
    prod, pcol = stomp_conn()
    prod.send("/queue/metrics.in", "aa")
    prod.send("/queue/metrics.in", "bbb", headers={"class": "urgent"})
    prod.send("/queue/metrics.in", "cccc", receipt="in")
    prod.send("/queue/metrics.kind", "kind-x", headers={"kind": "x"}, receipt="kind")
    pcol.wait_receipt("kind")
    ccol.wait_messages(4)
    wait_for(lambda: len(got) >= 3, T, lambda: f"MQTT got {got}")
    expect(sorted(got) == [b"aa", b"bbb", b"cccc"], f"MQTT got {got}")
    # The route cannot render its target without the header: the SEND is refused (ERROR).
    bad, bcol = stomp_conn()
    bad.send("/queue/metrics.kind", "no-kind", receipt="bad")
    wait_for(lambda: bcol.errors, T, "an ERROR for the SEND the route could not route")

    # Received: four SENDs routed (9 + 6 bytes), the refused one not. Delivered: four
    # MESSAGE frames (metrics.out ×3, metrics.urgent ×1: 12 bytes), three PUBLISHes (9).
    after = expect_traffic(before, stomp=(4, 15, 4, 12), mqtt=(0, 0, 3, 9))
    expect_deltas(before, after, {"switchboard_route_matches_total": 6, "switchboard_route_errors_total": 1})
    per_route = Scrape(per_object=True)
    counts = {r: (per_route.get("switchboard_route_matches_total", route=r),
                  per_route.get("switchboard_route_errors_total", route=r))
              for r in ("m-fanout", "m-urgent", "m-by-kind")}
    expect(counts == {"m-fanout": (3, 0), "m-urgent": (1, 0), "m-by-kind": (2, 1)}, f"per route: {counts}")
    for c in (prod, cons):
        c.disconnect()
    sub.disconnect()
    sub.loop_stop()
    wait_for(lambda: stomp_gauge(Scrape()) == 0, T, "the STOMP connections closed")
    wait_for(lambda: Scrape().get("switchboard_connections", listener="mqtt", protocol="mqtt") == 0, T,
             "the MQTT connection closed")
    return after


def journal(before):
    """Every group commit is one observation of each journal histogram (fsync: always, the
    default); the five persistent appends are among the records written."""
    def settled():
        s = Scrape()
        commits = s.get("switchboard_journal_commits_total")
        counts = [s.get(f"switchboard_journal_{h}_count") for h in ("fsync_seconds", "commit_batch_records")]
        return counts == [commits, commits] and s
    s = wait_for(settled, T, lambda: f"histogram counts = commits:\n{Scrape().text}")
    expect(s.get("switchboard_journal_fsync_seconds_sum") > 0, "fsyncs take time")
    expect(s.get("switchboard_journal_fsync_seconds_bucket", le="+Inf") == s.get("switchboard_journal_fsync_seconds_count"),
           "the +Inf bucket holds every fsync")
    expect(delta(before, s, "switchboard_journal_commit_batch_records_sum") >= 5, f"five appends written:\n{s.text}")


def process():
    s = Scrape()
    expect(s.get("switchboard_process_resident_memory_bytes") > 1024 * 1024, "RSS")
    expect(s.get("switchboard_process_open_fds") >= 3, "open fds")
    expect(s.get("switchboard_process_max_fds") >= s.get("switchboard_process_open_fds"), "fd limit")


def traffic():
    before = Scrape()
    after = stomp_queue(before)
    journal(before)
    after = stomp_topic(after)
    after = routed(after)
    mqtt_oversize(after)
    process()
    print("ok")


{"traffic": traffic}[args.scenario]()
