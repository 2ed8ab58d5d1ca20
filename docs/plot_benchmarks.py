#!/usr/bin/env python3
"""Draws docs/benchmarks.png from the JSON the delivery and isolation
benchmarks write (target/bench-results/{delivery,isolation}.json).

    cargo bench --bench delivery && cargo bench --bench isolation
    python3 -m pip install matplotlib   # once
    python3 docs/plot_benchmarks.py [RESULTS_DIR] [OUTPUT_PNG]

RESULTS_DIR defaults to $CARGO_TARGET_DIR/bench-results, else
target/bench-results; OUTPUT_PNG to docs/benchmarks.png. A missing file
leaves its panels out. An isolation-baseline.json beside them (an
isolation.json from a build before a change, renamed) adds a dotted line.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ["hookpool", "hookpool-baseline", "tokio-mpsc", "tokio-semaphore", "thread-per-job", "wrk"]
COLORS = {
    "hookpool": "#1f77b4",
    "hookpool-baseline": "#aec7e8",
    "tokio-mpsc": "#ff7f0e",
    "tokio-semaphore": "#ffbb78",
    "thread-per-job": "#7f7f7f",
    "wrk": "#2ca02c",
}
LABELS = {"hookpool-baseline": "hookpool before fixes", "wrk": "wrk (ceiling)"}


def results_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "bench-results")


def load(name):
    path = os.path.join(results_dir(), name)
    if not os.path.exists(path):
        print(f"{path}: missing, its panels are left out", file=sys.stderr)
        return None
    with open(path) as f:
        return json.load(f)


def grouped_bars(ax, summary, key, ylabel, title, skip=()):
    levels = sorted(summary, key=int)
    variants = [v for v in ORDER if v not in skip and any(v in summary[w]["variants"] for w in levels)]
    width = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        xs, ys = [], []
        for j, w in enumerate(levels):
            row = summary[w]["variants"].get(v)
            if row and row.get(key) is not None:
                xs.append(j + (i - (len(variants) - 1) / 2) * width)
                ys.append(row[key])
        bars = ax.bar(xs, ys, width, label=LABELS.get(v, v), color=COLORS.get(v))
        if key == "per_sec":
            for b, y in zip(bars, ys):
                ax.annotate(f"{y / 1000:.1f}k", (b.get_x() + b.get_width() / 2, y),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels([f"concurrency {w}" for w in levels])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return levels


def main():
    delivery = load("delivery.json")
    isolation = load("isolation.json")
    # Optional: an isolation.json from the library before a change, renamed.
    path = os.path.join(results_dir(), "isolation-baseline.json")
    baseline = json.load(open(path)) if os.path.exists(path) else None
    panels = (2 if delivery else 0) + (1 if isolation else 0)
    if panels == 0:
        sys.exit("no results to plot: run the benchmarks first")
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4), squeeze=False)
    axes = list(axes[0])

    if delivery:
        summary = delivery["summary"]
        ax = axes.pop(0)
        levels = grouped_bars(ax, summary, "per_sec", "webhooks/s (median)",
                              f"Delivery: {delivery['n']:,} webhooks to {delivery['receiver']['kind']} on 127.0.0.1")
        for j, w in enumerate(levels):
            wrk = summary[w]["variants"].get("wrk", {}).get("per_sec")
            if wrk:
                ax.hlines(0.7 * wrk, j - 0.45, j + 0.45, colors="#2ca02c", linestyles="dashed",
                          label="target: 0.7 x wrk" if j == 0 else None)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.4)
        ax.legend(fontsize=7, loc="upper left", ncol=2)

        ax = axes.pop(0)
        grouped_bars(ax, summary, "cpu_us_per_webhook", "CPU time per webhook (us, client process)",
                     "CPU per webhook (lower is better)", skip=("wrk",))
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
        ax.legend(fontsize=7, loc="upper left", ncol=2)

    if isolation:
        ax = axes.pop(0)
        runs = ([("before the fixes", baseline["summary"])] if baseline else []) + [("hookpool", isolation["summary"])]
        names = [name for name, _ in runs]
        ratios = [s["ratio"] for _, s in runs]
        colors = ["#aec7e8", "#1f77b4"][-len(runs):]
        bars = ax.bar(names, ratios, color=colors, width=0.5)
        for b, (_, s) in zip(bars, runs):
            ax.annotate(f"{s['ratio']:.2f}\nlongest gap {s['mix_max_gap_ms']:.0f} ms",
                        (b.get_x() + b.get_width() / 2, s["ratio"]), ha="center", va="bottom", fontsize=8)
        ax.axhline(0.9, color="#2ca02c", linestyle="dashed", label="target: 0.9")
        ax.set_ylim(0, 1.25)
        ax.set_ylabel("healthy webhooks/s: mix / healthy only (median)")
        ax.set_title(f"Isolation: a hanging endpoint beside a healthy one\n({isolation['workers']} workers, "
                     f"request timeout {isolation['timeout_ms']} ms)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(axis="y", alpha=0.3)

    machine = (delivery or isolation)["machine"]
    fig.suptitle(f"hookpool benchmarks on {machine['cores']} cores ({machine['cpu']}), {machine['rustc']}", fontsize=9)
    fig.tight_layout()
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docs", "benchmarks.png")
    fig.savefig(out, dpi=110)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
