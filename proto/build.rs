fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=shim.proto");
    prost_build::compile_protos(&["shim.proto"], &["."])
}
