//! gantryd's CRI ImageService against the real test registry (tests/run.sh
//! starts it and pushes the fixture images).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use gantry_proto::cri::v1::{
    AuthConfig, CheckpointContainerRequest, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    ListMetricDescriptorsRequest, PullImageRequest, RemoveImageRequest, StatusRequest, VersionRequest,
};
use gantry_tests::registry::{tar_of, Entry, Layer};
use gantry_tests::{auth_registry, test_registry, test_registry_storage, tree, Cri, Daemon, PushClient};
use tonic::Code;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec { image: image.to_string(), ..Default::default() })
}

async fn pull(cri: &mut Cri, image: &str) -> Result<String, tonic::Status> {
    cri.images
        .pull_image(PullImageRequest { image: spec(image), ..Default::default() })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn pull_with(cri: &mut Cri, image: &str, auth: AuthConfig) -> Result<String, tonic::Status> {
    cri.images
        .pull_image(PullImageRequest { image: spec(image), auth: Some(auth), ..Default::default() })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn list(cri: &mut Cri) -> Vec<gantry_proto::cri::v1::Image> {
    cri.images.list_images(ListImagesRequest::default()).await.expect("list images").into_inner().images
}

async fn status(cri: &mut Cri, image: &str) -> Option<gantry_proto::cri::v1::Image> {
    cri.images
        .image_status(ImageStatusRequest { image: spec(image), verbose: false })
        .await
        .expect("image status")
        .into_inner()
        .image
}

async fn remove(cri: &mut Cri, image: &str) {
    cri.images.remove_image(RemoveImageRequest { image: spec(image) }).await.expect("remove image");
}

fn layers_dir(d: &Daemon) -> PathBuf {
    d.images_root().join("snapshots").join("layers")
}

fn blobs_dir(d: &Daemon) -> PathBuf {
    d.images_root().join("content").join("blobs").join("sha256")
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

/// Nothing half-made may remain after a failed pull.
fn assert_store_empty(d: &Daemon) {
    assert_eq!(count(&layers_dir(d)), 0, "layers left: {:?}", tree(&layers_dir(d)));
    assert_eq!(count(&blobs_dir(d)), 0, "blobs left: {:?}", tree(&blobs_dir(d)));
    assert_eq!(count(&d.images_root().join("content/ingest")), 0, "ingest files left");
    assert_eq!(count(&d.images_root().join("snapshots/unpack")), 0, "unpack dirs left");
}

fn reg(path: &str) -> String {
    format!("{}/{path}", test_registry())
}

#[tokio::test]
async fn version_status_and_unimplemented() {
    let mut d = Daemon::start("");
    let mut cri = d.connect().await;
    let v = cri.runtime.version(VersionRequest::default()).await.expect("version").into_inner();
    assert_eq!(v.runtime_name, "gantry");
    assert_eq!(v.runtime_api_version, "v1");
    let s = cri.runtime.status(StatusRequest { verbose: true }).await.expect("status").into_inner();
    let conditions = s.status.expect("status").conditions;
    assert!(conditions.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
    assert!(conditions.iter().any(|c| c.r#type == "NetworkReady" && !c.status && !c.reason.is_empty()));
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).expect("verbose config is JSON");
    assert_eq!(config["listen"], d.socket.display().to_string());
    let metrics = cri.runtime.list_metric_descriptors(ListMetricDescriptorsRequest::default()).await.expect("metrics");
    // The pod metrics' descriptors (tests/tests/stats.rs checks them in full).
    let descriptors = metrics.into_inner().descriptors;
    assert!(descriptors.iter().any(|d| d.name == "container_cpu_usage_seconds_total"), "{descriptors:?}");
    let err = cri
        .runtime
        .checkpoint_container(CheckpointContainerRequest { container_id: "x".into(), ..Default::default() })
        .await
        .expect_err("no such container");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains("\"x\"") || err.message().contains(" x"), "{err}");
    // SIGTERM shuts down cleanly and removes the socket.
    assert_eq!(d.stop(), Some(0), "log:\n{}", d.log_text());
    assert!(!d.socket.exists());
}

#[tokio::test]
async fn pull_list_inspect_remove() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let image = reg("gantry/busybox:latest");
    let id = pull(&mut cri, &image).await.expect("pull busybox");
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let images = list(&mut cri).await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, id);
    assert_eq!(images[0].repo_tags, vec![image.clone()]);
    assert_eq!(images[0].repo_digests.len(), 1);
    assert!(images[0].repo_digests[0].starts_with(&format!("{}/gantry/busybox@sha256:", test_registry())));
    assert!(images[0].size > 500_000, "size {}", images[0].size);

    // Found by tag, by ID (with and without the prefix, whole or shortened as
    // `crictl images` prints it) and by repo digest.
    let short = id.trim_start_matches("sha256:")[..13].to_string();
    for name in [
        image.clone(),
        id.clone(),
        id.trim_start_matches("sha256:").to_string(),
        short,
        images[0].repo_digests[0].clone(),
    ] {
        assert_eq!(status(&mut cri, &name).await.map(|i| i.id), Some(id.clone()), "{name}");
    }
    let verbose = cri
        .images
        .image_status(ImageStatusRequest { image: spec(&image), verbose: true })
        .await
        .expect("verbose status")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).expect("info JSON");
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "sh");
    assert!(status(&mut cri, &reg("gantry/busybox:nope")).await.is_none(), "unknown image: empty answer");

    // The layer is unpacked once, with its files.
    let layers: Vec<_> = std::fs::read_dir(layers_dir(&d)).expect("layers").flatten().collect();
    assert_eq!(layers.len(), 1);
    let busybox = layers[0].path().join("fs/bin/busybox");
    assert!(busybox.metadata().expect("busybox binary").len() > 500_000);
    assert_eq!(std::fs::read_link(layers[0].path().join("fs/bin/sh")).expect("sh link").to_str(), Some("busybox"));

    let fs = cri.images.image_fs_info(ImageFsInfoRequest {}).await.expect("fs info").into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().expect("bytes").value > 1_000_000);
    assert!(usage.inodes_used.as_ref().expect("inodes").value > 10);
    assert!(usage.timestamp > 0);
    assert!(!usage.fs_id.as_ref().expect("fs id").mountpoint.is_empty());
    // The writable layers' filesystem, for kubelet's split-filesystem eviction.
    let containers = &fs.container_filesystems[0];
    assert_eq!(containers.fs_id, usage.fs_id, "one filesystem for layers and writable layers");
    assert!(containers.used_bytes.is_some() && containers.inodes_used.is_some());

    remove(&mut cri, &image).await;
    assert!(list(&mut cri).await.is_empty());
    assert_store_empty(&d);
    // Removing again is not an error (CRI: idempotent).
    remove(&mut cri, &image).await;
}

#[tokio::test]
async fn shared_base_layer_is_stored_once_and_kept_while_used() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let (app1, app2) = (reg("gantry/app1:latest"), reg("gantry/app2:latest"));
    pull(&mut cri, &app1).await.expect("pull app1");
    assert_eq!(count(&layers_dir(&d)), 2);
    pull(&mut cri, &app2).await.expect("pull app2");
    assert_eq!(count(&layers_dir(&d)), 3, "the shared base layer is unpacked once");
    remove(&mut cri, &app1).await;
    assert_eq!(count(&layers_dir(&d)), 2, "app2 still needs the base layer");
    assert!(status(&mut cri, &app2).await.is_some());
    remove(&mut cri, &app2).await;
    assert_store_empty(&d);
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_work_in_a_mounted_overlay() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    pull(&mut cri, &reg("gantry/whiteout:latest")).await.expect("pull whiteout image");
    // Find the upper layer: the one with the whiteout device.
    let layers: Vec<PathBuf> =
        std::fs::read_dir(layers_dir(&d)).expect("layers").flatten().map(|e| e.path().join("fs")).collect();
    let upper = layers
        .iter()
        .find(|l| l.join("etc/removed-file").symlink_metadata().is_ok_and(|m| m.file_type().is_char_device()))
        .expect("a layer with the whiteout as a char device");
    let wh = upper.join("etc/removed-file").symlink_metadata().expect("whiteout");
    assert_eq!((wh.rdev(), wh.uid(), wh.gid()), (0, 0, 0), "whiteout is a 0:0 char device owned by root");
    let opaque = xattr::get(upper.join("data"), "trusted.overlay.opaque").expect("xattr");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));

    // Mount the image as a container rootfs would be, and look.
    let store = gantry_imageservice::snapshot::Snapshotter::open(&d.images_root().join("snapshots")).expect("open");
    let chains = gantry_tests::image_chain_ids(&mut cri, &reg("gantry/whiteout:latest")).await;
    let layout = store.prepare_rw("test-rootfs", &chains).expect("prepare rw");
    let target = d.dir.path().join("rootfs");
    std::fs::create_dir_all(&target).expect("mkdir");
    layout.mount(&target).expect("mount overlay");
    let guard = gantry_tests::MountGuard(target.clone());
    assert!(!target.join("etc/removed-file").exists(), "whiteout hides the lower file");
    assert!(target.join("etc/passwd").exists());
    let data: Vec<String> = tree(&target.join("data"));
    assert_eq!(data, vec!["c".to_string()], "opaque dir hides a and b");
    std::fs::write(target.join("new-file"), b"x").expect("rootfs is writable");
    drop(guard);
    assert!(layout.upperdir.join("new-file").exists(), "writes land in the upper dir");
    store.remove_rw("test-rootfs").expect("remove rw");
}

#[tokio::test]
async fn compression_variants_and_schema2_share_one_unpacked_layer() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let gzip = pull(&mut cri, &reg("gantry/busybox:latest")).await.expect("gzip");
    let first_size = list(&mut cri).await[0].size;
    for variant in ["zstd", "uncompressed", "v2s2"] {
        let id = pull(&mut cri, &reg(&format!("gantry/busybox:{variant}")))
            .await
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
        assert_eq!(id, gzip, "{variant}: same config, same image ID");
    }
    assert_eq!(count(&layers_dir(&d)), 1, "same diff ID, one snapshot");
    let images = list(&mut cri).await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].repo_tags.len(), 4, "{:?}", images[0].repo_tags);
    assert_eq!(images[0].size, first_size, "the first manifest pulled stays the image's, as containerd");
    let mut sorted = images[0].repo_tags.clone();
    sorted.sort();
    assert_eq!(images[0].repo_tags, sorted);
    // Each variant's manifest stays resolvable by its repo digest.
    for digest in &images[0].repo_digests {
        assert_eq!(status(&mut cri, digest).await.map(|i| i.id), Some(gzip.clone()), "{digest}");
    }
    remove(&mut cri, &gzip).await;
    assert_store_empty(&d);
}

#[tokio::test]
async fn multi_platform_index_picks_the_host_platform() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let image = reg("gantry/multiarch:latest");
    pull(&mut cri, &image).await.expect("pull index");
    let arch_files: Vec<String> = std::fs::read_dir(layers_dir(&d))
        .expect("layers")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("fs/arch")).ok())
        .collect();
    assert_eq!(arch_files.iter().map(|s| s.trim()).collect::<Vec<_>>(), vec!["amd64"]);
    let img = status(&mut cri, &image).await.expect("image");
    // The repo digest is the index's, as containerd reports it.
    let raw = reqwest::Client::new()
        .get(format!("http://{}/v2/gantry/multiarch/manifests/latest", test_registry()))
        .header("accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .await
        .expect("get index")
        .bytes()
        .await
        .expect("index bytes");
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/gantry/multiarch@sha256:{}", test_registry(), gantry_tests::sha256_hex(&raw))]
    );
}

#[tokio::test]
async fn second_tag_adds_and_moved_tag_moves() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let a = pull(&mut cri, &reg("gantry/busybox:latest")).await.expect("latest");
    let b = pull(&mut cri, &reg("gantry/busybox:other")).await.expect("other");
    assert_eq!(a, b);
    assert_eq!(list(&mut cri).await[0].repo_tags.len(), 2);

    // Push two different images under one tag in turn.
    let push = PushClient::new(&test_registry());
    let repo = format!("gantry/moving-{}", std::process::id());
    let v1 = Layer::gzip(&tar_of(&[Entry::File("version", b"1")]));
    let v2 = Layer::gzip(&tar_of(&[Entry::File("version", b"2")]));
    let (_, config1) = push.push_image(&repo, "tag", &[v1]).await;
    let moving = reg(&format!("{repo}:tag"));
    assert_eq!(pull(&mut cri, &moving).await.expect("pull v1"), config1);
    let (_, config2) = push.push_image(&repo, "tag", &[v2]).await;
    assert_eq!(pull(&mut cri, &moving).await.expect("pull v2"), config2);
    let old = status(&mut cri, &config1).await.expect("old image kept");
    assert!(old.repo_tags.is_empty(), "tag moved away: {:?}", old.repo_tags);
    assert_eq!(old.repo_digests.len(), 1, "still reachable by digest");
    assert_eq!(status(&mut cri, &moving).await.map(|i| i.id), Some(config2));
}

#[tokio::test]
async fn user_from_config_is_reported() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    pull(&mut cri, &reg("gantry/user:latest")).await.expect("pull");
    pull(&mut cri, &reg("gantry/user:named")).await.expect("pull");
    let numeric = status(&mut cri, &reg("gantry/user:latest")).await.expect("image");
    assert_eq!(numeric.uid.map(|u| u.value), Some(1234));
    assert_eq!(numeric.username, "");
    let named = status(&mut cri, &reg("gantry/user:named")).await.expect("image");
    assert_eq!(named.uid, None);
    assert_eq!(named.username, "app");
}

#[tokio::test]
async fn bad_references_unknown_images_and_down_registries_are_clear_errors() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let err = pull(&mut cri, "Not A Reference").await.expect_err("bad ref");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("Not A Reference"), "{err}");

    for missing in [reg("gantry/busybox:no-such-tag"), reg("gantry/no-such-repo:latest")] {
        let err = pull(&mut cri, &missing).await.expect_err("missing image");
        assert_eq!(err.code(), Code::NotFound, "{err}");
        assert!(err.message().contains(&missing), "{err}");
    }
    // Nothing listens on port 1.
    let err = pull(&mut cri, "127.0.0.1:1/gantry/busybox:latest").await.expect_err("down");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("127.0.0.1:1"), "{err}");
    let err = cri.images.remove_image(RemoveImageRequest { image: spec("") }).await.expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_store_empty(&d);
}

#[tokio::test]
async fn registry_credentials() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let (registry, user, password) = auth_registry();
    let image = format!("{registry}/gantry/busybox:latest");
    let err = pull(&mut cri, &image).await.expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let wrong = AuthConfig { username: user.clone(), password: "wrong".into(), ..Default::default() };
    let err = pull_with(&mut cri, &image, wrong).await.expect_err("wrong password");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("credentials"), "{err}");
    assert_store_empty(&d);
    let right = AuthConfig { username: user.clone(), password: password.clone(), ..Default::default() };
    pull_with(&mut cri, &image, right).await.expect("right password");
    // The `auth` field (base64 user:password) works too.
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    pull_with(&mut cri, &image, AuthConfig { auth, ..Default::default() }).await.expect("auth field");
}

#[tokio::test]
async fn tampered_blob_is_refused_and_nothing_is_stored() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let push = PushClient::new(&test_registry());
    let repo = format!("gantry/tampered-{}", std::process::id());
    // Content of its own: a blob other tests push too could be put back
    // untampered by their upload while this test runs.
    let content = format!("tampered {}", std::process::id());
    let layer = Layer::gzip(&tar_of(&[Entry::File("hello", content.as_bytes())]));
    let blob_hex = gantry_tests::sha256_hex(&layer.blob);
    push.push_image(&repo, "latest", &[layer]).await;
    // Flip bytes of the stored blob, keeping its size: the registry now serves
    // content that does not match the digest it is asked for.
    let data =
        test_registry_storage().join(format!("docker/registry/v2/blobs/sha256/{}/{blob_hex}/data", &blob_hex[..2]));
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let n = bytes.len();
    bytes[n - 12] ^= 0xff;
    bytes[n / 2] ^= 0xff;
    std::fs::write(&data, &bytes).expect("tamper");
    let err = pull(&mut cri, &reg(&format!("{repo}:latest"))).await.expect_err("tampered");
    assert_eq!(err.code(), Code::DataLoss, "{err}");
    assert!(list(&mut cri).await.is_empty());
    assert_store_empty(&d);
}

#[tokio::test]
async fn escaping_layer_entries_and_truncated_gzip_are_refused() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let push = PushClient::new(&test_registry());
    let cases: Vec<(&str, Layer, &str)> = vec![
        ("dotdot", Layer::gzip(&tar_of(&[Entry::File("../escaped", b"x")])), "escapes"),
        ("absolute", Layer::gzip(&tar_of(&[Entry::File("/abs", b"x")])), "escapes"),
        (
            "symlink",
            Layer::gzip(&tar_of(&[Entry::Symlink("evil", "../../../../../../tmp"), Entry::File("evil/pwned", b"x")])),
            "escapes",
        ),
        ("hardlink", Layer::gzip(&tar_of(&[Entry::Hardlink("link", "../../../../etc/passwd")])), "escapes"),
        (
            "truncated",
            {
                let mut l = Layer::gzip(&tar_of(&[Entry::File("big", &vec![7u8; 1 << 20])]));
                l.blob.truncate(l.blob.len() / 2);
                l
            },
            "incomplete",
        ),
    ];
    for (name, layer, expect) in cases {
        let repo = format!("gantry/evil-{name}-{}", std::process::id());
        push.push_image(&repo, "latest", &[layer]).await;
        let err = pull(&mut cri, &reg(&format!("{repo}:latest"))).await.expect_err(name);
        assert_eq!(err.code(), Code::DataLoss, "{name}: {err}");
        assert!(err.message().contains(expect), "{name}: {err}");
        assert_store_empty(&d);
    }
    assert!(!Path::new("/tmp/pwned").exists());
    assert!(list(&mut cri).await.is_empty());
}

#[tokio::test]
async fn concurrent_pulls_fetch_each_layer_once() {
    let d = Daemon::start("");
    let cri = d.connect().await;
    let image = reg("gantry/app1:latest");
    let (mut c1, mut c2) = (cri.clone(), cri);
    let (a, b) = tokio::join!(pull(&mut c1, &image), pull(&mut c2, &image));
    assert_eq!(a.expect("first"), b.expect("second"));
    let downloads = d.log_text().matches("downloading").count();
    assert_eq!(downloads, 2, "two layers, each downloaded once; log:\n{}", d.log_text());
}

#[tokio::test]
async fn kill_9_mid_pull_then_restart_is_consistent() {
    let mut d = Daemon::start("");
    let cri = d.connect().await;
    // A big incompressible layer so the pull is still running when we strike.
    let push = PushClient::new(&test_registry());
    let repo = format!("gantry/big-{}", std::process::id());
    let mut noise = vec![0u8; 96 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let layer = Layer::gzip(&tar_of(&[Entry::File("noise", &noise)]));
    drop(noise);
    push.push_image(&repo, "latest", &[layer]).await;
    let image = reg(&format!("{repo}:latest"));

    let ingest = d.images_root().join("content/ingest");
    let mut puller = cri.clone();
    let image2 = image.clone();
    let pulling = tokio::spawn(async move { pull(&mut puller, &image2).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count(&ingest) == 0 {
        assert!(std::time::Instant::now() < deadline, "pull never started downloading");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    d.kill9();
    assert!(pulling.await.expect("join").is_err(), "the pull died with the daemon");
    assert!(count(&ingest) > 0 || count(&d.images_root().join("snapshots/unpack")) > 0, "a partial pull was on disk");

    d.start_again();
    let mut cri = d.connect().await;
    assert!(list(&mut cri).await.is_empty(), "a half-pulled image is not listed");
    assert_store_empty(&d);
    pull(&mut cri, &image).await.expect("pull again after restart");
    assert_eq!(list(&mut cri).await.len(), 1);
    // And the store survives a clean restart too.
    d.restart();
    let mut cri = d.connect().await;
    assert_eq!(list(&mut cri).await.len(), 1);
}

#[tokio::test]
async fn bearer_token_flow_with_password_identity_and_registry_tokens() {
    use gantry_tests::token_auth::{TokenAuthRegistry, PASSWORD, REFRESH_TOKEN, USER};
    let front = TokenAuthRegistry::start(&test_registry()).await;
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let image = format!("{}/gantry/busybox:latest", front.addr);

    let err = pull(&mut cri, &image).await.expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let wrong = AuthConfig { username: USER.into(), password: "nope".into(), ..Default::default() };
    let err = pull_with(&mut cri, &image, wrong).await.expect_err("wrong password");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("token server"), "{err}");

    let id = pull_with(
        &mut cri,
        &image,
        AuthConfig { username: USER.into(), password: PASSWORD.into(), ..Default::default() },
    )
    .await
    .expect("password exchanged for a token");
    remove(&mut cri, &id).await;
    let identity =
        AuthConfig { username: "<token>".into(), identity_token: REFRESH_TOKEN.into(), ..Default::default() };
    pull_with(&mut cri, &image, identity).await.expect("identity (refresh) token exchanged for a token");
    remove(&mut cri, &id).await;
    let registry_token = AuthConfig { registry_token: front.issue(), ..Default::default() };
    pull_with(&mut cri, &image, registry_token).await.expect("registry token used as is");
}

#[tokio::test]
async fn mirrors_are_tried_first_and_upstream_can_be_skipped() {
    let upstream = test_registry();
    let d = Daemon::start(&format!(
        r#"
[registries."mirrored.example.invalid"]
mirrors = ["http://{upstream}"]
skip_upstream = true

[registries."{upstream}"]
mirrors = ["http://127.0.0.1:1"]

[registries."dead.example.invalid"]
mirrors = ["http://127.0.0.1:1"]
skip_upstream = true
"#
    ));
    let mut cri = d.connect().await;
    // Served entirely by the mirror, under the upstream's name.
    let mirrored = "mirrored.example.invalid/gantry/busybox:latest";
    let id = pull(&mut cri, mirrored).await.expect("pull through mirror");
    assert_eq!(status(&mut cri, mirrored).await.map(|i| i.id), Some(id));
    // A dead mirror falls through to the upstream.
    pull(&mut cri, &reg("gantry/app1:latest")).await.expect("fallback to upstream");
    // Mirrors only, all dead: unavailable, and the real host is never asked.
    let err = pull(&mut cri, "dead.example.invalid/gantry/busybox:latest").await.expect_err("dead mirror");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn tls_registry_is_trusted_through_its_ca_file() {
    let tls = std::env::var("GANTRY_TEST_TLS_REGISTRY").expect("GANTRY_TEST_TLS_REGISTRY: run through tests/run.sh");
    let ca = std::env::var("GANTRY_TEST_TLS_CA").expect("GANTRY_TEST_TLS_CA");
    let image = format!("{tls}/gantry/busybox:latest");
    // Without the CA the certificate is not trusted.
    let d = Daemon::start(&format!("[registries.\"{tls}\"]\nplain_http = false\n"));
    let mut cri = d.connect().await;
    let err = pull(&mut cri, &image).await.expect_err("untrusted certificate");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().to_lowercase().contains("certificate"), "{err}");
    drop(cri);
    drop(d);
    let d = Daemon::start(&format!("[registries.\"{tls}\"]\nplain_http = false\nca_file = \"{ca}\"\n"));
    let mut cri = d.connect().await;
    pull(&mut cri, &image).await.expect("pull over TLS with the CA file");
}

#[tokio::test]
async fn schema_1_manifests_are_refused_clearly() {
    let front = gantry_tests::token_auth::TokenAuthRegistry::start(&test_registry()).await;
    let schema1 = serde_json::json!({
        "schemaVersion": 1,
        "name": "gantry/old",
        "tag": "latest",
        "architecture": "amd64",
        "fsLayers": [],
        "history": [],
    });
    front.serve_raw(
        "/v2/gantry/old/manifests/latest",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        &schema1.to_string(),
    );
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let err = pull(&mut cri, &format!("{}/gantry/old:latest", front.addr)).await.expect_err("schema 1");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("schema 1"), "{err}");
    assert_store_empty(&d);
}

#[tokio::test]
async fn media_types_decide_how_a_layer_is_read() {
    let d = Daemon::start("");
    let mut cri = d.connect().await;
    let push = PushClient::new(&test_registry());
    // A perfectly good gzip tar, announced as something else: refused on its
    // type alone (containerd refuses it too), nothing fetched or stored.
    for media_type in [
        "application/vnd.example.unknown.layer.v1+zip",
        "application/octet-stream",
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
    ] {
        let mut layer = Layer::gzip(&tar_of(&[Entry::File("hello", b"hello world")]));
        layer.media_type = media_type;
        let repo = format!("gantry/mediatype-{}-{}", media_type.len(), std::process::id());
        push.push_image(&repo, "latest", &[layer]).await;
        let err = pull(&mut cri, &reg(&format!("{repo}:latest"))).await.expect_err(media_type);
        assert_eq!(err.code(), Code::FailedPrecondition, "{media_type}: {err}");
        assert!(err.message().contains(media_type) || err.message().contains("encrypted"), "{err}");
        assert_store_empty(&d);
    }
    // The type is believed: a gzip blob announced as a plain tar is not
    // gunzipped behind the client's back, so its content fails the diff ID.
    let mut layer = Layer::gzip(&tar_of(&[Entry::File("hello", b"hello world")]));
    layer.media_type = "application/vnd.oci.image.layer.v1.tar";
    let repo = format!("gantry/mediatype-liar-{}", std::process::id());
    push.push_image(&repo, "latest", &[layer]).await;
    let err = pull(&mut cri, &reg(&format!("{repo}:latest"))).await.expect_err("not a plain tar");
    assert_eq!(err.code(), Code::DataLoss, "{err}");
    assert_store_empty(&d);
}
