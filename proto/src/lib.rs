//! Gantry's wire APIs (see the `.proto` files beside this crate): its own,
//! and the Kubernetes CRI it serves (`cri/api.proto`).

/// The Gantry image API (gRPC, beside CRI on gantryd's socket).
#[cfg(feature = "grpc")]
pub mod api {
    tonic::include_proto!("gantry.v1");
}

/// The Kubernetes Container Runtime Interface (package `runtime.v1`):
/// messages, and the RuntimeService and ImageService clients and servers.
#[cfg(feature = "cri")]
pub mod cri {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub mod systemd_cgroup;

/// The environment variable in which gantryd hands the cgroup mounts (the
/// `cgroup`/`cgroup2` lines of its mountinfo, read once) to gantry-shim.
pub const CGROUP_MOUNTINFO_ENV: &str = "GANTRY_CGROUP_MOUNTINFO";

/// gantryd <-> gantry-shim.
pub mod shim {
    include!(concat!(env!("OUT_DIR"), "/gantry.shim.v1.rs"));

    /// Largest frame either side accepts.
    pub const MAX_FRAME: usize = 1 << 20;

    /// Encodes a message with its 4-byte big-endian length prefix.
    pub fn frame<M: prost::Message>(msg: &M) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// gantryd <-> gantry-shim attach stream: a second unix socket per
/// container (the API socket's path with the extension `attach`) carrying
/// raw stdio, so bytes never go through protobuf. Each frame is a kind
/// byte, a 4-byte big-endian length and the payload.
pub mod attach {
    /// Client → shim: bytes for the container's stdin.
    pub const STDIN: u8 = 0;
    /// Shim → client: the container's stdout (or its terminal's output).
    pub const STDOUT: u8 = 1;
    /// Shim → client: the container's stderr.
    pub const STDERR: u8 = 2;
    /// Shim → client: the container exited and all its output was sent.
    pub const EXITED: u8 = 3;
    /// Client → shim: the client's stdin ended (the container's stdin is
    /// closed if it is `stdin_once`).
    pub const CLOSE_STDIN: u8 = 4;
    /// Client → shim: terminal size, u16 columns then u16 rows (big-endian).
    pub const RESIZE: u8 = 5;
    /// Largest payload either side sends in one frame.
    pub const MAX_PAYLOAD: usize = 1 << 16;

    pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Splits the first whole frame off `buf`: its kind and payload.
    pub fn take_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
        if buf.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            return None;
        }
        let kind = buf[0];
        let payload = buf[5..5 + len].to_vec();
        buf.drain(..5 + len);
        Some((kind, payload))
    }
}
