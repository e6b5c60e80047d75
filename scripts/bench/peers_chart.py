#!/usr/bin/env python3
"""Draw scripts/bench/peers.sh's peers.csv as a horizontal bar chart of events/s per system.

usage: peers_chart.py PEERS.csv DATE COMMIT NPROC

Writes peers.svg and peers.png beside the CSV. Linear axis on purpose: the gap is the point.
"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display on a bench machine
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

LABELS = {
    ("citystream", "null"): "CityStream (null store)",
    ("citystream", "sqlite"): "CityStream (SQLite, everything persisted)",
    ("spark", "noop"): "Spark 3.4.1 Structured Streaming (no-op sinks)",
    ("flink", "blackhole"): "Flink 2.3 SQL (blackhole sinks)",
}


def spaced(n):
    return f"{n:,}".replace(",", " ")


def main():
    path, date, commit, nproc = sys.argv[1:5]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    labels = [LABELS.get((r["system"], r["store"]), f'{r["system"]} ({r["store"]})') for r in rows]
    eps = [int(r["events_per_s"]) for r in rows]
    colors = ["C0" if r["system"] == "citystream" else "C7" for r in rows]

    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.8 * len(rows)))
    bars = ax.barh(labels, eps, color=colors)
    ax.invert_yaxis()  # first CSV row on top
    for bar, r in zip(bars, rows):
        text = f'{spaced(int(r["events_per_s"]))} events/s · {float(r["ratio_to_best_peer"]):.1f}× best peer'
        # Inside the long bars, after the short ones: the text never runs off the axes.
        inside = bar.get_width() > max(eps) / 2
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {text}  ", va="center",
                ha="right" if inside else "left", color="white" if inside else "black")
    ax.set_xlim(0, max(eps) * 1.02)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: spaced(int(x))))
    ax.set_xlabel("events per second (higher is better)")
    events = max(int(r["events"]) for r in rows)
    ax.set_title(f"Same {spaced(events)} events, same {nproc}-core machine")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.text(0.99, 0.01, f"{date} · commit {commit} · scripts/bench/peers.sh",
             ha="right", va="bottom", fontsize=8, color="0.4")
    fig.tight_layout(rect=(0, 0.04, 1, 1))

    out = os.path.dirname(os.path.abspath(path))
    for ext in ("svg", "png"):
        fig.savefig(os.path.join(out, f"peers.{ext}"), dpi=150)
    print(f"peers chart: {out}/peers.svg, {out}/peers.png")


if __name__ == "__main__":
    main()
