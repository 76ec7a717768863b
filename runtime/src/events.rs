//! Container and sandbox lifecycle events, for `GetContainerEvents`: every
//! lifecycle step emits one, every subscriber receives it.
//!
//! Exits that happened while gantryd was down are found at recovery, before
//! kubelet has reconnected: those events are kept as a backlog that every
//! subscriber receives first, so none is lost to the restart. A container's
//! stop is marked as reported (`exit-reported` in its directory) once
//! emitted, so that a later restart does not report it again.

use std::sync::Mutex;

use gantry_proto::cri::v1::ContainerEventType;
use tokio::sync::broadcast;

use crate::records::now_nanos;

/// A lifecycle event: the container (or sandbox) ID and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: ContainerEventType,
    pub at: i64,
}

/// The broadcast channel events go through, and the recovery backlog. A
/// subscriber that falls more than `CAPACITY` events behind misses the
/// oldest (and is told so).
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    backlog: Mutex<Vec<Event>>,
}

impl EventBus {
    const CAPACITY: usize = 1024;

    /// The recovery backlog, then every event from now on, with none
    /// missed or repeated in between.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        // Under the lock no recovered event can be both in the copy and sent.
        let backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        (backlog.clone(), self.sender.subscribe())
    }

    pub fn emit(&self, id: &str, kind: ContainerEventType) {
        // No subscriber is fine: nobody is listening.
        let _ = self.sender.send(Event { id: id.to_string(), kind, at: now_nanos() });
    }

    /// An event found at recovery (it happened while gantryd was down):
    /// sent to current subscribers and kept for later ones.
    pub fn emit_recovered(&self, id: &str, kind: ContainerEventType, at: i64) {
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let event = Event { id: id.to_string(), kind, at };
        backlog.push(event.clone());
        let _ = self.sender.send(event);
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus { sender: broadcast::channel(Self::CAPACITY).0, backlog: Mutex::new(Vec::new()) }
    }
}
