"""Simulated MQTT sensors (paho-mqtt): each publishes a JSON reading to
sensors/<name>/temp a few times a second."""

import argparse
import json
import math
import time

import paho.mqtt.client as mqtt

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: run until killed)")
args = p.parse_args()

c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dashboard-sensors")
c.connect("127.0.0.1", args.port)
c.loop_start()
start = time.monotonic()
sensors = {"kitchen": 21.0, "hall": 18.5, "garage": 9.0}
while not args.seconds or time.monotonic() - start < args.seconds:
    t = time.monotonic() - start
    for i, (name, base) in enumerate(sensors.items()):
        reading = {"c": round(base + math.sin(t / 3 + i), 2)}
        c.publish(f"sensors/{name}/temp", json.dumps(reading), qos=0)
    time.sleep(0.25)
c.loop_stop()
c.disconnect()
