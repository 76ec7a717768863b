//! The runtime crate's error types. This module imports nothing else from
//! the crate, so every module can return these without an import cycle.

/// What a `Runtime` call failed with; each variant is one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
    /// A service gantryd needs (systemd's D-Bus API) cannot be reached now;
    /// the next call tries again.
    #[error("{0}")]
    Unavailable(String),
}

/// `map_err(internal("doing X"))`: an Internal error that says what failed.
pub(crate) fn internal(what: &str) -> impl Fn(&dyn std::fmt::Display) -> RuntimeError + '_ {
    move |e| RuntimeError::Internal(format!("{what}: {e}"))
}

impl From<RuntimeError> for tonic::Status {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            RuntimeError::NotFound(m) => tonic::Status::not_found(m),
            RuntimeError::AlreadyExists(m) => tonic::Status::already_exists(m),
            RuntimeError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            RuntimeError::DeadlineExceeded(m) => tonic::Status::deadline_exceeded(m),
            RuntimeError::Internal(m) => tonic::Status::internal(m),
            RuntimeError::Unavailable(m) => tonic::Status::unavailable(m),
        }
    }
}

/// Why a container's OCI spec cannot be built from its CRI config.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container has no command: neither the CRI config nor the image {image} gives one")]
    NoCommand { image: String },
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("mount {container_path:?}: host path {host_path:?} does not exist")]
    MountSource { container_path: String, host_path: String },
    #[error("mount {0:?}: container path must be absolute")]
    MountTarget(String),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("device: {0}")]
    BadDevice(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("mount {0:?}: recursive_read_only needs readonly and private propagation")]
    RecursiveReadOnly(String),
    #[error("environment variable {0:?}: the value is not UTF-8, which an OCI spec cannot carry")]
    EnvNotUtf8(String),
    #[error("building the OCI spec: {0}")]
    Oci(String),
}

impl From<SpecError> for RuntimeError {
    /// A spec the CRI config cannot make is the caller's error, except when
    /// the spec we built does not serialize.
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Oci(m) => RuntimeError::Internal(m),
            other => RuntimeError::InvalidArgument(other.to_string()),
        }
    }
}
