//! Gantry's image side: references, the registry client, the content store,
//! the overlay snapshotter, image metadata and the CRI `ImageService`.

pub mod api;
pub mod archive;
pub mod buffer_pipe;
pub mod commit;
pub mod content;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzz;
pub mod media;
pub mod metadata;
pub mod pinning;
pub mod publish;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod tree_tar;

pub use metadata::{ImageRecord, ImageSelector};
pub use reference::{Digest, Reference};
pub use registry::{Credentials, RegistryHostConfig, RegistryHosts};
pub use service::CriImageService;
pub use store::ImageStore;
