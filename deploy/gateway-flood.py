#!/usr/bin/env python3
"""Hostile traffic against a running `uigc gateway`: random datagrams, then a flood of new stream
ids (a real packet with its stream id rewritten and its packet check recomputed, so its header is
valid), then a burst above one stream's rate. Prints the gateway's RSS before, after each flood and
after a quiet period, and its refusal counters, as one JSON line.

    python3 deploy/gateway-flood.py --pid PID --udp 127.0.0.1:5004 --http 127.0.0.1:8080 \
        --packet some.uigc [--junk 200000] [--new-ids 50000]

Standard library only (docs/gateway.md, "Limits").
"""
import argparse
import json
import random
import socket
import time
import urllib.request
import zlib


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def totals(http):
    with urllib.request.urlopen(f"http://{http}/api/streams", timeout=30) as r:
        return json.load(r)["totals"]


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(b, pos):
    n = shift = 0
    while True:
        n |= (b[pos] & 0x7F) << shift
        pos += 1
        if not b[pos - 1] & 0x80:
            return n, pos
        shift += 7


def with_stream_id(packet, stream_id):
    """The packet with another stream id and a recomputed packet check (format v2)."""
    flags = packet[1] & 0x0F
    _, pos = read_varint(packet, 6)  # old stream id
    head = bytearray(packet[:6]) + varint(stream_id)
    rest_start = pos
    for _ in range(3):  # frame, width - 1, height - 1
        _, pos = read_varint(packet, pos)
    pos += 1  # stages
    if flags & 0x4:
        pos += 1  # colour parameters
    if flags & 0x8:
        for _ in range(3):
            _, pos = read_varint(packet, pos)
    pos += 2 + (2 if flags & 0x8 else 0)  # check value(s)
    before = head + packet[rest_start:pos]
    payload = packet[pos + 2:]
    check = zlib.crc32(bytes(before) + payload) & 0xFFFF
    return bytes(before) + check.to_bytes(2, "little") + payload


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--udp", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--packet", required=True, help="a real packet of a model the gateway serves")
    ap.add_argument("--junk", type=int, default=200_000)
    ap.add_argument("--new-ids", type=int, default=50_000)
    ap.add_argument("--quiet", type=float, default=5.0)
    a = ap.parse_args()
    host, port = a.udp.rsplit(":", 1)
    to = (host, int(port))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(1)
    packet = open(a.packet, "rb").read()
    out = {"rss_kib_before": rss_kib(a.pid), "totals_before": totals(a.http)}
    t = time.time()
    for i in range(a.junk):
        n = rng.randint(1, 1400)
        s.sendto(bytes([0]) + rng.randbytes(n - 1), to)
        if i % 64 == 0:
            time.sleep(0.0005)
    out["junk_sent"] = a.junk
    out["junk_seconds"] = time.time() - t
    out["rss_kib_after_junk"] = rss_kib(a.pid)
    t = time.time()
    for i in range(a.new_ids):
        s.sendto(with_stream_id(packet, 10_000_000 + i), to)
        if i % 64 == 0:
            time.sleep(0.0005)
    out["new_ids_sent"] = a.new_ids
    out["new_ids_seconds"] = time.time() - t
    out["rss_kib_after_new_ids"] = rss_kib(a.pid)
    time.sleep(a.quiet)
    out["rss_kib_after_quiet"] = rss_kib(a.pid)
    out["totals_after"] = totals(a.http)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
