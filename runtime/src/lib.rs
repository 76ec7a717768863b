//! The CRI `RuntimeService`: pod sandboxes, containers and the shim manager.

pub mod service;
pub mod shim_client;

pub use service::CriRuntimeService;
