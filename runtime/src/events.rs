//! Container and sandbox lifecycle events, for `GetContainerEvents`: every
//! lifecycle step emits one, every subscriber receives it.

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

/// The broadcast channel events go through. A subscriber that falls more
/// than `CAPACITY` events behind misses the oldest (and is told so).
pub struct EventBus(broadcast::Sender<Event>);

impl EventBus {
    const CAPACITY: usize = 1024;

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }

    pub fn emit(&self, id: &str, kind: ContainerEventType) {
        // No subscriber is fine: nobody is listening.
        let _ = self.0.send(Event { id: id.to_string(), kind, at: now_nanos() });
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus(broadcast::channel(Self::CAPACITY).0)
    }
}
