//! The container lifecycle, one file per step: `create.rs`, `start.rs`,
//! `stop.rs`, `remove.rs`, `update.rs` (resources, log reopening),
//! `image_volumes.rs` (images mounted as volumes), and for
//! the `gantry` tool `pause.rs` and `commit.rs`.

mod checkpoint;
mod commit;
mod create;
pub(crate) mod image_volumes;
mod pause;
mod remove;
mod start;
mod stop;
mod update;
