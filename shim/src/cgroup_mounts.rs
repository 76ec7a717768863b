//! Where the cgroup hierarchies are mounted, and the shim's one mountinfo
//! line parser. Reading /proc/self/mountinfo costs milliseconds once a node
//! runs hundreds of containers (every rootfs overlay prints its layer paths
//! there), so gantryd reads it once and hands the cgroup lines to each shim
//! and exec helper in the environment ([`gantry_proto::CGROUP_MOUNTINFO_ENV`]).
//! Run by hand, the shim reads the file itself.

use std::path::{Path, PathBuf};

use cgroups_rs::blkio::BlkIoController;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuacct::CpuAcctController;
use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::devices::DevicesController;
use cgroups_rs::freezer::FreezerController;
use cgroups_rs::hugetlb::HugeTlbController;
use cgroups_rs::memory::MemController;
use cgroups_rs::net_cls::NetClsController;
use cgroups_rs::net_prio::NetPrioController;
use cgroups_rs::perf_event::PerfEventController;
use cgroups_rs::pid::PidController;
use cgroups_rs::rdma::RdmaController;
use cgroups_rs::systemd::SystemdController;
use cgroups_rs::{Cgroup, Controllers, Hierarchy, Subsystem};

/// The cgroup and cgroup2 lines of mountinfo: gantryd's, or our own.
pub fn mountinfo() -> String {
    match std::env::var(gantry_proto::CGROUP_MOUNTINFO_ENV) {
        Ok(lines) if !lines.is_empty() => lines,
        _ => std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    }
}

/// Each mount of `mountinfo`: its filesystem type, mount point and super
/// options.
pub fn mounts(mountinfo: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    mountinfo.lines().filter_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        Some((fstype, mount_point, r.nth(1).unwrap_or("")))
    })
}

/// cgroups-rs's hierarchy for this host: its own detection on a cgroup2
/// host (a statfs), else the v1 hierarchies from [`mountinfo`].
pub fn hierarchy() -> Box<dyn Hierarchy> {
    if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
        return cgroups_rs::hierarchies::auto();
    }
    Box::new(KnownV1::parse(&mountinfo()))
}

/// cgroups-rs's v1 hierarchy over mounts known in advance.
#[derive(Debug, Clone, Default)]
pub struct KnownV1 {
    /// Each v1 mount: its super options (controllers, `name=systemd`) and
    /// its mount point.
    mounts: Vec<(Vec<String>, PathBuf)>,
}

impl KnownV1 {
    pub fn parse(mountinfo: &str) -> Self {
        let mounts = mounts(mountinfo)
            .filter(|(fstype, ..)| *fstype == "cgroup")
            .map(|(_, mount_point, opts)| (opts.split(',').map(str::to_string).collect(), PathBuf::from(mount_point)))
            .collect();
        KnownV1 { mounts }
    }

    fn mount_point(&self, c: Controllers) -> Option<PathBuf> {
        let name = c.to_string();
        self.mounts.iter().find(|(opts, _)| opts.contains(&name)).map(|(_, p)| p.clone())
    }
}

impl Hierarchy for KnownV1 {
    fn v2(&self) -> bool {
        false
    }

    /// In cgroups-rs's order (blkio before memory, for writeback).
    fn subsystems(&self) -> Vec<Subsystem> {
        let m = |c| self.mount_point(c);
        let mut subs = vec![];
        if let Some(r) = m(Controllers::BlkIo) {
            subs.push(Subsystem::BlkIo(BlkIoController::new(r, false)));
        }
        if let Some(r) = m(Controllers::Mem) {
            subs.push(Subsystem::Mem(MemController::new(r, false)));
        }
        if let Some(r) = m(Controllers::Pids) {
            subs.push(Subsystem::Pid(PidController::new(r, false)));
        }
        if let Some(r) = m(Controllers::CpuSet) {
            subs.push(Subsystem::CpuSet(CpuSetController::new(r, false)));
        }
        if let Some(r) = m(Controllers::CpuAcct) {
            subs.push(Subsystem::CpuAcct(CpuAcctController::new(r)));
        }
        if let Some(r) = m(Controllers::Cpu) {
            subs.push(Subsystem::Cpu(CpuController::new(r, false)));
        }
        if let Some(r) = m(Controllers::Devices) {
            subs.push(Subsystem::Devices(DevicesController::new(r)));
        }
        if let Some(r) = m(Controllers::Freezer) {
            subs.push(Subsystem::Freezer(FreezerController::new(r, false)));
        }
        if let Some(r) = m(Controllers::NetCls) {
            subs.push(Subsystem::NetCls(NetClsController::new(r)));
        }
        if let Some(r) = m(Controllers::PerfEvent) {
            subs.push(Subsystem::PerfEvent(PerfEventController::new(r)));
        }
        if let Some(r) = m(Controllers::NetPrio) {
            subs.push(Subsystem::NetPrio(NetPrioController::new(r)));
        }
        if let Some(r) = m(Controllers::HugeTlb) {
            subs.push(Subsystem::HugeTlb(HugeTlbController::new(r, false)));
        }
        if let Some(r) = m(Controllers::Rdma) {
            subs.push(Subsystem::Rdma(RdmaController::new(r)));
        }
        if let Some(r) = m(Controllers::Systemd) {
            subs.push(Subsystem::Systemd(SystemdController::new(r, false)));
        }
        subs
    }

    fn root(&self) -> PathBuf {
        self.mounts
            .first()
            .and_then(|(_, p)| p.parent())
            .map_or_else(|| PathBuf::from("/sys/fs/cgroup"), Path::to_path_buf)
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        Cgroup::load(Box::new(self.clone()), parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_subsystems_as_cgroups_rs_finds() {
        let ours = KnownV1::parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        let theirs = cgroups_rs::hierarchies::auto();
        if theirs.v2() {
            return; // a cgroup2 host: cgroups-rs's own hierarchy is used there
        }
        let paths = |subs: Vec<Subsystem>| -> Vec<String> {
            subs.iter().map(|s| format!("{}:{}", s.controller_name(), s.to_controller().path().display())).collect()
        };
        assert_eq!(paths(ours.subsystems()), paths(theirs.subsystems()));
        assert_eq!(ours.root(), theirs.root());
    }
}
