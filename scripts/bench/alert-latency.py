#!/usr/bin/env python3
"""Alert latency: from an event's send time to the moment GET /api/v1/alerts shows it.

usage: alert-latency.py [--url http://127.0.0.1:8082] [--seconds 60] [--warmup 5]

Run it against `citystream up --rate R` (no --start-time, no --out-of-order, no --late): the
generator sends event n at wall time start + n/rate and stamps it with exactly that time, so
an alert's timestamp is its send time. The probe polls the alerts endpoint back to back over one
keep-alive connection and records, for every alert it has not seen before, now - timestamp.
A poll only sees an alert after it became visible, so each latency is an upper bound; the
error is at most one poll interval (printed). Standard library only.
"""
import argparse
import http.client
import json
import time
from datetime import datetime
from urllib.parse import urlparse


def parse_ms(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000.0


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8082")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=500)
    a = ap.parse_args()
    url = urlparse(a.url)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
    path = f"/api/v1/alerts?hours=1&limit={a.limit}"

    seen = set()
    latencies = []
    polls = 0
    full_pages = 0
    started = time.time()
    measure_from = started + a.warmup
    end = measure_from + a.seconds
    while True:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        now_ms = time.time() * 1000.0
        if resp.status != 200:
            raise SystemExit(f"GET {path}: HTTP {resp.status}: {body[:200]!r}")
        alerts = json.loads(body)["alerts"]
        new = [x for x in alerts if x["event_id"] not in seen]
        if polls > 0 and len(new) == len(alerts) and alerts:
            full_pages += 1  # the page may have missed alerts: raise --limit
        for x in new:
            seen.add(x["event_id"])
            if now_ms / 1000.0 >= measure_from and polls > 0:
                latencies.append(now_ms - parse_ms(x["timestamp"]))
        polls += 1
        if now_ms / 1000.0 >= end:
            break

    elapsed = time.time() - started
    latencies.sort()
    print(
        "alert-latency alerts={} polls={} poll_interval_ms={:.2f} full_pages={} "
        "p50_ms={:.1f} p90_ms={:.1f} p99_ms={:.1f} max_ms={:.1f}".format(
            len(latencies),
            polls,
            elapsed * 1000.0 / max(polls, 1),
            full_pages,
            percentile(latencies, 50),
            percentile(latencies, 90),
            percentile(latencies, 99),
            latencies[-1] if latencies else float("nan"),
        )
    )


if __name__ == "__main__":
    main()
