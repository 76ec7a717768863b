#!/usr/bin/env bash
# critest in the pure cgroup v2 test node: boots tests/cgroup2's node
# (Debian's kernel under QEMU with TCG, every cgroup2 controller) and runs
# the CRI validation suite there against gantryd, so that the handlers only
# a pure cgroup v2 host can run (crun) are checked too:
#
#   sudo CRITEST=/path/to/critest bash tests/critest/node.sh [critest flags…]
#   e.g. --runtime-handler=crun
#
# As tests/critest/run.sh, offline: ../shared/critest-images fills a
# registry (here on the host, its storage then packed into the node, where
# a registry serves it on 127.0.0.1:5000), gantryd runs with
# tests/critest/config.toml (CNI directory moved into the node). The node
# has no network interface but loopback and the critest bridge; the CNI
# portmap plugin gets Debian's iptables (legacy backend) and the netfilter
# modules it needs. Handlers: Debian's runc, and crun as
# Debian unstable's (tests/node/host.sh node_crun_new). critest's output
# comes back over the serial console; the console is kept in
# target/critest-node-console.log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
critest=${CRITEST:?set CRITEST to a critest binary}
kit=${CRITEST_IMAGES:-$repo/../shared/critest-images}
timeout_s=${GANTRY_CRITEST_NODE_TIMEOUT:-2400}

source "$repo/tests/node/host.sh"
node_host_packages containernetworking-plugins docker-registry runc iptables
node_kernel
cargo build --release -q -p gantryd -p gantry-shim
target=${CARGO_TARGET_DIR:-$repo/target}

work="$(mktemp -d /tmp/gantry-critest-node.XXXXXX)"
qemu_pid=
registry_pid=
cleanup() {
    for pid in $qemu_pid $registry_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "== critest's images (${kit##*/})"
port=$(free_port)
ir=$work/initramfs
c=$ir/opt/critest
mkdir -p "$ir"/{bin,etc,opt/gantry,usr/bin,usr/lib/cni} "$c"
registry_config "$c/registry" "127.0.0.1:$port" >"$work/registry.yml"
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
until curl -s -o /dev/null "http://127.0.0.1:$port/v2/"; do sleep 0.1; done
"$kit/make-images.sh" --registry "127.0.0.1:$port" --workdir "$work/images" >"$work/images.log" 2>&1
kill "$registry_pid"
wait "$registry_pid" 2>/dev/null || true
registry_pid=
rm -rf "$work/images"

echo "== packing the node's initramfs"
cp -L /bin/busybox "$ir/bin/busybox"
ln -s busybox "$ir/bin/sh"
cp "$repo/tests/cgroup2/init.sh" "$ir/init"
# overlayfs; the critest bridge and its veths; what the CNI portmap plugin's
# iptables rules use (nat table, DNAT/SNAT/MASQUERADE, comment, multiport,
# mark, addrtype, conntrack matches; crc32c_generic first: conntrack's
# libcrc32c needs it, a soft dependency its .modinfo does not list).
node_modules "$ir/lib/modules" overlay bridge veth crc32c_generic ip_tables iptable_nat iptable_filter iptable_mangle \
    xt_nat xt_comment xt_multiport xt_mark xt_addrtype xt_conntrack xt_MASQUERADE xt_tcpudp
for b in gantryd gantry-shim; do strip -o "$ir/opt/gantry/$b" "$target/release/$b"; done
cp "$critest" "$c/critest"
strip -o "$c/docker-registry" /usr/bin/docker-registry
cp /usr/lib/cni/{bridge,host-local,loopback,portmap} "$ir/usr/lib/cni/"
# iptables (legacy backend: xtables-legacy-multi dispatches on its name)
# and its extensions, for portmap.
mkdir -p "$ir/usr/sbin" "$ir/usr/lib/x86_64-linux-gnu"
cp -L /usr/sbin/xtables-legacy-multi "$ir/usr/sbin/"
for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -s xtables-legacy-multi "$ir/usr/sbin/$n"
done
cp -a /usr/lib/x86_64-linux-gnu/xtables "$ir/usr/lib/x86_64-linux-gnu/"
cp -L /usr/sbin/runc "$ir/usr/sbin/runc"
# critest itself runs util-linux's ipcmk on the node (the host IPC specs).
cp -L /usr/bin/ipcmk "$ir/usr/bin/ipcmk"
node_crun_new "$ir"
node_copy_libs "$ir" "$ir"/opt/gantry/* "$c/docker-registry" "$ir/usr/sbin/runc" "$ir/usr/bin/ipcmk" \
    "$ir/usr/sbin/xtables-legacy-multi" "$ir"/usr/lib/x86_64-linux-gnu/xtables/*.so
registry_config /opt/critest/registry 127.0.0.1:5000 >"$c/registry.yml"
sed 's|^conf_dir = .*|conf_dir = "/opt/critest/net.d"|' "$here/config.toml" >"$c/config.toml"
mkdir -p "$c/net.d"
cp "$here/net.d/10-critest.conflist" "$c/net.d/"
printf '%s\n' "$@" >"$c/flags"
cat >"$ir/opt/node-job" <<'JOB'
#!/bin/sh
# critest against gantryd, inside the node (tests/critest/node.sh).
set -eu
printf '127.0.0.1 localhost\n::1 localhost\n' >/etc/hosts
mkdir -p /run/gantry-critest
/opt/critest/docker-registry serve /opt/critest/registry.yml >/tmp/registry.log 2>&1 &
until wget -q -O /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null; do sleep 0.2; done
/opt/gantry/gantryd --config /opt/critest/config.toml --root /var/lib/gantry --state /run/gantry \
    --listen /run/gantry.sock 2>/tmp/gantryd.log &
until [ -S /run/gantry.sock ]; do sleep 0.1; done
# One flag per line in /opt/critest/flags.
set --
while IFS= read -r f; do [ -z "$f" ] || set -- "$@" "$f"; done </opt/critest/flags
/opt/critest/critest --runtime-endpoint unix:///run/gantry.sock --image-endpoint unix:///run/gantry.sock \
    --ginkgo.skip=benchmark --ginkgo.no-color "$@" || true
echo "== gantryd's log, last lines"
tail -20 /tmp/gantryd.log
JOB
chmod 0755 "$ir/init" "$ir/opt/node-job"
(cd "$ir" && find . | busybox cpio -o -H newc 2>/dev/null) >"$work/initrd"

echo "== booting $kpkg under QEMU (TCG), timeout ${timeout_s}s"
console=$work/console.log
# apparmor=0: as on the host, where critest skips its AppArmor specs (the
# node has no apparmor_parser to load their profiles with).
node_boot "$console" "$timeout_s" -m 4096 -initrd "$work/initrd" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init apparmor=0"
mkdir -p "$target" && tr -d '\r' <"$console" >"$target/critest-node-console.log"
tr -d '\r' <"$console" | sed -n 's/.*\(@@node \)/\1/p; /^@@begin/,/^@@end/p' | grep -v '^@@begin' || true
echo "== ${node_seconds}s in the node; console in $target/critest-node-console.log"
[ -n "$node_finished" ]
