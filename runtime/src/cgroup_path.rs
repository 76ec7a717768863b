//! A CRI `cgroup_parent` confined to the cgroup hierarchy: cleaned lexically
//! as an absolute path, as Go's `filepath.Clean("/" + p)` (what runc does), so
//! `..` stops at the hierarchy's root and no path can leave the cgroup
//! filesystem. Pure; the shim cleans `cgroupsPath` again (docs/security.md).

/// `p` as a clean absolute path: `/` for nothing; `.` and empty components
/// dropped; `..` removes the component before it, or nothing at the root.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `name` below the cleaned `parent`; `name` must be one plain component.
pub fn child(parent: &str, name: &str) -> String {
    let parent = clean(parent);
    format!("{}/{name}", parent.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn traversal_stays_below_the_root() {
        for p in ["../../../../../../tmp/somename", "/../../../../tmp/somename", "a/../../../../../../tmp/somename"] {
            assert_eq!(clean(p), "/tmp/somename", "{p}");
        }
        assert_eq!(clean(""), "/");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean(".."), "/");
        assert_eq!(clean("kubepods/burstable/pod1"), "/kubepods/burstable/pod1");
        assert_eq!(clean("/kubepods//burstable/./pod1/"), "/kubepods/burstable/pod1");
        assert_eq!(clean("/a/b/../c"), "/a/c");
        assert_eq!(clean("kubepods-burstable.slice"), "/kubepods-burstable.slice");
        assert_eq!(child("../../tmp/x", "gantry-1"), "/tmp/x/gantry-1");
        assert_eq!(child("/", "gantry-1"), "/gantry-1");
    }

    proptest! {
        #[test]
        fn a_clean_path_never_climbs(parts in prop::collection::vec(
            prop::sample::select(&["..", ".", "", "a", "b..", "...", "/", "tmp"][..]), 0..12)) {
            let p = parts.join("/");
            let c = clean(&p);
            prop_assert!(c.starts_with('/'));
            prop_assert!(c.split('/').skip(1).all(|x| x != ".." && x != "."), "{p:?} → {c:?}");
            prop_assert!(c == "/" || c.split('/').skip(1).all(|x| !x.is_empty()), "{p:?} → {c:?}");
            // Idempotent, and joined to a root it stays below it.
            prop_assert_eq!(clean(&c), c.clone());
            let joined = std::path::Path::new("/sys/fs/cgroup/memory").join(c.trim_start_matches('/'));
            prop_assert!(joined.components().all(|x| x != std::path::Component::ParentDir));
        }
    }
}
