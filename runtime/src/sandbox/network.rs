//! The pod's CNI attachment as gantryd records it: `network.json` holds what
//! ADD was given, written before ADD so that a crash during it can still be
//! undone by DEL.

use std::path::Path;

use gantry_imageservice::fsutil;

use crate::error::{internal, RuntimeError};
use crate::network::PodNetwork;
use crate::runtime::Runtime;

pub(super) fn persist_network(dir: &Path, net: &PodNetwork) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec(net).map_err(|e| internal("encoding network state")(&e))?;
    fsutil::write_atomic(&dir.join("network.json"), &bytes).map_err(|e| internal("writing network state")(&e))
}

impl Runtime {
    /// CNI DEL with what ADD was given (`network.json`); no file, nothing added.
    pub(crate) async fn teardown_network(&self, id: &str, dir: &Path) -> Result<(), RuntimeError> {
        let bytes = match tokio::fs::read(dir.join("network.json")).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(internal("reading network state")(&e)),
        };
        let net: PodNetwork = serde_json::from_slice(&bytes).map_err(|e| internal("decoding network state")(&e))?;
        tracing::debug!(pod = %id, network = %net.list.name, "CNI DEL");
        self.network.del(&net).await.map_err(|e| internal("tearing down the pod network")(&e))
    }
}
