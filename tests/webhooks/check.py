"""Waits until every alert of a `citystream up` is delivered, then checks that the receiver
(receiver.py) verified exactly the delivered ids and refused nothing.

    check.py API_PORT COUNT_FILE
"""

import json
import sys
import time
import urllib.request

port, counts = sys.argv[1], sys.argv[2]


def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)


def delivered():
    ids, query = [], "/api/v1/deliveries?status=delivered&limit=1000"
    path = query
    while True:
        page = get(path)
        ids += [d["id"] for d in page["deliveries"]]
        if not page["next_cursor"]:
            return ids
        path = f"{query}&cursor={page['next_cursor']}"


deadline = time.time() + 90
while True:
    stats = get("/api/v1/stats")
    alerts = stats["high_severity_alerts"] + stats["critical_alerts"]
    sent = delivered()
    if alerts > 0 and len(sent) == alerts:
        break
    if time.time() > deadline:
        sys.exit(f"only {len(sent)} of {alerts} alerts delivered")
    time.sleep(0.5)
with open(counts) as f:
    got = json.load(f)
assert got["refused"] == 0, f"{got['refused']} requests did not verify"
assert sorted(got["ids"]) == sorted(sent), "the receiver verified exactly the delivered ids"
print(f"{len(sent)} alerts delivered, every signature verified by standardwebhooks")
