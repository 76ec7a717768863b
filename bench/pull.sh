#!/usr/bin/env bash
# Cold-pull benchmark: gantryd vs containerd (Debian's package), same client
# (cri-bench over CRI), same local registry, same machine, same run.
#
#   sudo bash bench/pull.sh [ROUNDS]      (default 5)
#
# Images: big = one 200 MiB incompressible layer; big-plus = that layer plus a
# 1 MiB layer of its own. Each round starts both daemons on empty roots and
# pulls big, then big-plus (which should only cost its new 1 MiB).
# Prints a markdown table of medians and gantry/containerd ratios.
set -euo pipefail

rounds=${1:-5}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

need=(containerd docker-registry skopeo umoci python3 curl protobuf-compiler)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release -q -p gantryd -p gantry-bench
bin="$repo/target/release"

work="$(mktemp -d /tmp/gantry-bench.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # containerd's overlay mounts live under its root; undo any it left.
    { grep -o "$work/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
registry="127.0.0.1:$port"
mkdir -p "$work/registry"
cat >"$work/registry.yml" <<EOF
version: 0.1
log: { level: warn, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $work/registry } }
http: { addr: $registry }
EOF
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
until curl -s -o /dev/null "http://$registry/v2/"; do sleep 0.1; done

echo "building the 200 MiB image..." >&2
layout="$work/oci"
umoci init --layout "$layout"
umoci new --image "$layout:big"
umoci unpack --image "$layout:big" "$work/bundle" >/dev/null
head -c $((200 << 20)) /dev/urandom >"$work/bundle/rootfs/payload"
umoci repack --image "$layout:big" "$work/bundle" >/dev/null
umoci tag --image "$layout:big" big-plus
umoci unpack --image "$layout:big-plus" "$work/bundle2" >/dev/null
head -c $((1 << 20)) /dev/urandom >"$work/bundle2/rootfs/extra"
umoci repack --image "$layout:big-plus" "$work/bundle2" >/dev/null
rm -rf "$work/bundle" "$work/bundle2"
skopeo copy -q --dest-tls-verify=false "oci:$layout:big" "docker://$registry/bench/big:latest"
skopeo copy -q --dest-tls-verify=false "oci:$layout:big-plus" "docker://$registry/bench/big-plus:latest"
rm -rf "$layout"
big="$registry/bench/big:latest"
plus="$registry/bench/big-plus:latest"

wait_socket() {
    for _ in $(seq 300); do
        [ -S "$1" ] && "$bin/cri-bench" --endpoint "$1" rmi "$registry/none:x" 2>/dev/null && return
        sleep 0.1
    done
    echo "no CRI server on $1" >&2
    return 1
}

run_gantry() { # round -> JSON lines
    local dir="$work/gantry-$1"
    mkdir -p "$dir"
    "$bin/gantryd" --root "$dir/root" --state "$dir/state" --listen "$dir/sock" --log-level warn 2>"$dir/log" &
    local pid=$!
    wait_socket "$dir/sock"
    "$bin/cri-bench" --endpoint "$dir/sock" --label gantry pull "$big" "$plus"
    kill "$pid"
    wait "$pid" || true
    rm -rf "$dir"
}

run_containerd() {
    local dir="$work/containerd-$1"
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/sock"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."$registry"]
  endpoint = ["http://$registry"]
EOF
    containerd --config "$dir/config.toml" --log-level warn 2>"$dir/log" &
    local pid=$!
    wait_socket "$dir/sock"
    "$bin/cri-bench" --endpoint "$dir/sock" --label containerd pull "$big" "$plus"
    kill "$pid"
    wait "$pid" || true
    { grep -o "$dir/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$dir"
}

results="$work/results.jsonl"
for r in $(seq "$rounds"); do
    echo "round $r/$rounds" >&2
    # Alternate who goes first, so neither always gets the warmer page cache.
    if [ $((r % 2)) -eq 1 ]; then
        run_gantry "$r" >>"$results"
        run_containerd "$r" >>"$results"
    else
        run_containerd "$r" >>"$results"
        run_gantry "$r" >>"$results"
    fi
done

python3 - "$results" "$big" "$plus" "$rounds" <<'EOF'
import json, statistics, sys
path, big, plus, rounds = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
def med(rt, img):
    return statistics.median(r["ms"] for r in rows if r["runtime"] == rt and r["image"] == img)
print(f"| pull ({rounds} rounds, median ms) | gantry | containerd | gantry / containerd |")
print("|---|---|---|---|")
for label, img in (("200 MiB single layer, cold", big), ("+1 MiB image sharing that layer", plus)):
    g, c = med("gantry", img), med("containerd", img)
    print(f"| {label} | {g:.0f} | {c:.0f} | {g / c:.2f} |")
EOF
