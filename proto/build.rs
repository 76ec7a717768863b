fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=shim.proto");
    println!("cargo:rerun-if-changed=gantry.proto");
    prost_build::compile_protos(&["shim.proto"], &["."])?;
    // The gRPC service only when asked for: the shim must not carry tonic.
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure().compile_protos(&["gantry.proto"], &["."])?;
    }
    Ok(())
}
