#!/usr/bin/env python3
"""Measures the JetStream scale-out path (docs/gateway.md, "Scale-out"): a local nats-server,
`uigc gateway --nats`, and `uigc decode-worker`s.

  python3 deploy/gateway-nats-bench.py --uigc target/release/uigc --sent DIR [--model DIR]
      [--repeat 5] [--workers 1,2] [--window 40] [--paced-rate 4] [--paced-seconds 30]

DIR holds .uigcs files (one per stream, e.g. the sent/ folder of deploy/gateway-fleet.sh).
Phases, each on a fresh server and gateway:
  publish: every packet of DIR, --repeat times, over one TCP uplink as fast as it goes; packets/s
           from the first byte sent until the server acknowledged the last one (archive + publish);
  workers: for each count in --workers, a backlog of DIR's packets, then that many workers for
           --window seconds: packets decoded per second after the first 5 s;
  paced:   one worker, the packets sent at --paced-rate packets/s for --paced-seconds: latency
           from the gateway's receive to the frame in the frame stream (median, p95, max).
Prints one JSON line per phase."""
import argparse
import glob
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def read_uigcs(path):
    data = open(path, "rb").read()
    out, i = [], 0
    while i + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, i)
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


class Env:
    """nats-server + gateway in a temporary folder."""

    def __init__(self, a):
        self.a = a
        self.dir = tempfile.mkdtemp(prefix="uigc-nats-bench.")
        port = free_port()
        self.url = f"nats://127.0.0.1:{port}"
        self.nats = subprocess.Popen(
            [a.nats_server, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", f"{self.dir}/js"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        self.gw = subprocess.Popen(
            [a.uigc, "gateway", "--archive", f"{self.dir}/archive", "--udp", "127.0.0.1:0",
             "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--stream-rate", "0",
             "--max-streams", "4096", "--stats-every", "0", "--nats", self.url, "--threads", "1"]
            + self.model_args(), stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.gw.stdout.readline())
        self.tcp = ready["tcp"]
        self.udp = ready["udp"]
        self.http = ready["http"]
        self.workers = []

    def model_args(self):
        return ["--model", self.a.model] if self.a.model else []

    def totals(self):
        with urllib.request.urlopen(f"http://{self.http}/api/streams") as r:
            return json.load(r)["totals"]

    def published(self):
        n = self.totals()["nats"]
        return n["published"] + n["duplicates"]

    def send_tcp(self, packets):
        h, p = self.tcp.rsplit(":", 1)
        s = socket.create_connection((h, int(p)))
        s.sendall(b"".join(struct.pack("<I", len(x)) + x for x in packets))
        s.close()

    def worker(self, name, extra=()):
        w = subprocess.Popen(
            [self.a.uigc, "decode-worker", "--nats", self.url, "--name", name, "--stats-every",
             "1", "--threads", "1", *extra] + self.model_args(),
            stdout=subprocess.PIPE, text=True)
        assert json.loads(w.stdout.readline())["ready"]
        os.set_blocking(w.stdout.fileno(), False)
        self.workers.append(w)
        return w

    def close(self):
        for p in self.workers + [self.gw, self.nats]:
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_published(env, n, limit=600):
    t = time.time()
    while env.published() < n:
        if time.time() - t > limit:
            raise SystemExit(f"only {env.published()} of {n} published")
        time.sleep(0.05)


def decoded_now(w, last):
    """The decoded count of a worker's newest stats line (non-blocking read)."""
    try:
        chunk = w.stdout.read()
    except (BlockingIOError, TypeError):
        chunk = None
    for line in (chunk or "").splitlines():
        try:
            last = json.loads(line)["decoded"]
        except (ValueError, KeyError):
            pass
    return last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uigc", required=True)
    ap.add_argument("--sent", required=True)
    ap.add_argument("--model")
    ap.add_argument("--nats-server", default=shutil.which("nats-server") or "/usr/sbin/nats-server")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--window", type=float, default=40)
    ap.add_argument("--paced-rate", type=float, default=4)
    ap.add_argument("--paced-seconds", type=float, default=30)
    ap.add_argument("--skip", default="", help="phases to skip (publish,workers,paced)")
    a = ap.parse_args()
    streams = [read_uigcs(p) for p in sorted(glob.glob(os.path.join(a.sent, "*.uigcs")))]
    # Interleaved like a fleet: packet i of every stream, then packet i+1.
    packets = [s[i] for i in range(max(map(len, streams))) for s in streams if i < len(s)]
    size = sum(map(len, packets)) / len(packets)

    if "publish" not in a.skip:
        env = Env(a)
        try:
            total = len(packets) * a.repeat
            t0 = time.time()
            for _ in range(a.repeat):
                env.send_tcp(packets)
            wait_published(env, total)
            dt = time.time() - t0
            print(json.dumps({"phase": "publish", "packets": total, "mean_bytes": round(size, 1),
                              "seconds": round(dt, 2), "packets_per_s": round(total / dt, 1),
                              "totals": env.totals()}), flush=True)
        finally:
            env.close()

    for n in ([] if "workers" in a.skip else [int(x) for x in a.workers.split(",")]):
        env = Env(a)
        try:
            env.send_tcp(packets)
            wait_published(env, len(packets))
            ws = [env.worker(f"w{i}") for i in range(n)]
            last = [0] * n
            t0 = time.time()
            mark = None
            while time.time() - t0 < a.window:
                time.sleep(0.5)
                last = [decoded_now(w, c) for w, c in zip(ws, last)]
                if mark is None and time.time() - t0 >= 5:
                    mark = (time.time(), sum(last))
                if sum(last) >= len(packets):
                    break
            t1, done = time.time(), sum(last)
            rate = (done - mark[1]) / (t1 - mark[0]) if mark else done / (t1 - t0)
            print(json.dumps({"phase": "workers", "workers": n, "backlog": len(packets),
                              "decoded": done, "per_worker": last, "seconds": round(t1 - t0, 1),
                              "packets_per_s": round(rate, 2)}), flush=True)
        finally:
            env.close()

    if "paced" not in a.skip:
        env = Env(a)
        try:
            env.worker("w0")
            count = int(a.paced_rate * a.paced_seconds)
            h, p = env.udp.rsplit(":", 1)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t0 = time.time()
            for i, pk in enumerate(packets[:count]):
                due = t0 + i / a.paced_rate
                time.sleep(max(0.0, due - time.time()))
                s.sendto(pk, (h, int(p)))
            time.sleep(5)
            out = subprocess.run([a.uigc, "frames", "--nats", env.url, "--idle", "2"],
                                 capture_output=True, text=True, check=True).stdout
            lat = sorted(json.loads(l)["latency_ms"] for l in out.splitlines())
            q = lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))], 1)
            print(json.dumps({"phase": "paced", "rate": a.paced_rate, "sent": count,
                              "frames": len(lat), "latency_ms_median": q(0.5),
                              "latency_ms_p95": q(0.95), "latency_ms_max": round(lat[-1], 1)}),
                  flush=True)
        finally:
            env.close()


if __name__ == "__main__":
    sys.exit(main())
