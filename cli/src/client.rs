//! Connections to gantryd's unix socket: the CRI services and the Gantry
//! image API share one channel.

use std::path::Path;

use anyhow::Context;
use gantry_proto::api::containers_client::ContainersClient;
use gantry_proto::api::images_client::ImagesClient;
use gantry_proto::cri::v1::image_service_client::ImageServiceClient;
use gantry_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::cri::v1::{ContainerFilter, ListContainersRequest};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Replies can be large (`images` on a busy node).
const MAX_MESSAGE: usize = 64 << 20;

pub struct Clients {
    pub images: ImageServiceClient<Channel>,
    pub runtime: RuntimeServiceClient<Channel>,
    pub gantry: ImagesClient<Channel>,
    pub containers: ContainersClient<Channel>,
}

pub async fn connect(socket: &Path) -> anyhow::Result<Clients> {
    let path = socket.to_path_buf();
    let channel = Endpoint::try_from("http://gantryd.invalid")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("cannot reach gantryd at {} (set --address or GANTRY_ADDRESS)", socket.display()))?;
    Ok(Clients {
        images: ImageServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
        runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
        gantry: ImagesClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
        containers: ContainersClient::new(channel),
    })
}

/// A container's full ID from a prefix, as `ps` prints them.
pub async fn container_id(c: &mut Clients, prefix: &str) -> anyhow::Result<String> {
    let all = c
        .runtime
        .list_containers(ListContainersRequest { filter: Some(ContainerFilter::default()) })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .containers;
    let matches: Vec<&str> = all.iter().map(|c| c.id.as_str()).filter(|id| id.starts_with(prefix)).collect();
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => anyhow::bail!("no container {prefix:?}"),
        _ => anyhow::bail!("{prefix:?} names {} containers: give more of the ID", matches.len()),
    }
}

/// Whether a running container is paused (its verbose CRI status says).
pub async fn is_paused(c: &mut Clients, id: &str) -> bool {
    let request = gantry_proto::cri::v1::ContainerStatusRequest { container_id: id.to_string(), verbose: true };
    let Ok(r) = c.runtime.container_status(request).await else { return false };
    let info = r.into_inner().info;
    info.get("info")
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .and_then(|v| v["paused"].as_bool())
        .unwrap_or(false)
}
