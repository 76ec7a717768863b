//! Cgroup names under the systemd cgroup driver, shared by gantryd and
//! gantry-shim. An OCI `cgroupsPath` of the form `SLICE:PREFIX:NAME` (as
//! runc's systemd driver reads it) names the transient scope unit
//! `PREFIX-NAME.scope` inside slice unit `SLICE`; systemd keeps that scope's
//! cgroup at the slice's path (each `-` in a slice name is a level:
//! `a-b.slice` is `a.slice/a-b.slice`) plus the scope's name.

/// A scope unit inside a slice, as a systemd `cgroupsPath` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub slice: String,
    /// The scope unit's name, `PREFIX-NAME.scope`.
    pub unit: String,
}

/// Why a name is not a valid slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSlice(pub String);

impl std::fmt::Display for BadSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadSlice {}

/// The cgroup path (from the cgroup2 root, leading `/`) of slice unit `slice`.
pub fn slice_path(slice: &str) -> Result<String, BadSlice> {
    let bad = |why: &str| BadSlice(format!("{slice:?} is not a systemd slice name: {why}"));
    let stem = slice.strip_suffix(".slice").ok_or_else(|| bad("it does not end in .slice"))?;
    if slice == "-.slice" {
        return Ok("/".into());
    }
    if stem.is_empty() || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(bad("an empty level"));
    }
    if !stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@\\".contains(&b)) {
        return Err(bad("it holds a character a unit name cannot"));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// The scope a `SLICE:PREFIX:NAME` cgroupsPath names; `None` for any other
/// form (a cgroupfs path).
pub fn parse(cgroups_path: &str) -> Option<Scope> {
    if cgroups_path.starts_with('/') {
        return None;
    }
    let mut parts = cgroups_path.split(':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || name.is_empty() {
        return None;
    }
    let slice = if slice.is_empty() { "system.slice" } else { slice };
    let unit = if prefix.is_empty() { format!("{name}.scope") } else { format!("{prefix}-{name}.scope") };
    Some(Scope { slice: slice.to_string(), unit })
}

impl Scope {
    /// The scope's cgroup, from the cgroup2 root (leading `/`).
    pub fn cgroup_path(&self) -> Result<String, BadSlice> {
        let parent = slice_path(&self.slice)?;
        Ok(format!("{}/{}", parent.trim_end_matches('/'), self.unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_level_by_level() {
        assert_eq!(
            slice_path("kubepods-burstable-pod1234.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
        );
        assert_eq!(slice_path("system.slice").unwrap(), "/system.slice");
        assert_eq!(slice_path("-.slice").unwrap(), "/");
        for bad in ["kubepods", "/kubepods.slice", "a--b.slice", "-a.slice", "a/b.slice", ".slice"] {
            assert!(slice_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn systemd_cgroups_paths_name_a_scope_in_a_slice() {
        let s = parse("kubepods-besteffort-podx.slice:gantry:abc").unwrap();
        assert_eq!(s, Scope { slice: "kubepods-besteffort-podx.slice".into(), unit: "gantry-abc.scope".into() });
        assert_eq!(
            s.cgroup_path().unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice/gantry-abc.scope"
        );
        assert_eq!(parse(":gantry:abc").unwrap().cgroup_path().unwrap(), "/system.slice/gantry-abc.scope");
        assert_eq!(parse("/kubepods/pod1/gantry-abc"), None);
        assert_eq!(parse("a.slice:gantry"), None);
        assert_eq!(parse("a.slice:gantry:x:y"), None);
    }
}
