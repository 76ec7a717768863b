//! Hugepage limits: the hugetlb controller wherever the host has it. That is
//! a v1 `hugetlb` hierarchy, or the cgroup2 tree: the whole cgroupfs on a pure
//! v2 host, or, in the hybrid layout, a second tree (`/sys/fs/cgroup/unified`)
//! that cgroups-rs does not manage. In that last case the container's cgroup
//! is made there too (same relative path, `+hugetlb` enabled in every
//! ancestor's `cgroup.subtree_control`), its processes are moved into it
//! (a process is in one cgroup of each hierarchy at once) and it is removed
//! with the container. Limits are written as runc does: `hugetlb.SIZE.max`
//! (v2) or `hugetlb.SIZE.limit_in_bytes` (v1), and the `.rsvd` variant when
//! the kernel has it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Where the hugetlb controller lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hugetlb {
    /// The mount point of the hierarchy holding the controller.
    pub root: PathBuf,
    pub v2: bool,
    /// A cgroup2 tree beside cgroups-rs's v1 hierarchies (hybrid layout): the
    /// container's cgroup there is made, joined and removed by this module.
    pub separate: bool,
}

impl Hugetlb {
    /// Finds the controller in this mount namespace's cgroup mounts.
    pub fn locate() -> Option<Hugetlb> {
        let mountinfo = crate::cgroup_mounts::mountinfo();
        Self::from_mountinfo(&mountinfo, cgroups_rs::hierarchies::is_cgroup2_unified_mode(), |m| {
            fs::read_to_string(m.join("cgroup.controllers")).unwrap_or_default()
        })
    }

    /// A v1 hugetlb hierarchy wins; else a cgroup2 mount whose root lists
    /// hugetlb in `cgroup.controllers` (read through `controllers`).
    /// `unified_mode`: /sys/fs/cgroup itself is the cgroup2 tree (cgroups-rs
    /// then manages it).
    pub fn from_mountinfo(mountinfo: &str, unified_mode: bool, controllers: impl Fn(&Path) -> String) -> Option<Self> {
        let mut v2 = None;
        for (fstype, mountpoint, super_opts) in crate::cgroup_mounts::mounts(mountinfo) {
            match fstype {
                "cgroup" if super_opts.split(',').any(|o| o == "hugetlb") => {
                    return Some(Hugetlb { root: mountpoint.into(), v2: false, separate: false });
                }
                "cgroup2" if v2.is_none() => {
                    let root = PathBuf::from(mountpoint);
                    if controllers(&root).split_whitespace().any(|c| c == "hugetlb") {
                        let separate =
                            !(unified_mode && root == Path::new(cgroups_rs::hierarchies::UNIFIED_MOUNTPOINT));
                        v2 = Some(Hugetlb { root, v2: true, separate });
                    }
                }
                _ => {}
            }
        }
        v2
    }

    /// The directory of the cgroup at `rel` (relative to the root).
    pub fn dir(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Makes the cgroup at `rel` in a separate cgroup2 tree: each missing
    /// directory from the root down, with `+hugetlb` in the subtree_control
    /// of every ancestor (the root's too: that is what makes the controller's
    /// files appear below it). Controllers enabled are left enabled at
    /// delete: other cgroups may use them.
    pub fn create(&self, rel: &Path) -> Result<(), String> {
        let mut dir = self.root.clone();
        for part in rel.components() {
            enable_hugetlb(&dir, dir == self.root)?;
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("creating cgroup {}: {e}", dir.display())),
            }
        }
        Ok(())
    }

    /// Moves `pid` into the cgroup at `rel`.
    pub fn add(&self, rel: &Path, pid: u32) -> Result<(), String> {
        let procs = self.dir(rel).join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(|e| format!("moving {pid} into {}: {e}", procs.display()))
    }

    /// Removes the (empty) cgroup at `rel`; the kernel may still count a
    /// process that has just died, so busy is retried for a while.
    pub fn remove(&self, rel: &Path) -> Result<(), String> {
        let dir = self.dir(rel);
        for _ in 0..100 {
            match fs::remove_dir(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => return Err(format!("removing cgroup {}: {e}", dir.display())),
            }
        }
        Err(format!("removing cgroup {}: still busy", dir.display()))
    }

    /// Writes the limits into the cgroup at `rel`.
    pub fn set_limits(&self, rel: &Path, limits: &[(String, u64)]) -> Result<(), String> {
        let dir = self.dir(rel);
        let suffix = if self.v2 { "max" } else { "limit_in_bytes" };
        let mut rsvd = true;
        for (size, limit) in limits {
            let file = dir.join(format!("hugetlb.{size}.{suffix}"));
            fs::write(&file, limit.to_string())
                .map_err(|e| format!("hugepage limit {size}: {}: {e}", file.display()))?;
            // Reservations too (kernel 5.7+), as runc: otherwise memory
            // reserved by mmap but not faulted in escapes the limit.
            if rsvd {
                let file = dir.join(format!("hugetlb.{size}.rsvd.{suffix}"));
                match fs::write(&file, limit.to_string()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => rsvd = false,
                    Err(e) => return Err(format!("hugepage limit {size}: {}: {e}", file.display())),
                }
            }
        }
        Ok(())
    }
}

/// Adds `+hugetlb` to `dir`'s subtree_control unless it is there already.
fn enable_hugetlb(dir: &Path, is_root: bool) -> Result<(), String> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    if current.split_whitespace().any(|c| c == "hugetlb") {
        return Ok(());
    }
    if is_root {
        // A host-wide change (harmless: it only makes the controller's files
        // appear in the root's children), so it is said in the shim's log.
        eprintln!("gantry-shim: enabling the hugetlb controller in {}", file.display());
    }
    fs::write(&file, "+hugetlb").map_err(|e| format!("enabling hugetlb in {}: {e}", file.display()))
}

/// The huge page sizes the kernel has, named as the hugetlb controller
/// names them (`hugepages-2048kB` → `2MB`, `hugepages-1048576kB` → `1GB`).
pub fn kernel_page_sizes() -> Vec<String> {
    let mut sizes: Vec<(u64, String)> = fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let kb = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse::<u64>().ok()?;
                    Some((kb, size_name(kb)))
                })
                .collect()
        })
        .unwrap_or_default();
    sizes.sort();
    sizes.into_iter().map(|(_, n)| n).collect()
}

/// The kernel's name for a page size (mm/hugetlb_cgroup.c, `mem_fmt`).
pub fn size_name(kb: u64) -> String {
    if kb >= 1 << 20 {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

/// Checks the spec's limits: each page size must be one the kernel has,
/// and a non-zero limit needs a hugetlb controller somewhere.
pub fn check(limits: &[(String, u64)], have: &[String], controller: bool) -> Result<(), String> {
    for (size, limit) in limits {
        if !have.iter().any(|h| h == size) {
            let known = if have.is_empty() { "none".to_string() } else { have.join(", ") };
            return Err(format!(
                "hugepage limit for page size {size:?}: the kernel has no such huge pages (it has: {known})"
            ));
        }
        if *limit > 0 && !controller {
            return Err(format!(
                "hugepage limit for page size {size}: no hugetlb cgroup controller on this host (neither a v1 hierarchy nor in cgroup2)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn finds_the_controller_where_it_is() {
        let with = |_: &Path| "hugetlb".to_string();
        let without = |_: &Path| String::new();
        assert_eq!(
            Hugetlb::from_mountinfo(HYBRID, false, with),
            Some(Hugetlb { root: "/sys/fs/cgroup/unified".into(), v2: true, separate: true })
        );
        assert_eq!(Hugetlb::from_mountinfo(HYBRID, false, without), None);
        let v1 = format!("{HYBRID}\n50 31 0:40 / /sys/fs/cgroup/hugetlb rw - cgroup cgroup rw,hugetlb");
        assert_eq!(
            Hugetlb::from_mountinfo(&v1, false, with),
            Some(Hugetlb { root: "/sys/fs/cgroup/hugetlb".into(), v2: false, separate: false })
        );
        let pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            Hugetlb::from_mountinfo(pure, true, |_: &Path| "cpu memory hugetlb pids".to_string()),
            Some(Hugetlb { root: "/sys/fs/cgroup".into(), v2: true, separate: false })
        );
    }

    #[test]
    fn page_sizes_are_named_as_the_kernel_does() {
        assert_eq!(size_name(2048), "2MB");
        assert_eq!(size_name(1 << 20), "1GB");
        assert_eq!(size_name(64), "64KB");
        assert_eq!(size_name(32 << 10), "32MB");
        assert_eq!(size_name(16 << 20), "16GB");
    }

    #[test]
    fn limits_are_checked() {
        let have = vec!["2MB".to_string(), "1GB".to_string()];
        assert!(check(&[("2MB".into(), 2 << 20)], &have, true).is_ok());
        let e = check(&[("4MB".into(), 0)], &have, true).expect_err("unknown size");
        assert!(e.contains("\"4MB\"") && e.contains("2MB, 1GB"), "{e}");
        let e = check(&[("2MB".into(), 2 << 20)], &have, false).expect_err("no controller");
        assert!(e.contains("2MB") && e.contains("no hugetlb"), "{e}");
        assert!(check(&[("2MB".into(), 0)], &have, false).is_ok(), "a zero limit needs no controller");
    }
}
