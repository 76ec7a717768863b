//! What applying a layer fails with, and the constructors the applier's
//! parts share: every error names the tar entry.

use std::io;

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An entry would land outside the layer root (.., absolute path, via a symlink, hardlink to outside).
    #[error("layer entry {path:?} escapes the snapshot root: {reason}")]
    Escape { path: String, reason: &'static str },
    #[error("layer entry {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading layer tar: {0}")]
    Tar(#[source] io::Error),
    #[error("layer entry {path:?} has unsupported type {kind}")]
    Unsupported { path: String, kind: String },
}

pub(super) fn escape(name: &str, reason: &'static str) -> ApplyError {
    ApplyError::Escape { path: name.to_string(), reason }
}

pub(super) fn invalid(name: &str, what: &str) -> ApplyError {
    ApplyError::Io { path: name.to_string(), source: io::Error::new(io::ErrorKind::InvalidData, what.to_string()) }
}

pub(super) fn io_err(name: &str) -> impl FnOnce(io::Error) -> ApplyError + '_ {
    move |source| ApplyError::Io { path: name.to_string(), source }
}

pub(super) fn nix_err(name: &str) -> impl FnOnce(Errno) -> ApplyError + '_ {
    move |e| ApplyError::Io { path: name.to_string(), source: e.into() }
}
