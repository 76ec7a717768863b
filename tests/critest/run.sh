#!/usr/bin/env bash
# Runs the CRI validation suite against gantryd, offline:
#
#   sudo CRITEST=/path/to/critest bash tests/critest/run.sh [critest flags…]
#
# critest (kubernetes-sigs/cri-tools v1.32 or v1.36, built from source; never
# committed here) is not packaged by Debian. This script starts a registry on
# 127.0.0.1:5000, fills it with ../shared/critest-images/make-images.sh,
# fences the critest bridge off (forwarded traffic between it and any other
# interface is dropped), starts gantryd with tests/critest/config.toml on a
# fresh root, runs critest (benchmarks skipped), and undoes all of it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
source "$repo/tests/node/host.sh" # registry_config
critest=${CRITEST:?set CRITEST to a critest binary}
kit=${CRITEST_IMAGES:-$repo/../shared/critest-images}
work="$(mktemp -d /tmp/gantry-critest.XXXXXX)"
pids=()
bridge=gcrit0
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Shims outlive gantryd by design: end those of this run (their command
    # lines name its state dir) and its containers (their root is below it).
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "$work/state" ||
            readlink "$p/root" 2>/dev/null | grep -q "^$work/"; then
            kill -9 "${p#/proc/}" 2>/dev/null || true
        fi
    done
    iptables -D FORWARD -i "$bridge" ! -o "$bridge" -j DROP 2>/dev/null || true
    iptables -D FORWARD ! -i "$bridge" -o "$bridge" -j DROP 2>/dev/null || true
    ip link del "$bridge" 2>/dev/null || true
    rm -rf /run/gantry-critest
    { grep -o "$work/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

cargo build --release -q -p gantryd -p gantry-shim
mkdir -p "$work/registry"
registry_config "$work/registry" 127.0.0.1:5000 >"$work/registry.yml"
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
until curl -s -o /dev/null http://127.0.0.1:5000/v2/; do sleep 0.1; done
"$kit/make-images.sh" --registry 127.0.0.1:5000 --workdir "$work/images" >"$work/images.log" 2>&1

iptables -I FORWARD -i "$bridge" ! -o "$bridge" -j DROP
iptables -I FORWARD ! -i "$bridge" -o "$bridge" -j DROP
"${CARGO_TARGET_DIR:-$repo/target}/release/gantryd" --config tests/critest/config.toml --root "$work/root" --state "$work/state" \
    --listen "$work/gantry.sock" 2>"$work/gantryd.log" &
pids+=($!)
until [ -S "$work/gantry.sock" ]; do sleep 0.1; done
"$critest" --runtime-endpoint "unix://$work/gantry.sock" --image-endpoint "unix://$work/gantry.sock" \
    --ginkgo.skip='benchmark' "$@" 2>&1 | tee "$work/critest.log" || true
cp "$work/critest.log" "${CRITEST_LOG:-/tmp/critest.log}"
