//! The CRI `RuntimeService`: pod sandboxes, containers and the shim manager.

pub mod cgroup_path;
pub mod cgroupfs;
pub mod containers_api;
pub mod devices;
pub mod exec;
pub mod listing;
pub mod network;
pub mod runtime;
pub mod seccomp;
pub mod service;
pub mod shim_client;
pub mod spec;
pub mod stats;
pub mod streaming;
pub mod sysctl;
pub mod userns;

pub use runtime::Runtime;
pub use service::CriRuntimeService;
