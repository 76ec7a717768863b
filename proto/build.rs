//! Generates the Rust for the `.proto` files with protox, a protobuf parser
//! in Rust: building Gantry needs no `protoc`.

use std::io;

/// Parses `file` (relative to this crate) into a descriptor set.
fn parse(file: &str) -> io::Result<prost_types::FileDescriptorSet> {
    println!("cargo:rerun-if-changed={file}");
    protox::compile([file], ["."]).map_err(|e| io::Error::other(format!("{file}: {e}")))
}

fn main() -> io::Result<()> {
    prost_build::Config::new().compile_fds(parse("shim.proto")?)?;
    // The gRPC services only when asked for: the shim must not carry tonic.
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure().compile_fds(parse("gantry.proto")?)?;
    }
    if std::env::var_os("CARGO_FEATURE_CRI").is_some() {
        tonic_prost_build::configure()
            .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
            // A record written before a field existed still reads back.
            .message_attribute(".", "#[serde(default)]")
            .compile_fds(parse("cri/api.proto")?)?;
    }
    Ok(())
}
