"""A device on paho-mqtt (a client we did not write) for the endpoint tests.

Publishes `count` JSON frames (seq 1..count) at QoS 1 on its up topic and
prints `ack <seq> <reason>` for every PUBACK, flushed at once, so the test
knows exactly which frames the gateway acknowledged. Then `done`.

usage: paho_device.py HOST PORT {3|5} SITE DEVICE COUNT [USER PASSWORD]
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt

host, port, version, site, device, count = sys.argv[1:7]
port, count = int(port), int(count)
user = sys.argv[7] if len(sys.argv) > 8 else None
password = sys.argv[8] if len(sys.argv) > 8 else None
protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311

seq_of_mid = {}
early = set()  # PUBACKed before publish() returned its mid to us
lock = threading.Lock()
acked = 0
finished = threading.Event()


def frame(seq):
    return json.dumps({
        "v": 1, "site": site, "device": device, "seq": seq, "boot": 1, "fw": "paho",
        "time_ms": 1764115200000 + seq * 1000,
        "readings": [{"channel": "energy", "quantity": "energy", "kind": "counter", "value": seq * 10}],
    }, separators=(",", ":"))


def report(seq, code):
    global acked
    with lock:
        acked += 1
        n = acked
    print(f"ack {seq} {code}", flush=True)
    if n == count:
        finished.set()


def on_publish(client, userdata, mid, reason_code, properties):
    code = getattr(reason_code, "value", 0)
    with lock:
        seq = seq_of_mid.pop(mid, None)
        if seq is None:
            early.add((mid, code))
            return
    report(seq, code)


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=protocol)
if user:
    client.username_pw_set(user, password)
client.on_publish = on_publish
client.max_inflight_messages_set(20)
client.connect(host, port, keepalive=30)
client.loop_start()
for seq in range(1, count + 1):
    # The lock is never held across publish(): paho runs callbacks on its
    # network thread while holding its own locks.
    info = client.publish(f"mrv/{site}/{device}/up", frame(seq), qos=1)
    with lock:
        done = [e for e in early if e[0] == info.mid]
        if done:
            early.discard(done[0])
        else:
            seq_of_mid[info.mid] = seq
    if done:
        report(seq, done[0][1])
finished.wait(120)
print("done", flush=True)
client.disconnect()
client.loop_stop()
