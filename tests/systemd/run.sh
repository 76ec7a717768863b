#!/usr/bin/env bash
# The systemd pass: boots Debian's kernel (linux-image-amd64) under QEMU
# (TCG, 2 CPUs, 2 GiB) on a Debian bookworm root filesystem with systemd as
# PID 1 on a pure cgroup v2 hierarchy, and runs gantryd there with
# cgroup_driver = "systemd", driven through CRI by
# tests/src/bin/systemd_pass.rs, which checks the scope units and cgroups
# real systemd makes. Results come back over the serial console.
#
#   sudo bash tests/systemd/run.sh
#
# The root filesystem is made once with mmdebstrap (minbase + systemd, dbus,
# runc, crun) into an ext4 image cached under /var/tmp/gantry-systemd-rootfs,
# keyed by a hash of what goes into it; QEMU boots it as a snapshot (writes
# go to a temp file), so the cache stays pristine. A busybox initramfs loads
# the disk's modules, copies this run's binaries and the pass's unit in, and
# switch_roots to systemd. The kernel is the cgroup v2 pass's cache
# (/var/tmp/gantry-cgroup2-kernel).
#
# Ends with "N passed, M failed"; exits non-zero if a check failed or the node
# did not finish within GANTRY_SYSTEMD_TIMEOUT seconds (default 600).
# GANTRY_SYSTEMD_PROFILE=release uses release binaries (default: debug, the
# ones tests/run.sh builds). Cleans up (QEMU by its pid, the temp dir) also
# on failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/systemd/run.sh must run as root (apt, mmdebstrap, the caches)" >&2
    exit 1
fi

profile=${GANTRY_SYSTEMD_PROFILE:-debug}
timeout_s=${GANTRY_SYSTEMD_TIMEOUT:-600}
started_at=$(date +%s)

source "$here/../node/host.sh"
node_host_packages mmdebstrap e2fsprogs
node_kernel

# The machine's Debian mirror (not a commented-out one, not -security).
mirror=$(grep -rhE '^[[:space:]]*(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -v security | grep -oE 'https?://[^ ]+/debian/?' | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

work="$(mktemp -d /tmp/gantry-systemd.XXXXXX)"
qemu_pid=
rootfs_tmp=
cleanup() {
    [ -z "$rootfs_tmp" ] || rm -rf --one-file-system "$rootfs_tmp"
    if [ -n "$qemu_pid" ]; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# --- the root filesystem: Debian bookworm with systemd, cached --------------
suite=bookworm
rootfs_packages=(systemd systemd-sysv dbus runc crun busybox-static)
# What makes the image: the packages and the customize step below (this
# file's rootfs section); a change to either makes a new one.
rootfs_recipe=$(printf '%s\n' "$suite" "$mirror" "${rootfs_packages[@]}"; sed -n '/^# --- the root filesystem/,/^# --- end of the root filesystem/p' "$here/run.sh")
rootfs_key=$(printf '%s' "$rootfs_recipe" | sha256sum | cut -c1-16)
rcache=/var/tmp/gantry-systemd-rootfs/$rootfs_key
if [ ! -e "$rcache/rootfs.img" ]; then
    echo "== making the $suite root filesystem (mmdebstrap, cached as $rcache)"
    rootfs_tmp=$rcache.tmp
    rm -rf "$rootfs_tmp"
    mkdir -p "$rootfs_tmp"
    tree=$work/rootfs-tree
    # minbase: no recommends, no docs; a fixed machine-id (no first-boot
    # prompts on the console), no gettys, the disk as /.
    mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${rootfs_packages[*]}")" \
        --dpkgopt='path-exclude=/usr/share/{doc,man,info,locale}/*' \
        --customize-hook='echo gantry-systemd-node >"$1/etc/hostname"' \
        --customize-hook='echo 6e7d0c2a5f3b4c1d9e8f7a6b5c4d3e2f >"$1/etc/machine-id"' \
        --customize-hook='printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\n" >"$1/etc/fstab"' \
        --customize-hook='for u in getty@tty1 serial-getty@ttyS0 systemd-firstboot apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do case $u in *.timer) ;; *) u=$u.service ;; esac; ln -sf /dev/null "$1/etc/systemd/system/$u"; done' \
        "$suite" "$tree" "$mirror"
    mkfs.ext4 -q -L gantry-root -d "$tree" "$rcache.tmp/rootfs.img" 2G
    rm -rf --one-file-system "$tree"
    mv "$rcache.tmp" "$rcache"
    rootfs_tmp=
    # Older images (another recipe) go.
    find /var/tmp/gantry-systemd-rootfs -mindepth 1 -maxdepth 1 ! -name "$rootfs_key" -exec rm -rf {} +
fi
# --- end of the root filesystem

# --- Gantry ------------------------------------------------------------------
target=${CARGO_TARGET_DIR:-$repo/target}
flags=(--quiet)
[ "$profile" = release ] && flags+=(--release)
echo "== cargo build ($profile)"
cargo build "${flags[@]}" -p gantryd -p gantry-shim -p gantry-cli -p gantry-tests --bins
bins=$target/$profile

echo "== building the busybox image"
node_busybox_archive "$work" "$work/busybox.tar"

# --- the initramfs -----------------------------------------------------------
echo "== packing the initramfs"
ir=$work/initramfs
mkdir -p "$ir"/{bin,modules,payload/gantry}
cp -L /bin/busybox "$ir/bin/busybox"
ln -s busybox "$ir/bin/sh"
cp "$here/init.sh" "$ir/init"
chmod 0755 "$ir/init"
# The modules for the disk (virtio-pci, virtio-blk, ext4 with its crc32c)
# and overlayfs, each after what it depends on.
node_modules "$ir/modules" virtio_pci virtio_blk crc32c_generic ext4 overlay
for b in gantryd gantry-shim gantry systemd_pass; do
    strip -o "$ir/payload/gantry/$b" "$bins/$b"
done
cp "$work/busybox.tar" "$here/pass.sh" "$ir/payload/gantry/"
cp "$here/cri-pass.service" "$ir/payload/"
(cd "$ir" && find . | busybox cpio -o -H newc 2>/dev/null) >"$work/initrd"

# --- boot the node -----------------------------------------------------------
echo "== booting $kpkg with systemd under QEMU (TCG), timeout ${timeout_s}s"
console=$work/console.log
# snapshot=on: the guest's writes go to a temp file in $TMPDIR (the work dir).
TMPDIR=$work node_boot "$console" "$timeout_s" -m 2048 -initrd "$work/initrd" \
    -drive "file=$rcache/rootfs.img,format=raw,if=virtio,snapshot=on" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init systemd.unified_cgroup_hierarchy=1 systemd.show_status=0 systemd.log_target=journal"
finished=$node_finished
# The whole console, for a look afterwards.
mkdir -p "$target" && tr -d '\r' <"$console" >"$target/systemd-console.log"

tr -d '\r' <"$console" | sed -n 's/.*\(@@node \)/\1/p; /^@@begin/,/^@@end/p' | grep -v '^@@begin' || true
passed=$(tr -d '\r' <"$console" | grep -c '^PASS ' || true)
failed=$(tr -d '\r' <"$console" | grep -c '^FAIL ' || true)
if [ -z "$finished" ]; then
    echo "FAIL node: the systemd node did not finish within ${timeout_s}s; its console ends with:"
    tr -d '\r' <"$console" | tail -40 | sed 's/^/    /'
    echo
    failed=$((failed + 1))
elif [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
    echo "FAIL node: the pass reported nothing"
    failed=$((failed + 1))
fi
echo "== node: console in $target/systemd-console.log; ${node_seconds}s in the node (boot to power-off or timeout); whole pass $(($(date +%s) - started_at))s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
