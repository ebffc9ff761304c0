"""The reshape example's sensors and worker: two MQTT sensors (paho-mqtt) publish readings
in their own JSON, one of them a batch; a pika worker takes the jobs the router's jq route
made from them off the queue `jobs.climate` and prints them.
--check exits 1 unless every reading arrived as the job the worker expects."""

import argparse
import json
import sys
import time

import paho.mqtt.client as mqtt
import pika

p = argparse.ArgumentParser()
p.add_argument("--mqtt-port", type=int, required=True)
p.add_argument("--check", action="store_true")
args = p.parse_args()

conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest")))
ch = conn.channel()
deadline = time.monotonic() + 20
while True:  # the router declares the queue when its link connects
    try:
        ch.queue_declare("jobs.climate", passive=True)
        break
    except pika.exceptions.ChannelClosedByBroker:
        if time.monotonic() > deadline:
            sys.exit("the router never declared the queue `jobs.climate` (is its AMQP link up?)")
        ch = conn.channel()
        time.sleep(0.2)
ch.queue_purge("jobs.climate")  # a clean start: nothing left from an earlier run

sensor = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="reshape-sensors")
sensor.connect("127.0.0.1", args.mqtt_port)
sensor.loop_start()
readings = [
    ("sensors/north/t-17", {"dev": "t-17", "temp_f": 71.6, "rh": 40, "ts": "2026-12-05T08:00:00Z"}),
    ("sensors/north/t-17", {"dev": "t-17", "temp_f": 72.5, "rh": 41, "ts": "2026-12-05T08:01:00Z"}),
    ("sensors/south/b-2", {"dev": "b-2", "readings": [
        {"temp_f": 50.0, "rh": 70, "ts": "2026-12-05T07:58:00Z"},
        {"temp_f": 51.8, "rh": 68, "ts": "2026-12-05T07:59:00Z"},
        {"temp_f": 53.6, "rh": 66, "ts": "2026-12-05T08:00:00Z"}]}),
]
for topic, body in readings:
    print(f"MQTT  {topic:<20} {json.dumps(body)}")
    sensor.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)

want = 5
got = []
deadline = time.monotonic() + 15
while len(got) < want and time.monotonic() < deadline:
    method, props, body = ch.basic_get("jobs.climate", auto_ack=True)
    if method is None:
        time.sleep(0.05)
        continue
    job = json.loads(body)
    got.append((job, props.headers or {}, props.content_type))
    print(f"AMQP  jobs.climate  {json.dumps(job)}  job-type={(props.headers or {}).get('job-type')}")
sensor.loop_stop()
sensor.disconnect()
conn.close()
expected = [
    {"type": "climate.reading", "site": "north", "device": "t-17", "celsius": 22.0, "humidity": 0.4, "at": "2026-12-05T08:00:00Z"},
    {"type": "climate.reading", "site": "north", "device": "t-17", "celsius": 22.5, "humidity": 0.41, "at": "2026-12-05T08:01:00Z"},
    {"type": "climate.reading", "site": "south", "device": "b-2", "celsius": 10.0, "humidity": 0.7, "at": "2026-12-05T07:58:00Z"},
    {"type": "climate.reading", "site": "south", "device": "b-2", "celsius": 11.0, "humidity": 0.68, "at": "2026-12-05T07:59:00Z"},
    {"type": "climate.reading", "site": "south", "device": "b-2", "celsius": 12.0, "humidity": 0.66, "at": "2026-12-05T08:00:00Z"},
]
ok = ([j for j, _, _ in got] == expected
      and all(h.get("job-type") == "climate.reading" and ct == "application/json" for _, h, ct in got))
print("every reading arrived as the job the worker expects" if ok else f"not as expected: {got}")
if args.check and not ok:
    sys.exit(1)
