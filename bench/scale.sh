#!/usr/bin/env bash
# Scale: N containers (created, not started, with kubelet's labels and
# annotations) in one pod, on gantryd and on containerd; ListContainers
# latency over them (whole call; call without the client's decoding; the
# decoding alone), daemon memory and fds per container, and how long
# removing the pod takes.
#
#   sudo bash bench/scale.sh [N]      (default 1000)
#   SCALE_ARGS=--bare ...             containers without labels/annotations
n=${1:-1000}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_registry
prepare_pod_images
for rt in ${RUNTIMES:-gantry containerd}; do
    echo "$rt: $n containers" >&2
    dir="$work/$rt"
    if [ "$rt" = gantry ]; then start_gantry "$dir"; else start_containerd "$dir" "$pause"; fi
    "$bin/cri-bench" --endpoint "$sock" pull "$busybox" "$pause" >/dev/null
    "$bin/cri-bench" --endpoint "$sock" --label "$rt" scale --image "$busybox" --containers "$n" \
        --log-dir "$work/logs-$rt" --daemon-pid "$daemon_pid" ${SCALE_ARGS:-}
    stop_daemon "$dir"
done
