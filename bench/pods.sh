#!/usr/bin/env bash
# Pod lifecycle benchmark: gantryd vs containerd 2.x with the newest runc
# (bench/lib.sh ensure_containerd2, ensure_runc_new) and Debian's containerd
# 1.6 with Debian's runc, same client (cri-bench), same machine, same run.
#
#   sudo GANTRY_BENCH_CACHE=DIR bash bench/pods.sh [ROUNDS]      (default 50)
#
# For each runtime, on a fresh root: ROUNDS times, one at a time,
# RunPodSandbox, CreateContainer+StartContainer (busybox sleep), then
# StopContainer+RemoveContainer+StopPodSandbox+RemovePodSandbox; then 20 pods
# started concurrently, and the memory of the daemon and of the shims while
# those 20 run; then ROUNDS more lifecycles with 200 pods running. Pods use the host network (containerd needs a CNI plugin
# otherwise; networking is not measured here). containerd gets a busybox
# `sleep` image as its pause image, as no pause image can be pulled here.
rounds=${1:-50}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pod_bench_setup

results="$work/results.jsonl"
memory() { # RUNTIME DIR SHIM_NAME
    python3 - "$1" "$daemon_pid" "$2" "$3" <<'PY' >>"$results"
import json, os, sys
runtime, daemon, marker, shim = sys.argv[1:]
def field(pid, f, name):
    for line in open(f"/proc/{pid}/{f}"):
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0
shims = []
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) == os.getpid():
        continue
    try:
        cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        continue
    if shim in cmd and marker in cmd:
        shims.append(p)
pss = [field(p, "smaps_rollup", "Pss") for p in shims]
print(json.dumps({"runtime": runtime, "op": "memory", "daemon_rss_kib": field(daemon, "status", "VmRSS"),
                  "shims": len(shims), "shim_pss_kib_total": sum(pss),
                  "daemon_fds": len(os.listdir(f"/proc/{daemon}/fd"))}))
PY
}

runtimes=(gantry containerd2 containerd)
for rt in "${runtimes[@]}"; do
    echo "$rt: $rounds pod lifecycles" >&2
    dir="$work/$rt"
    case $rt in
    gantry) start_gantry "$dir" && shim=gantry-shim ;;
    containerd2) start_containerd2 "$dir" "$pause" && shim=containerd-shim ;;
    containerd) start_containerd "$dir" "$pause" && shim=containerd-shim ;;
    esac
    "$bin/cri-bench" --endpoint "$sock" pull "$busybox" "$pause" >/dev/null
    "$bin/cri-bench" --endpoint "$sock" --label "$rt" lifecycle --image "$busybox" --rounds "$rounds" --log-dir "$work/logs-$rt" >>"$results"
    echo "$rt: 20 pods at once" >&2
    hold_start "hold-$rt" "$work/concurrent-$rt" "$work/concurrent-$rt" /dev/stderr \
        "$bin/cri-bench" --endpoint "$sock" --label "$rt" concurrent --image "$busybox" --pods 20 --log-dir "$work/logs-$rt"
    sleep 1
    cat "$work/concurrent-$rt" >>"$results"
    # containerd's shims are named by the containerd address (under $dir),
    # gantry's by their bundle (in its state dir).
    marker=$dir
    [ "$rt" != gantry ] || marker="$run_state/gantry"
    memory "$rt" "$marker" "$shim"
    hold_release

    # Pod start with 200 pods already running, against the idle figures above.
    echo "$rt: lifecycles with 200 pods running" >&2
    hold_start "hold200-$rt" "$work/concurrent200-$rt" "$work/concurrent200-$rt" /dev/stderr \
        "$bin/cri-bench" --endpoint "$sock" --label "$rt-busy" concurrent --image "$busybox" --pods 200 \
        --log-dir "$work/logs200-$rt"
    # Steady state: the kernel's work for 200 fresh pods settles first.
    sleep 2
    "$bin/cri-bench" --endpoint "$sock" --label "$rt-busy" lifecycle --image "$busybox" --rounds "$rounds" \
        --log-dir "$work/logs-busy-$rt" >>"$results"
    hold_release
    stop_daemon "$dir"
done

python3 - "$results" "$rounds" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rts = ("gantry", "containerd2", "containerd")
names = {"gantry": "gantry", "containerd2": "containerd 2.x", "containerd": "containerd 1.6"}
def pct(rt, op, q):
    v = sorted(r["ms"] for r in rows if r["runtime"] == rt and r["op"] == op)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")
print(f"| {sys.argv[2]} rounds, p50 ms (p99) | " + " | ".join(names[r] for r in rts) + " | gantry / 2.x | gantry / 1.6 |")
print("|---|---|---|---|---|---|")
for op, label in (("run_pod_sandbox", "RunPodSandbox"), ("create_start", "CreateContainer+StartContainer"),
                  ("stop_remove", "StopContainer+RemoveContainer+StopPodSandbox+RemovePodSandbox")):
    cells = [f"{pct(rt, op, .5):.1f} ({pct(rt, op, .99):.1f})" for rt in rts]
    g = pct("gantry", op, .5)
    print(f"| {label} | " + " | ".join(cells) + f" | {g / pct('containerd2', op, .5):.2f} | {g / pct('containerd', op, .5):.2f} |")
conc = {r["runtime"]: r["ms"] for r in rows if r["op"] == "concurrent_start"}
print(f"| 20 pods started concurrently (wall) | " + " | ".join(f"{conc[rt]:.0f}" for rt in rts)
      + f" | {conc['gantry'] / conc['containerd2']:.2f} | {conc['gantry'] / conc['containerd']:.2f} |")
print()
print("| at 20 running pods | daemon RSS (KiB) | daemon fds | shims | shim PSS total (KiB) | PSS per shim (KiB) |")
print("|---|---|---|---|---|---|")
for r in rows:
    if r["op"] == "memory":
        per = r["shim_pss_kib_total"] / max(1, r["shims"])
        print(f"| {names[r['runtime']]} | {r['daemon_rss_kib']} | {r['daemon_fds']} | {r['shims']} | {r['shim_pss_kib_total']} | {per:.0f} |")
print()
print("| RunPodSandbox p50, ms | idle | with 200 pods running | slowdown |")
print("|---|---|---|---|")
for rt in rts:
    idle, busy = pct(rt, "run_pod_sandbox", .5), pct(rt + "-busy", "run_pod_sandbox", .5)
    print(f"| {names[rt]} | {idle:.1f} | {busy:.1f} | x{busy / idle:.2f} |")
PY
