//! The container lifecycle, one file per step: `create.rs`, `start.rs`,
//! `stop.rs`, `remove.rs`, `update.rs` (resources, log reopening), and for
//! the `gantry` tool `pause.rs` and `commit.rs`.

mod commit;
mod create;
mod pause;
mod remove;
mod start;
mod stop;
mod update;
