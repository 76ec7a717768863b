//! `cri-bench`: times CRI calls against any runtime's socket, so gantryd and
//! containerd are measured by the same client in the same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s_cri::v1::{ImageSpec, PullImageRequest, RemoveImageRequest};

#[derive(Parser)]
#[command(about = "Time CRI calls against a runtime socket")]
struct Args {
    /// The runtime's CRI socket
    #[arg(long)]
    endpoint: PathBuf,
    /// Name of the runtime under test, copied into every result line
    #[arg(long, default_value = "")]
    label: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull images one after the other; print one JSON line per pull
    Pull { images: Vec<String> },
    /// Remove images (untimed; for resetting between rounds)
    Rmi { images: Vec<String> },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cri = gantry_tests::connect(&args.endpoint)
        .await
        .with_context(|| format!("connecting to {}", args.endpoint.display()))?;
    match args.command {
        Command::Pull { images } => {
            for image in images {
                let spec = Some(ImageSpec { image: image.clone(), ..Default::default() });
                let start = Instant::now();
                let id = cri
                    .images
                    .pull_image(PullImageRequest { image: spec, ..Default::default() })
                    .await
                    .with_context(|| format!("pulling {image}"))?
                    .into_inner()
                    .image_ref;
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                println!(
                    "{}",
                    serde_json::json!({"runtime": args.label, "op": "pull", "image": image, "id": id, "ms": ms})
                );
            }
        }
        Command::Rmi { images } => {
            for image in images {
                let spec = Some(ImageSpec { image, ..Default::default() });
                cri.images.remove_image(RemoveImageRequest { image: spec }).await?;
            }
        }
    }
    Ok(())
}
