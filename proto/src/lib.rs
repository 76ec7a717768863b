//! Gantry's own wire APIs (see the `.proto` files beside this crate).

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
