#!/usr/bin/env python3
"""Alert latency: from an event's send time to the moment GET /api/v1/alerts shows it.

usage: alert-latency.py [--url http://127.0.0.1:8082] [--seconds 60] [--warmup 5]

Run it against `citystream up --rate R` (no --start-time, no --out-of-order, no --late): the
generator sends event n at wall time start + n/rate and stamps it with exactly that time, so
an alert's timestamp is its send time. The probe polls the alerts endpoint back to back over one
keep-alive connection and records, for every alert it has not seen before, now - timestamp.
A poll only sees an alert after it became visible, so each latency is an upper bound; the
error is at most one poll interval (printed). When a page is all new, the probe reads a page of
1000 at once, so a burst is measured rather than skipped. Standard library only.
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
    ap.add_argument("--limit", type=int, default=100)
    a = ap.parse_args()
    url = urlparse(a.url)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)

    seen = set()
    latencies = []
    polls = 0
    full_pages = 0
    started = time.time()
    measure_from = started + a.warmup
    end = measure_from + a.seconds
    def fetch(limit):
        conn.request("GET", f"/api/v1/alerts?hours=1&limit={limit}")
        resp = conn.getresponse()
        body = resp.read()
        now_ms = time.time() * 1000.0
        if resp.status != 200:
            raise SystemExit(f"GET alerts: HTTP {resp.status}: {body[:200]!r}")
        return now_ms, json.loads(body)["alerts"]

    while True:
        now_ms, alerts = fetch(a.limit)
        new = [x for x in alerts if x["event_id"] not in seen]
        if polls > 0 and alerts and len(new) == len(alerts):
            # More may have appeared than one page holds: read the largest page at once.
            full_pages += 1
            now_ms, alerts = fetch(1000)
            new = [x for x in alerts if x["event_id"] not in seen]
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
