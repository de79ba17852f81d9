"""aiocoap (PyPI) against Tributary's CoAP frontend. Run by tests/coap.rs:

    python3 coap_aiocoap.py HOST PORT TOKEN [observe]

1. A POST through aiocoap's own client stack (its retransmission and
   message-id handling), with the token in option 65003: 2.04 Changed.
2. The same confirmable message (same message id, same token) sent twice,
   encoded by aiocoap: both answered 2.04 with that id; the test then checks
   that one point was stored.
3. A GET of /.well-known/core: link format (40) naming /t.

With `observe`: observes /c with aiocoap's observation API, answers the
first command (a POST to /c/{id}) and ends.

Prints `OK <what>` per step; exits non-zero on the first failure.
"""
import asyncio
import socket
import sys
import warnings

from aiocoap import CHANGED, CON, CONTENT, GET, POST, Context, Message
from aiocoap.optiontypes import OpaqueOption

TOKEN_OPTION = 65003


async def main(host, port, token):
    base = f"coap://{host}:{port}"
    ctx = await Context.create_client_context()
    req = Message(code=POST, uri=f"{base}/t", payload=b'{"values": {"aio": 1.5}}', content_format=50)
    req.opt.add_option(OpaqueOption(TOKEN_OPTION, token.encode()))
    resp = await asyncio.wait_for(ctx.request(req).response, 20)
    assert resp.code == CHANGED, f"{resp.code}: {resp.payload!r}"
    print("OK post", flush=True)

    # One message, sent twice as a client whose ACK got lost would.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        twice = Message(mtype=CON, mid=0x4242, code=POST, token=b"\x0b\x0c", uri_path=("t",),
                        payload=b'{"values": {"dedup": 7}}', content_format=50)
    twice.opt.add_option(OpaqueOption(TOKEN_OPTION, token.encode()))
    raw = twice.encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    for attempt in (1, 2):
        s.sendto(raw, (host, port))
        ack = Message.decode(s.recv(2048))
        assert ack.mid == 0x4242 and ack.code == CHANGED and ack.token == b"\x0b\x0c", \
            f"attempt {attempt}: {ack}"
    print("OK duplicate", flush=True)

    links = await asyncio.wait_for(ctx.request(Message(code=GET, uri=f"{base}/.well-known/core")).response, 20)
    assert links.code == CONTENT, links
    assert links.opt.content_format == 40, links.opt.content_format
    assert "</t>" in links.payload.decode(), links.payload
    print("OK discovery", flush=True)
    await ctx.shutdown()


async def observe(host, port, token):
    """Observes /c, answers the first command, prints `OK observing`, then
    `OK replied <id>`."""
    import json
    ctx = await Context.create_client_context()
    req = Message(code=GET, uri=f"coap://{host}:{port}/c", observe=0)
    req.opt.add_option(OpaqueOption(TOKEN_OPTION, token.encode()))
    pr = ctx.request(req)
    first = await asyncio.wait_for(pr.response, 20)
    assert first.code == CONTENT and first.opt.observe is not None, first
    print("OK observing", flush=True)
    note = await asyncio.wait_for(pr.observation.__aiter__().__anext__(), 30)
    command = json.loads(note.payload)
    assert command["name"] == "reboot", command
    reply = Message(code=POST, uri=f"coap://{host}:{port}/c/{command['id']}",
                    payload=f"rebooting in {command['payload']}".encode(), content_format=0)
    reply.opt.add_option(OpaqueOption(TOKEN_OPTION, token.encode()))
    answered = await asyncio.wait_for(ctx.request(reply).response, 20)
    assert answered.code == CHANGED, answered
    print(f"OK replied {command['id']}", flush=True)
    pr.observation.cancel()
    await ctx.shutdown()


if __name__ == "__main__":
    host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if sys.argv[4:] == ["observe"]:
        asyncio.run(observe(host, port, token))
    else:
        asyncio.run(main(host, port, token))
