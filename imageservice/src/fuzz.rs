//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay
//! (`tests/tests/fuzz_corpus.rs`): the parsers of untrusted image bytes,
//! each run on arbitrary input. Any panic is a bug; errors are fine.

use std::path::Path;

use crate::pull::{select_platform, ConfigRootfs, Index, Manifest};
use crate::reference::{Digest, Reference};

/// References: whatever parses prints as something that parses the same.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = s.parse::<Digest>();
    if let Ok(r) = Reference::parse(s) {
        let printed = r.to_string();
        let again = Reference::parse(&printed).unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}: {e}"));
        assert_eq!(again.to_string(), printed, "{s:?}");
    }
}

/// Manifests, indexes and image configs as pulls decode them.
pub fn documents(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let _ = m.config.digest.parse::<Digest>();
        for l in &m.layers {
            let _ = l.digest.parse::<Digest>();
            let _ = crate::media::layer_compression(&l.media_type);
        }
    }
    if let Ok(i) = serde_json::from_slice::<Index>(data) {
        let _ = select_platform(&i.manifests);
    }
    if let Ok(c) = serde_json::from_slice::<ConfigRootfs>(data) {
        for d in &c.rootfs.diff_ids {
            let _ = d.parse::<Digest>();
        }
    }
}

/// The layer applier on a fresh directory under the empty `scratch`:
/// whatever the tar holds (whiteouts, links, `..`, absolute names), nothing
/// may land outside `scratch/root`; the sibling `outside` (which a
/// `../outside` link could name) must stay as it was.
pub fn layer(data: &[u8], scratch: &Path) {
    let root = scratch.join("root");
    let outside = scratch.join("outside");
    if std::fs::create_dir(&root).is_err() || std::fs::create_dir(&outside).is_err() {
        return;
    }
    let _ = std::fs::write(outside.join("keep"), b"keep");
    let _ = crate::snapshot::apply::apply_layer(data, &root);
    let mut names: Vec<_> =
        std::fs::read_dir(scratch).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    names.sort();
    assert_eq!(names, ["outside", "root"], "the layer wrote beside its root");
    let kept: Vec<_> =
        std::fs::read_dir(&outside).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert_eq!(kept, ["keep"], "the layer wrote into a sibling directory");
    assert_eq!(std::fs::read(outside.join("keep")).ok().as_deref(), Some(&b"keep"[..]), "a sibling file changed");
}

/// Image archives as `gantry load` reads them (headers, index, documents);
/// `scratch` is an empty directory for the archive file.
pub fn archive(data: &[u8], scratch: &Path) {
    let path = scratch.join("archive.tar");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    crate::archive::fuzz_scan(&path);
}
