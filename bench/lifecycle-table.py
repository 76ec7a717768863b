#!/usr/bin/env python3
"""Markdown table of `cri-bench lifecycle` results (JSON lines), shared by
bench/handlers.sh and bench/cgroup2-node.sh.

    lifecycle-table.py RESULTS HEADER RUNTIME,... [A/B ...]

One column per runtime (p50 and p99 in ms), then one ratio column per A/B
pair (A's p50 over B's).
"""
import json
import sys

results, header, runtimes = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
pairs = [p.split("/") for p in sys.argv[4:]]
rows = [json.loads(line) for line in open(results) if line.strip()]


def pct(rt, op, q):
    v = sorted(r["ms"] for r in rows if r["runtime"] == rt and r["op"] == op)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def to_running(rt, q=0.5):
    return pct(rt, "run_pod_sandbox", q) + pct(rt, "create_start", q)


print(header)
print()
print("| p50 ms (p99) | " + " | ".join(runtimes) + " | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |")
print("|---|" + "---|" * (len(runtimes) + len(pairs)))
for op, label in (
    ("run_pod_sandbox", "RunPodSandbox"),
    ("create_start", "CreateContainer+StartContainer"),
    ("stop_remove", "Stop+Remove container and pod"),
):
    cells = [f"{pct(rt, op, .5):.1f} ({pct(rt, op, .99):.1f})" for rt in runtimes]
    ratios = [f"{pct(a, op, .5) / pct(b, op, .5):.2f}" for a, b in pairs]
    print(f"| {label} | " + " | ".join(cells + ratios) + " |")
cells = [f"{to_running(rt):.1f}" for rt in runtimes]
ratios = [f"{to_running(a) / to_running(b):.2f}" for a, b in pairs]
print("| pod + container to running (sum of p50s) | " + " | ".join(cells + ratios) + " |")
