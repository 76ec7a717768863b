#!/usr/bin/env bash
# Pod lifecycle on a pure cgroup v2 node (issue 11): boots the cgroup v2
# test node (tests/cgroup2: Debian's kernel under QEMU with TCG, every
# cgroup2 controller, a service-like leaf cgroup) and runs there, on tmpfs
# roots, Gantry with its built-in shim and with the RuntimeClass handlers
# `runc` (the newest runc) and `crun` (the newest crun, Debian unstable's),
# beside containerd 2.x driving the same runc and the same crun; same
# client (cri-bench lifecycle), same node, same run.
#
#   sudo GANTRY_BENCH_CACHE=DIR bash bench/cgroup2-node.sh [ROUNDS] [PASSES]   (default 20, 3)
#
# DIR holds containerd 2.x and the newest runc, as for bench/handlers.sh,
# Unstable's crun (tests/node/host.sh `node_crun_new`: bookworm's crun 1.8
# refuses the runtime-spec version containerd 2.x writes) runs with
# unstable's glibc through its loader: /usr/bin/crun in the node is that
# command, the same for both runtimes.
# Emulation makes every figure several times slower than on the host: read
# the ratios, which are what this run is for. The images come from a
# registry the node runs on 127.0.0.1, its storage filled on the host.
rounds=${1:-20}
passes=${2:-3}
timeout_s=${GANTRY_BENCH_NODE_TIMEOUT:-2400}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
node_host_packages
node_kernel
pod_bench_setup

echo "== packing the node's initramfs" >&2
ir=$work/initramfs
b=$ir/opt/bench
mkdir -p "$ir"/{bin,lib/modules,etc,usr/bin} "$b"
cp -L /bin/busybox "$ir/bin/busybox"
ln -s busybox "$ir/bin/sh"
cp "$here/../tests/cgroup2/init.sh" "$ir/init"
cp "$here/cgroup2-node-job.sh" "$ir/opt/node-job"
chmod 0755 "$ir/init" "$ir/opt/node-job"
node_modules "$ir/lib/modules" overlay
for f in "$bin"/{gantryd,gantry-shim,cri-bench} "$(dirname "$containerd2")"/{containerd,containerd-shim-runc-v2} \
    /usr/bin/docker-registry; do
    strip -o "$b/$(basename "$f")" "$f"
done
cp "$runc_new" "$b/runc"
node_crun_new "$ir"
node_copy_libs "$ir" "$b"/{gantryd,gantry-shim,cri-bench,containerd,containerd-shim-runc-v2,docker-registry,runc}
cp -a "$work/registry" "$b/registry"
registry_config /opt/bench/registry "$registry" >"$b/registry.yml"
{
    echo "ROUNDS=$rounds PASSES=$passes"
    echo "REGISTRY=$registry BUSYBOX=$busybox PAUSE=$pause"
    echo "RUNTIMES='gantry gantry-runc containerd2-runc gantry-crun containerd2-crun'"
} >"$b/env"
(cd "$ir" && find . | busybox cpio -o -H newc 2>/dev/null) >"$work/initrd"

echo "== booting $kpkg under QEMU (TCG), timeout ${timeout_s}s" >&2
console=$work/console.log
node_boot "$console" "$timeout_s" -m 4096 -initrd "$work/initrd" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init"
cp "$console" "$bin/../cgroup2-node-bench-console.log"
tr -d '\r' <"$console" | sed -n 's/^@@row //p' >"$work/results.jsonl"
if [ -z "$node_finished" ] || ! [ -s "$work/results.jsonl" ]; then
    echo "the node did not finish within ${timeout_s}s or reported nothing; its console ends with:" >&2
    tr -d '\r' <"$console" | tail -40 >&2
    exit 1
fi
echo "== ${node_seconds}s in the node" >&2
python3 "$here/lifecycle-table.py" "$work/results.jsonl" \
    "pure cgroup v2 node ($kver, QEMU TCG, 2 vCPUs); $("$runc_new" --version | head -1); crun $crun_new_version; $passes passes of $rounds rounds per runtime" \
    gantry,gantry-runc,containerd2-runc,gantry-crun,containerd2-crun \
    gantry/containerd2-runc gantry-runc/containerd2-runc gantry-crun/containerd2-crun
