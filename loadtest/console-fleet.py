#!/usr/bin/env python3
"""The console's fleet page at 1,000 and at 100,000 devices: the API calls
the page makes (GET /api/v1/devices, 50 a page), timed against a release
`tributary standalone`, so that "stays fast with 100,000 devices" is a
ratio rather than a hope.

    python3 loadtest/console-fleet.py [--devices 100000] [--calls 21]

Builds nothing: run `cargo build --release -p tributary` first. Prints the
median and p90 per call shape at each size, and the ratio.
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

PORT = 18093


def request(conn, method, path, token, body=None):
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    payload = resp.read()
    if resp.status >= 300:
        raise RuntimeError(f"{method} {path}: {resp.status} {payload[:300]!r}")
    return json.loads(payload) if payload else None


def create(token, first, last, threads=8):
    """Devices d-<n> for n in [first, last), fleet=f<n%10>."""
    def work(k):
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        for n in range(first + k, last, threads):
            request(conn, "POST", "/api/v1/devices", token,
                    {"id": f"d-{n:06d}", "labels": {"fleet": f"f{n % 10}"}})
    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    done = 0
    while any(t.is_alive() for t in ts):
        time.sleep(1)
        print(f"\r  creating devices {first}..{last}", end="", file=sys.stderr)
    for t in ts:
        t.join()
    print(file=sys.stderr)


def timed(token, shapes, calls):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    out = {}
    for name, params in shapes:
        path = "/api/v1/devices?" + urllib.parse.urlencode(params)
        request(conn, "GET", path, token)  # warm
        ms = []
        for _ in range(calls):
            t = time.perf_counter()
            page = request(conn, "GET", path, token)
            ms.append((time.perf_counter() - t) * 1000)
        ms.sort()
        out[name] = (statistics.median(ms), ms[int(len(ms) * 0.9)], len(page["devices"]), page["tenant_devices"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=21)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.join(root, "target", "release", "tributary")
    work = tempfile.mkdtemp()
    proc = subprocess.Popen([binary, "standalone", "--data-dir", f"{work}/data",
                             "--http-addr", f"127.0.0.1:{PORT}", "--grpc-addr", "127.0.0.1:0",
                             "--metrics-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
                             "--mqtt-ws-addr", "127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                token = open(f"{work}/data/admin.token").read().strip()
                http.client.HTTPConnection("127.0.0.1", PORT, timeout=1).request("GET", "/ping")
                break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        request(conn, "PATCH", "/api/v1/tenants/default/quotas", token,
                {"set": {"devices": args.devices + 10}})
        # One page, a page deep in, an id prefix, both from the greatest id
        # down, a label in 10%, and a label no device has (the scan per page
        # is bounded).
        shapes = [
            ("first page", {"page_size": 50}),
            ("a page from the middle", {"page_size": 50, "page_token": "d-000500"}),
            ("id prefix d-0004", {"page_size": 50, "prefix": "d-0004"}),
            ("descending, first page", {"page_size": 50, "order": "desc"}),
            ("descending, id prefix d-0004", {"page_size": 50, "prefix": "d-0004", "order": "desc"}),
            ("selector fleet=f3", {"page_size": 50, "selector": "fleet=f3"}),
            ("selector fleet=none (no match)", {"page_size": 50, "selector": "fleet=none"}),
        ]
        results = {}
        create(token, 0, 1000)
        results[1000] = timed(token, shapes, args.calls)
        create(token, 1000, args.devices)
        results[args.devices] = timed(token, shapes, args.calls)
        print(f"| call | 1,000 devices: median, p90 | {args.devices:,} devices: median, p90 | ratio of medians |")
        print("|---|---|---|---|")
        for name, _ in shapes:
            a, b = results[1000][name], results[args.devices][name]
            print(f"| {name} ({b[2]} listed) | {a[0]:.2f} ms, {a[1]:.2f} ms | {b[0]:.2f} ms, {b[1]:.2f} ms | {b[0] / a[0]:.2f}x |")
        print(f"tenant_devices reported: {results[args.devices]['first page'][3]}")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
