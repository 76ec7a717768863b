#!/usr/bin/env bash
# Cold-pull benchmark: gantryd vs containerd 2.x (Debian unstable's, with the
# newest runc) vs containerd 1.6 (Debian stable's), same client (crictl),
# same local registry, same machine, same run.
#
#   sudo GANTRY_BENCH_CACHE=DIR [GANTRY_BENCH_RUNC_SRC=RUNC_CHECKOUT] \
#        [GANTRY_BENCH_CRICTL=PATH] bash bench/pull.sh [ROUNDS]   (default 3)
#
# Images, made here with umoci (never downloaded), gzip layers:
#   big      one 200 MiB layer of random bytes;   big-plus: big + a 1 MiB layer
#   ten      10 layers of 16 MiB random bytes;     ten-plus: ten + a 1 MiB layer
#   small    one layer of 30000 small files (64..4096 random bytes) in 300 folders
# Each round starts every runtime on an empty root and pulls big, big-plus,
# ten, ten-plus, small in that order (the -plus images share all but their
# last layer with the image before them); the runtimes take turns going
# first. A pull's time is the whole `crictl pull` call, as a client sees it.
# The same run times the single stages of the big layer (download with curl,
# gunzip, a durable write of the unpacked bytes) and of the small-file layer
# (tar -xzf, sync -f).
#
# The registry's storage is on tmpfs (it stands for a remote registry; the
# disk under test is the runtimes'), the runtimes' roots on disk. After a
# runtime's root is removed the run waits $GANTRY_BENCH_SETTLE seconds (35):
# for the dirty-expire interval after mass deletion, ext4 skips recently
# freed inodes one by one when allocating (recently_deleted()), which made
# the next 30000-file unpack several times slower in whichever runtime came
# next, a penalty unrelated to the runtime.
rounds=${1:-3}
settle=${GANTRY_BENCH_SETTLE:-35}
crictl=${GANTRY_BENCH_CRICTL:-/tmp/crictl-work/crictl}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_containerd2
ensure_runc_new
shm="$(mktemp -d /dev/shm/gantry-bench-pull.XXXXXX)"
trap 'bench_cleanup; rm -rf "$shm"' EXIT
registry_storage="$shm/registry"
start_registry

echo "building the images..." >&2
layout="$shm/oci"
umoci init --layout "$layout"
# add_layer TAG NEW_TAG SIZE_BYTES: NEW_TAG = TAG + one layer of random bytes.
add_layer() {
    umoci tag --image "$layout:$1" "$2"
    rm -rf "$shm/bundle"
    umoci unpack --image "$layout:$2" "$shm/bundle" >/dev/null
    head -c "$3" /dev/urandom >"$shm/bundle/rootfs/payload-$RANDOM$RANDOM"
    umoci repack --image "$layout:$2" "$shm/bundle" >/dev/null
    rm -rf "$shm/bundle"
}
umoci new --image "$layout:empty"
add_layer empty big $((200 << 20))
add_layer big big-plus $((1 << 20))
umoci tag --image "$layout:empty" ten
for _ in $(seq 10); do add_layer ten ten $((16 << 20)); done
add_layer ten ten-plus $((1 << 20))
umoci tag --image "$layout:empty" small
umoci unpack --image "$layout:small" "$shm/bundle" >/dev/null
python3 - "$shm/bundle/rootfs" <<'PY'
import os, random, sys
random.seed(17)
for d in range(300):
    path = os.path.join(sys.argv[1], f"d{d:03}")
    os.makedirs(path)
    for f in range(100):
        with open(os.path.join(path, f"f{f:03}"), "wb") as fh:
            fh.write(os.urandom(random.randint(64, 4096)))
PY
umoci repack --image "$layout:small" "$shm/bundle" >/dev/null
rm -rf "$shm/bundle"
images=(big big-plus ten ten-plus small)
for i in "${images[@]}"; do
    skopeo copy -q --dest-tls-verify=false "oci:$layout:$i" "docker://$registry/bench/$i:latest"
done
rm -rf "$layout"

layer_digest() { # IMAGE INDEX
    curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$registry/v2/bench/$1/manifests/latest" | jq -r ".layers[$2].digest"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
settle() { sync; sleep "$settle"; }

results="$work/results.jsonl"
stages() { # ROUND: single stages, one JSON line each
    local d s e url
    mkdir -p "$shm/stage" "$work/stage"
    url="http://$registry/v2/bench/big/blobs/$(layer_digest big 0)"
    s=$(now_ms); curl -s -o /dev/null "$url"; e=$(now_ms)
    echo "{\"stage\":\"big: download (curl)\",\"ms\":$((e - s))}"
    curl -s -o "$shm/stage/big.gz" "$url"
    s=$(now_ms); gzip -dc "$shm/stage/big.gz" >/dev/null; e=$(now_ms)
    echo "{\"stage\":\"big: gunzip\",\"ms\":$((e - s))}"
    gzip -dc "$shm/stage/big.gz" >"$shm/stage/big.tar"
    s=$(now_ms); dd if="$shm/stage/big.tar" of="$work/stage/big.tar" bs=1M conv=fsync status=none; e=$(now_ms)
    echo "{\"stage\":\"big: write unpacked bytes (dd conv=fsync)\",\"ms\":$((e - s))}"
    curl -s -o "$shm/stage/small.gz" "http://$registry/v2/bench/small/blobs/$(layer_digest small 0)"
    mkdir "$work/stage/small"
    s=$(now_ms); tar -xzf "$shm/stage/small.gz" -C "$work/stage/small"; e=$(now_ms)
    echo "{\"stage\":\"small: tar -xzf\",\"ms\":$((e - s))}"
    s=$(now_ms); sync -f "$work/stage/small"; e=$(now_ms)
    echo "{\"stage\":\"small: then sync -f\",\"ms\":$((e - s))}"
    rm -rf "$shm/stage" "$work/stage"
}

run() { # RUNTIME ROUND -> JSON lines
    local dir="$work/$1-$2" i s e
    "start_$1" "$dir"
    for i in "${images[@]}"; do
        s=$(now_ms)
        "$crictl" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --timeout 600s \
            pull "$registry/bench/$i:latest" >/dev/null
        e=$(now_ms)
        echo "{\"runtime\":\"$1\",\"round\":$2,\"image\":\"$i\",\"ms\":$((e - s))}"
    done
    stop_daemon "$dir"
}

runtimes=(gantry containerd2 containerd)
for r in $(seq "$rounds"); do
    echo "round $r/$rounds" >&2
    settle
    stages "$r" >>"$results"
    # Rotate who goes first, so none always gets the same neighbours.
    for k in 0 1 2; do
        rt=${runtimes[$(((r - 1 + k) % 3))]}
        settle
        run "$rt" "$r" >>"$results"
    done
done
cp "$results" "${GANTRY_BENCH_RESULTS:-/dev/null}" 2>/dev/null || true

python3 - "$results" "$rounds" <<'PY'
import json, statistics, sys
path, rounds = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
def med(rt, img):
    v = [r["ms"] for r in rows if r.get("runtime") == rt and r.get("image") == img]
    return statistics.median(v) if v else float("nan")
labels = {
    "big": "one 200 MiB layer, cold",
    "big-plus": "big + 1 MiB layer, after big",
    "ten": "10 layers of 16 MiB, cold",
    "ten-plus": "ten + 1 MiB layer, after ten",
    "small": "one layer of 30000 files in 300 folders, cold",
}
print(f"| crictl pull ({rounds} rounds, median ms) | gantry | containerd 2.x | containerd 1.6 | gantry / 2.x | gantry / 1.6 |")
print("|---|---|---|---|---|---|")
for img, label in labels.items():
    g, c2, c1 = med("gantry", img), med("containerd2", img), med("containerd", img)
    print(f"| {label} | {g:.0f} | {c2:.0f} | {c1:.0f} | {g / c2:.2f} | {g / c1:.2f} |")
print()
print(f"| single stage ({rounds} rounds, median ms) | ms |")
print("|---|---|")
for st in dict.fromkeys(r["stage"] for r in rows if "stage" in r):
    print(f"| {st} | {statistics.median(r['ms'] for r in rows if r.get('stage') == st):.0f} |")
PY
