//! The pod sandbox lifecycle, one file per CRI step: `run.rs`
//! (RunPodSandbox: the pause process, the pod's files and network),
//! `stop.rs`, `remove.rs`, `update.rs` (UpdatePodSandboxResources); `etc_files.rs` and `network.rs` are the pod's
//! /etc files and its CNI attachment.

mod etc_files;
mod network;
mod remove;
mod run;
mod stop;
mod update;
