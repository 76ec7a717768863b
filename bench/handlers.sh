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
pod_bench_setup

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
        containerd2-runc) start_containerd2 "$dir" "$pause" ;;
        containerd16-runc) start_containerd "$dir" "$pause" ;;
        esac
        "$bin/cri-bench" --endpoint "$sock" pull "$busybox" "$pause" >/dev/null
        "$bin/cri-bench" --endpoint "$sock" --label "$rt" --runtime-handler "$handler" lifecycle --image "$busybox" \
            --rounds "$rounds" --log-dir "$work/logs-$rt-$pass" >>"$results"
        stop_daemon "$dir"
    done
done

python3 "$(dirname "${BASH_SOURCE[0]}")/lifecycle-table.py" "$results" \
    "$("$runc_new" --version | head -1); $passes passes of $rounds rounds per runtime" \
    "$(IFS=,; echo "${runtimes[*]}")" gantry/containerd2-runc gantry-runc/containerd2-runc
