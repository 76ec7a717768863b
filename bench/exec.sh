#!/usr/bin/env bash
# Exec benchmark: gantryd vs containerd + runc (Debian's packages), same
# client, same machine, same run.
#
#   sudo [CRICTL=/path/to/crictl] bash bench/exec.sh [ROUNDS]   (default 200)
#
# For each runtime: one running busybox container (host network); ROUNDS
# ExecSync calls of `true` (latency); ExecSync of a command writing 8 MB to
# stdout (output throughput); and, when CRICTL names a crictl binary (built
# from kubernetes-sigs/cri-tools, not shipped here), `crictl exec -i cat`
# of 64 MiB through the streaming server (exec throughput).
rounds=${1:-200}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_registry
prepare_pod_images

results="$work/results.jsonl"
head -c $((64 << 20)) /dev/urandom >"$work/payload"
for rt in gantry containerd; do
    echo "$rt: $rounds ExecSync calls" >&2
    dir="$work/$rt"
    if [ "$rt" = gantry ]; then start_gantry "$dir"; else start_containerd "$dir" "$pause"; fi
    "$bin/cri-bench" --endpoint "$sock" pull "$busybox" "$pause" >/dev/null
    hold_start "hold-$rt" "$work/ids-$rt" "$results" "$work/ids-$rt" \
        "$bin/cri-bench" --endpoint "$sock" --label "$rt" exec --image "$busybox" --rounds "$rounds" \
        --log-dir "$work/logs-$rt"
    ctr=$(awk '{print $2}' "$work/ids-$rt")
    if [ -n "${CRICTL:-}" ]; then
        for _ in 1 2 3; do
            start=$(date +%s.%N)
            "$CRICTL" --runtime-endpoint "unix://$sock" exec -i "$ctr" cat <"$work/payload" >"$work/out" 2>/dev/null
            end=$(date +%s.%N)
            got=$(stat -c %s "$work/out")
            python3 -c "import json,sys; print(json.dumps({'runtime': '$rt', 'op': 'crictl_exec_cat', 'bytes': $got, 's': $end - $start}))" >>"$results"
        done
    fi
    hold_release
    stop_daemon "$dir"
done

python3 - "$results" "$rounds" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pct(rt, q):
    v = sorted(r["ms"] for r in rows if r["runtime"] == rt and r["op"] == "exec_sync")
    return v[min(len(v) - 1, int(q * len(v)))]
def rate(rt, op):
    v = sorted(r["bytes"] / r["s"] / 1e6 for r in rows if r["runtime"] == rt and r["op"] == op)
    return v[len(v) // 2] if v else float("nan")
print(f"| {sys.argv[2]} ExecSync calls of `true` | gantry | containerd | ratio |")
print("|---|---|---|---|")
for q, label in ((.5, "p50 ms"), (.99, "p99 ms")):
    g, c = pct("gantry", q), pct("containerd", q)
    print(f"| {label} | {g:.1f} | {c:.1f} | {g / c:.2f} |")
for op, label in (("exec_sync_output", "ExecSync output, MB/s (median of 5)"),
                  ("crictl_exec_cat", "crictl exec -i cat of 64 MiB, MB/s (median of 3)")):
    g, c = rate("gantry", op), rate("containerd", op)
    print(f"| {label} | {g:.0f} | {c:.0f} | {g / c:.2f} |")
PY
