//! The CRI `RuntimeService`: pod sandboxes, containers and the shim manager.

pub mod service;

pub use service::CriRuntimeService;
