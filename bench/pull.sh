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
rounds=${1:-5}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_registry

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

run() { # RUNTIME ROUND -> JSON lines
    local dir="$work/$1-$2"
    "start_$1" "$dir"
    "$bin/cri-bench" --endpoint "$sock" --label "$1" pull "$big" "$plus"
    stop_daemon "$dir"
}

results="$work/results.jsonl"
for r in $(seq "$rounds"); do
    echo "round $r/$rounds" >&2
    # Alternate who goes first, so neither always gets the warmer page cache.
    if [ $((r % 2)) -eq 1 ]; then order="gantry containerd"; else order="containerd gantry"; fi
    for rt in $order; do run "$rt" "$r" >>"$results"; done
done

python3 - "$results" "$big" "$plus" "$rounds" <<'PY'
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
PY
