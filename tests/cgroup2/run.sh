#!/usr/bin/env bash
# The cgroup v2 pass: boots Debian's kernel (linux-image-amd64) under QEMU
# (TCG, 2 CPUs, 2 GiB) on a busybox initramfs that mounts a pure cgroup v2
# hierarchy with every controller, and runs Gantry there: gantryd on a tmpfs,
# driven through CRI by tests/src/bin/cgroup2_pass.rs, which checks what
# lands in the cgroupfs. Results come back over the serial console.
#
#   sudo bash tests/cgroup2/run.sh
#
# Ends with "N passed, M failed"; exits non-zero if a check failed or the node
# did not finish within GANTRY_CGROUP2_TIMEOUT seconds (default 420).
# GANTRY_CGROUP2_PROFILE=release uses release binaries (default: debug, the
# ones tests/run.sh builds). Everything comes from Debian packages; the
# kernel package is unpacked (not installed) into a cache in /var/tmp.
# Cleans up (QEMU by its pid, the temp dir) also on failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/cgroup2/run.sh must run as root (apt, the kernel cache)" >&2
    exit 1
fi

profile=${GANTRY_CGROUP2_PROFILE:-debug}
timeout_s=${GANTRY_CGROUP2_TIMEOUT:-420}
started_at=$(date +%s)

source "$here/../node/host.sh"
node_host_packages
node_kernel

# --- Gantry ------------------------------------------------------------------
target=${CARGO_TARGET_DIR:-$repo/target}
flags=(--quiet)
[ "$profile" = release ] && flags+=(--release)
echo "== cargo build ($profile)"
cargo build "${flags[@]}" -p gantryd -p gantry-shim -p gantry-cli -p gantry-tests --bins
bins=$target/$profile

work="$(mktemp -d /tmp/gantry-cgroup2.XXXXXX)"
qemu_pid=
cleanup() {
    if [ -n "$qemu_pid" ]; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "== building the busybox image"
node_busybox_archive "$work" "$work/busybox.tar"

# --- the initramfs -----------------------------------------------------------
echo "== packing the initramfs"
ir=$work/initramfs
mkdir -p "$ir"/{bin,opt/gantry,lib/modules,etc}
cp -L /bin/busybox "$ir/bin/busybox"
ln -s busybox "$ir/bin/sh"
cp "$here/init.sh" "$ir/init"
# What the node runs once it is up (init.sh runs /opt/node-job).
printf '#!/bin/sh\nexec /opt/gantry/cgroup2_pass /opt/gantry/busybox.tar\n' >"$ir/opt/node-job"
chmod 0755 "$ir/init" "$ir/opt/node-job"
node_modules "$ir/lib/modules" overlay
for b in gantryd gantry-shim gantry cgroup2_pass; do
    strip -o "$ir/opt/gantry/$b" "$bins/$b"
done
cp "$work/busybox.tar" "$ir/opt/gantry/"
# Debian's runc and crun, RuntimeClass handlers of the pass, at their paths.
mkdir -p "$ir/usr/sbin" "$ir/usr/bin"
cp -L /usr/sbin/runc "$ir/usr/sbin/runc"
cp -L /usr/bin/crun "$ir/usr/bin/crun"
node_copy_libs "$ir" "$ir"/opt/gantry/{gantryd,gantry-shim,gantry,cgroup2_pass} "$ir"/usr/sbin/runc "$ir"/usr/bin/crun
(cd "$ir" && find . | busybox cpio -o -H newc 2>/dev/null) >"$work/initrd"

# --- boot the node -----------------------------------------------------------
echo "== booting $kpkg under QEMU (TCG), timeout ${timeout_s}s"
console=$work/console.log
node_boot "$console" "$timeout_s" -m 2048 -initrd "$work/initrd" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init"
finished=$node_finished
# The whole console, for a look afterwards.
mkdir -p "$target" && tr -d '\r' <"$console" >"$target/cgroup2-console.log"

tr -d '\r' <"$console" | sed -n 's/.*\(@@node \)/\1/p; /^@@begin/,/^@@end/p' | grep -v '^@@begin' || true
passed=$(tr -d '\r' <"$console" | grep -c '^PASS ' || true)
failed=$(tr -d '\r' <"$console" | grep -c '^FAIL ' || true)
if [ -z "$finished" ]; then
    echo "FAIL node: the cgroup v2 node did not finish within ${timeout_s}s; its console ends with:"
    tr -d '\r' <"$console" | tail -40 | sed 's/^/    /'
    echo
    failed=$((failed + 1))
elif [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
    echo "FAIL node: the pass reported nothing"
    failed=$((failed + 1))
fi
echo "== node: console in $target/cgroup2-console.log; ${node_seconds}s in the node (boot to power-off or timeout); whole pass $(($(date +%s) - started_at))s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
