#!/bin/sh
# Gantry's node installer, run by deploy/daemonset.yaml (install) and
# deploy/uninstall-daemonset.yaml (uninstall) in a privileged container whose
# /host/... mounts are the node's directories:
#   /host/usr/local/bin        gantryd, gantry-shim, gantry
#   /host/etc/systemd/system   gantryd.service
#   /host/etc/gantry           config.toml (and config.d/)
#   /host/run/systemd          read only: tells whether systemd runs the node
# systemctl runs in the node's namespaces (hostPID: nsenter into pid 1);
# SYSTEMCTL overrides that command (the tests use a stand-in).
#
# install: binaries written beside their targets, then renamed over them (a
# running gantryd or shim keeps its old file); the unit replaced the same way
# (it belongs to the release: customise it with drop-ins in
# gantryd.service.d/); config.toml only when there is none; then
# daemon-reload, enable, restart. Containers keep running across the restart:
# their shims outlive gantryd. Nothing is written on a node without systemd.
# Pointing kubelet at the socket stays the operator's step (README).
#
# uninstall: gantryd stopped and disabled, binaries and unit removed,
# config.toml removed only if it is still the default. Switch kubelet back to
# its previous runtime first. /var/lib/gantry (images) stays.
set -eu

host=${HOST_ROOT:-/host}
payload=${PAYLOAD_DIR:-/gantry}
systemctl_cmd=${SYSTEMCTL:-nsenter -t 1 -m -u -i -n -p -- systemctl}
bin=$host/usr/local/bin
units=$host/etc/systemd/system
etc=$host/etc/gantry

say() { echo "gantry-installer: $*"; }
fail() { echo "gantry-installer: error: $*" >&2; exit 1; }

systemctl_host() {
    # shellcheck disable=SC2086 # the command is a word list on purpose
    $systemctl_cmd "$@" || fail "systemctl $* failed on the node"
}

require_systemd() {
    [ -d "$host/run/systemd/system" ] ||
        fail "the node does not run systemd ($host/run/systemd/system is missing): nothing was installed; install gantryd by hand (see README)"
}

# put SRC DEST MODE: DEST replaced by rename, never half-written.
put() {
    dir=$(dirname "$2")
    tmp="$dir/.$(basename "$2").gantry-new"
    cp "$1" "$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$2"
}

install_gantry() {
    require_systemd
    for f in gantryd gantry-shim gantry gantryd.service config.toml; do
        [ -f "$payload/$f" ] || fail "the installer image lacks $payload/$f"
    done
    [ -d "$bin" ] && [ -d "$units" ] || fail "$bin and $units must be mounted from the node"
    mkdir -p "$etc"
    # The shim first: a gantryd started meanwhile must find its shim.
    for f in gantry-shim gantryd gantry; do
        put "$payload/$f" "$bin/$f" 0755
    done
    put "$payload/gantryd.service" "$units/gantryd.service" 0644
    if [ -e "$etc/config.toml" ]; then
        say "keeping the node's $etc/config.toml"
    else
        put "$payload/config.toml" "$etc/config.toml" 0644
    fi
    systemctl_host daemon-reload
    systemctl_host enable gantryd.service
    systemctl_host restart gantryd.service
    say "installed $(cat "$payload/VERSION" 2>/dev/null || echo gantry); kubelet's containerRuntimeEndpoint: unix:///run/gantry/gantry.sock"
}

uninstall_gantry() {
    require_systemd
    if [ -e "$units/gantryd.service" ]; then
        systemctl_host disable --now gantryd.service
    fi
    rm -f "$bin/gantryd" "$bin/gantry-shim" "$bin/gantry" "$units/gantryd.service"
    if [ -e "$etc/config.toml" ] && cmp -s "$etc/config.toml" "$payload/config.toml"; then
        rm -f "$etc/config.toml"
        rmdir "$etc" 2>/dev/null || true
    elif [ -e "$etc/config.toml" ]; then
        say "keeping $etc/config.toml: it was changed on the node"
    fi
    systemctl_host daemon-reload
    say "uninstalled; /var/lib/gantry (images) is left in place"
}

case "${1:-}" in
    install) install_gantry ;;
    uninstall) uninstall_gantry ;;
    *) fail "usage: install.sh install|uninstall" ;;
esac
