//! The container's cgroup (cgroupfs driver, through cgroups-rs): created at
//! the spec's `cgroupsPath` in whatever layout the host has (v1 hierarchies,
//! a v2 unified tree, or the hybrid these machines run), limited by the
//! spec's resources, and asked afterwards whether the OOM killer struck.
//! Hugepage limits go wherever the hugetlb controller is (`hugetlb.rs`): in
//! the hybrid layout that is a second cgroup2 tree the container joins too.

use std::path::{Component, Path, PathBuf};

use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{Cgroup, CgroupPid, MaxValue};
use oci_spec::runtime::{LinuxDeviceType, Spec};

use crate::hugetlb::Hugetlb;

pub struct ContainerCgroup {
    cgroup: Cgroup,
    path: PathBuf,
    /// `path` without its leading `/`.
    rel: PathBuf,
    /// Where the hugetlb controller is, if anywhere.
    hugetlb: Option<Hugetlb>,
    /// Ancestors that did not exist before create, deepest first: removed
    /// with the cgroup when empty, so a failed call leaves none behind.
    made_ancestors: Vec<PathBuf>,
    /// A systemd scope unit's cgroup (`SLICE:PREFIX:NAME`): systemd makes
    /// and removes it; the shim only writes its limits, once it exists.
    systemd: bool,
    /// The spec's limits, until `activate` writes them (systemd scopes).
    pending: Option<oci_spec::runtime::LinuxResources>,
}

/// `cgroupsPath` relative to a hierarchy's root, cleaned lexically as an
/// absolute path (Go's `filepath.Clean("/" + p)`, as runc): `..` stops at
/// the root, so the cgroup can never be outside the hierarchy.
pub fn confine(path: &Path) -> PathBuf {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::ParentDir => {
                rel.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    rel
}

/// Moves `pid` into the existing cgroup the spec names (an exec joining
/// the cgroup of its container, whose init is `init_pid`); nothing to do
/// when the spec names none.
pub fn join(spec: &Spec, pid: u32, init_pid: i32) -> Result<(), String> {
    let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else { return Ok(()) };
    let rel = match gantry_proto::systemd_cgroup::parse(&path.to_string_lossy()) {
        // A systemd `SLICE:PREFIX:NAME` names a scope unit, not a cgroup
        // path: the scope's cgroup is the slice's path plus the unit.
        Some(scope) => {
            let scope_path = scope.cgroup_path().map_err(|e| format!("cgroupsPath {}: {e}", path.display()))?;
            let init = std::fs::read_to_string(format!("/proc/{init_pid}/cgroup")).unwrap_or_default();
            confine(Path::new(&exec_cgroup_in_scope(&scope_path, &init)))
        }
        None => confine(&path),
    };
    let cgroup = Cgroup::load(crate::cgroup_mounts::hierarchy(), rel.to_string_lossy().as_ref());
    if !cgroup.exists() {
        return Err(format!("the container's cgroup {} is gone", path.display()));
    }
    cgroup
        .add_task_by_tgid(CgroupPid::from(pid as u64))
        .map_err(|e| format!("joining cgroup {}: {e}", path.display()))?;
    match Hugetlb::locate() {
        Some(h) if h.separate && h.dir(&rel).is_dir() => h.add(&rel, pid),
        _ => Ok(()),
    }
}

/// The `oom_kill` count of a cgroup2 `memory.events`.
pub fn oom_kills(memory_events: &str) -> u64 {
    memory_events.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// The cgroup an exec joins in a systemd scope (`scope_path`): the one the
/// container's init is in (`init_cgroup`, its `/proc/PID/cgroup`) when that
/// is the scope or below it, the scope otherwise. runc keeps the container
/// in the scope itself; crun (its `run.oci.systemd.subgroup`) in a
/// `container` child, and a scope whose child has controllers enabled takes
/// no process (cgroup v2's no-internal-process rule).
fn exec_cgroup_in_scope(scope_path: &str, init_cgroup: &str) -> String {
    let own = init_cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(str::trim);
    match own {
        Some(own) if own == scope_path || own.strip_prefix(scope_path).is_some_and(|rest| rest.starts_with('/')) => {
            own.to_string()
        }
        _ => scope_path.to_string(),
    }
}

impl ContainerCgroup {
    /// Creates the cgroup the spec names and applies its limits; `None` when
    /// the spec names none.
    pub fn create(spec: &Spec) -> Result<Option<Self>, String> {
        let Some(linux) = spec.linux() else { return Ok(None) };
        let Some(path) = linux.cgroups_path().clone() else { return Ok(None) };
        if let Some(scope) = gantry_proto::systemd_cgroup::parse(&path.to_string_lossy()) {
            // The scope exists only once systemd has a process for it.
            let fs_path = scope.cgroup_path().map_err(|e| format!("cgroupsPath {}: {e}", path.display()))?;
            let rel = confine(Path::new(&fs_path));
            let cgroup = Cgroup::load(crate::cgroup_mounts::hierarchy(), rel.to_string_lossy().as_ref());
            return Ok(Some(ContainerCgroup {
                cgroup,
                path: fs_path.into(),
                rel,
                hugetlb: None,
                made_ancestors: vec![],
                systemd: true,
                pending: linux.resources().clone(),
            }));
        }
        let rel = confine(&path);
        if rel.as_os_str().is_empty() {
            return Err(format!("cgroupsPath {} names a hierarchy's root", path.display()));
        }
        // A missing ancestor another shim removes at that very moment makes
        // a create fail: try again.
        let mut tries = 0;
        let cg = loop {
            tries += 1;
            match Self::make(&path, &rel) {
                Ok(cg) => break cg,
                Err(e) if tries >= 3 => return Err(e),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        if let Some(res) = linux.resources() {
            if let Err(e) = cg.apply(res) {
                cg.delete();
                return Err(e);
            }
        }
        Ok(Some(cg))
    }

    /// Creates the cgroup in every hierarchy (and the separate hugetlb
    /// tree); on failure removes what it made.
    fn make(path: &Path, rel: &Path) -> Result<Self, String> {
        let cgroup = Cgroup::load(crate::cgroup_mounts::hierarchy(), rel.to_string_lossy().as_ref());
        let hugetlb = Hugetlb::locate();
        let leaves: Vec<PathBuf> = cgroup.subsystems().iter().map(|s| s.to_controller().path().to_path_buf()).collect();
        let hugetlb_leaf = hugetlb.as_ref().filter(|h| h.separate).map(|h| h.dir(rel));
        let depth = rel.components().count();
        let mut made_ancestors: Vec<PathBuf> = leaves
            .iter()
            .chain(hugetlb_leaf.as_ref())
            .flat_map(|leaf| leaf.ancestors().skip(1).take(depth - 1))
            .filter(|a| !a.exists())
            .map(Path::to_path_buf)
            .collect();
        made_ancestors.sort_by_key(|a| (std::cmp::Reverse(a.components().count()), a.clone()));
        made_ancestors.dedup();
        let cg = ContainerCgroup {
            cgroup,
            path: path.to_path_buf(),
            rel: rel.to_path_buf(),
            hugetlb,
            made_ancestors,
            systemd: false,
            pending: None,
        };
        let made = if cg.cgroup.v2() {
            // Not cgroups-rs's create: it enables every controller in every
            // ancestor, also in one holding processes, which makes that a
            // thread root nothing else can then join (see `make_v2`).
            make_v2(Path::new(cgroups_rs::hierarchies::UNIFIED_MOUNTPOINT), rel)
                .map_err(|e| format!("creating cgroup {}: {e}", path.display()))
        } else {
            cg.cgroup.create().map_err(|e| format!("creating cgroup {}: {e}", path.display()))
        };
        let made = made.and_then(|()| {
            // cgroups-rs only logs a v1 directory it could not make.
            match leaves.iter().find(|l| !l.is_dir()) {
                Some(l) => Err(format!("creating cgroup {}: {} was not made", path.display(), l.display())),
                None => Ok(()),
            }
        });
        let made = made.and_then(|()| cg.separate_hugetlb().map_or(Ok(()), |h| h.create(&cg.rel)));
        match made {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.delete();
                Err(e)
            }
        }
    }

    fn separate_hugetlb(&self) -> Option<&Hugetlb> {
        self.hugetlb.as_ref().filter(|h| h.separate)
    }

    pub fn apply(&self, res: &oci_spec::runtime::LinuxResources) -> Result<(), String> {
        let err = |what: &str, e: cgroups_rs::error::Error| format!("cgroup {}: {what}: {e}", self.path.display());
        if let (Some(mem), Some(ctl)) = (res.memory(), self.cgroup.controller_of::<MemController>()) {
            if mem.limit().is_some() || mem.swap().is_some() {
                self.require("memory", "the memory limit")?;
            }
            if let Some(limit) = mem.limit() {
                ctl.set_limit(limit).map_err(|e| err("memory limit", e))?;
            }
            if let Some(swap) = mem.swap() {
                if self.cgroup.v2() {
                    self.set_swap_v2(swap, mem.limit())?;
                } else {
                    // memsw needs swap accounting in the kernel; without it
                    // there is no swap to limit.
                    let _ = ctl.set_memswap_limit(swap);
                }
            }
        }
        if let Some(cpu) = res.cpu() {
            if let Some(ctl) = self.cgroup.controller_of::<CpuController>() {
                if let Some(shares) = cpu.shares() {
                    self.require("cpu", "the CPU shares")?;
                    // cgroup2 has cpu.weight (1..10000) instead, converted as runc does.
                    let value = if self.cgroup.v2() { cpu_weight(shares) } else { shares };
                    ctl.set_shares(value).map_err(|e| err("cpu shares", e))?;
                }
                if cpu.quota().is_some() || cpu.period().is_some() {
                    self.require("cpu", "the CPU quota")?;
                    ctl.set_cfs_quota_and_period(cpu.quota(), cpu.period()).map_err(|e| err("cpu quota", e))?;
                }
            }
            if let Some(ctl) = self.cgroup.controller_of::<CpuSetController>() {
                if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                    self.require("cpuset", "the cpuset")?;
                    ctl.set_cpus(cpus).map_err(|e| err("cpuset cpus", e))?;
                }
                if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                    self.require("cpuset", "the cpuset")?;
                    ctl.set_mems(mems).map_err(|e| err("cpuset mems", e))?;
                }
            }
        }
        let rules = res.devices().as_ref().filter(|r| !r.is_empty());
        if let (Some(rules), None) = (rules, self.cgroup.controller_of::<DevicesController>()) {
            // No v1 devices controller: an eBPF program on the container's
            // cgroup2 cgroup (pure v2, or a hybrid's unified tree).
            let dir = if self.cgroup.v2() {
                Some(PathBuf::from(cgroups_rs::hierarchies::UNIFIED_MOUNTPOINT).join(&self.rel))
            } else {
                self.hugetlb.as_ref().filter(|h| h.separate).map(|h| h.dir(&self.rel))
            };
            match dir {
                Some(dir) => crate::device_filter::apply(&dir, rules)
                    .map_err(|e| format!("cgroup {}: {e}", self.path.display()))?,
                None => {
                    return Err(format!(
                        "cgroup {}: no way to apply device rules: no devices controller and no cgroup2 cgroup",
                        self.path.display()
                    ))
                }
            }
        }
        if let (Some(rules), Some(ctl)) = (rules, self.cgroup.controller_of::<DevicesController>()) {
            // In order: a deny-all first, then what is allowed.
            for rule in rules {
                let kind = match rule.typ() {
                    Some(LinuxDeviceType::C) => DeviceType::Char,
                    Some(LinuxDeviceType::B) => DeviceType::Block,
                    _ => DeviceType::All,
                };
                let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
                let perms: Vec<DevicePermissions> = access
                    .chars()
                    .filter_map(|c| match c {
                        'r' => Some(DevicePermissions::Read),
                        'w' => Some(DevicePermissions::Write),
                        'm' => Some(DevicePermissions::MkNod),
                        _ => None,
                    })
                    .collect();
                let (major, minor) = (rule.major().unwrap_or(-1), rule.minor().unwrap_or(-1));
                let r = if rule.allow() {
                    ctl.allow_device(kind, major, minor, &perms)
                } else {
                    ctl.deny_device(kind, major, minor, &perms)
                };
                r.map_err(|e| err("device rule", e))?;
            }
        }
        if let (Some(pids), Some(ctl)) = (res.pids(), self.cgroup.controller_of::<PidController>()) {
            self.require("pids", "the pids limit")?;
            let max = if pids.limit() > 0 { MaxValue::Value(pids.limit()) } else { MaxValue::Max };
            ctl.set_pid_max(max).map_err(|e| err("pids limit", e))?;
        }
        if let Some(limits) = res.hugepage_limits().as_ref().filter(|l| !l.is_empty()) {
            let limits = limits
                .iter()
                .map(|l| match u64::try_from(l.limit()) {
                    Ok(limit) => Ok((l.page_size().clone(), limit)),
                    Err(_) => Err(format!("hugepage limit for page size {}: negative ({})", l.page_size(), l.limit())),
                })
                .collect::<Result<Vec<_>, String>>()?;
            crate::hugetlb::check(&limits, &crate::hugetlb::kernel_page_sizes(), self.hugetlb.is_some())?;
            if let Some(h) = &self.hugetlb {
                if h.v2 && !h.separate {
                    self.require("hugetlb", "the hugepage limits")?;
                }
                h.set_limits(&self.rel, &limits).map_err(|e| format!("cgroup {}: {e}", self.path.display()))?;
            }
        }
        if let Some(unified) = res.unified().as_ref().filter(|u| !u.is_empty()) {
            self.set_unified(unified)?;
        }
        Ok(())
    }

    /// The container's directory in the cgroup2 tree (pure v2 only).
    fn v2_dir(&self) -> PathBuf {
        PathBuf::from(cgroups_rs::hierarchies::UNIFIED_MOUNTPOINT).join(&self.rel)
    }

    /// On cgroup2, fails naming `controller` when it is not enabled for the
    /// container's cgroup (not in its parent's `cgroup.subtree_control`):
    /// `what` would otherwise be silently missing.
    fn require(&self, controller: &str, what: &str) -> Result<(), String> {
        if !self.cgroup.v2() {
            return Ok(());
        }
        let dir = self.v2_dir();
        let have = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        if have.split_whitespace().any(|c| c == controller) {
            return Ok(());
        }
        let parent = dir.parent().unwrap_or(&dir);
        let why = if !read_list(&parent.join("cgroup.controllers")).iter().any(|c| c == controller) {
            "its parent does not have the controller either".to_string()
        } else if has_processes(parent) {
            format!(
                "{} holds processes, and cgroup v2 lets no cgroup with processes enable controllers for its children",
                parent.display()
            )
        } else {
            "enabling it failed".to_string()
        };
        Err(format!(
            "cgroup {}: cannot set {what}: the {controller} controller is not enabled for it ({} lacks {controller}: {why})",
            self.path.display(),
            parent.join("cgroup.subtree_control").display()
        ))
    }

    /// memory.swap.max: the OCI (and cgroup v1) swap figure is memory plus
    /// swap, cgroup2's is swap alone (runc's conversion). No file, no swap
    /// accounting: nothing to limit, as on v1.
    fn set_swap_v2(&self, memsw: i64, limit: Option<i64>) -> Result<(), String> {
        let file = self.v2_dir().join("memory.swap.max");
        if !file.exists() {
            return Ok(());
        }
        let limit = match limit {
            Some(l) => Some(l),
            None => std::fs::read_to_string(self.v2_dir().join("memory.max"))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok()),
        };
        let value = swap_v2(memsw, limit).map_err(|e| format!("cgroup {}: {e}", self.path.display()))?;
        std::fs::write(&file, &value)
            .map_err(|e| format!("cgroup {}: writing {value} to {}: {e}", self.path.display(), file.display()))
    }

    /// The spec's `unified` map (CRI `unified`): cgroup2 files of the
    /// container's own cgroup, by name, as runc writes them. Names are
    /// plain file names (no `/`), so nothing outside the cgroup is touched.
    fn set_unified(&self, unified: &std::collections::HashMap<String, String>) -> Result<(), String> {
        if !self.cgroup.v2() {
            return Err(format!(
                "cgroup {}: unified resources ({}) need a cgroup v2 host",
                self.path.display(),
                unified.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let mut keys: Vec<&String> = unified.keys().collect();
        keys.sort();
        for key in keys {
            let Some((controller, _)) = key.split_once('.') else {
                return Err(format!(
                    "cgroup {}: unified resource {key:?}: not a cgroup file name",
                    self.path.display()
                ));
            };
            if key.contains('/') || key.contains('\0') || controller.is_empty() || key.ends_with('.') {
                return Err(format!(
                    "cgroup {}: unified resource {key:?}: not a cgroup file name",
                    self.path.display()
                ));
            }
            if controller != "cgroup" {
                self.require(controller, &format!("unified resource {key}"))?;
            }
            let file = self.v2_dir().join(key);
            if !file.is_file() {
                return Err(format!(
                    "cgroup {}: unified resource {key}: no file {}",
                    self.path.display(),
                    file.display()
                ));
            }
            std::fs::write(&file, &unified[key]).map_err(|e| {
                format!("cgroup {}: unified resource {key}={:?}: {e}", self.path.display(), unified[key])
            })?;
        }
        Ok(())
    }

    pub fn is_systemd(&self) -> bool {
        self.systemd
    }

    /// Writes the limits kept for a cgroup that did not exist at create (a
    /// systemd scope, made since); nothing to do otherwise.
    pub fn activate(&mut self) -> Result<(), String> {
        let Some(res) = self.pending.take() else { return Ok(()) };
        if !self.cgroup.exists() {
            return Err(format!("the scope's cgroup {} does not exist", self.path.display()));
        }
        self.apply(&res)
    }

    pub fn add(&self, pid: u32) -> Result<(), String> {
        // A scope's processes are put there by systemd (PIDs=).
        if self.systemd {
            return Ok(());
        }
        self.cgroup
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| format!("moving {pid} into cgroup {}: {e}", self.path.display()))?;
        match self.hugetlb.as_ref().filter(|h| h.separate) {
            Some(h) => h.add(&self.rel, pid),
            None => Ok(()),
        }
    }

    /// The cgroup2 `memory.events` file, watched for OOM kills while the
    /// container runs (a systemd scope's cgroup is gone soon after its last
    /// process, possibly before the shim reads it at the exit).
    pub fn memory_events(&self) -> Option<PathBuf> {
        self.cgroup.v2().then(|| PathBuf::from("/sys/fs/cgroup").join(&self.rel).join("memory.events"))
    }

    /// The OOM kills counted in the nearest ancestor that still has a
    /// `memory.events` (cgroup v2 counts its descendants' events there too),
    /// with its path. Under systemd the scope's own cgroup can be gone at
    /// the exit (systemd removes an emptied scope at once, possibly before
    /// the shim has read the kill, whose inotify notice the kernel delays
    /// by up to 10 ms): what the pod slice counted is the evidence left.
    pub fn ancestor_oom_kills(&self) -> Option<(PathBuf, u64)> {
        if !self.systemd || !self.cgroup.v2() {
            return None;
        }
        let root = Path::new("/sys/fs/cgroup");
        self.rel.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).find_map(|a| {
            let file = root.join(a).join("memory.events");
            let kills = oom_kills(&std::fs::read_to_string(&file).ok()?);
            Some((file, kills))
        })
    }

    /// Whether the kernel's OOM killer killed something in this cgroup.
    pub fn oom_killed(&self) -> bool {
        if self.cgroup.v2() {
            let events = std::fs::read_to_string(PathBuf::from("/sys/fs/cgroup").join(&self.rel).join("memory.events"))
                .unwrap_or_default();
            return events
                .lines()
                .any(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0) > 0);
        }
        self.cgroup.controller_of::<MemController>().is_some_and(|m| m.memory_stat().oom_control.oom_kill > 0)
    }

    /// SIGKILLs every process in the cgroup: cgroup.kill on v2, one by one
    /// on v1 (which has no cgroup.kill; cgroups-rs refuses it there).
    pub fn kill_all(&self) {
        if self.cgroup.v2() && self.cgroup.kill().is_ok() {
            return;
        }
        for p in self.cgroup.procs() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Kills whatever is left in the cgroup and removes it. A cgroup can only
    /// be removed once its last process is gone, so wait (briefly) for that.
    pub fn delete(&self) {
        for _ in 0..200 {
            if self.cgroup.procs().is_empty() {
                break;
            }
            self.kill_all();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // systemd removes an emptied scope's cgroup itself.
        if self.systemd {
            return;
        }
        if let Err(e) = self.cgroup.delete() {
            eprintln!("gantry-shim: removing cgroup {}: {e}", self.path.display());
        }
        if let Some(h) = self.separate_hugetlb() {
            if let Err(e) = h.remove(&self.rel) {
                eprintln!("gantry-shim: {e}");
            }
        }
        // Only empty ones go: the kernel refuses to remove a cgroup in use.
        for dir in &self.made_ancestors {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// runc's conversion of CPU shares (2..262144) to cgroup2's cpu.weight
/// (1..10000): `1 + ((shares - 2) * 9999) / 262142`.
pub fn cpu_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// memory.swap.max from the OCI memory+swap figure and the memory limit
/// (runc's ConvertMemorySwapToCgroupV2Value): -1 is "max"; without a known
/// memory limit the figure cannot be split.
pub fn swap_v2(memsw: i64, limit: Option<i64>) -> Result<String, String> {
    if memsw == -1 {
        return Ok("max".into());
    }
    match limit {
        Some(l) if l > 0 => {
            if memsw < l {
                return Err(format!("memory+swap limit ({memsw}) is below the memory limit ({l})"));
            }
            Ok((memsw - l).to_string())
        }
        _ => Err(format!("a memory+swap limit ({memsw}) needs a memory limit")),
    }
}

fn read_list(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap_or_default().split_whitespace().map(String::from).collect()
}

fn has_processes(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
}

/// Makes the cgroup2 directories of `rel` below `root`, enabling in each
/// ancestor (from the root down) the controllers it has. Never in an
/// ancestor that holds processes (the root aside): cgroup v2's
/// no-internal-process rule refuses the domain controllers there, and the
/// threaded ones (cpu, cpuset, pids) would turn it into a thread root whose
/// children no process can join. A controller left out is reported by
/// the limit that needs it (`ContainerCgroup::require`).
pub fn make_v2(root: &Path, rel: &Path) -> Result<(), String> {
    let mut dir = root.to_path_buf();
    for part in rel.components() {
        if dir == root || !has_processes(&dir) {
            let enabled = read_list(&dir.join("cgroup.subtree_control"));
            for c in read_list(&dir.join("cgroup.controllers")) {
                if !enabled.contains(&c) {
                    // A failure shows as the controller missing below.
                    let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
        }
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shares_become_a_cgroup2_weight_as_runc_converts_them() {
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(512), 20);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(cpu_weight(2048), 79);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cpu_weight(1_000_000), 10_000, "clamped");
    }

    #[test]
    fn memory_plus_swap_becomes_swap_alone() {
        assert_eq!(swap_v2(96 << 20, Some(64 << 20)).as_deref(), Ok("33554432"));
        assert_eq!(swap_v2(64 << 20, Some(64 << 20)).as_deref(), Ok("0"));
        assert_eq!(swap_v2(-1, None).as_deref(), Ok("max"));
        assert!(swap_v2(32 << 20, Some(64 << 20)).is_err());
        assert!(swap_v2(32 << 20, None).is_err());
    }

    #[test]
    fn oom_kills_are_read_from_memory_events() {
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"), 1);
        assert_eq!(oom_kills("low 0\nmax 0\noom 0\noom_kill 0\n"), 0);
        assert_eq!(oom_kills(""), 0);
    }

    #[test]
    fn an_exec_joins_the_cgroup_of_its_container_inside_the_scope() {
        let scope = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/gantry-c.scope";
        assert_eq!(exec_cgroup_in_scope(scope, &format!("0::{scope}\n")), scope, "runc: the scope itself");
        let crun = format!("{scope}/container");
        assert_eq!(exec_cgroup_in_scope(scope, &format!("0::{crun}\n")), crun, "crun: its subgroup");
        assert_eq!(exec_cgroup_in_scope(scope, "0::/system.slice/other.service\n"), scope, "never outside the scope");
        assert_eq!(exec_cgroup_in_scope(scope, &format!("0::{scope}x/y\n")), scope, "a sibling is outside");
        assert_eq!(exec_cgroup_in_scope(scope, ""), scope, "init gone");
    }

    #[test]
    fn cgroups_path_is_confined_below_the_root() {
        for p in ["../../../../../../tmp/somename", "/../../../../tmp/somename", "a/../../../../../../tmp/somename"] {
            assert_eq!(confine(Path::new(p)), PathBuf::from("tmp/somename"), "{p}");
        }
        assert_eq!(confine(Path::new("/kubepods//burstable/./pod1/")), PathBuf::from("kubepods/burstable/pod1"));
        assert_eq!(confine(Path::new("/a/b/../c")), PathBuf::from("a/c"));
        assert_eq!(confine(Path::new("/..")), PathBuf::new());
    }
}
