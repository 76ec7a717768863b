//! The CRI `RuntimeService`: pod sandboxes, containers and the shim manager.

pub mod network;
pub mod runtime;
pub mod service;
pub mod shim_client;
pub mod spec;

pub use runtime::Runtime;
pub use service::CriRuntimeService;
