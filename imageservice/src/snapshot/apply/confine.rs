//! Keeping a layer inside its root: entry names cleaned (absolute paths and
//! `..` refused), parent directories resolved component by component with
//! symlinks followed only while they stay inside the root.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;

use super::error::{escape, io_err, ApplyError};

/// Linux's own limit (MAXSYMLINKS).
const MAX_SYMLINK_HOPS: u32 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadPath {
    Absolute,
    DotDot,
}

impl BadPath {
    pub(super) fn reason(self) -> &'static str {
        match self {
            BadPath::Absolute => "absolute path",
            BadPath::DotDot => "'..' in path",
        }
    }

    pub(super) fn link_reason(self) -> &'static str {
        match self {
            BadPath::Absolute => "absolute hardlink target",
            BadPath::DotDot => "'..' in hardlink target",
        }
    }
}

/// Strips `./`, `.` and trailing slashes; refuses absolute paths and `..`
/// outright rather than clamping them, as a well-formed layer has neither.
pub(super) fn clean_path(raw: &[u8]) -> Result<PathBuf, BadPath> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(BadPath::Absolute),
            Component::ParentDir => return Err(BadPath::DotDot),
        }
    }
    Ok(out)
}

/// Resolves the directory `rel` (already cleaned) to a real directory inside
/// `root`, component by component with lstat. Symlinks are followed in scope:
/// absolute targets restart at `root`, and `..` may never climb above it.
/// Missing directories are created (0755) if `create`; a non-directory in the
/// way is an error, as in containerd, rather than something to delete.
pub(super) fn resolve_dir(root: &Path, rel: &Path, create: bool, name: &str) -> Result<PathBuf, ApplyError> {
    // Components still to walk, next one last; `..` only ever comes from a
    // symlink target, since `rel` has none.
    let mut pending: Vec<OsString> = rel.iter().rev().map(OsStr::to_os_string).collect();
    let mut cur = root.to_path_buf();
    let mut depth = 0usize;
    let mut hops = 0u32;
    while let Some(c) = pending.pop() {
        if c == ".." {
            if depth == 0 {
                return Err(escape(name, "through a symlink"));
            }
            cur.pop();
            depth -= 1;
            continue;
        }
        cur.push(&c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => depth += 1,
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ApplyError::Io { path: name.to_string(), source: Errno::ELOOP.into() });
                }
                let target = fs::read_link(&cur).map_err(io_err(name))?;
                if target.as_os_str().is_empty() {
                    // The kernel resolves an empty target to nothing.
                    return Err(ApplyError::Io { path: name.to_string(), source: Errno::ENOENT.into() });
                }
                cur.pop();
                if target.is_absolute() {
                    cur = root.to_path_buf();
                    depth = 0;
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(p) => pending.push(p.to_os_string()),
                        Component::ParentDir => pending.push(OsString::from("..")),
                        Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                    }
                }
            }
            Ok(_) => return Err(ApplyError::Io { path: name.to_string(), source: Errno::ENOTDIR.into() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&cur).map_err(io_err(name))?;
                // create_dir is subject to the umask.
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).map_err(io_err(name))?;
                depth += 1;
            }
            Err(e) => return Err(io_err(name)(e)),
        }
    }
    Ok(cur)
}
