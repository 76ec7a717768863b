//! The CRI `RuntimeService`: pod sandboxes, containers and the shim manager.
//!
//! `runtime.rs` holds the `Runtime` and what every step shares; each
//! lifecycle step is a file of `sandbox/` or `container/`; `service/` maps
//! each CRI RPC onto them. `error.rs` and `records.rs` are at the bottom:
//! no module they import imports them back.

pub mod cdi;
pub mod cgroup_driver;
pub mod cgroup_path;
pub mod cgroupfs;
mod container;
pub mod containers_api;
mod cpu_readings;
pub mod devices;
pub mod error;
pub mod events;
pub mod exec;
pub mod handlers;
pub mod listing;
pub mod network;
pub mod pod_metrics;
pub mod records;
mod recovery;
pub mod runtime;
mod sandbox;
pub mod seccomp;
pub mod service;
pub mod shim_client;
mod shim_process;
pub mod spec;
pub mod stats;
pub mod stop_signal;
pub mod streaming;
pub mod sysctl;
pub mod systemd;
pub mod userns;

pub use error::RuntimeError;
pub use runtime::Runtime;
pub use service::CriRuntimeService;
