#!/usr/bin/env bash
# Gantry's test command: installs what a fresh Debian machine lacks, checks
# formatting and lints, builds, starts two local registries (plain and with
# basic auth) on random 127.0.0.1 ports, builds the fixture images into them,
# and runs every unit and integration test. Needs root (overlayfs, mknod,
# trusted.* xattrs). Cleans up after itself, also on failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh must run as root (overlay mounts, device nodes, trusted xattrs)" >&2
    exit 1
fi

packages=(gcc libc6-dev docker-registry skopeo umoci busybox-static containernetworking-plugins iptables iproute2 apache2-utils jq zstd python3 python3-venv curl openssl systemd runc crun mmdebstrap e2fsprogs binutils)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A gRPC C-core client for tests/tests/grpc_clients.rs: grpcio from PyPI, a
# release that sends the socket path as :authority (1.57 and later; Debian's
# 1.51 sends localhost), in a venv kept between runs.
grpcio_version=1.85.1
pyenv_dir=/var/tmp/gantry-test-grpcio-$grpcio_version
if [ ! -x "$pyenv_dir/bin/python" ] || ! "$pyenv_dir/bin/python" -c "import grpc, grpc_tools, prometheus_client, kubernetes_validate" 2>/dev/null; then
    echo "== installing grpcio $grpcio_version into $pyenv_dir"
    rm -rf "$pyenv_dir"
    python3 -m venv "$pyenv_dir"
    "$pyenv_dir/bin/pip" install -q --disable-pip-version-check "grpcio==$grpcio_version" "grpcio-tools==$grpcio_version" "prometheus-client==0.23.1" "kubernetes-validate==1.37.0"
fi
export GANTRY_TEST_PYTHON="$pyenv_dir/bin/python"

# criu for tests/tests/checkpoint.rs. Bookworm's criu 3.17 cannot dump on
# recent kernels (its `criu check` fails on the vdso of 6.18), so Debian
# unstable's criu runs instead, with unstable's libraries and dynamic loader:
# criu's package and the closure of its dependencies are unpacked into a
# directory kept between runs (one per criu version), never installed over
# the system's libc, and a wrapper runs criu through that loader.
apt_unstable=()
if ! apt-cache madison criu 2>/dev/null | grep -q ' unstable/'; then
    # This machine's apt does not know unstable: a private apt state for it
    # (the machine's sources stay as they are), on the mirror they use.
    unstable_apt=/var/tmp/gantry-test-apt-unstable
    apt_unstable=(-o "Dir::Etc::SourceList=$unstable_apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$unstable_apt/lists" -o "Dir::Cache=$unstable_apt/cache"
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null)
    if [ ! -d "$unstable_apt/lists" ]; then
        mirror=$(grep -rhoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 || true)
        mkdir -p "$unstable_apt/lists.tmp/partial" "$unstable_apt/cache/archives/partial"
        echo "deb ${mirror:-http://deb.debian.org/debian} unstable main" >"$unstable_apt/sources.list"
        apt-get "${apt_unstable[@]}" -o "Dir::State::Lists=$unstable_apt/lists.tmp" update -qq
        mv "$unstable_apt/lists.tmp" "$unstable_apt/lists"
    fi
fi
criu_version=$(apt-cache "${apt_unstable[@]}" madison criu | awk -F' *[|] *' '$3 ~ / unstable\// {print $2; exit}')
if [ -z "$criu_version" ]; then
    echo "Debian unstable offers no criu" >&2
    exit 1
fi
criu_dir=/var/tmp/gantry-test-criu-$criu_version
if ! "$criu_dir/criu" --version >/dev/null 2>&1; then
    echo "== unpacking Debian unstable's criu $criu_version into $criu_dir"
    rm -rf "$criu_dir" "$criu_dir.tmp"
    mkdir -p "$criu_dir.tmp/debs"
    # criu and the closure of its Depends and Pre-Depends (first alternatives).
    todo=(criu)
    seen=" "
    while [ ${#todo[@]} -gt 0 ]; do
        p=${todo[0]}
        todo=("${todo[@]:1}")
        case "$seen" in *" $p "*) continue ;; esac
        seen+="$p "
        (cd "$criu_dir.tmp/debs" && apt-get "${apt_unstable[@]}" download -qq -t unstable "$p" 2>&1 | { grep -v unsandboxed || true; })
        deb=$(ls "$criu_dir.tmp/debs/${p}_"*.deb)
        dpkg-deb -x "$deb" "$criu_dir.tmp"
        for field in Pre-Depends Depends; do
            for dep in $(dpkg-deb -f "$deb" "$field" | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/[[:space:]]//g'); do
                todo+=("$dep")
            done
        done
    done
    rm -rf "$criu_dir.tmp/debs"
    printf '#!/bin/sh\n# Debian unstable'\''s criu on its own libc (see tests/run.sh).\nexec %s --library-path %s %s "$@"\n' \
        "$criu_dir/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
        "$criu_dir/usr/lib/x86_64-linux-gnu:$criu_dir/lib/x86_64-linux-gnu" \
        "$criu_dir/usr/sbin/criu" >"$criu_dir.tmp/criu"
    chmod 755 "$criu_dir.tmp/criu"
    mv "$criu_dir.tmp" "$criu_dir"
fi
if ! "$criu_dir/criu" check; then
    echo "criu $criu_version ($criu_dir) fails its checks on this kernel" >&2
    exit 1
fi
export GANTRY_TEST_CRIU="$criu_dir/criu"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --all-targets --quiet

work="$(mktemp -d /tmp/gantry-ci.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Never let rm walk into a mount a failed test left.
    { grep -o "$work/[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

source "$here/node/host.sh" # free_port

# start_registry NAME [htpasswd-file] [tls-dir]: sets $started to HOST:PORT.
# Not run in a subshell, so that its pid reaches the cleanup trap.
start_registry() {
    local name=$1 htpasswd=${2:-} tls=${3:-} port dir scheme=http
    port=$(free_port)
    dir="$work/$name"
    mkdir -p "$dir/storage"
    {
        echo "version: 0.1"
        echo "log: { level: warn, accesslog: { disabled: true } }"
        echo "storage: { filesystem: { rootdirectory: $dir/storage }, delete: { enabled: true } }"
        if [ -z "$tls" ]; then
            echo "http: { addr: 127.0.0.1:$port }"
        fi
        if [ -n "$htpasswd" ]; then
            echo "auth: { htpasswd: { realm: gantry-test, path: $htpasswd } }"
        fi
        if [ -n "$tls" ]; then
            echo "http: { addr: 127.0.0.1:$port, tls: { certificate: $tls/cert.pem, key: $tls/key.pem } }"
        fi
    } >"$dir/config.yml"
    [ -z "$tls" ] || scheme=https
    /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        if curl -sk -o /dev/null "$scheme://127.0.0.1:$port/v2/"; then
            started="127.0.0.1:$port"
            return
        fi
        sleep 0.1
    done
    echo "registry $name did not start:" >&2
    cat "$dir/log" >&2
    return 1
}

echo "== starting registries"
start_registry plain
registry=$started
auth_user=gantry auth_password="secret-$RANDOM"
htpasswd -Bbc "$work/htpasswd" "$auth_user" "$auth_password" 2>/dev/null
start_registry auth "$work/htpasswd"
auth_registry=$started
mkdir -p "$work/tls"
# A throwaway CA and a server certificate it signs (rustls refuses a
# self-signed CA certificate used as the server's own).
(
    cd "$work/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=gantry-test-ca -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out server.csr
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem
) >/dev/null 2>&1
start_registry tls "" "$work/tls"
tls_registry=$started
echo "plain registry $registry, basic-auth registry $auth_registry, TLS registry $tls_registry"

echo "== building fixture images"
"$here/fixtures/build-images.sh" "$registry" "$work/fixtures"
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --dest-creds "$auth_user:$auth_password" \
    "docker://$registry/gantry/busybox:latest" "docker://$auth_registry/gantry/busybox:latest"
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
    "docker://$registry/gantry/busybox:latest" "docker://$tls_registry/gantry/busybox:latest"

export GANTRY_TEST_REGISTRY="$registry"
export GANTRY_TEST_REGISTRY_STORAGE="$work/plain/storage"
export GANTRY_TEST_AUTH_REGISTRY="$auth_registry"
export GANTRY_TEST_AUTH_USER="$auth_user"
export GANTRY_TEST_AUTH_PASSWORD="$auth_password"
export GANTRY_TEST_TLS_REGISTRY="$tls_registry"
export GANTRY_TEST_TLS_CA="$work/tls/ca.pem"

export RUST_BACKTRACE=0
# The tests' temp roots live below $work, so the leftover check below sees
# only this run's mounts, not those of another run on the same machine.
export TMPDIR="$work/tmp"
mkdir -p "$TMPDIR"
echo "== cargo test"
cargo test --workspace --quiet -- --test-threads="${GANTRY_TEST_THREADS:-4}"

leftover=$(grep -c "$work" /proc/self/mountinfo || true)
if [ "$leftover" -gt 0 ]; then
    echo "tests left $leftover mounts behind" >&2
    exit 1
fi
echo "== cgroup v2 pass"
bash "$here/cgroup2/run.sh"
echo "== systemd pass"
bash "$here/systemd/run.sh"
echo "== all tests passed"
