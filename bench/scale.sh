#!/usr/bin/env bash
# Scale: N containers (created, not started, with kubelet's labels and
# annotations) in one pod, on gantryd, containerd 2.x (bench/lib.sh
# ensure_containerd2, ensure_runc_new) and Debian's containerd 1.6; ListContainers
# latency over them (whole call; call without the client's decoding; the
# decoding alone), daemon memory and fds per container, and how long
# removing the pod takes.
#
#   sudo GANTRY_BENCH_CACHE=DIR bash bench/scale.sh [N]      (default 1000)
#   RUNTIMES="gantry containerd" ...  a subset
#   SCALE_ARGS=--bare ...             containers without labels/annotations
n=${1:-1000}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
runtimes=${RUNTIMES:-gantry containerd2 containerd}
case " $runtimes " in *" containerd2 "*) ensure_containerd2 && ensure_runc_new ;; esac
start_registry
prepare_pod_images
for rt in $runtimes; do
    echo "$rt: $n containers" >&2
    dir="$work/$rt"
    case $rt in
    gantry) start_gantry "$dir" ;;
    containerd2) start_containerd2 "$dir" "$pause" ;;
    *) start_containerd "$dir" "$pause" ;;
    esac
    "$bin/cri-bench" --endpoint "$sock" pull "$busybox" "$pause" >/dev/null
    "$bin/cri-bench" --endpoint "$sock" --label "$rt" scale --image "$busybox" --containers "$n" \
        --log-dir "$work/logs-$rt" --daemon-pid "$daemon_pid" ${SCALE_ARGS:-}
    stop_daemon "$dir"
done
