#!/usr/bin/env python3
"""The figures of docs/RELIABILITY.md, measured on the release build.

    cargo build --release
    scripts/bench/reliability.py [long-line|no-newline|cities|dead-letters|slow-clients|all]

- long-line: peak RSS of `process --input FILE` over 20 000 events with one 300 MB line in the
  middle, against the same file without it.
- no-newline: peak RSS of `process --input -` fed 3 GB without a newline (one `too_large`
  dead letter).
- cities: 300 000 events of 300 000 distinct cities through `process --input FILE`: peak RSS,
  and the size of `/api/v1/cities` (its first page) against the whole list's.
- dead-letters: 1 000 000 junk lines through `process`, then the latency of
  `GET /api/v1/dead-letters?limit=10` (and of `/late-events`) from `serve`, 500 requests.
- slow-clients: 3 000 connections that send half a request header to `serve` with its default
  limits: how many are refused at once (503, over `--max-connections`), when the last held one
  is dropped, and what a normal request gets meanwhile and once they are gone.

Peak RSS is the process's VmHWM (GNU time's %M). Nothing here needs a network.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("CITYSTREAM_BIN", os.path.join(ROOT, "target", "release", "citystream"))
START = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 3600))


def peak_rss_mib(args, stdin=None):
    """Runs citystream with GNU time; returns (peak RSS in MiB, seconds)."""
    started = time.time()
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M", BIN, *args, "--log", "warn"],
        stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True,
    )
    kib = int(out.stderr.decode().strip().splitlines()[-1])
    return kib / 1024, time.time() - started


def events(n, seed=7):
    out = subprocess.run(
        [BIN, "produce", "--count", str(n), "--burst", "--seed", str(seed), "--rate", "50",
         "--start-time", START, "--log", "warn"],
        stdout=subprocess.PIPE, check=True,
    )
    return out.stdout


def long_line(tmp):
    base = events(20_000)
    lines = base.split(b"\n")
    plain = os.path.join(tmp, "plain.jsonl")
    with open(plain, "wb") as f:
        f.write(base)
    long = os.path.join(tmp, "long.jsonl")
    with open(long, "wb") as f:
        f.write(b"\n".join(lines[:10_000]) + b"\n")
        chunk = b"x" * (1 << 20)
        for _ in range(300):
            f.write(chunk)
        f.write(b"\n" + b"\n".join(lines[10_000:]))
    for name, path in (("without", plain), ("with a 300 MB line", long)):
        rss, secs = peak_rss_mib(["process", "--input", path, "--data-dir", os.path.join(tmp, name)])
        print(f"long-line: {name}: peak RSS {rss:.1f} MiB, {secs:.1f} s")


def no_newline(tmp):
    feeder = subprocess.Popen(["sh", "-c", "head -c 3G /dev/zero | tr '\\0' x"], stdout=subprocess.PIPE)
    rss, secs = peak_rss_mib(["process", "--input", "-", "--data-dir", os.path.join(tmp, "nl")], stdin=feeder.stdout)
    feeder.wait()
    print(f"no-newline: 3 GB without a newline on stdin: peak RSS {rss:.1f} MiB, {secs:.1f} s")


class Serve:
    def __init__(self, data, *extra):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{self.port}", "--log", "warn", *extra])
        for _ in range(200):
            try:
                self.get("/api/v1/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("serve did not start")

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            return r.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def cities(tmp):
    path = os.path.join(tmp, "cities.jsonl")
    with open(path, "w") as f:
        for i in range(300_000):
            f.write(json.dumps({
                "event_id": f"c-{i}", "city": f"City {i:06d}", "event_type": "traffic",
                "severity": "low", "timestamp": START, "description": "d"}) + "\n")
    data = os.path.join(tmp, "cities")
    rss, secs = peak_rss_mib(["process", "--input", path, "--data-dir", data])
    print(f"cities: 300 000 cities through process: peak RSS {rss:.1f} MiB, {secs:.1f} s")
    serve = Serve(data)
    first = serve.get("/api/v1/cities")
    total, cursor, pages = 0, None, 0
    while True:
        page = json.loads(serve.get("/api/v1/cities?limit=1000" + (f"&cursor={cursor}" if cursor else "")))
        total += page["count"]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    serve.stop()
    print(f"cities: /api/v1/cities answers {len(first)} bytes (100 cities); all {total} in {pages} pages of 1000")


def percentiles(samples):
    samples = sorted(samples)
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)], samples[-1]


def dead_letters(tmp):
    path = os.path.join(tmp, "junk.jsonl")
    with open(path, "w") as f:
        for i in range(1_000_000):
            f.write(f"junk record {i}\n")
    data = os.path.join(tmp, "dead")
    rss, secs = peak_rss_mib(["process", "--input", path, "--data-dir", data])
    print(f"dead-letters: 1 000 000 junk lines through process: {secs:.1f} s, peak RSS {rss:.1f} MiB")
    serve = Serve(data)
    for path in ("/api/v1/dead-letters?limit=10", "/api/v1/late-events?limit=10"):
        samples = []
        for _ in range(500):
            t = time.perf_counter()
            serve.get(path)
            samples.append((time.perf_counter() - t) * 1000)
        p50, p99, worst = percentiles(samples)
        print(f"dead-letters: GET {path}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms")
    serve.stop()


def slow_clients(tmp):
    data = os.path.join(tmp, "slow")
    subprocess.run([BIN, "process", "--input", "/dev/null", "--data-dir", data, "--log", "warn"], check=True)
    serve = Serve(data)
    opened = time.time()
    held, refused = [], []
    lock = threading.Lock()

    def slow():
        s = socket.create_connection(("127.0.0.1", serve.port), timeout=60)
        s.sendall(b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n")
        try:
            answer = s.recv(256)
        except OSError:
            answer = b""
        with lock:
            (refused if answer.startswith(b"HTTP/1.1 503") else held).append(time.time() - opened)
        s.close()

    threads = [threading.Thread(target=slow) for _ in range(3000)]
    for t in threads:
        t.start()
    time.sleep(1)
    try:
        serve.get("/api/v1/stats")
        during = "200"
    except urllib.error.HTTPError as e:
        during = str(e.code)
    for t in threads:
        t.join()
    t = time.time()
    serve.get("/api/v1/stats")
    after = time.time() - t
    serve.stop()
    print(f"slow-clients: 3000 half-sent requests: {len(refused)} refused at once "
          f"(503, within {max(refused, default=0):.2f} s), {len(held)} held and dropped after "
          f"{min(held, default=0):.1f} to {max(held, default=0):.1f} s; a normal request meanwhile: "
          f"{during}, after: 200 in {after * 1000:.1f} ms")


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    steps = {"long-line": long_line, "no-newline": no_newline, "cities": cities,
             "dead-letters": dead_letters, "slow-clients": slow_clients}
    tmp = tempfile.mkdtemp(prefix="citystream-reliability-")
    try:
        for name, step in steps.items():
            if which in (name, "all"):
                step(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
