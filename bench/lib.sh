# Shared by the benchmark scripts: packages, a throwaway registry, and
# gantryd / containerd started on fresh roots. Source it; it sets up $work
# and a cleanup trap that stops only what it started.
set -euo pipefail

bench_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$bench_repo/tests/node/host.sh"
bin="${CARGO_TARGET_DIR:-$bench_repo/target}/release"

need=(containerd docker-registry skopeo umoci python3 curl busybox-static jq)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
(cd "$bench_repo" && cargo build --release -q -p gantryd -p gantry-shim -p gantry-bench)

work="$(mktemp -d /tmp/gantry-bench.XXXXXX)"
# Runtime state (sockets, bundles, shim state) goes to a tmpfs, as on a node
# where /run is one (gantryd's /run/gantry, containerd's /run/containerd);
# this machine's /run is on the root disk, where every fsync of state would
# wait for the journal. Images and metadata stay on disk ($work).
run_state="$(mktemp -d /dev/shm/gantry-bench-state.XXXXXX)"
pids=()
unmount_below() {
    { grep -o "$1/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
bench_cleanup() {
    # A test node booted by bench/cgroup2-node.sh (tests/node/host.sh).
    [ -z "${qemu_pid:-}" ] || kill "$qemu_pid" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Shims outlive their daemon by design: after a failed or interrupted
    # run, end those of this run (their command lines name its dirs) and
    # their containers.
    local shim kid
    for shim in $(pgrep -f "gantry-shim .*($work|$run_state)/" || true); do
        for kid in $(pgrep -P "$shim" || true); do
            pkill -9 -P "$kid" 2>/dev/null || true
            kill -9 "$kid" 2>/dev/null || true
        done
        kill -9 "$shim" 2>/dev/null || true
    done
    unmount_below "$work"
    unmount_below "$run_state"
    rm -rf "$work" "$run_state"
}
trap bench_cleanup EXIT

# start_registry: a plain-HTTP registry on a free 127.0.0.1 port, its blobs
# in $registry_storage (default $work/registry); sets $registry.
start_registry() {
    registry="127.0.0.1:$(free_port)"
    local storage=${registry_storage:-$work/registry}
    mkdir -p "$storage"
    registry_config "$storage" "$registry" >"$work/registry.yml"
    /usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
    pids+=($!)
    until curl -s -o /dev/null "http://$registry/v2/"; do sleep 0.1; done
}

wait_socket() {
    for _ in $(seq 300); do
        [ -S "$1" ] && "$bin/cri-bench" --endpoint "$1" rmi "$registry/none:x" 2>/dev/null && return
        sleep 0.1
    done
    echo "no CRI server on $1" >&2
    return 1
}

# start_gantry DIR: sets $sock and $daemon_pid.
start_gantry() {
    local dir=$1
    mkdir -p "$dir"
    # GANTRY_BENCH_CONFIG: a config file for this gantryd (e.g. handlers).
    "$bin/gantryd" ${GANTRY_BENCH_CONFIG:+--config "$GANTRY_BENCH_CONFIG"} --root "$dir/root" --state "$run_state/$(basename "$dir")" \
        --listen "$dir/sock" --log-level "${GANTRY_BENCH_LOG:-warn}" 2>"$dir/log" &
    daemon_pid=$!
    pids+=("$daemon_pid") # stopped by the trap too if the run fails
    sock="$dir/sock"
    wait_socket "$sock"
}

# The current containerd (2.x, from Debian unstable, unpacked beside the
# system's 1.6, never installed over it) and the newest runc, built from
# source: both cached in $bench_cache between runs.
bench_cache=${GANTRY_BENCH_CACHE:-/var/tmp/gantry-bench}
containerd2="$bench_cache/containerd2/root/usr/bin/containerd"
runc_new="$bench_cache/runc-${GANTRY_BENCH_RUNC_VERSION:-1.5.1}"
ensure_containerd2() {
    [ -x "$containerd2" ] && return
    mkdir -p "$bench_cache/containerd2"
    (cd "$bench_cache/containerd2" && apt-get download -q -t unstable containerd && dpkg-deb -x containerd_*.deb root)
}
# runc needs a source tree of its newest release tag: GANTRY_BENCH_RUNC_SRC
# (a checkout, e.g. `git clone -b v1.5.1 https://github.com/opencontainers/runc`),
# built offline from its vendored modules with Go >= 1.25 and libseccomp-dev.
ensure_runc_new() {
    [ -x "$runc_new" ] && return
    local src=${GANTRY_BENCH_RUNC_SRC:?set GANTRY_BENCH_RUNC_SRC to a runc release checkout}
    (cd "$src" && PATH="${GANTRY_BENCH_GO_BIN:-/usr/lib/go-1.26/bin}:$PATH" GOFLAGS=-mod=vendor GOTOOLCHAIN=local GOPROXY=off \
        go build -trimpath -tags seccomp -o "$runc_new" .)
}

# start_containerd2 DIR [SANDBOX_IMAGE]: containerd 2.x (config version 3,
# registry through a hosts.toml as 2.x wants it, runc from ensure_runc_new,
# SANDBOX_IMAGE as its pause image); sets $sock and $daemon_pid.
start_containerd2() {
    local dir=$1 sandbox_image=${2:-}
    mkdir -p "$dir/certs.d/$registry"
    printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
        "$registry" "$registry" >"$dir/certs.d/$registry/hosts.toml"
    {
        echo 'version = 3'
        echo "root = \"$dir/root\""
        echo "state = \"$run_state/$(basename "$dir")\""
        echo '[grpc]'
        echo "  address = \"$dir/sock\""
        echo '[plugins."io.containerd.cri.v1.images".registry]'
        echo "  config_path = \"$dir/certs.d\""
        echo '[plugins."io.containerd.cri.v1.runtime"]'
        echo '  restrict_oom_score_adj = true'
        echo '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]'
        echo "  BinaryName = \"$runc_new\""
        if [ -n "$sandbox_image" ]; then
            echo '[plugins."io.containerd.cri.v1.images".pinned_images]'
            echo "  sandbox = \"$sandbox_image\""
        fi
    } >"$dir/config.toml"
    PATH="$(dirname "$containerd2"):$PATH" "$containerd2" --config "$dir/config.toml" --log-level "${GANTRY_BENCH_LOG:-warn}" 2>"$dir/log" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    sock="$dir/sock"
    wait_socket "$sock"
}

# start_containerd DIR [SANDBOX_IMAGE]: sets $sock and $daemon_pid.
start_containerd() {
    local dir=$1 sandbox_image=${2:-}
    mkdir -p "$dir"
    {
        echo 'version = 2'
        echo "root = \"$dir/root\""
        echo "state = \"$run_state/$(basename "$dir")\""
        echo '[grpc]'
        echo "  address = \"$dir/sock\""
        echo '[plugins."io.containerd.grpc.v1.cri"]'
        # These machines lack CAP_SYS_RESOURCE: an oom_score_adj below the
        # daemon's own is refused, and runc's init dies without this.
        echo '  restrict_oom_score_adj = true'
        [ -z "$sandbox_image" ] || echo "  sandbox_image = \"$sandbox_image\""
        echo "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"$registry\"]"
        echo "  endpoint = [\"http://$registry\"]"
    } >"$dir/config.toml"
    containerd --config "$dir/config.toml" --log-level "${GANTRY_BENCH_LOG:-warn}" 2>"$dir/log" &
    daemon_pid=$!
    pids+=("$daemon_pid") # stopped by the trap too if the run fails
    sock="$dir/sock"
    wait_socket "$sock"
}

# stop_daemon DIR: stops $daemon_pid and removes DIR and its state (and
# their mounts).
stop_daemon() {
    kill "$daemon_pid"
    wait "$daemon_pid" || true
    unmount_below "$1"
    unmount_below "$run_state/$(basename "$1")"
    rm -rf "$1" "${run_state:?}/$(basename "$1")"
}

# prepare_pod_images: pushes the fixture images and a pause stand-in for
# containerd (busybox sleeping; no pause image can be pulled here); sets
# $busybox and $pause.
prepare_pod_images() {
    "$bench_repo/tests/fixtures/build-images.sh" "$registry" "$work/fixtures" >/dev/null
    busybox="$registry/gantry/busybox:latest"
    skopeo copy -q --src-tls-verify=false "docker://$busybox" "oci:$work/pause:pause"
    umoci config --image "$work/pause:pause" --config.entrypoint /bin/sleep --config.cmd 2147483647
    skopeo copy -q --dest-tls-verify=false "oci:$work/pause:pause" "docker://$registry/bench/pause:1"
    pause="$registry/bench/pause:1"
}

# pod_bench_setup: what the pod benchmarks against containerd 2.x start
# with: containerd 2.x and the newest runc at hand, the registry, the images.
pod_bench_setup() {
    ensure_containerd2
    ensure_runc_new
    start_registry
    prepare_pod_images
}

# hold_start NAME READY OUT ERR CMD...: runs CMD in the background with its
# stdin from a fifo that fd 3 holds open (cri-bench keeps the pods it made
# until its stdin closes), stdout appended to OUT and stderr to ERR, and
# waits until the file READY is not empty. hold_release ends it.
hold_start() {
    local fifo="$work/$1" ready=$2 out=$3 err=$4
    shift 4
    mkfifo "$fifo"
    "$@" <"$fifo" >>"$out" 2>>"$err" &
    held_pid=$!
    exec 3>"$fifo"
    until [ -s "$ready" ]; do sleep 0.1; done
}
hold_release() {
    exec 3>&-
    wait "$held_pid"
}
