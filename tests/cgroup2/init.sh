#!/bin/sh
# PID 1 of the cgroup v2 test node (tests/cgroup2/run.sh packs it into the
# initramfs as /init). Stage 1 moves the initramfs onto a tmpfs and
# switch_roots into it (pivot_root, which the shim uses, refuses rootfs);
# stage 2 mounts a pure cgroup v2 hierarchy, starts the node's job
# (/opt/node-job: the pass, or bench/cgroup2-node.sh's lifecycle runs) in a
# leaf cgroup as a service manager would, prints its output between markers
# on the serial console and powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

if [ ! -e /.stage2 ]; then
    /bin/busybox mkdir -p /proc /sys /dev /newroot
    /bin/busybox --install -s /bin
    mount -t proc proc /proc
    mount -t tmpfs -o mode=0755 tmpfs /newroot
    for d in /*; do
        case "$d" in /proc | /sys | /dev | /newroot) continue ;; esac
        cp -a "$d" /newroot/
    done
    mkdir -p /newroot/proc /newroot/sys /newroot/dev
    touch /newroot/.stage2
    umount /proc
    exec switch_root /newroot /init
fi

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /run /etc
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
[ -e /etc/resolv.conf ] || : >/etc/resolv.conf
hostname cgroup2-node
ip link set lo up
# The modules the host script packed (tests/node/host.sh node_modules), in
# dependency order.
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko"; done
echo 16 >/proc/sys/vm/nr_hugepages

echo "@@node $(uname -r) controllers: $(cat /sys/fs/cgroup/cgroup.controllers) psi: $(head -c 40 /proc/pressure/cpu 2>&1)"
# As systemd does: every controller for the root's children, this shell in
# init.scope, the job (and the daemons it starts) in a service's cgroup.
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control; done
mkdir -p /sys/fs/cgroup/init.scope /sys/fs/cgroup/system.slice/node-job.service
echo $$ >/sys/fs/cgroup/init.scope/cgroup.procs
for c in $(cat /sys/fs/cgroup/system.slice/cgroup.controllers); do
    echo "+$c" >/sys/fs/cgroup/system.slice/cgroup.subtree_control
done

echo "@@begin"
export GANTRY_BIN_DIR=/opt/gantry TMPDIR=/tmp RUST_BACKTRACE=1
sh -c 'echo $$ >/sys/fs/cgroup/system.slice/node-job.service/cgroup.procs && exec /opt/node-job' 2>&1
echo "@@end $?"
sync
poweroff -f
