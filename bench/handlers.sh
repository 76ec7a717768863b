#!/usr/bin/env bash
# Pod lifecycle per OCI runtime (issue 11): Gantry with its built-in shim and
# with the RuntimeClass handler `runc`, beside containerd 2.x driving the
# same runc, and Debian's containerd 1.6 with Debian's runc; same client
# (cri-bench lifecycle), same machine, same run.
#
#   sudo GANTRY_BENCH_CACHE=DIR bash bench/handlers.sh [ROUNDS] [PASSES]   (default 30, 3)
#
# DIR holds containerd 2.x and the newest runc (bench/lib.sh
# `ensure_containerd2`, `ensure_runc_new`; docs/benchmarks.md says how to get
# them). Each pass runs every runtime once, on a fresh root, in a rotating
# order, ROUNDS lifecycles each (RunPodSandbox; CreateContainer+
# StartContainer of busybox `sleep`; Stop/Remove of both), host network.
# Gantry's `runc` handler is the same runc binary containerd 2.x runs.
rounds=${1:-30}
passes=${2:-3}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_containerd2
ensure_runc_new
start_registry
prepare_pod_images

# containerd 2.x with pods: start_containerd2's config plus the pause
# stand-in as its sandbox image.
start_containerd2_pods() {
    start_containerd2 "$1"
    kill "$daemon_pid"
    wait "$daemon_pid" || true
    {
        echo '[plugins."io.containerd.cri.v1.images".pinned_images]'
        echo "  sandbox = \"$pause\""
    } >>"$1/config.toml"
    PATH="$(dirname "$containerd2"):$PATH" "$containerd2" --config "$1/config.toml" --log-level "${GANTRY_BENCH_LOG:-warn}" 2>"$1/log" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    sock="$1/sock"
    wait_socket "$sock"
}

results="$work/results.jsonl"
runtimes=(gantry gantry-runc containerd2-runc containerd16-runc)
for pass in $(seq "$passes"); do
    n=${#runtimes[@]}
    for i in $(seq 0 $((n - 1))); do
        rt=${runtimes[$(((i + pass) % n))]}
        echo "pass $pass: $rt, $rounds lifecycles" >&2
        dir="$work/$rt-$pass"
        handler=
        case $rt in
        gantry) start_gantry "$dir" ;;
        gantry-runc)
            mkdir -p "$dir"
            printf '[runtimes.runc]\nbinary = "%s"\nroot = "%s"\n' "$runc_new" "$run_state/runc-root-$pass" >"$dir.toml"
            GANTRY_BENCH_CONFIG="$dir.toml" start_gantry "$dir"
            handler=runc
            ;;
        containerd2-runc) start_containerd2_pods "$dir" ;;
        containerd16-runc) start_containerd "$dir" "$pause" ;;
        esac
        "$bin/cri-bench" --endpoint "$sock" pull "$busybox" "$pause" >/dev/null
        "$bin/cri-bench" --endpoint "$sock" --label "$rt" --runtime-handler "$handler" lifecycle --image "$busybox" \
            --rounds "$rounds" --log-dir "$work/logs-$rt-$pass" >>"$results"
        stop_daemon "$dir"
    done
done

python3 - "$results" "$rounds" "$passes" "$("$runc_new" --version | head -1)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pct(rt, op, q):
    v = sorted(r["ms"] for r in rows if r["runtime"] == rt and r["op"] == op)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")
rts = ("gantry", "gantry-runc", "containerd2-runc", "containerd16-runc")
print(f"{sys.argv[4]}; {sys.argv[3]} passes of {sys.argv[2]} rounds per runtime")
print()
print("| p50 ms (p99) | " + " | ".join(rts) + " | gantry / containerd 2.x | gantry-runc / containerd 2.x |")
print("|---|" + "---|" * (len(rts) + 2))
for op, label in (("run_pod_sandbox", "RunPodSandbox"), ("create_start", "CreateContainer+StartContainer"),
                  ("stop_remove", "Stop+Remove container and pod")):
    cells = [f"{pct(rt, op, .5):.1f} ({pct(rt, op, .99):.1f})" for rt in rts]
    c2 = pct("containerd2-runc", op, .5)
    print(f"| {label} | " + " | ".join(cells) + f" | {pct('gantry', op, .5) / c2:.2f} | {pct('gantry-runc', op, .5) / c2:.2f} |")
def to_running(rt):
    return pct(rt, "run_pod_sandbox", .5) + pct(rt, "create_start", .5)
print(f"| pod + container to running (sum of p50s) | " + " | ".join(f"{to_running(rt):.1f}" for rt in rts)
      + f" | {to_running('gantry') / to_running('containerd2-runc'):.2f} | {to_running('gantry-runc') / to_running('containerd2-runc'):.2f} |")
PY
