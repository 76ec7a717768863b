#!/bin/sh
# The job bench/cgroup2-node.sh runs inside the pure cgroup v2 test node
# (busybox sh, started by tests/cgroup2/init.sh as /opt/node-job): a
# registry on 127.0.0.1 serving the images pushed on the host, then per
# pass every runtime once, in a rotating order, on fresh roots: daemon up,
# pull, ROUNDS pod lifecycles through cri-bench, daemon down. Each result
# line goes to the console as "@@row {json}".
set -eu -o pipefail
trap 'echo "cgroup2-node-job.sh: stopped with status $?" >&2' EXIT
b=/opt/bench
. $b/env # ROUNDS PASSES REGISTRY BUSYBOX PAUSE RUNTIMES

# What a node has and the runtimes read (containerd copies it into pods).
printf '127.0.0.1 localhost\n::1 localhost\n' >/etc/hosts
"$b/docker-registry" serve "$b/registry.yml" >/tmp/registry.log 2>&1 &
registry_pid=$!
until wget -q -O /dev/null "http://$REGISTRY/v2/"; do sleep 0.2; done

unmount_below() {
    { grep -o "$1/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
wait_socket() {
    local tries=0
    until [ -S "$1" ] && "$b/cri-bench" --endpoint "$1" rmi "$REGISTRY/none:x" 2>/dev/null; do
        tries=$((tries + 1))
        [ $tries -lt 600 ] || { echo "no CRI server on $1" >&2; return 1; }
        sleep 0.1
    done
}

# start RUNTIME DIR STATE: the daemon for RUNTIME, its root in DIR and its
# runtime state in STATE (both tmpfs here, as the node's / is); sets pid,
# sock, handler.
start() {
    rt=$1 dir=$2 state=$3 handler=
    mkdir -p "$dir"
    sock=$dir/sock
    case $rt in
    gantry | gantry-runc | gantry-crun)
        : >"$dir/config.toml"
        case $rt in
        gantry-runc) printf '[runtimes.runc]\nbinary = "%s"\nroot = "%s"\n' "$b/runc" "$state/runc-root" >"$dir/config.toml" ;;
        gantry-crun) printf '[runtimes.crun]\nbinary = "%s"\nroot = "%s"\n' "/usr/bin/crun" "$state/crun-root" >"$dir/config.toml" ;;
        esac
        handler=${rt#gantry}
        handler=${handler#-}
        "$b/gantryd" --config "$dir/config.toml" --root "$dir/root" --state "$state" --listen "$sock" \
            --log-level warn 2>"$dir/log" &
        ;;
    containerd2-runc | containerd2-crun)
        handler=${rt#containerd2-}
        mkdir -p "$dir/certs.d/$REGISTRY"
        printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
            "$REGISTRY" "$REGISTRY" >"$dir/certs.d/$REGISTRY/hosts.toml"
        cat >"$dir/config.toml" <<TOML
version = 3
root = "$dir/root"
state = "$state"
[grpc]
  address = "$sock"
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "$dir/certs.d"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "$PAUSE"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = "$b/runc"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.crun]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.crun.options]
  BinaryName = "/usr/bin/crun"
TOML
        PATH="$b:$PATH" "$b/containerd" --config "$dir/config.toml" --log-level warn 2>"$dir/log" &
        ;;
    esac
    pid=$!
    wait_socket "$sock"
}

pass=1
while [ $pass -le "$PASSES" ]; do
    set -- $RUNTIMES
    n=$#
    i=0
    while [ $i -lt $n ]; do
        # Rotate the order each pass, so no runtime always runs first.
        k=$(((i + pass) % n + 1))
        eval rt=\${$k}
        echo "pass $pass: $rt, $ROUNDS lifecycles" >&2
        dir=/var/bench/$rt-$pass state=/run/bench/$rt-$pass
        start "$rt" "$dir" "$state"
        "$b/cri-bench" --endpoint "$sock" pull "$BUSYBOX" "$PAUSE" >/dev/null
        "$b/cri-bench" --endpoint "$sock" --label "$rt" --runtime-handler "$handler" lifecycle --image "$BUSYBOX" \
            --rounds "$ROUNDS" --log-dir "$dir/logs" | sed 's/^/@@row /'
        kill "$pid"
        wait "$pid" || true
        unmount_below "$dir"
        unmount_below "$state"
        rm -rf "$dir" "$state"
        i=$((i + 1))
    done
    pass=$((pass + 1))
done
kill "$registry_pid"
