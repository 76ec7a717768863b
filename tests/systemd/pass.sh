#!/bin/sh
# Run by gantry-systemd-pass.service in the systemd test node: the pass
# between the markers tests/systemd/run.sh reads off the serial console,
# and systemd's journal after a failure.
echo "@@node $(uname -r) systemd $(systemctl --version | head -1 | cut -d' ' -f2) on $(stat -fc %T /sys/fs/cgroup), controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "@@begin"
/opt/gantry/systemd_pass /opt/gantry/busybox.tar 2>&1
rc=$?
# What systemd warned about Gantry's units (OOM kills are expected), for a look.
journalctl -b -p warning --no-pager -q _PID=1 | grep -F gantry- | grep -v "killed by the OOM killer" |
    sed -n '1,20s/^/# systemd warned: /p'
if [ "$rc" -ne 0 ]; then
    echo "# systemd's journal (tail):"
    journalctl -b --no-pager -q -n 60 | sed 's/^/#   /'
fi
echo "@@end $rc"
