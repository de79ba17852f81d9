#!/usr/bin/env python3
"""paho-mqtt (Eclipse Paho, Python) against a running Tributary MQTT listener.

Run by crates/tributary/tests/paho.rs; by hand:

    python3 interop.py HOST PORT DEVICE TOKEN OTHER_DEVICE

DEVICE/TOKEN are a registered device and its access token; OTHER_DEVICE is
another device id of the tenant (only used to check ACL refusals). Checks,
over MQTT 3.1.1 and 5.0:

- a wrong password is refused in CONNACK;
- QoS 1 and QoS 2 telemetry publishes complete (PUBACK, PUBCOMP) with
  success; the points are metrics paho311_q1, paho311_q2, paho5_q1, paho5_q2;
- the device may subscribe to its own command topic, not to others' topics
  (3.1.1: SUBACK 0x80; 5.0: SUBACK 0x87) nor publish there (5.0: PUBACK
  0x87; 3.1.1: the server closes the connection);
- over 5.0 it answers one command on its response topic with the
  command's correlation data.

Prints "ok <check>" per passed check, "ready" when it waits for a command
(the test then sends one over gRPC), "done" at the end, and exits with 1
after printing "FAIL <why>" on the first failed check.
"""

import json
import queue
import sys

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 15  # seconds for any answer from the server


def fail(why):
    print(f"FAIL {why}", flush=True)
    sys.exit(1)


def ok(check):
    print(f"ok {check}", flush=True)


class Peer:
    """One paho client with its callbacks turned into queues."""

    def __init__(self, protocol, client_id, user, password):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        self.client.username_pw_set(user, password)
        self.connacks = queue.Queue()
        self.published = queue.Queue()
        self.subacks = queue.Queue()
        self.messages = queue.Queue()
        self.disconnects = queue.Queue()
        self.client.on_connect = lambda c, u, flags, rc, props: self.connacks.put(rc)
        self.client.on_publish = lambda c, u, mid, rc, props: self.published.put((mid, rc))
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put((mid, rcs))
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(rc)

    def connect(self, host, port):
        """Connects and returns the CONNACK reason code."""
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        try:
            return self.connacks.get(timeout=WAIT)
        except queue.Empty:
            fail("no CONNACK")

    def stop(self):
        self.client.loop_stop()

    def publish(self, topic, payload, qos, properties=None):
        """Publishes and returns the reason code of the PUBACK or PUBCOMP."""
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        while True:
            try:
                mid, rc = self.published.get(timeout=WAIT)
            except queue.Empty:
                fail(f"no acknowledgement of QoS {qos} publish to {topic}")
            if mid == info.mid:
                return rc

    def subscribe(self, topic_filter, qos):
        """Subscribes and returns the SUBACK reason code."""
        _, mid = self.client.subscribe(topic_filter, qos=qos)
        while True:
            try:
                got, rcs = self.subacks.get(timeout=WAIT)
            except queue.Empty:
                fail(f"no SUBACK for {topic_filter}")
            if got == mid:
                return rcs[0]


def v311(host, port, device, token, other):
    bad = Peer(mqtt.MQTTv311, f"{device}/bad", device, "not-the-token")
    rc = bad.connect(host, port)
    bad.stop()
    if not rc.is_failure:
        fail(f"3.1.1 CONNACK with a wrong password: {rc}")
    ok("v311-wrong-password-refused")

    p = Peer(mqtt.MQTTv311, f"{device}/paho311", device, token)
    rc = p.connect(host, port)
    if rc.is_failure:
        fail(f"3.1.1 CONNACK: {rc}")
    ok("v311-connect")
    rc = p.publish(f"devices/{device}/telemetry/paho311_q1", "1.5", 1)
    if rc.is_failure:
        fail(f"3.1.1 QoS 1 PUBACK: {rc}")
    ok("v311-qos1-puback")
    rc = p.publish(f"devices/{device}/telemetry", json.dumps({"values": {"paho311_q2": 2}}), 2)
    if rc.is_failure:
        fail(f"3.1.1 QoS 2 PUBCOMP: {rc}")
    ok("v311-qos2-pubcomp")
    rc = p.subscribe(f"devices/{device}/commands/+", 1)
    if rc.value != 1:
        fail(f"3.1.1 SUBACK for the own command topic: {rc}")
    ok("v311-subscribe-commands")
    rc = p.subscribe("#", 1)
    if rc.value != 0x80:
        fail(f"3.1.1 SUBACK for '#': {rc.value:#x}, expected 0x80")
    ok("v311-subscribe-refused")
    # 3.1.1 has no way to refuse one PUBLISH: the server closes the connection.
    p.client.publish(f"devices/{other}/telemetry/x", "1", qos=1)
    try:
        p.disconnects.get(timeout=WAIT)
    except queue.Empty:
        fail("3.1.1 publish to another device's topic did not close the connection")
    p.stop()
    ok("v311-publish-refused")


def v5(host, port, device, token, other):
    bad = Peer(mqtt.MQTTv5, f"{device}/bad5", device, "not-the-token")
    rc = bad.connect(host, port)
    bad.stop()
    if rc.value != 0x86:
        fail(f"5.0 CONNACK with a wrong password: {rc.value:#x}, expected 0x86")
    ok("v5-wrong-password-refused")

    p = Peer(mqtt.MQTTv5, device, device, token)
    rc = p.connect(host, port)
    if rc.is_failure:
        fail(f"5.0 CONNACK: {rc}")
    ok("v5-connect")
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    rc = p.publish(
        f"devices/{device}/telemetry", json.dumps({"values": {"paho5_q1": 3.5}}), 1, props
    )
    if rc.is_failure:
        fail(f"5.0 QoS 1 PUBACK: {rc}")
    ok("v5-qos1-puback")
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/senml+json"
    rc = p.publish(
        f"devices/{device}/telemetry", json.dumps([{"n": "paho5_q2", "v": 4.5}]), 2, props
    )
    if rc.is_failure:
        fail(f"5.0 QoS 2 PUBCOMP: {rc}")
    ok("v5-qos2-pubcomp")
    rc = p.publish(f"devices/{other}/telemetry/x", "1", 1)
    if rc.value != 0x87:
        fail(f"5.0 PUBACK for another device's topic: {rc.value:#x}, expected 0x87")
    ok("v5-publish-refused")
    rc = p.subscribe("devices/+/telemetry", 1)
    if rc.value != 0x87:
        fail(f"5.0 SUBACK for devices/+/telemetry: {rc.value:#x}, expected 0x87")
    ok("v5-subscribe-refused")
    rc = p.subscribe(f"devices/{device}/commands/+", 1)
    if rc.value != 1:
        fail(f"5.0 SUBACK for the own command topic: {rc}")
    ok("v5-subscribe-commands")

    print("ready", flush=True)
    try:
        cmd = p.messages.get(timeout=WAIT)
    except queue.Empty:
        fail("no command arrived")
    name = cmd.topic.rsplit("/", 1)[-1]
    response_topic = getattr(cmd.properties, "ResponseTopic", None)
    correlation = getattr(cmd.properties, "CorrelationData", None)
    if cmd.qos != 1 or not response_topic or correlation is None:
        fail(f"command without QoS 1, response topic or correlation data: {cmd.topic}")
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = correlation
    props.ContentType = "application/json"
    reply = json.dumps({"client": "paho", "command": name, "got": cmd.payload.decode()})
    rc = p.publish(response_topic, reply, 1, props)
    if rc.is_failure and rc.value != 0x10:  # 0x10: no other subscriber
        fail(f"5.0 PUBACK of the reply: {rc}")
    ok("v5-command-replied")
    p.client.disconnect()
    p.stop()


def main():
    if len(sys.argv) != 6:
        fail("usage: interop.py HOST PORT DEVICE TOKEN OTHER_DEVICE")
    if not paho.mqtt.__version__.startswith("2."):
        fail(f"paho-mqtt 2.x required, found {paho.mqtt.__version__}")
    host, port, device, token, other = sys.argv[1:]
    v311(host, int(port), device, token, other)
    v5(host, int(port), device, token, other)
    print("done", flush=True)


if __name__ == "__main__":
    main()
