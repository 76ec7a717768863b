//! RuntimeClass handlers: the built-in shim (the unnamed default handler)
//! and external OCI runtimes with a runc-compatible command line (runc,
//! crun), each named as a RuntimeClass's `handler`. A pod's handler makes
//! its containers; gantry-shim drives it (see shim/src/oci_runtime.rs), so
//! logs, attach, exec, stats and recovery are the same for every handler.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::RuntimeError;

/// An external OCI runtime, as configured in `[runtimes.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciHandler {
    pub binary: PathBuf,
    /// The runtime's state directory (`--root`).
    pub root: PathBuf,
    /// Global options given before every subcommand.
    pub options: Vec<String>,
}

/// Every handler this gantryd offers, by name; the built-in one is "".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handlers {
    external: BTreeMap<String, OciHandler>,
}

/// A handler name must be a DNS label, as a RuntimeClass's `handler` is.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Handlers {
    /// The handlers of the configuration; names and binaries are checked.
    pub fn new(external: BTreeMap<String, OciHandler>) -> Result<Self, String> {
        for (name, h) in &external {
            if !valid_name(name) {
                return Err(format!(
                    "runtime handler name {name:?} is not a DNS label (lowercase letters, digits, '-')"
                ));
            }
            if !h.binary.is_absolute() {
                return Err(format!("runtimes.{name}.binary {:?} is not an absolute path", h.binary));
            }
            if !h.root.is_absolute() {
                return Err(format!("runtimes.{name}.root {:?} is not an absolute path", h.root));
            }
        }
        Ok(Handlers { external })
    }

    /// Every handler's name, the built-in "" first.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(String::new()).chain(self.external.keys().cloned()).collect()
    }

    /// The external runtime a handler name stands for: `None` for the
    /// built-in shim; an unknown name is `InvalidArgument` naming the
    /// handlers there are.
    pub fn resolve(&self, name: &str) -> Result<Option<&OciHandler>, RuntimeError> {
        if name.is_empty() {
            return Ok(None);
        }
        self.external.get(name).map(Some).ok_or_else(|| {
            let known: Vec<String> = self
                .names()
                .iter()
                .map(|n| if n.is_empty() { "\"\" (built-in)".to_string() } else { format!("{n:?}") })
                .collect();
            RuntimeError::InvalidArgument(format!(
                "unknown runtime handler {name:?}: this node's handlers are {}",
                known.join(", ")
            ))
        })
    }

    /// Checks that a pod's handler can run now: it exists and its binary
    /// is an executable file (a missing one fails RunPodSandbox, not later).
    pub fn check_usable(&self, name: &str) -> Result<Option<&OciHandler>, RuntimeError> {
        let Some(h) = self.resolve(name)? else { return Ok(None) };
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&h.binary) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(Some(h)),
            Ok(_) => Err(RuntimeError::FailedPrecondition(format!(
                "runtime handler {name:?}: {} is not an executable file",
                h.binary.display()
            ))),
            Err(e) => Err(RuntimeError::FailedPrecondition(format!(
                "runtime handler {name:?}: binary {}: {e}",
                h.binary.display()
            ))),
        }
    }

    /// Makes every external runtime forget container `id` (`delete --force`)
    /// if it still has state for it: for a container whose shim is gone
    /// (killed), which would have done that at its end.
    pub(crate) async fn forget(&self, id: &str) {
        for (name, h) in &self.external {
            if !h.root.join(id).exists() {
                continue;
            }
            let status = tokio::process::Command::new(&h.binary)
                .arg("--root")
                .arg(&h.root)
                .args(&h.options)
                .args(["delete", "--force", id])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await;
            if !status.is_ok_and(|s| s.success()) {
                tracing::warn!(container = %id, handler = %name, "the runtime could not delete the container");
            }
        }
    }

    /// gantry-shim's arguments that hand the container to `handler`.
    pub(crate) fn shim_args(handler: &OciHandler) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--runtime".into(),
            handler.binary.clone().into(),
            "--runtime-root".into(),
            handler.root.clone().into(),
        ];
        for o in &handler.options {
            args.push("--runtime-option".into());
            args.push(o.into());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runc() -> OciHandler {
        OciHandler { binary: "/usr/sbin/runc".into(), root: "/run/gantry/runc".into(), options: vec![] }
    }

    #[test]
    fn unknown_handlers_are_refused_naming_the_known_ones() {
        let h = Handlers::new(BTreeMap::from([("runc".to_string(), runc())])).expect("valid");
        assert_eq!(h.resolve("").expect("built-in"), None);
        assert_eq!(h.resolve("runc").expect("runc"), Some(&runc()));
        let err = h.resolve("kata").expect_err("unknown").to_string();
        assert!(err.contains("\"kata\"") && err.contains("\"runc\"") && err.contains("built-in"), "{err}");
    }

    #[test]
    fn names_and_paths_are_checked() {
        let bad_name = Handlers::new(BTreeMap::from([("Run_C".to_string(), runc())]));
        assert!(bad_name.expect_err("bad name").contains("Run_C"));
        let relative = OciHandler { binary: "runc".into(), ..runc() };
        let err = Handlers::new(BTreeMap::from([("runc".to_string(), relative)])).expect_err("relative");
        assert!(err.contains("runtimes.runc.binary"), "{err}");
    }

    #[test]
    fn a_missing_binary_is_a_failed_precondition() {
        let gone = OciHandler { binary: "/nonexistent/runc".into(), ..runc() };
        let h = Handlers::new(BTreeMap::from([("gone".to_string(), gone)])).expect("valid");
        match h.check_usable("gone") {
            Err(RuntimeError::FailedPrecondition(m)) => assert!(m.contains("/nonexistent/runc"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
