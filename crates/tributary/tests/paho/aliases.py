#!/usr/bin/env python3
"""paho-mqtt (Eclipse Paho, Python) receives commands by topic alias.

Run by crates/tributary/tests/paho.rs; by hand:

    python3 aliases.py HOST PORT DEVICE TOKEN ALIAS_MAXIMUM

Connects over MQTT 5.0 as DEVICE, announcing ALIAS_MAXIMUM as its Topic
Alias Maximum (0: the property is left out, so the client allows none),
subscribes to its command topics, prints "ready", and then, per PUBLISH
received, one line:

    got <topic as decoded> <payload> raw=<topic on the wire or -> alias=<n or ->

paho 2.x decodes the Topic Alias property and hands the packet over with
the topic as it came (empty when sent by alias); resolving the alias to its
topic is left to the application, as MQTT 5.0 section 3.3.2.3.4 describes,
and done here. An alias the server never set up, or one above
ALIAS_MAXIMUM, fails the script.

Exits after COUNT messages (the sixth argument, default 3) with "done", or
with "FAIL <why>" on the first failed check.
"""

import queue
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 15  # seconds for any answer from the server


def fail(why):
    print(f"FAIL {why}", flush=True)
    sys.exit(1)


def main():
    if len(sys.argv) not in (6, 7):
        fail("usage: aliases.py HOST PORT DEVICE TOKEN ALIAS_MAXIMUM [COUNT]")
    host, port, device, token, maximum = sys.argv[1:6]
    maximum = int(maximum)
    count = int(sys.argv[6]) if len(sys.argv) == 7 else 3

    events = queue.Queue()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"{device}/paho-aliases", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(device, token)
    client.on_connect = lambda c, u, flags, rc, props: events.put(("connack", rc))
    client.on_subscribe = lambda c, u, mid, rcs, props: events.put(("suback", rcs[0]))
    client.on_message = lambda c, u, msg: events.put(("message", msg))

    def next_event(kind):
        try:
            got, value = events.get(timeout=WAIT)
        except queue.Empty:
            fail(f"no {kind} within {WAIT} s")
        if got != kind:
            fail(f"expected {kind}, got {got}")
        return value

    props = Properties(PacketTypes.CONNECT)
    if maximum:
        props.TopicAliasMaximum = maximum
    client.connect(host, int(port), keepalive=30, properties=props)
    client.loop_start()
    rc = next_event("connack")
    if rc.is_failure:
        fail(f"CONNACK: {rc}")
    client.subscribe(f"devices/{device}/commands/+", qos=1)
    rc = next_event("suback")
    if rc.value != 1:
        fail(f"SUBACK for the own command topic: {rc}")
    print("ready", flush=True)

    aliases = {}
    for _ in range(count):
        msg = next_event("message")
        raw = msg.topic
        alias = getattr(msg.properties, "TopicAlias", None)
        if alias is not None:
            if not 1 <= alias <= maximum:
                fail(f"alias {alias} outside 1..{maximum}")
            if raw:
                aliases[alias] = raw
            elif alias not in aliases:
                fail(f"empty topic with alias {alias}, which was never set")
        elif not raw:
            fail("empty topic without an alias")
        topic = raw or aliases[alias]
        print(
            f"got {topic} {msg.payload.decode()} raw={raw or '-'} "
            f"alias={'-' if alias is None else alias}",
            flush=True,
        )
    client.disconnect()
    client.loop_stop()
    print("done", flush=True)


if __name__ == "__main__":
    main()
