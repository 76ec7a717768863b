//! Layer media types: the one thing that decides how a layer's bytes are
//! read. A layer whose type is not a known tar (plain, gzip or zstd, OCI or
//! Docker, distributable or not) is refused before anything is fetched, as
//! containerd does: bytes are never sniffed to guess what a layer is.

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type names, or `None` for a type that is
/// not a layer Gantry can unpack (encrypted, unknown, not a tar).
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    Some(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tars_only() {
        assert_eq!(layer_compression("application/vnd.oci.image.layer.v1.tar+gzip"), Some(Compression::Gzip));
        assert_eq!(layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"), Some(Compression::Gzip));
        assert_eq!(layer_compression("application/vnd.oci.image.layer.v1.tar+zstd"), Some(Compression::Zstd));
        assert_eq!(layer_compression("application/vnd.oci.image.layer.v1.tar"), Some(Compression::None));
        for refused in [
            "",
            "application/vnd.example.unknown.layer.v1+zip",
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/vnd.oci.image.layer.v1.tar+zstd+encrypted",
            "application/octet-stream",
            "APPLICATION/VND.OCI.IMAGE.LAYER.V1.TAR",
        ] {
            assert_eq!(layer_compression(refused), None, "{refused:?}");
        }
    }
}
