//! Reading a container's usage from the cgroupfs (the shims create the
//! cgroups; gantryd only reads them). Works on whatever layout the host has:
//! v1 hierarchies, a v2 unified tree, or the hybrid these machines run
//! (v1 controllers plus a cgroup2 tree holding only hugetlb). Each figure is
//! read from the hierarchy that actually has its controller.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where each controller is mounted.
#[derive(Debug, Clone, Default)]
pub struct CgroupLayout {
    /// v1 controller name → mount point (e.g. "memory" → /sys/fs/cgroup/memory).
    v1: HashMap<String, PathBuf>,
    /// The cgroup2 mount and the controllers it has.
    unified: Option<(PathBuf, Vec<String>)>,
    /// The `cgroup`/`cgroup2` lines of mountinfo, for the shims.
    mount_lines: String,
}

/// One reading of a cgroup; `None` where the controller is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_nanos: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_rss: Option<u64>,
    pub memory_limit: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    pub processes: Option<u64>,
}

impl CgroupUsage {
    /// Sums readings (a pod's containers); a figure missing everywhere stays missing.
    pub fn add(&mut self, o: &CgroupUsage) {
        fn sum(a: &mut Option<u64>, b: Option<u64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0) + b);
            }
        }
        sum(&mut self.cpu_nanos, o.cpu_nanos);
        sum(&mut self.memory_usage, o.memory_usage);
        sum(&mut self.memory_working_set, o.memory_working_set);
        sum(&mut self.memory_rss, o.memory_rss);
        sum(&mut self.page_faults, o.page_faults);
        sum(&mut self.major_page_faults, o.major_page_faults);
        sum(&mut self.processes, o.processes);
    }
}

/// One line of a cgroup v2 `*.pressure` file: stall time and its averages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PressureLine {
    /// Microseconds stalled in all, as the kernel counts.
    pub total_micros: u64,
    /// Percent of the last 10 s, 60 s and 300 s.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

/// A `*.pressure` file: some task stalled, or all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub some: Option<PressureLine>,
    pub full: Option<PressureLine>,
}

/// Pressure stall information of one cgroup (cgroup v2 only); `None` where
/// the kernel gives none (no PSI, no v2 directory for the cgroup).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupPressure {
    pub cpu: Option<Pressure>,
    pub memory: Option<Pressure>,
    pub io: Option<Pressure>,
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` lines.
fn parse_pressure(text: &str) -> Option<Pressure> {
    let mut p = Pressure::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next()?;
        let mut l = PressureLine::default();
        for kv in words {
            let (k, v) = kv.split_once('=')?;
            match k {
                "avg10" => l.avg10 = v.parse().ok()?,
                "avg60" => l.avg60 = v.parse().ok()?,
                "avg300" => l.avg300 = v.parse().ok()?,
                "total" => l.total_micros = v.parse().ok()?,
                _ => {}
            }
        }
        match kind {
            "some" => p.some = Some(l),
            "full" => p.full = Some(l),
            _ => {}
        }
    }
    (p.some.is_some() || p.full.is_some()).then_some(p)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
fn read_keyed(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Limits the kernel reports when there is none (v1's "no limit" is a huge
/// page-aligned number).
fn real_limit(v: u64) -> Option<u64> {
    (v < (1 << 62)).then_some(v)
}

impl CgroupLayout {
    /// The cgroup lines of mountinfo, as gantry-shim takes them in
    /// `gantry_proto::CGROUP_MOUNTINFO_ENV` (it need not read mountinfo,
    /// slow with many rootfs mounts).
    pub fn mount_lines(&self) -> &str {
        &self.mount_lines
    }

    /// Reads the cgroup mounts of this mount namespace.
    pub fn detect() -> Self {
        Self::from_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    fn from_mountinfo(mountinfo: &str) -> Self {
        let mut layout = CgroupLayout::default();
        for line in mountinfo.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let Some(mountpoint) = left.split(' ').nth(4) else { continue };
            let mut r = right.split(' ');
            let (fstype, super_opts) = (r.next().unwrap_or(""), r.nth(1).unwrap_or(""));
            if fstype == "cgroup" || fstype == "cgroup2" {
                layout.mount_lines.push_str(line);
                layout.mount_lines.push('\n');
            }
            match fstype {
                "cgroup" => {
                    for opt in super_opts.split(',') {
                        if matches!(
                            opt,
                            "cpu" | "cpuacct" | "memory" | "pids" | "cpuset" | "hugetlb" | "blkio" | "freezer"
                        ) {
                            layout.v1.entry(opt.to_string()).or_insert_with(|| mountpoint.into());
                        }
                    }
                }
                "cgroup2" if layout.unified.is_none() => {
                    let controllers = std::fs::read_to_string(Path::new(mountpoint).join("cgroup.controllers"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(String::from)
                        .collect();
                    layout.unified = Some((mountpoint.into(), controllers));
                }
                _ => {}
            }
        }
        layout
    }

    /// The directory of cgroup `path` (as in an OCI `cgroupsPath`) for
    /// `controller`, v1 first, and whether it is a v2 directory.
    fn dir(&self, controller: &str, path: &str) -> Option<(PathBuf, bool)> {
        let rel = path.trim_start_matches('/');
        if let Some(mount) = self.v1.get(controller) {
            return Some((mount.join(rel), false));
        }
        let (mount, controllers) = self.unified.as_ref()?;
        controllers.iter().any(|c| c == controller).then(|| (mount.join(rel), true))
    }

    /// Whether cgroup `path` exists in the memory (or else CPU) hierarchy.
    pub fn exists(&self, path: &str) -> bool {
        ["memory", "cpu", "cpuacct"].iter().find_map(|c| self.dir(c, path)).is_some_and(|(d, _)| d.is_dir())
    }

    /// Freezes or thaws every process of cgroup `path`, and waits until the
    /// kernel says it is done (v1 passes through FREEZING).
    pub fn set_frozen(&self, path: &str, frozen: bool) -> std::io::Result<()> {
        let rel = path.trim_start_matches('/');
        let (file, value) = match self.v1.get("freezer") {
            Some(mount) => (mount.join(rel).join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" }),
            None => match &self.unified {
                Some((mount, _)) => (mount.join(rel).join("cgroup.freeze"), if frozen { "1" } else { "0" }),
                None => return Err(std::io::Error::other("no freezer: neither a v1 freezer hierarchy nor cgroup v2")),
            },
        };
        std::fs::write(&file, value)?;
        for _ in 0..200 {
            if self.is_frozen(path) == frozen {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(std::io::Error::other(format!("{} did not reach {value}", file.display())))
    }

    pub fn is_frozen(&self, path: &str) -> bool {
        let rel = path.trim_start_matches('/');
        match self.v1.get("freezer") {
            Some(mount) => {
                std::fs::read_to_string(mount.join(rel).join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
            }
            None => self.unified.as_ref().is_some_and(|(mount, _)| {
                std::fs::read_to_string(mount.join(rel).join("cgroup.events"))
                    .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
            }),
        }
    }

    /// Whether the host is pure cgroup v2: cgroup2 at /sys/fs/cgroup, no v1 controllers.
    pub fn is_unified(&self) -> bool {
        self.v1.is_empty() && self.unified.as_ref().is_some_and(|(m, _)| m == Path::new("/sys/fs/cgroup"))
    }

    /// The cgroup2 directory of cgroup `path`, if the host has a cgroup2 tree.
    pub fn v2_dir(&self, path: &str) -> Option<PathBuf> {
        self.unified.as_ref().map(|(mount, _)| mount.join(path.trim_start_matches('/')))
    }

    /// PSI of cgroup `path` from its cgroup2 directory: on a v2 host, and
    /// on a hybrid one where the shim made the container's cgroup in the
    /// cgroup2 tree too (for hugetlb).
    pub fn pressure(&self, path: &str) -> CgroupPressure {
        let Some((mount, _)) = &self.unified else { return CgroupPressure::default() };
        let dir = mount.join(path.trim_start_matches('/'));
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok().and_then(|t| parse_pressure(&t));
        CgroupPressure { cpu: read("cpu.pressure"), memory: read("memory.pressure"), io: read("io.pressure") }
    }

    pub fn usage(&self, path: &str) -> CgroupUsage {
        self.usage_and_stat(path).0
    }

    /// The usage and the `memory.stat` it was read from (empty without a
    /// memory controller), and whether that is a v2 directory.
    fn usage_and_stat(&self, path: &str) -> (CgroupUsage, HashMap<String, u64>, bool) {
        let mut u = CgroupUsage::default();
        let mut stat = HashMap::new();
        let mut memory_v2 = false;
        match self.dir("cpuacct", path) {
            Some((d, _)) => u.cpu_nanos = read_u64(&d.join("cpuacct.usage")),
            None => {
                if let Some((d, true)) = self.dir("cpu", path) {
                    u.cpu_nanos = read_keyed(&d.join("cpu.stat")).get("usage_usec").map(|us| us * 1000);
                }
            }
        }
        if let Some((d, v2)) = self.dir("memory", path) {
            memory_v2 = v2;
            stat = read_keyed(&d.join("memory.stat"));
            let (usage, limit, inactive, rss, faults, major) = if v2 {
                let limit = std::fs::read_to_string(d.join("memory.max")).ok().and_then(|s| s.trim().parse().ok());
                (read_u64(&d.join("memory.current")), limit, "inactive_file", "anon", "pgfault", "pgmajfault")
            } else {
                let limit = read_u64(&d.join("memory.limit_in_bytes")).and_then(real_limit);
                let usage = read_u64(&d.join("memory.usage_in_bytes"));
                (usage, limit, "total_inactive_file", "total_rss", "total_pgfault", "total_pgmajfault")
            };
            u.memory_usage = usage;
            u.memory_limit = limit;
            // As cadvisor: the working set leaves out page cache the kernel can drop.
            u.memory_working_set = usage.map(|m| m.saturating_sub(stat.get(inactive).copied().unwrap_or(0)));
            u.memory_rss = stat.get(rss).copied();
            u.page_faults = stat.get(faults).copied();
            u.major_page_faults = stat.get(major).copied();
        }
        let procs = self.dir("pids", path).or_else(|| self.dir("memory", path));
        if let Some((d, _)) = procs {
            u.processes = std::fs::read_to_string(d.join("cgroup.procs")).ok().map(|s| s.lines().count() as u64);
        }
        (u, stat, memory_v2)
    }

    /// Whether memory figures come from a v1 hierarchy (which has
    /// `memory.failcnt`; v2 has none).
    pub fn memory_is_v1(&self) -> bool {
        self.v1.contains_key("memory")
    }

    /// Whether the kernel accounts swap per cgroup here (v1 `memsw`, v2
    /// `memory.swap.current`), read at the root of the memory hierarchy.
    pub fn swap_accounted(&self) -> bool {
        match self.dir("memory", "/") {
            Some((d, false)) => d.join("memory.memsw.usage_in_bytes").exists(),
            Some((_, true)) => self.memory_child_has("memory.swap.current"),
            None => false,
        }
    }

    /// Whether the kernel gives cgroup v2 memory file `file` (the root of a
    /// v2 tree has few memory files: its children have them all).
    pub fn memory_child_has(&self, file: &str) -> bool {
        let Some((d, true)) = self.dir("memory", "/") else { return false };
        std::fs::read_dir(&d).into_iter().flatten().flatten().any(|e| e.path().join(file).exists())
    }

    /// A fuller reading of cgroup `path` for the Prometheus-style pod
    /// metrics: the `usage` of the stats calls and the rest cAdvisor reports.
    pub fn detail(&self, path: &str) -> CgroupDetail {
        let (usage, stat, memory_v2) = self.usage_and_stat(path);
        let mut m = CgroupDetail { usage, ..Default::default() };
        let key = |k: &str| stat.get(k).copied();
        if let Some((d, _)) = self.dir("cpuacct", path) {
            m.cpu_user_nanos = read_u64(&d.join("cpuacct.usage_user"));
            m.cpu_system_nanos = read_u64(&d.join("cpuacct.usage_sys"));
        }
        if let Some((d, v2)) = self.dir("cpu", path) {
            let cpu_stat = read_keyed(&d.join("cpu.stat"));
            m.cfs_periods = cpu_stat.get("nr_periods").copied();
            m.cfs_throttled_periods = cpu_stat.get("nr_throttled").copied();
            if v2 {
                let us = |k: &str| cpu_stat.get(k).map(|v| v.saturating_mul(1000));
                m.cpu_user_nanos = us("user_usec");
                m.cpu_system_nanos = us("system_usec");
                m.cfs_throttled_nanos = us("throttled_usec");
                // cpu.weight as cAdvisor turns it back into shares.
                m.cpu_shares = read_u64(&d.join("cpu.weight")).map(|w| 2 + (w.saturating_sub(1) * 262142) / 9999);
                let max = std::fs::read_to_string(d.join("cpu.max")).unwrap_or_default();
                let mut f = max.split_whitespace();
                let (quota, period) = (f.next(), f.next());
                m.cpu_quota = quota.and_then(|q| q.parse().ok());
                m.cpu_period = period.and_then(|p| p.parse().ok());
            } else {
                m.cfs_throttled_nanos = cpu_stat.get("throttled_time").copied();
                m.cpu_shares = read_u64(&d.join("cpu.shares"));
                // -1: no quota.
                m.cpu_quota = read_u64(&d.join("cpu.cfs_quota_us"));
                m.cpu_period = read_u64(&d.join("cpu.cfs_period_us"));
            }
        }
        if let Some((d, _)) = self.dir("memory", path) {
            if memory_v2 {
                m.memory_cache = key("file");
                m.memory_mapped_file = key("file_mapped");
                m.memory_active_file = key("active_file");
                m.memory_inactive_file = key("inactive_file");
                m.memory_max_usage = read_u64(&d.join("memory.peak"));
                m.memory_swap = read_u64(&d.join("memory.swap.current"));
                m.oom_kills = read_keyed(&d.join("memory.events")).get("oom_kill").copied();
            } else {
                m.memory_cache = key("total_cache");
                m.memory_mapped_file = key("total_mapped_file");
                m.memory_active_file = key("total_active_file");
                m.memory_inactive_file = key("total_inactive_file");
                m.memory_max_usage = read_u64(&d.join("memory.max_usage_in_bytes"));
                // memsw counts memory and swap together.
                m.memory_swap = read_u64(&d.join("memory.memsw.usage_in_bytes"))
                    .map(|both| both.saturating_sub(m.usage.memory_usage.unwrap_or(0)));
                m.memory_failcnt = read_u64(&d.join("memory.failcnt"));
                m.oom_kills = read_keyed(&d.join("memory.oom_control")).get("oom_kill").copied();
            }
        }
        if let Some((d, v2)) = self.dir("pids", path).or_else(|| self.dir("memory", path)) {
            let threads = if v2 { "cgroup.threads" } else { "tasks" };
            m.threads = std::fs::read_to_string(d.join(threads)).ok().map(|s| s.lines().count() as u64);
        }
        if let Some((d, _)) = self.dir("pids", path) {
            // "max": no limit, 0 as cAdvisor reports it.
            m.threads_max = std::fs::read_to_string(d.join("pids.max")).ok().map(|s| s.trim().parse().unwrap_or(0));
        }
        m
    }
}

/// What `CgroupLayout::detail` reads beyond `CgroupUsage`; `None` where the
/// host has no such file (no controller, an older kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupDetail {
    pub usage: CgroupUsage,
    pub cpu_user_nanos: Option<u64>,
    pub cpu_system_nanos: Option<u64>,
    pub cfs_periods: Option<u64>,
    pub cfs_throttled_periods: Option<u64>,
    pub cfs_throttled_nanos: Option<u64>,
    pub cpu_shares: Option<u64>,
    /// Microseconds per period; `None` for no quota.
    pub cpu_quota: Option<u64>,
    pub cpu_period: Option<u64>,
    pub memory_cache: Option<u64>,
    pub memory_mapped_file: Option<u64>,
    pub memory_active_file: Option<u64>,
    pub memory_inactive_file: Option<u64>,
    pub memory_max_usage: Option<u64>,
    pub memory_swap: Option<u64>,
    /// v1 only.
    pub memory_failcnt: Option<u64>,
    /// Processes the kernel's OOM killer killed in the cgroup.
    pub oom_kills: Option<u64>,
    pub threads: Option<u64>,
    pub threads_max: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_files_parse_and_garbage_does_not() {
        let text =
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n";
        let p = parse_pressure(text).expect("parses");
        let some = p.some.expect("some");
        assert_eq!((some.total_micros, some.avg10, some.avg60), (123456, 1.5, 0.25));
        assert_eq!(p.full.expect("full").total_micros, 7);
        assert_eq!(parse_pressure("some avg10=x total=1\n"), None);
        assert_eq!(parse_pressure(""), None);
    }

    #[test]
    fn mountinfo_of_a_hybrid_host() {
        let info = "\
25 1 0:22 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";
        let l = CgroupLayout::from_mountinfo(info);
        assert_eq!(l.v1["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(l.dir("memory", "/a/b"), Some((PathBuf::from("/sys/fs/cgroup/memory/a/b"), false)));
        assert_eq!(l.unified.as_ref().map(|u| u.0.clone()), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(l.dir("pids", "/a"), None, "pids is in neither hierarchy here");
    }

    #[test]
    fn the_v2_freezer_freezes_and_thaws() {
        // The cgroup2 tree of this host (hybrid here), used as if it were the only one.
        let Some((mount, _)) = CgroupLayout::detect().unified else { return };
        let only_v2 =
            CgroupLayout { v1: HashMap::new(), unified: Some((mount.clone(), vec![])), mount_lines: String::new() };
        let name = format!("gantry-freeze-test-{}", std::process::id());
        let dir = mount.join(&name);
        if std::fs::create_dir(&dir).is_err() {
            return; // not root: nothing to test
        }
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let moved = std::fs::write(dir.join("cgroup.procs"), child.id().to_string());
        let froze = moved.is_ok() && only_v2.set_frozen(&name, true).is_ok() && only_v2.is_frozen(&name);
        let thawed = only_v2.set_frozen(&name, false).is_ok() && !only_v2.is_frozen(&name);
        let _ = child.kill();
        let _ = child.wait();
        let removed = std::fs::remove_dir(&dir);
        assert!(moved.is_ok() && froze && thawed, "moved {moved:?}, froze {froze}, thawed {thawed}");
        assert!(removed.is_ok(), "{removed:?}");
    }

    #[test]
    fn usage_of_this_process_cgroup_is_read() {
        // Whatever cgroup the test runs in has memory and CPU figures.
        let l = CgroupLayout::detect();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let Some(path) = own.lines().find_map(|line| {
            let mut f = line.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls.split(',').any(|c| c == "memory").then(|| path.to_string())
        }) else {
            return; // no v1 memory controller on this host
        };
        let u = l.usage(&path);
        assert!(u.memory_usage.unwrap_or(0) > 0, "{u:?}");
    }
}
