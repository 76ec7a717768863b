//! GetContainerEvents: the runtime's lifecycle events as a stream, each with
//! the status of its pod and of the pod's containers, as kubelet's evented
//! PLEG reads them.

use std::pin::Pin;
use std::sync::Arc;

use gantry_proto::cri::v1::{ContainerEventResponse, GetEventsRequest};
use tonic::{Request, Response, Status};

use super::convert::{pod_container_statuses, pod_status};
use crate::events::Event;
use crate::runtime::Runtime;

pub type EventStream = Pin<Box<dyn futures_core::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

pub(super) async fn get_container_events(
    runtime: &Arc<Runtime>,
    _: Request<GetEventsRequest>,
) -> Result<Response<EventStream>, Status> {
    let (backlog, mut events) = runtime.events.subscribe();
    let runtime = runtime.clone();
    let stream = async_stream::stream! {
        for e in backlog {
            yield Ok(event_response(&runtime, e).await);
        }
        loop {
            match events.recv().await {
                Ok(e) => yield Ok(event_response(&runtime, e).await),
                // A slow reader missed some: go on with the newest.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event subscriber fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    };
    Ok(Response::new(Box::pin(stream)))
}

async fn event_response(runtime: &Runtime, e: Event) -> ContainerEventResponse {
    let pod_id = match runtime.containers.lock().await.get(&e.id) {
        Some(c) => Some(c.sandbox_id.clone()),
        None => runtime.sandboxes.lock().await.contains_key(&e.id).then(|| e.id.clone()),
    };
    let sandbox = match &pod_id {
        Some(p) => runtime.sandboxes.lock().await.get(p).cloned(),
        None => None,
    };
    let containers_statuses = match &pod_id {
        Some(p) => pod_container_statuses(runtime, p).await,
        None => vec![],
    };
    ContainerEventResponse {
        container_id: e.id,
        container_event_type: e.kind as i32,
        created_at: e.at,
        pod_sandbox_status: sandbox.as_ref().map(pod_status),
        containers_statuses,
    }
}
