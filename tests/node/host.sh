# Sourced by the scripts that boot a test node under QEMU (tests/cgroup2,
# tests/systemd, tests/critest/node.sh, bench/cgroup2-node.sh): the host
# packages they need and Debian's kernel, unpacked (never installed) into a
# cache in /var/tmp shared by all; and by the scripts that run a local
# registry (bench/lib.sh, tests/critest): its config and a free port.

# registry_config STORAGE ADDR: a docker-registry config serving STORAGE on
# ADDR (HOST:PORT) over plain HTTP, logging only warnings; on stdout.
registry_config() {
    printf 'version: 0.1\nlog: { level: warn, accesslog: { disabled: true } }\nstorage: { filesystem: { rootdirectory: %s } }\nhttp: { addr: %s }\n' "$1" "$2"
}

# free_port: a TCP port free on 127.0.0.1 right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

apt_updated=
apt_update() { [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }; }

# node_host_packages [EXTRA...]: busybox-static, umoci, skopeo, jq, binutils
# and the extras from the machine's suite; QEMU from bookworm-backports (as
# qemu-utils here, when it is), on the mirror the machine's sources use.
node_host_packages() {
    local missing=() p
    for p in busybox-static umoci skopeo jq binutils "$@"; do
        installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v qemu-system-x86_64 >/dev/null && return
    if ! apt-cache policy qemu-system-x86 | grep -q bookworm-backports; then
        local mirror
        mirror=$(grep -rhoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1)
        mirror=${mirror:-http://deb.debian.org/debian}
        echo "deb ${mirror%/} bookworm-backports main" >/etc/apt/sources.list.d/gantry-bookworm-backports.list
        apt_updated=
    fi
    apt_update
    local want=qemu-system-x86 utils
    utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [ -n "$utils" ] && apt-cache madison qemu-system-x86 | grep -qF " $utils "; then
        want="qemu-system-x86=$utils"
    fi
    echo "== installing $want (bookworm-backports)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports "$want" >/dev/null
}

# node_kernel: Debian's linux-image-amd64 unpacked into the cache; sets
# kpkg, kver, kcache (the unpacked package) and kmods (its modules' tree).
node_kernel() {
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$kpkg" ]; then
        apt_update
        kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    kcache=/var/tmp/gantry-cgroup2-kernel/$kpkg
    kver=${kpkg#linux-image-}
    if [ ! -e "$kcache/boot/vmlinuz-$kver" ]; then
        echo "== fetching $kpkg"
        rm -rf "$kcache" "$kcache.tmp"
        mkdir -p "$kcache.tmp"
        (cd "$kcache.tmp" && apt-get download -q "$kpkg" 2>&1 | grep -v unsandboxed || true)
        dpkg-deb -x "$kcache.tmp"/"$kpkg"_*.deb "$kcache.tmp/root"
        mv "$kcache.tmp/root" "$kcache"
        rm -rf "$kcache.tmp"
    fi
    kmods=$kcache/lib/modules/$kver/kernel
}

# node_busybox_archive WORK OUT: Debian's busybox-static as a one-layer image
# (applet links, passwd, group), written as a docker-archive to OUT for
# `gantry load` in the node; WORK holds the intermediate OCI layout.
node_busybox_archive() {
    local work=$1 out=$2 layout=$1/oci rootfs=$1/bundle/rootfs applet
    umoci --log error init --layout "$layout"
    umoci --log error new --image "$layout:busybox"
    umoci --log error unpack --image "$layout:busybox" "$work/bundle" >/dev/null
    mkdir -p "$rootfs"/{bin,etc,root,proc,sys,dev,tmp}
    chmod 1777 "$rootfs/tmp"
    cp -L /bin/busybox "$rootfs/bin/busybox"
    for applet in $("$rootfs/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    umoci --log error repack --image "$layout:busybox" "$work/bundle"
    umoci --log error config --image "$layout:busybox" --architecture amd64 --os linux --config.cmd sh \
        --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin
    skopeo copy -q "oci:$layout:busybox" "docker-archive:$out:gantry/busybox:latest"
}

# node_copy_libs ROOT FILE...: the shared libraries FILEs load, copied into
# ROOT at the paths the loader looks for them.
node_copy_libs() {
    local root=$1 lib
    shift
    # (ldd names each file on a line of its own, ending in ':', when given several.)
    for lib in $(ldd "$@" 2>/dev/null | grep -v ':$' | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# node_boot CONSOLE TIMEOUT QEMU_ARG...: boots Debian's kernel (node_kernel)
# under QEMU with TCG and the serial console written to CONSOLE, and waits
# until the node prints "@@end", powers off, or TIMEOUT seconds pass. Sets
# qemu_pid (the caller's cleanup ends it), node_finished (1 if "@@end" came)
# and node_seconds.
node_boot() {
    local console=$1 timeout_s=$2 boot_at deadline
    shift 2
    qemu-system-x86_64 -accel tcg -cpu max -smp 2 -nographic -monitor none -serial stdio -nic none -no-reboot \
        -kernel "$kcache/boot/vmlinuz-$kver" "$@" </dev/null >"$console" 2>&1 &
    qemu_pid=$!
    boot_at=$(date +%s)
    deadline=$((boot_at + timeout_s))
    node_finished=
    while kill -0 "$qemu_pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
        grep -qa '^@@end' <(tr -d '\r' <"$console") && break
        sleep 1
    done
    grep -qa '^@@end' <(tr -d '\r' <"$console") && node_finished=1
    node_seconds=$(($(date +%s) - boot_at))
}

# node_modules DEST MODULE...: the kernel modules (node_kernel's) and what
# they depend on (from each .modinfo), copied into DEST as NAME.ko, with
# DEST/order listing them so that each comes after its dependencies.
node_modules() {
    local dest=$1 m
    shift
    mkdir -p "$dest"
    node_ordered_modules=()
    for m in "$@"; do node_add_module "$dest" "$m"; done
    echo "${node_ordered_modules[*]}" >"$dest/order"
}
node_module_file() { find "$kmods" -name "$1.ko" -print -quit; }
node_add_module() {
    local dest=$1 m=$2 d
    case " ${node_ordered_modules[*]} " in *" $m "*) return ;; esac
    for d in $(objcopy -O binary --only-section=.modinfo "$(node_module_file "$m")" /dev/stdout |
        tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do
        node_add_module "$dest" "$d"
    done
    cp "$(node_module_file "$m")" "$dest/$m.ko"
    node_ordered_modules+=("$m")
}

# node_crun_new ROOT: the newest crun (Debian unstable's; bookworm's crun 1.8
# refuses the runtime-spec version containerd 2.x writes) into the node
# tree ROOT as /usr/bin/crun: a two-line wrapper running it with unstable's
# glibc through that glibc's loader, both in /opt/crun, with bookworm's
# other libraries. Unpacked (never installed) into a cache in /var/tmp.
node_crun_new() {
    local root=$1 cache=/var/tmp/gantry-node-crun-new deb lib
    if [ ! -x "$cache/root/usr/bin/crun" ]; then
        echo "== fetching unstable's crun"
        rm -rf "$cache" && mkdir -p "$cache"
        (cd "$cache" && apt-get download -q -t unstable crun libc6 libblake3-0 2>&1 | grep -v unsandboxed || true)
        for deb in "$cache"/*.deb; do dpkg-deb -x "$deb" "$cache/root.tmp"; done
        mv "$cache/root.tmp" "$cache/root"
    fi
    crun_new_lib=$cache/root/usr/lib/x86_64-linux-gnu
    crun_new_loader() { "$crun_new_lib/ld-linux-x86-64.so.2" --library-path "$crun_new_lib:/lib/x86_64-linux-gnu" "$@"; }
    crun_new_version=$(crun_new_loader "$cache/root/usr/bin/crun" --version | awk 'NR == 1 {print $3}')
    mkdir -p "$root/opt/crun" "$root/usr/bin" "$root/lib/x86_64-linux-gnu"
    cp -L "$cache/root/usr/bin/crun" "$crun_new_lib"/{ld-linux-x86-64.so.2,libc.so.6,libm.so.6,libblake3.so.0} "$root/opt/crun/"
    printf '#!/bin/sh\nexec /opt/crun/ld-linux-x86-64.so.2 --library-path /opt/crun:/lib/x86_64-linux-gnu /opt/crun/crun "$@"\n' >"$root/usr/bin/crun"
    chmod 0755 "$root/usr/bin/crun"
    for lib in $(crun_new_loader --list "$cache/root/usr/bin/crun" | grep -oE ' /lib/x86_64-linux-gnu/[^ ]+' | sort -u); do
        cp -L "$lib" "$root$lib"
    done
}
