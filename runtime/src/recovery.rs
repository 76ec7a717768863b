//! Start-up: reading the records a previous gantryd left (it may have been
//! killed at any point), undoing what a crash left half-made, and learning
//! the state of every container whose shim outlived it.

use std::sync::Arc;

use gantry_proto::cri::v1::ContainerEventType;

use crate::error::RuntimeError;
use crate::records::{decode, ContainerRecord, SandboxRecord, Unreadable, RECORD_FORMAT};
use crate::runtime::Runtime;
use crate::shim_client::Status;

impl Runtime {
    /// Reads the records a previous gantryd left (it may have been killed).
    /// Records of a newer format stop it: nothing is read or removed.
    pub(crate) async fn load(&self) -> Result<(), RuntimeError> {
        let mut sandboxes = self.sandboxes.lock().await;
        let mut containers = self.containers.lock().await;
        let mut half_made = Vec::new();
        let newer = |path: std::path::PathBuf, format: u64| {
            RuntimeError::FailedPrecondition(format!(
                "{} was written by a newer gantryd (record format {format}; this one reads up to {RECORD_FORMAT}): \
                 run that version, or move the state directory away",
                path.display()
            ))
        };
        for (kind, dir) in [("sandboxes", self.sandboxes_dir()), ("containers", self.containers_dir())] {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                let bytes = std::fs::read(e.path().join("record.json")).unwrap_or_default();
                if kind == "sandboxes" {
                    match decode::<SandboxRecord>(&bytes) {
                        Ok(r) => {
                            sandboxes.insert(r.id.clone(), r);
                        }
                        Err(Unreadable::Newer(format)) => return Err(newer(e.path().join("record.json"), format)),
                        Err(Unreadable::HalfMade) => half_made.push((id, e.path())),
                    }
                } else {
                    match decode::<ContainerRecord>(&bytes) {
                        Ok(r) => {
                            // The record's own copy: the image may be gone by now.
                            self.images.hold_layers(&r.id, r.chain_ids.clone());
                            if !r.volume_chain_ids.is_empty() {
                                let holder = crate::container::image_volumes::holder(&r.id);
                                self.images.hold_layers(&holder, r.volume_chain_ids.clone());
                            }
                            self.listing.insert(&r);
                            containers.insert(r.id.clone(), r);
                        }
                        Err(Unreadable::Newer(format)) => return Err(newer(e.path().join("record.json"), format)),
                        Err(Unreadable::HalfMade) => half_made.push((id, e.path())),
                    }
                }
            }
        }
        // A crash between creating and recording a sandbox or container
        // leaves a bundle without a record: undo it.
        for (id, dir) in &half_made {
            tracing::warn!(id = %id, "removing a sandbox or container a crash left half-made");
            // A crash during CNI ADD: DEL what it may have set up.
            if dir.join("network.json").exists() {
                if let Err(e) = self.teardown_network(id, dir).await {
                    tracing::error!(pod = %id, error = %e, "tearing down a half-made pod's network");
                }
            }
            self.discard_container_files(id, dir).await;
        }
        // Writable layers whose container is gone.
        if let Ok(rd) = std::fs::read_dir(self.images.snapshotter().root().join("active")) {
            for e in rd.flatten() {
                let key = e.file_name().to_string_lossy().to_string();
                if !containers.contains_key(&key) {
                    tracing::warn!(key = %key, "removing an orphaned writable layer");
                    let _ = self.images.snapshotter().remove_rw(&key);
                }
            }
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.counters.recovered_sandboxes.store(sandboxes.len() as u64, Relaxed);
        self.counters.recovered_containers.store(containers.len() as u64, Relaxed);
        tracing::info!(sandboxes = sandboxes.len(), containers = containers.len(), "runtime state loaded");
        Ok(())
    }

    /// Learns every container's state (after a restart) and watches the
    /// running ones for their exit.
    pub async fn watch_all(self: &Arc<Self>) {
        let ids: Vec<String> = self.containers.lock().await.keys().cloned().collect();
        for id in ids {
            let state = self.container_state(&id).await;
            if state.status == Status::Running as i32 {
                self.watch(id);
            } else if state.status == Status::Stopped as i32 && state.started_at != 0 && !self.exit_reported(&id) {
                // It exited while gantryd was down: kubelet hears it now.
                self.events.emit_recovered(&id, ContainerEventType::ContainerStoppedEvent, state.finished_at);
                self.mark_exit_reported(&id);
            }
        }
    }

    fn exit_reported_path(&self, id: &str) -> std::path::PathBuf {
        self.container_dir(id).join("exit-reported")
    }

    fn exit_reported(&self, id: &str) -> bool {
        self.exit_reported_path(id).exists()
    }

    /// Its stop was emitted: a restart will not report it again (a crash
    /// before this line reports it twice, never not at all).
    pub(crate) fn mark_exit_reported(&self, id: &str) {
        if let Err(e) = std::fs::File::create(self.exit_reported_path(id)) {
            tracing::warn!(container = %id, error = %e, "marking the exit as reported");
        }
    }
}
