//! A directory tree written as tar entries: a container's writable layer
//! (commit, with overlayfs's deletion marks turned into whiteouts) or its
//! whole filesystem (export). A container in a pod user namespace stores
//! its files with the host IDs of that namespace; [`IdShift`] writes them
//! back as the IDs the container saw, so the tar is what an ordinary
//! container would have made.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Where a user namespace's IDs 0.. live on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdShift {
    pub uid_host: u32,
    pub uid_length: u32,
    pub gid_host: u32,
    pub gid_length: u32,
}

impl IdShift {
    /// A host ID inside the range becomes the namespace's; others stay.
    fn back(host: u32, start: u32, length: u32) -> u32 {
        if host >= start && host - start < length {
            host - start
        } else {
            host
        }
    }
}

/// What to do with overlayfs's own marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marks {
    /// An upper dir: 0:0 character devices are deletions (`.wh.NAME`),
    /// `trusted.overlay.opaque=y` dirs hide what lies below (`.wh..wh..opq`).
    Whiteouts,
    /// A merged view: everything is a file as it is.
    AsIs,
}

/// Appends every entry below `root` (names relative to it, sorted, parents
/// first), symlinks as links.
pub fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    marks: Marks,
    shift: Option<IdShift>,
) -> io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        // Depth first, in name order: push in reverse.
        let mut subdirs = vec![];
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).map_err(io::Error::other)?.to_path_buf();
            let meta = fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            if marks == Marks::Whiteouts && ft.is_char_device() && meta.rdev() == 0 {
                let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                append_empty(tar, &rel.with_file_name(format!(".wh.{name}")))?;
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&meta);
            if let Some(s) = shift {
                h.set_uid(u64::from(IdShift::back(meta.uid(), s.uid_host, s.uid_length)));
                h.set_gid(u64::from(IdShift::back(meta.gid(), s.gid_host, s.gid_length)));
            }
            if ft.is_dir() {
                h.set_size(0);
                tar.append_data(&mut h, &rel, io::empty())?;
                if marks == Marks::Whiteouts
                    && xattr::get(&path, "trusted.overlay.opaque").ok().flatten().as_deref() == Some(b"y")
                {
                    append_empty(tar, &rel.join(".wh..wh..opq"))?;
                }
                subdirs.push(path);
            } else if ft.is_symlink() {
                h.set_size(0);
                tar.append_link(&mut h, &rel, fs::read_link(&path)?)?;
            } else if ft.is_file() {
                tar.append_data(&mut h, &rel, File::open(&path)?)?;
            } else {
                // Devices and FIFOs: the header says it all.
                h.set_size(0);
                tar.append_data(&mut h, &rel, io::empty())?;
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

fn append_empty<W: Write>(tar: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(0);
    tar.append_data(&mut h, path, io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn shifted_ids_come_back_and_links_stay_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"data").unwrap();
        symlink("d/f", root.join("link")).unwrap();
        std::os::unix::fs::chown(root.join("d/f"), Some(200_005), Some(300_007)).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let shift = IdShift { uid_host: 200_000, uid_length: 65_536, gid_host: 300_000, gid_length: 65_536 };
        append_tree(&mut tar, root, Marks::AsIs, Some(shift)).unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = vec![];
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            seen.push((
                e.path().unwrap().display().to_string(),
                h.entry_type(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                e.link_name().unwrap().map(|l| l.display().to_string()),
            ));
        }
        assert_eq!(
            seen,
            [
                ("d".into(), tar::EntryType::Directory, 0, 0, None),
                ("link".into(), tar::EntryType::Symlink, 0, 0, Some("d/f".into())),
                ("d/f".into(), tar::EntryType::Regular, 5, 7, None),
            ]
        );
    }
}
