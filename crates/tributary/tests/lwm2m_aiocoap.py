"""An LwM2M 1.1 client written on aiocoap (PyPI), from the OMA LwM2M Core
specification, against Tributary's LwM2M server. Run by tests/lwm2m.rs:

    python3 lwm2m_aiocoap.py HOST PORT TOKEN

The client holds a Device object (3/0, battery level 9) and a Temperature
object (3303/0, sensor value 5700, observable) and:

1. registers: POST /rd?ep=…&lt=60&lwm2m=1.1&b=U with its objects in link
   format, and the device token in option 65003 (plain CoAP): 2.01 with
   Location-Path rd/{id};
2. answers the server's Observe of 3303/0/5700 (plain text) and of 3/0/9
   (TLV), then notifies three new temperatures, one per `next` line read on
   stdin;
3. updates its registration (POST /rd/{id}): 2.04;
4. answers the server's device management: a Read of its manufacturer
   (3/0/0, text) and of a 3,000-byte serial number (3/0/2, in blocks), a
   Write of its lifetime (1/0/1, text: prints `OK written
   <value>`), an Execute of reboot (3/0/4: prints `OK executed`);
5. deregisters (DELETE /rd/{id}) on `deregister`: 2.02.

With `queue` after TOKEN, a client in queue mode instead: it registers
with `Q`, goes quiet until `wake` on stdin, then updates (printing `OK
updated`) and answers what the server held for it (printing `OK read
<name>` for each Read); `end` deregisters.

Prints `OK <what>` per step; exits non-zero on the first failure.
"""
import asyncio
import struct
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap import CHANGED, CREATED, DELETED, DELETE, POST, Message
from aiocoap.numbers.contentformat import ContentFormat
from aiocoap.optiontypes import OpaqueOption

TOKEN_OPTION = 65003
QUEUE = len(sys.argv) > 4 and sys.argv[4] == "queue"


class Temperature(resource.ObservableResource):
    def __init__(self):
        super().__init__()
        self.value = 21.5
        self.observed = asyncio.Event()

    async def add_observation(self, request, serverobservation):
        await super().add_observation(request, serverobservation)
        self.observed.set()

    async def render_get(self, request):
        return Message(payload=f"{self.value}".encode(), content_format=0)

    def set(self, value):
        self.value = value
        self.updated_state()


class Battery(resource.ObservableResource):
    """3/0/9 as TLV: a resource with a 1-byte Integer value."""

    async def render_get(self, request):
        # Type: resource with value (11), 8-bit id, length 1 in the type.
        payload = bytes([0b11000001, 9]) + struct.pack(">b", 87)
        return Message(payload=payload, content_format=ContentFormat(11542))


class Text(resource.Resource):
    """A readable, writable text resource."""

    def __init__(self, value, name):
        super().__init__()
        self.value, self.name = value, name

    async def render_get(self, request):
        if QUEUE:
            print(f"OK read {self.name}", flush=True)
        return Message(payload=self.value.encode(), content_format=0)

    async def render_put(self, request):
        self.value = request.payload.decode()
        print(f"OK written {self.value}", flush=True)
        return Message(code=CHANGED)


class Reboot(resource.Resource):
    async def render_post(self, request):
        print("OK executed", flush=True)
        return Message(code=CHANGED)


async def main(host, port, token):
    site = resource.Site()
    site.add_resource(["3", "0", "0"], Text("Tributary Labs", "manufacturer"))
    # Larger than one datagram: aiocoap answers it in blocks (Block2).
    site.add_resource(["3", "0", "2"], Text("S" * 3000, "serial number"))
    site.add_resource(["1", "0", "1"], Text("60", "lifetime"))
    site.add_resource(["3", "0", "4"], Reboot())
    temperature = Temperature()
    site.add_resource(["3303", "0", "5700"], temperature)
    # A flow meter (3442/0/1120): no IPSO default; observed only because
    # the tenant names it.
    flow = Temperature()
    flow.value = 1.5
    site.add_resource(["3442", "0", "1120"], flow)
    # A loudness sensor (3324/0/5700): observed only when an operator asks.
    loudness = Temperature()
    loudness.value = 42.0
    site.add_resource(["3324", "0", "5700"], loudness)
    site.add_resource(["3", "0", "9"], Battery())
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0))
    base = f"coap://{host}:{port}"

    def authed(msg):
        msg.opt.add_option(OpaqueOption(TOKEN_OPTION, token.encode()))
        return msg

    register = authed(Message(
        code=POST,
        uri=f"{base}/rd?ep=urn:dev:lwm2m-1&lt=60&lwm2m=1.1&b=U",
        payload=b'</>;rt="oma.lwm2m";ct=11542,</1/0>,</3/0>,</3303/0>,</3442/0>',
        content_format=40,
    ))
    resp = await asyncio.wait_for(ctx.request(register).response, 20)
    assert resp.code == CREATED, f"{resp.code}: {resp.payload!r}"
    location = list(resp.opt.location_path)
    assert location[0] == "rd" and len(location) == 2, location
    print(f"OK registered {location[1]}", flush=True)

    await asyncio.wait_for(temperature.observed.wait(), 20)
    print("OK observed", flush=True)

    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    for value in (22.25, 23.0, 24.75):
        line = (await reader.readline()).decode().strip()
        assert line == "next", line
        temperature.set(value)
        print(f"OK notified {value}", flush=True)

    update = authed(Message(code=POST, uri=f"{base}/rd/{location[1]}?lt=120"))
    resp = await asyncio.wait_for(ctx.request(update).response, 20)
    assert resp.code == CHANGED, f"{resp.code}: {resp.payload!r}"
    print("OK updated", flush=True)

    line = (await reader.readline()).decode().strip()
    assert line == "deregister", line
    delete = authed(Message(code=DELETE, uri=f"{base}/rd/{location[1]}"))
    resp = await asyncio.wait_for(ctx.request(delete).response, 20)
    assert resp.code == DELETED, f"{resp.code}: {resp.payload!r}"
    print("OK deregistered", flush=True)
    await ctx.shutdown()


async def queue_mode(host, port, token):
    site = resource.Site()
    site.add_resource(["3", "0", "0"], Text("Tributary Labs", "manufacturer"))
    site.add_resource(["3", "0", "9"], Battery())
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0))
    base = f"coap://{host}:{port}"

    def authed(msg):
        msg.opt.add_option(OpaqueOption(TOKEN_OPTION, token.encode()))
        return msg

    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    register = authed(Message(
        code=POST,
        uri=f"{base}/rd?ep=urn:dev:queued&lt=60&lwm2m=1.1&b=U&Q",
        payload=b"</3/0>",
        content_format=40,
    ))
    resp = await asyncio.wait_for(ctx.request(register).response, 20)
    assert resp.code == CREATED, f"{resp.code}: {resp.payload!r}"
    location = list(resp.opt.location_path)
    print(f"OK registered {location[1]}", flush=True)
    line = (await reader.readline()).decode().strip()
    assert line == "wake", line
    update = authed(Message(code=POST, uri=f"{base}/rd/{location[1]}"))
    resp = await asyncio.wait_for(ctx.request(update).response, 20)
    assert resp.code == CHANGED, f"{resp.code}: {resp.payload!r}"
    print("OK updated", flush=True)
    line = (await reader.readline()).decode().strip()
    assert line == "end", line
    delete = authed(Message(code=DELETE, uri=f"{base}/rd/{location[1]}"))
    resp = await asyncio.wait_for(ctx.request(delete).response, 20)
    assert resp.code == DELETED, f"{resp.code}: {resp.payload!r}"
    print("OK deregistered", flush=True)
    await ctx.shutdown()


if __name__ == "__main__":
    run = queue_mode if QUEUE else main
    asyncio.run(run(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
