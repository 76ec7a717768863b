#!/usr/bin/env bash
# Memory of idle gantry-shim processes: starts N containers (busybox `sleep`
# on a plain directory rootfs) each under its own shim, then reads every
# shim's proportional set size from /proc/PID/smaps_rollup.
#
#   sudo bash bench/shim-memory.sh [N]     (default 20)
set -euo pipefail

n=${1:-20}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
}
cargo build --release -q -p gantry-shim
shim="$repo/target/release/gantry-shim"

work="$(mktemp -d /tmp/gantry-shim-mem.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs/bin" "$work/rootfs/proc" "$work/rootfs/dev" "$work/rootfs/tmp"
cp -L /bin/busybox "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/sleep"

for i in $(seq "$n"); do
    b="$work/c$i"
    mkdir -p "$b"
    cat >"$b/config.json" <<EOF
{"ociVersion":"1.0.2",
 "process":{"args":["sleep","100000"],"env":["PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0}},
 "root":{"path":"$work/rootfs","readonly":true},
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
           {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"ipc"},{"type":"uts"}]}}
EOF
    out=$("$shim" --id "c$i" --bundle "$b" --socket "$b/sock" --log "$b/log")
    read -r _ cpid spid <<<"$out"
    pids+=("$cpid" "$spid")
    # Start the container: one framed StartRequest (field 2, empty).
    python3 - "$b/sock" <<'EOF'
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
body = bytes([0x12, 0x00])
s.sendall(struct.pack(">I", len(body)) + body)
n = struct.unpack(">I", s.recv(4))[0]; s.recv(n)
EOF
done
sleep 1
[ -n "${SHIM_MEM_SMAPS:-}" ] && cp "/proc/${pids[1]}/smaps" "$SHIM_MEM_SMAPS"

python3 - "${pids[@]}" <<'EOF'
import statistics, sys
pids = sys.argv[1:]
shims = pids[1::2]
def field(pid, name):
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith(name + ":"):
            return int(line.split()[1])
pss = [field(p, "Pss") for p in shims]
rss = [field(p, "Rss") for p in shims]
priv = [field(p, "Private_Dirty") + field(p, "Private_Clean") for p in shims]
print(f"| idle shims | PSS median (KiB) | PSS max (KiB) | RSS median (KiB) | private median (KiB) |")
print(f"|---|---|---|---|---|")
print(f"| {len(shims)} | {statistics.median(pss):.0f} | {max(pss)} | {statistics.median(rss):.0f} | {statistics.median(priv):.0f} |")
EOF
