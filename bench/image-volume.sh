#!/usr/bin/env bash
# Image volume benchmark (issue 12): what mounting an unpacked image into a
# container (CRI `Mount.image`) adds to CreateContainer+StartContainer.
#
#   sudo bash bench/image-volume.sh [ROUNDS]     (default 30)
#
# One gantryd, one pod (host network); ROUNDS container starts without and
# ROUNDS with a "model" image mounted read-only at /model, interleaved so
# load on the machine hits both alike. The model image is made here: one
# layer of 2000 random 64 KiB files (125 MiB), pulled (and so unpacked)
# before the rounds. A mount that copied would cost hundreds of ms.
rounds=${1:-30}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_registry
prepare_pod_images

echo "building the model image" >&2
umoci init --layout "$work/model"
umoci new --image "$work/model:1"
umoci unpack --image "$work/model:1" "$work/model-bundle" >/dev/null
python3 - "$work/model-bundle/rootfs/weights" <<'PY'
import os, sys
os.makedirs(sys.argv[1])
for i in range(2000):
    with open(os.path.join(sys.argv[1], f"shard-{i:05}.bin"), "wb") as f:
        f.write(os.urandom(64 << 10))
PY
umoci repack --image "$work/model:1" "$work/model-bundle"
skopeo copy -q --dest-tls-verify=false "oci:$work/model:1" "docker://$registry/bench/model:1"
model="$registry/bench/model:1"

results="$work/results.jsonl"
dir="$work/gantry"
start_gantry "$dir"
"$bin/cri-bench" --endpoint "$sock" pull "$busybox" "$model" >/dev/null
"$bin/cri-bench" --endpoint "$sock" --label gantry image-volume --image "$busybox" --volume-image "$model" \
    --rounds "$rounds" --log-dir "$work/logs" >>"$results"
stop_daemon "$dir"

python3 - "$results" "$rounds" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pct(op, q):
    v = sorted(r["ms"] for r in rows if r["op"] == op)
    return v[min(len(v) - 1, int(q * len(v)))]
print(f"| CreateContainer+StartContainer, {sys.argv[2]} rounds each, ms | p50 | p90 |")
print("|---|---|---|")
for op, label in (("create_start", "without a volume"), ("create_start_with_image_volume", "with the model image at /model")):
    print(f"| {label} | {pct(op, .5):.1f} | {pct(op, .9):.1f} |")
print(f"| the image volume's share (p50 difference) | {pct('create_start_with_image_volume', .5) - pct('create_start', .5):.1f} | |")
PY
