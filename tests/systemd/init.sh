#!/bin/sh
# PID 1 of the systemd test node's initramfs (tests/systemd/run.sh packs it
# as /init): loads the modules the root disk needs (Debian's kernel has
# virtio and ext4 as modules) and overlayfs (for gantryd), mounts the cached
# Debian root filesystem from /dev/vda (QEMU writes to a throw-away
# snapshot), copies this run's Gantry binaries and the pass's unit into it,
# and hands over to systemd as PID 1.
export PATH=/bin
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
    echo "@@node initramfs: $*"
    echo "@@end 99"
    poweroff -f
}

# In dependency order (tests/systemd/run.sh lists them so).
for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || fail "insmod $m"
done
for _ in $(seq 100); do
    [ -b /dev/vda ] && break
    sleep 0.1
done
mount -t ext4 -o rw /dev/vda /newroot || fail "mounting /dev/vda"

mkdir -p /newroot/opt/gantry
cp -a /payload/gantry/. /newroot/opt/gantry/
cp /payload/cri-pass.service /newroot/etc/systemd/system/
mkdir -p /newroot/etc/systemd/system/multi-user.target.wants
ln -sf ../cri-pass.service /newroot/etc/systemd/system/multi-user.target.wants/cri-pass.service

umount /proc /sys
umount /dev 2>/dev/null
exec switch_root /newroot /lib/systemd/systemd
