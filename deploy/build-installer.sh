#!/usr/bin/env bash
# Builds the installer image deploy/daemonset.yaml runs, with Debian's umoci
# and skopeo (no Docker): busybox-static for the shell and tools, the release
# binaries (gantryd, gantry-shim, gantry), the systemd unit, the default
# config and deploy/installer/install.sh.
#
#   deploy/build-installer.sh [OUT_DIR]          OUT_DIR defaults to target/installer
#
# Environment: BIN_DIR (default target/release; run `cargo build --release`
# first), TAG (default the workspace version), BUSYBOX (default /bin/busybox).
# Writes OUT_DIR/oci (an OCI layout, tag TAG) and
# OUT_DIR/gantry-installer-TAG.tar (a docker-archive named
# gantry-installer:TAG). Push it to your registry, e.g.
#   skopeo copy oci:OUT_DIR/oci:TAG docker://registry.example.com/gantry-installer:TAG
# and set that image in the DaemonSets.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/target/installer}
bin=${BIN_DIR:-$repo/target/release}
busybox=${BUSYBOX:-/bin/busybox}
tag=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)}

die() { echo "build-installer.sh: $*" >&2; exit 1; }
for tool in umoci skopeo; do command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install $tool)"; done
[ -x "$busybox" ] || die "$busybox not found (apt-get install busybox-static)"
for f in gantryd gantry-shim gantry; do [ -x "$bin/$f" ] || die "$bin/$f not found: build the release first"; done
[ -n "$tag" ] || die "no TAG"

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
layout=$out/oci
rm -rf "$layout" "$out/gantry-installer-$tag.tar"

umoci() { command umoci --log error "$@"; }
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
root=$work/bundle/rootfs
mkdir -p "$root/bin" "$root/gantry" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in sh cp chmod mv rm rmdir mkdir cat cmp dirname basename nsenter echo test [; do
    ln -s busybox "$root/bin/$applet"
done
for f in gantryd gantry-shim gantry; do
    install -m 0755 "$bin/$f" "$root/gantry/$f"
    # Debug info is no use on a node (and makes a debug build's image huge).
    if command -v strip >/dev/null; then strip --strip-debug "$root/gantry/$f"; fi
done
install -m 0644 "$repo/deploy/gantryd.service" "$root/gantry/gantryd.service"
install -m 0644 "$repo/deploy/config.toml" "$root/gantry/config.toml"
install -m 0755 "$repo/deploy/installer/install.sh" "$root/gantry/install.sh"
echo "gantry $tag" >"$root/gantry/VERSION"
umoci repack --image "$layout:$tag" --history.created_by "gantry installer $tag" "$work/bundle"
umoci config --image "$layout:$tag" --architecture amd64 --os linux --author "gantry" \
    --config.env PATH=/bin --config.entrypoint /gantry/install.sh --config.cmd install
skopeo copy -q "oci:$layout:$tag" "docker-archive:$out/gantry-installer-$tag.tar:gantry-installer:$tag"
echo "$out/gantry-installer-$tag.tar (gantry-installer:$tag) and $layout:$tag"
