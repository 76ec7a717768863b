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

/// Responses a subscriber may have waiting before the producer waits for it.
const SUBSCRIBER_BUFFER: usize = 256;

pub(super) async fn get_container_events(
    runtime: &Arc<Runtime>,
    _: Request<GetEventsRequest>,
) -> Result<Response<EventStream>, Status> {
    let (backlog, mut events) = runtime.events.subscribe();
    let (tx, mut rx) = tokio::sync::mpsc::channel(SUBSCRIBER_BUFFER);
    let runtime = runtime.clone();
    // Responses are made by a task of their own, not inside the response
    // stream: a client that stops reading stalls its stream under HTTP/2
    // flow control, and a stream stalled halfway through making a response
    // would keep the runtime's locks (or a lock handed to it) from
    // everyone. Here the producer only ever waits on the channel, holding
    // nothing; the broadcast channel's lag drops what a stalled reader
    // misses, as before.
    tokio::spawn(async move {
        for e in backlog {
            if tx.send(Ok(event_response(&runtime, e).await)).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                next = events.recv() => next,
                () = tx.closed() => return,
            };
            match next {
                Ok(e) => {
                    if tx.send(Ok(event_response(&runtime, e).await)).await.is_err() {
                        return;
                    }
                }
                // A slow reader missed some: go on with the newest.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event subscriber fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream = async_stream::stream! {
        while let Some(response) = rx.recv().await {
            yield response;
        }
    };
    Ok(Response::new(Box::pin(stream)))
}

async fn event_response(runtime: &Runtime, e: Event) -> ContainerEventResponse {
    // One lock at a time: the containers guard ends before sandboxes is taken.
    let owner = runtime.containers.lock().await.get(&e.id).map(|c| c.sandbox_id.clone());
    let pod_id = match owner {
        Some(pod) => Some(pod),
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
