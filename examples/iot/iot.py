"""The IoT example's devices and AMQP service: two MQTT devices (paho-mqtt) with wills,
and a pika consumer bound to the `iot` exchange that prints what arrives. Device d2
vanishes without a DISCONNECT; its will tells the AMQP side it went offline.
--check exits 1 unless everything expected arrived."""

import argparse
import json
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pika

p = argparse.ArgumentParser()
p.add_argument("--mqtt-port", type=int, required=True)
p.add_argument("--check", action="store_true")
args = p.parse_args()

# The AMQP service: a private queue bound to everything on the exchange.
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest")))
ch = conn.channel()
deadline = time.monotonic() + 20
while True:  # the router declares the exchange when its link connects
    try:
        ch.exchange_declare("iot", exchange_type="topic", passive=True)
        break
    except pika.exceptions.ChannelClosedByBroker:
        if time.monotonic() > deadline:
            sys.exit("the router never declared the exchange `iot` (is its AMQP link up?)")
        ch = conn.channel()
        time.sleep(0.2)
q = ch.queue_declare("", exclusive=True).method.queue
ch.queue_bind(q, "iot", "#")
got = []


def device(name):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.will_set(f"devices/{name}/status", "offline", qos=1, retain=True)
    c.connect("127.0.0.1", args.mqtt_port, keepalive=30)
    c.loop_start()
    c.publish(f"devices/{name}/status", "online", qos=1, retain=True).wait_for_publish(5)
    return c


d1, d2 = device("d1"), device("d2")
for i in range(3):
    for name, c in (("d1", d1), ("d2", d2)):
        c.publish(f"devices/{name}/telemetry/temperature", json.dumps({"c": 20 + i}), qos=1).wait_for_publish(5)
# d2 vanishes: its TCP connection closes without a DISCONNECT, so the router publishes its will.
d2.loop_stop()
d2.socket().shutdown(socket.SHUT_RDWR)
d2.socket().close()
d1.publish("devices/d1/telemetry/humidity", json.dumps({"rh": 41}), qos=1).wait_for_publish(5)

want = 2 + 6 + 1 + 1  # two "online", six temperatures, one humidity, d2's "offline"
deadline = time.monotonic() + 15
while len(got) < want and time.monotonic() < deadline:
    method, props, body = ch.basic_get(q, auto_ack=True)
    if method is None:
        time.sleep(0.05)
        continue
    got.append((method.routing_key, body.decode(), (props.headers or {}).get("device")))
    print(f"AMQP  {method.routing_key:<32} {body.decode():<12} device={got[-1][2]}")
d1.loop_stop()
d1.disconnect()
conn.close()
keys = [k for k, _, _ in got]
ok = (keys.count("telemetry.d1.temperature") == 3 and keys.count("telemetry.d2.temperature") == 3
      and "telemetry.d1.humidity" in keys and ("status.d2", "offline", "d2") in got
      and ("status.d1", "online", "d1") in got)
print("all telemetry and d2's will arrived on the AMQP side" if ok else f"missing something: {got}")
if args.check and not ok:
    sys.exit(1)
