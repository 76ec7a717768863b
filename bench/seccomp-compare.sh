#!/usr/bin/env bash
# One-off comparison of the default seccomp profiles (docs/security.md):
# runs tests/fixtures/seccomp-probe.c, built static, in a RuntimeDefault
# container under Debian's containerd (with runc) and under gantryd, both
# on fresh roots and sockets beside each other (bench/lib.sh), and prints
# a Markdown table: call, containerd, Gantry. A second pair of columns adds
# CAP_SYS_ADMIN. Host-network pods (containerd needs CNI otherwise).
#
#   sudo CRICTL=/path/to/crictl bash bench/seccomp-compare.sh
#
# CRICTL is a crictl binary (kubernetes-sigs/cri-tools, not shipped here).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
crictl=${CRICTL:-crictl}
command -v "$crictl" >/dev/null || { echo "set CRICTL to a crictl binary" >&2; exit 1; }
command -v gcc >/dev/null || { echo "gcc and libc6-dev are needed" >&2; exit 1; }

start_registry
prepare_pod_images
mkdir -p "$work/probe"
gcc -static -O2 -o "$work/probe/seccomp-probe" "$bench_repo/tests/fixtures/seccomp-probe.c"

# probe RUNTIME CASE CAPS_JSON: runs the probe once; its output in $work/out/RUNTIME-CASE.
probe() {
    local rt=$1 case=$2 caps=$3 name="probe-$1-$2" dir="$work/cfg/$1-$2"
    local cri=("$crictl" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --timeout 60s)
    mkdir -p "$dir" "$work/logs/$name" "$work/out"
    cat >"$dir/pod.json" <<JSON
{"metadata": {"name": "$name", "namespace": "default", "uid": "$name"},
 "log_directory": "$work/logs/$name",
 "linux": {"security_context": {"namespace_options": {"network": 2}}}}
JSON
    cat >"$dir/ctr.json" <<JSON
{"metadata": {"name": "probe"}, "image": {"image": "$busybox"},
 "command": ["/probe/seccomp-probe"], "log_path": "probe.log",
 "mounts": [{"container_path": "/probe", "host_path": "$work/probe", "readonly": true}],
 "linux": {"security_context": {"seccomp": {"profile_type": 0}, "capabilities": {"add_capabilities": $caps}}}}
JSON
    "${cri[@]}" pull "$busybox" >/dev/null
    local pod ctr
    pod=$("${cri[@]}" runp "$dir/pod.json")
    ctr=$("${cri[@]}" create "$pod" "$dir/ctr.json" "$dir/pod.json")
    "${cri[@]}" start "$ctr" >/dev/null
    for _ in $(seq 300); do
        [ -n "$("${cri[@]}" ps -a -q --id "$ctr" --state exited)" ] && break
        sleep 0.1
    done
    # CRI log lines: TIME STREAM TAG TEXT.
    cut -d' ' -f4- "$work/logs/$name/probe.log" >"$work/out/$rt-$case"
    "${cri[@]}" stopp "$pod" >/dev/null
    "${cri[@]}" rmp "$pod" >/dev/null
}

start_containerd "$work/containerd" "$pause"
probe containerd default '[]'
probe containerd admin '["SYS_ADMIN"]'
stop_daemon "$work/containerd"

start_gantry "$work/gantry"
probe gantry default '[]'
probe gantry admin '["SYS_ADMIN"]'
stop_daemon "$work/gantry"

echo "containerd $(containerd --version | cut -d' ' -f3), $(runc --version | head -1); gantryd $(git -C "$bench_repo" rev-parse --short HEAD)"
echo
echo "| call | containerd | Gantry | containerd + CAP_SYS_ADMIN | Gantry + CAP_SYS_ADMIN |"
echo "|---|---|---|---|---|"
while read -r call _; do
    row="| \`$call\`"
    for f in containerd-default gantry-default containerd-admin gantry-admin; do
        row="$row | $(awk -v c="$call" '$1 == c { print $2 }' "$work/out/$f")"
    done
    echo "$row |"
done <"$work/out/gantry-default"
