//! The bodies of Gantry's fuzz targets, one function per target, shared by
//! the cargo-fuzz binaries (`fuzz_targets/`) and by the corpus replay that
//! runs on stable in the ordinary test suite (`tests/tests/fuzz_corpus.rs`
//! includes this file). Any panic is a bug; errors are expected.

use std::path::Path;

#[path = "../../shim/src/log.rs"]
#[allow(dead_code)]
mod shim_log;

/// Every target, as named in `fuzz_targets/` and `corpus/`.
pub const TARGETS: &[&str] =
    &["reference", "documents", "layer", "archive", "spdy", "websocket", "cri_log", "shim_protocol"];

/// Runs `target` on `data`; `scratch` is an empty directory it may use.
pub fn run(target: &str, data: &[u8], scratch: &Path) {
    match target {
        "reference" => gantry_imageservice::fuzz::reference(data),
        "documents" => gantry_imageservice::fuzz::documents(data),
        "layer" => gantry_imageservice::fuzz::layer(data, scratch),
        "archive" => gantry_imageservice::fuzz::archive(data, scratch),
        "spdy" => gantry_runtime::streaming::fuzz::spdy(data),
        "websocket" => gantry_runtime::streaming::fuzz::websocket(data),
        "cri_log" => cri_log(data, scratch),
        "shim_protocol" => shim_protocol(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// The shim's CRI log writer on a container's output, cut where the
/// input's first byte says: every line is `TIMESTAMP STREAM P|F CONTENT`,
/// no content longer than 16 KiB or holding a newline, and the contents
/// give back exactly what the container wrote (plus a last newline).
pub fn cri_log(data: &[u8], scratch: &Path) {
    let Some((&cut, output)) = data.split_first() else { return };
    let cut = usize::from(cut).max(1) * 64;
    let path = scratch.join("log");
    let Ok(file) = std::fs::File::create(&path) else { return };
    let mut log = shim_log::CriLog::new(file);
    let mut buf = shim_log::LineBuffer::default();
    for chunk in output.chunks(cut) {
        log.feed("stdout", &mut buf, chunk).expect("log write");
    }
    log.finish("stdout", &mut buf).expect("log write");
    drop(log);
    let written = std::fs::read(&path).expect("log read");
    let mut rebuilt = Vec::new();
    for line in written.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(4, |b| *b == b' ');
        let (ts, stream, tag, content) = (parts.next(), parts.next(), parts.next(), parts.next().unwrap_or_default());
        assert!(ts.is_some_and(|t| t.len() == 30 && t.ends_with(b"Z")), "timestamp of {line:?}");
        assert_eq!(stream, Some(&b"stdout"[..]));
        assert!(content.len() <= shim_log::MAX_LINE, "a line of {} bytes", content.len());
        rebuilt.extend_from_slice(content);
        match tag {
            Some(b"F") => rebuilt.push(b'\n'),
            Some(b"P") => {}
            other => panic!("tag {other:?}"),
        }
    }
    let mut expected = output.to_vec();
    if !expected.is_empty() && !expected.ends_with(b"\n") {
        expected.push(b'\n');
    }
    assert_eq!(rebuilt, expected, "the log does not give back the output");
}

/// The shim's two length-prefixed protocols on hostile bytes: API
/// requests (u32 length, protobuf, bounded as the shim bounds them) and
/// attach frames (kind, u32 length, payload), which must round-trip.
pub fn shim_protocol(data: &[u8]) {
    use prost::Message;
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > gantry_proto::shim::MAX_FRAME || rest.len() < 4 + len {
            break;
        }
        let _ = gantry_proto::shim::Request::decode(&rest[4..4 + len]);
        let _ = gantry_proto::shim::Response::decode(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    use gantry_proto::attach;
    let mut buf = data.to_vec();
    while let Some((kind, payload)) = attach::take_frame(&mut buf) {
        let mut again = attach::frame(kind, &payload);
        assert_eq!(attach::take_frame(&mut again), Some((kind, payload)));
        assert!(again.is_empty());
    }
}
