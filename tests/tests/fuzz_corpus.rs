//! The fuzz targets' corpus (`fuzz/corpus/TARGET/`) and every input that
//! ever crashed one (`fuzz/regressions/TARGET/`), replayed on stable
//! through the same target bodies (`fuzz/src/lib.rs`). Real fuzzing needs
//! nightly: `tests/fuzz.sh`.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = vec![];
    for kind in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

#[test]
fn every_target_has_seeds_and_replays_them_cleanly() {
    for target in targets::TARGETS {
        let files = inputs(target);
        assert!(!files.is_empty(), "no corpus for fuzz target {target}");
        for file in files {
            let data = std::fs::read(&file).expect("read input");
            let scratch = tempfile::tempdir().expect("scratch");
            let outcome = std::panic::catch_unwind(|| targets::run(target, &data, scratch.path()));
            assert!(outcome.is_ok(), "fuzz target {target} panicked on {}", file.display());
        }
    }
}

/// Writes the committed seed corpus (`cargo test -p gantry-tests --test
/// fuzz_corpus -- --ignored write_seeds`): small, made with the real
/// encoders, one or a few files per target.
#[test]
#[ignore]
fn write_seeds() {
    use gantry_runtime::streaming::spdy::{Frame, FrameWriter};
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(name), data).expect("write seed");
    };
    for (i, r) in [
        "busybox",
        "docker.io/library/busybox:1.36",
        "127.0.0.1:5079/gantry/busybox:latest",
        "registry.example.com:5000/a/b/c:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "[::1]:5000/x/y",
    ]
    .iter()
    .enumerate()
    {
        put("reference", &format!("seed-{i}"), r.as_bytes());
    }
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": 3}],
    });
    let index = serde_json::json!({
        "schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 4,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 4,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    });
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"User": "1000:1000", "Env": ["A=b"]},
        "rootfs": {"type": "layers", "diff_ids": [digest]}});
    put("documents", "manifest", manifest.to_string().as_bytes());
    put("documents", "index", index.to_string().as_bytes());
    put("documents", "config", config.to_string().as_bytes());

    use gantry_tests::registry::{tar_of, Entry};
    let layer = tar_of(&[
        Entry::Dir("etc"),
        Entry::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        Entry::File("etc/.wh.removed", b""),
        Entry::Dir("data"),
        Entry::File("data/.wh..wh..opq", b""),
        Entry::Symlink("link", "../../outside"),
        Entry::Symlink("abs", "/etc"),
        Entry::Hardlink("hard", "etc/passwd"),
        Entry::File("../escape", b"x"),
    ]);
    put("layer", "whiteouts-links", &layer);
    put("layer", "plain", &tar_of(&[Entry::File("a", b"hello")]));

    let blob = manifest.to_string();
    let blob_digest = format!("sha256:{}", gantry_tests::registry::sha256_hex(blob.as_bytes()));
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob_digest, "size": blob.len()}]});
    let blob_path = format!("blobs/sha256/{}", gantry_tests::registry::sha256_hex(blob.as_bytes()));
    let docker = serde_json::json!([{"Config": blob_path, "RepoTags": ["a:b"], "Layers": []}]);
    let archive = tar_of(&[
        Entry::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        Entry::File("index.json", idx.to_string().as_bytes()),
        Entry::File(&blob_path, blob.as_bytes()),
        Entry::File("manifest.json", docker.to_string().as_bytes()),
        Entry::Symlink("blobs/link", "sha256"),
    ]);
    put("archive", "oci-and-docker", &archive);

    let mut w = FrameWriter::default();
    let frames = [
        Frame::SynStream { stream_id: 1, headers: vec![("streamtype".into(), "error".into())], fin: false },
        Frame::SynStream {
            stream_id: 3,
            headers: vec![
                ("streamtype".into(), "data".into()),
                ("port".into(), "80".into()),
                ("requestid".into(), "0".into()),
            ],
            fin: false,
        },
        Frame::Data { stream_id: 3, fin: true, data: b"GET / HTTP/1.0\r\n\r\n".to_vec() },
        Frame::RstStream { stream_id: 1, status: 5 },
        Frame::Ping(1),
        Frame::GoAway { last_stream_id: 3 },
    ];
    let bytes: Vec<u8> = frames.iter().flat_map(|f| w.encode(f)).collect();
    put("spdy", "session", &bytes);

    // Masked client frames: a binary message on channel 0, a ping, a close.
    let masked = |opcode: u8, payload: &[u8]| {
        let key = [1u8, 2, 3, 4];
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    };
    let mut ws = masked(2, b"\x00hello");
    ws.extend(masked(9, b"p"));
    ws.extend(masked(2, &bytes[..bytes.len().min(100)]));
    ws.extend(masked(8, &[3, 232]));
    put("websocket", "messages", &ws);

    put("cri_log", "lines", b"\x01hello\nworld\n\npartial");
    let mut long = vec![3u8];
    long.extend(std::iter::repeat_n(b'x', 40 << 10));
    long.extend_from_slice(b"\nend");
    put("cri_log", "long-line", &long);

    let mut shim = vec![];
    let req = gantry_proto::shim::Request::default();
    let body = prost::Message::encode_to_vec(&req);
    shim.extend_from_slice(&(body.len() as u32).to_be_bytes());
    shim.extend(body);
    put("shim_protocol", "request", &shim);
    let mut attach = gantry_proto::attach::frame(gantry_proto::attach::STDIN, b"input");
    attach.extend(gantry_proto::attach::frame(gantry_proto::attach::RESIZE, &[0, 80, 0, 24]));
    put("shim_protocol", "attach", &attach);
}
