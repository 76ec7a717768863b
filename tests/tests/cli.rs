//! The `gantry` tool against a running gantryd: images, pull, inspect,
//! history, tag, df, Docker's rmi rules, ps and rm, exit codes.

use gantry_proto::cri::v1::NamespaceMode;
use gantry_tests::pods::*;
use gantry_tests::{bin_dir, test_registry, Daemon};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn gantry(d: &Daemon, args: &[&str]) -> Out {
    let out = std::process::Command::new(bin_dir().join("gantry"))
        .arg("--address")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run gantry");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let out = gantry(d, args);
    assert_eq!(out.code, 0, "gantry {args:?}: {}{}", out.stdout, out.stderr);
    out.stdout
}

fn json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(d, &all)).expect("JSON output")
}

fn image(name: &str) -> String {
    format!("{}/gantry/{name}", test_registry())
}

#[tokio::test]
async fn images_inspect_history_tag_and_df() {
    let d = Daemon::start("");
    for name in ["busybox:latest", "app1:latest", "app2:latest"] {
        assert!(ok(&d, &["pull", &image(name)]).contains("Pulled"));
    }
    let table = ok(&d, &["images"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.starts_with("REPOSITORY") && header.contains("IMAGE ID"), "{table}");
    assert!(table.contains(&format!("{}/gantry/app1", test_registry())), "{table}");

    let app1 = json(&d, &["inspect", &image("app1:latest")]);
    assert_eq!(app1["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(app1["Config"]["Labels"]["fixture"], "app1");
    assert_eq!(app1["Layers"].as_array().map(Vec::len), Some(2));
    assert_eq!(app1["RootFS"]["diff_ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(app1["RepoTags"], serde_json::json!([image("app1:latest")]));

    // One row per history entry; the entries that made layers carry their sizes.
    let history = json(&d, &["history", &image("app1:latest")]);
    let rows = history.as_array().expect("rows");
    assert_eq!(rows.len(), 4, "{history}");
    let sized: Vec<bool> = rows.iter().map(|r| r["Size"].as_u64().unwrap_or(0) > 0).collect();
    let made_layers: Vec<bool> = rows.iter().map(|r| !r["EmptyLayer"].as_bool().unwrap_or(false)).collect();
    assert_eq!(sized, made_layers, "{history}");
    assert!(ok(&d, &["history", &image("app1:latest")]).lines().next().unwrap_or("").starts_with("CREATED"));

    // A second name for the same image.
    ok(&d, &["tag", &image("busybox:latest"), "mine/busybox:v1"]);
    let again = json(&d, &["inspect", "mine/busybox:v1"]);
    assert_eq!(again["Id"], json(&d, &["inspect", &image("busybox:latest")])["Id"]);
    assert!(ok(&d, &["images"]).contains("docker.io/mine/busybox"));

    // Three images on one base: the base is on disk once, and df says so.
    let df = json(&d, &["df"]);
    let images = df["Images"].as_array().expect("images");
    assert_eq!(images.len(), 3);
    let base = images.iter().find(|i| i["RepoTags"].to_string().contains("busybox")).expect("busybox");
    assert_eq!(base["UnpackedShared"], base["UnpackedSize"], "busybox's only layer is shared: {df}");
    let app = images.iter().find(|i| i["RepoTags"].to_string().contains("app1")).expect("app1");
    assert!(app["UnpackedUnique"].as_u64().unwrap_or(0) > 0, "{df}");
    let (total, summed) = (df["TotalUnpacked"].as_u64().unwrap(), df["SummedUnpacked"].as_u64().unwrap());
    assert!(total * 2 < summed, "shared layers counted once: {total} vs {summed}");
    assert!(ok(&d, &["df"]).contains("each shared layer once"));
}

#[tokio::test]
async fn rmi_follows_dockers_rules_and_ps_rm_show_the_lifecycle() {
    let d = Daemon::start("");
    let busybox = image("busybox:latest");
    ok(&d, &["pull", &busybox]);
    ok(&d, &["tag", &busybox, "second:name"]);

    // One of two tags: only the tag goes.
    let out = ok(&d, &["rmi", "second:name"]);
    assert_eq!(out.trim(), "Untagged: docker.io/library/second:name");
    assert!(ok(&d, &["images"]).contains("gantry/busybox"));

    // In use by a container: refused; forced: the image goes, the container keeps its layers.
    let mut cri = d.connect().await;
    let pod = run_pod(&mut cri, &d, "cli", NamespaceMode::Pod).await;
    let id = create(&mut cri, &pod, container("user", &["echo", "still runs"])).await.expect("create");
    let refused = gantry(&d, &["rmi", &busybox]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains(&id) && refused.stderr.contains("force"), "{}", refused.stderr);
    let forced = ok(&d, &["rmi", "--force", &busybox]);
    assert!(forced.contains("Deleted: sha256:"), "{forced}");
    assert!(!ok(&d, &["images"]).contains("gantry/busybox"));
    start(&mut cri, &id).await;
    assert_eq!(wait_exited(&mut cri, &id).await.exit_code, 0);
    assert_eq!(log_of(&pod, "user"), ["stdout F still runs"]);

    // ps: -a shows the exited container, plain ps only running ones; rm by short ID.
    let all = json(&d, &["ps", "-a"]);
    assert_eq!(all[0]["Id"], id.as_str());
    assert_eq!(all[0]["State"], "Exited");
    assert!(!ok(&d, &["ps"]).contains(&id[..12]));
    assert!(ok(&d, &["ps", "-a"]).contains(&id[..12]));
    assert_eq!(ok(&d, &["rm", &id[..12]]).trim(), id);
    assert_eq!(json(&d, &["ps", "-a"]), serde_json::json!([]));
    remove_pod(&mut cri, &pod).await;

    // Failures: clear messages and exit codes scripts can rely on.
    let missing = gantry(&d, &["rmi", "no/such:image"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no/such:image") && missing.stderr.contains("not found"), "{}", missing.stderr);
    let bad_tag = gantry(&d, &["tag", "no/such:image", "x:y"]);
    assert_eq!(bad_tag.code, 1);
    let usage = gantry(&d, &["rmi"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let out = std::process::Command::new(bin_dir().join("gantry"))
        .args(["--address", "/nonexistent/gantry.sock", "images"])
        .output()
        .expect("run gantry");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gantry.sock"));
}

#[tokio::test]
async fn save_load_round_trip_interop_and_bad_archives() {
    use gantry_tests::registry::{tar_of, Entry};
    let d = Daemon::start("");
    let (busybox, app1) = (image("busybox:latest"), image("app1:latest"));
    ok(&d, &["pull", &busybox]);
    ok(&d, &["pull", &app1]);
    let before = json(&d, &["inspect", &app1]);
    let archive = d.dir.path().join("images.tar");
    let archive_s = archive.display().to_string();
    ok(&d, &["save", "-o", &archive_s, &busybox, &app1]);

    // Both layouts in one tar; the shared base layer once.
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for wanted in ["oci-layout", "index.json", "manifest.json", "repositories"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} missing: {names:?}");
    }
    let base_layer = before["Layers"][0]["Digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    assert_eq!(names.iter().filter(|n| n.ends_with(&base_layer)).count(), 1, "{names:?}");

    // skopeo reads it as a docker-archive and as an OCI archive.
    let one = d.dir.path().join("app1.tar");
    ok(&d, &["save", "-o", &one.display().to_string(), &app1]);
    for transport in ["docker-archive", "oci-archive"] {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--config", &format!("{transport}:{}", one.display())])
            .output()
            .expect("skopeo");
        assert!(out.status.success(), "{transport}: {}", String::from_utf8_lossy(&out.stderr));
        let config: serde_json::Value = serde_json::from_slice(&out.stdout).expect("config JSON");
        assert_eq!(config["config"]["Labels"]["fixture"], "app1", "{transport}");
    }

    // umoci takes the OCI layout inside it: unpacked, the image's files are there.
    let layout = d.dir.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    tar::Archive::new(std::fs::File::open(&one).unwrap()).unpack(&layout).expect("untar");
    let bundle = d.dir.path().join("bundle");
    let out = std::process::Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:latest", layout.display())])
        .arg(&bundle)
        .output()
        .expect("umoci");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(bundle.join("rootfs/app1.txt").exists() && bundle.join("rootfs/bin/busybox").exists());

    // Remove, load back: same ID, digests and layers.
    ok(&d, &["rmi", &busybox, &app1]);
    let loaded = ok(&d, &["load", "-i", &archive_s]);
    assert!(loaded.contains(&format!("Loaded image: {app1}")), "{loaded}");
    let after = json(&d, &["inspect", &app1]);
    for key in ["Id", "RepoTags", "RepoDigests", "ManifestDigest", "Layers", "Config"] {
        assert_eq!(before[key], after[key], "{key}");
    }
    // A docker-archive as skopeo writes it (uncompressed layer tars) loads too.
    let skopeo_tar = d.dir.path().join("skopeo.tar");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false", &format!("docker://{busybox}")])
        .arg(format!("docker-archive:{}:other/name:v9", skopeo_tar.display()))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ok(&d, &["load", "-i", &skopeo_tar.display().to_string()]);
    assert_eq!(json(&d, &["inspect", "other/name:v9"])["Id"], json(&d, &["inspect", &busybox])["Id"]);

    // Bad archives: clear errors, nothing stored. (With no image left, every
    // layer is read from the archive, not found already in the store.)
    ok(&d, &["rmi", "--force", &busybox, &app1]);
    ok(&d, &["rmi", "other/name:v9"]);
    assert_eq!(ok(&d, &["images"]).lines().count(), 1, "only the header");
    let bytes = std::fs::read(&one).unwrap();
    let bad = d.dir.path().join("bad.tar");
    let try_load = |content: &[u8]| {
        std::fs::write(&bad, content).unwrap();
        gantry(&d, &["load", "-i", &bad.display().to_string()])
    };
    let truncated = try_load(&bytes[..bytes.len() / 2]);
    assert_eq!(truncated.code, 1, "{}", truncated.stdout);
    let mut tampered = bytes.clone();
    // Flip a byte inside the archive's largest entry (a layer blob).
    let at = bytes.len() / 3;
    tampered[at] ^= 0xff;
    let out = try_load(&tampered);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("digest") || out.stderr.contains("layer"), "{}", out.stderr);
    let escaping = tar_of(&[Entry::File("../evil", b"x"), Entry::File("index.json", b"{\"manifests\":[]}")]);
    let out = try_load(&escaping);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("escapes"), "{}", out.stderr);
    assert!(!d.dir.path().parent().unwrap().join("evil").exists());
    let after_bad = ok(&d, &["images"]);
    assert_eq!(after_bad.lines().count(), 1, "nothing loaded from bad archives: {after_bad}");
}

#[tokio::test]
async fn pause_freezes_a_container_and_unpause_thaws_it() {
    use gantry_proto::cri::v1::{ContainerStatsRequest, StopContainerRequest};
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "pause", NamespaceMode::Pod).await;
    let id = create(&mut cri, &pod, container("spin", &["sh", "-c", "while :; do :; done"])).await.expect("create");
    start(&mut cri, &id).await;
    let cpu = |mut cri: gantry_tests::Cri, id: String| async move {
        let stats = cri.runtime.container_stats(ContainerStatsRequest { container_id: id }).await.expect("stats");
        stats.into_inner().stats.and_then(|s| s.cpu).and_then(|c| c.usage_core_nano_seconds).map_or(0, |v| v.value)
    };

    assert_eq!(ok(&d, &["pause", &id[..12]]).trim(), id);
    assert_eq!(json(&d, &["ps"])[0]["State"], "Paused");
    let info = container_info(&mut cri, &id).await;
    assert_eq!(info["paused"], true, "{info}");
    let before = cpu(cri.clone(), id.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let frozen = cpu(cri.clone(), id.clone()).await - before;
    assert!(frozen < 20_000_000, "a paused container used {frozen} ns of CPU");

    ok(&d, &["unpause", &id]);
    assert_eq!(json(&d, &["ps"])[0]["State"], "Running");
    let before = cpu(cri.clone(), id.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(cpu(cri.clone(), id.clone()).await - before > 200_000_000, "unpaused, it spins again");

    // A paused container still stops (it is thawed to take the signal).
    ok(&d, &["pause", &id]);
    cri.runtime.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 2 }).await.expect("stop");
    assert_eq!(wait_exited(&mut cri, &id).await.state, gantry_proto::cri::v1::ContainerState::ContainerExited as i32);
    let refused = gantry(&d, &["pause", &id]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("not running"), "{}", refused.stderr);
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn commit_adds_a_layer_shares_the_parents_and_runs() {
    use gantry_proto::cri::v1::ImageSpec;
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let busybox = image("busybox:latest");
    let pod = run_pod(&mut cri, &d, "commit", NamespaceMode::Pod).await;
    // Add a file, delete one from the image, replace a directory wholesale.
    let script = "echo hello > /new.txt && rm /etc/group && rm -rf /home && mkdir /home && touch /home/only";
    let first = create(&mut cri, &pod, container("first", &["sh", "-c", script])).await.expect("create");
    start(&mut cri, &first).await;
    assert_eq!(wait_exited(&mut cri, &first).await.exit_code, 0);

    let id1 = ok(
        &d,
        &["commit", "-a", "tester", "-m", "first change", "-c", "CMD [\"cat\", \"/new.txt\"]", &first, "committed:one"],
    );
    let parent = json(&d, &["inspect", &busybox]);
    let one = json(&d, &["inspect", "committed:one"]);
    assert_eq!(one["Id"], id1.trim());
    assert_eq!(one["Author"], "tester");
    assert_eq!(one["Config"]["Cmd"], serde_json::json!(["cat", "/new.txt"]));
    // The parent's layers, shared, and one more.
    let (p_layers, layers) = (parent["Layers"].as_array().unwrap(), one["Layers"].as_array().unwrap());
    assert_eq!(layers.len(), p_layers.len() + 1);
    assert_eq!(&layers[..p_layers.len()], &p_layers[..]);
    let history = json(&d, &["history", "committed:one"]);
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["Comment"], "first change");
    assert!(last["Size"].as_u64().unwrap() > 0);

    // The committed image runs through CRI like any pulled one, changes and all.
    let mut config = container("check", &[]);
    config.image = Some(ImageSpec { image: "committed:one".into(), ..Default::default() });
    config.args = vec!["sh".into(), "-c".into(), "cat /new.txt; test -e /etc/group || echo no-group; ls /home".into()];
    let check = create(&mut cri, &pod, config).await.expect("create from the committed image");
    start(&mut cri, &check).await;
    wait_exited(&mut cri, &check).await;
    assert_eq!(log_of(&pod, "check"), ["stdout F hello", "stdout F no-group", "stdout F only"]);

    // Commit of a container of the committed image: parent -> first -> second.
    let mut again = container("second", &["sh", "-c", "echo more > /more.txt"]);
    again.image = Some(ImageSpec { image: "committed:one".into(), ..Default::default() });
    let second = create(&mut cri, &pod, again).await.expect("create");
    start(&mut cri, &second).await;
    wait_exited(&mut cri, &second).await;
    ok(&d, &["commit", &second, "committed:two"]);
    let two = json(&d, &["inspect", "committed:two"]);
    assert_eq!(two["Layers"].as_array().unwrap().len(), layers.len() + 1);
    assert_eq!(&two["Layers"].as_array().unwrap()[..layers.len()], &layers[..]);
    assert_eq!(two["Config"]["Cmd"], serde_json::json!(["cat", "/new.txt"]), "the parent's config carries over");

    // Disk: the committed images add only their own small layers.
    let df = json(&d, &["df"]);
    assert!(df["TotalUnpacked"].as_u64().unwrap() < parent["Layers"][0]["UnpackedSize"].as_u64().unwrap() + 100_000);

    // Bad input: an unknown container, a change that is not supported.
    let missing = gantry(&d, &["commit", "no-such-container", "x:y"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no-such-container"), "{}", missing.stderr);
    let bad = gantry(&d, &["commit", "-c", "RUN make", &second, "x:y"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("RUN"), "{}", bad.stderr);
    remove_pod(&mut cri, &pod).await;
    let gone = gantry(&d, &["commit", &first, "x:y"]);
    assert_eq!(gone.code, 1, "a removed container cannot be committed");
}

#[tokio::test]
async fn export_then_import_then_run() {
    use gantry_proto::cri::v1::ImageSpec;
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "export", NamespaceMode::Pod).await;
    let id = create(&mut cri, &pod, container("maker", &["sh", "-c", "echo exported > /x.txt"])).await.expect("create");
    start(&mut cri, &id).await;
    wait_exited(&mut cri, &id).await;

    let fs_tar = d.dir.path().join("fs.tar");
    ok(&d, &["export", "-o", &fs_tar.display().to_string(), &id[..12]]);
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&fs_tar).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("x.txt")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("bin/busybox")), "the image's files too");

    let imported = ok(
        &d,
        &[
            "import",
            "-c",
            "CMD [\"cat\", \"/x.txt\"]",
            "-m",
            "from export",
            &fs_tar.display().to_string(),
            "imported:v1",
        ],
    );
    let inspect = json(&d, &["inspect", "imported:v1"]);
    assert_eq!(inspect["Id"], imported.trim());
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(inspect["Config"]["Cmd"], serde_json::json!(["cat", "/x.txt"]));
    let mut run = container("reader", &[]);
    run.command = vec![];
    run.image = Some(ImageSpec { image: "imported:v1".into(), ..Default::default() });
    let reader = create(&mut cri, &pod, run).await.expect("create from the imported image");
    start(&mut cri, &reader).await;
    wait_exited(&mut cri, &reader).await;
    assert_eq!(log_of(&pod, "reader"), ["stdout F exported"]);

    // Not a tar: refused, nothing stored.
    let junk = d.dir.path().join("junk.tar");
    std::fs::write(&junk, vec![0x42u8; 4096]).unwrap();
    let out = gantry(&d, &["import", &junk.display().to_string(), "junk:v1"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(gantry(&d, &["inspect", "junk:v1"]).code == 1);
    let out = gantry(&d, &["export", "-o", &fs_tar.display().to_string(), "no-such-container"]);
    assert_eq!(out.code, 1);
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn push_then_pull_back_with_mounts_chunks_and_credentials() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let registry = test_registry();
    // A layer the registry cannot have: 3 MB of random bytes (chunked upload).
    let pod = run_pod(&mut cri, &d, "push", NamespaceMode::Pod).await;
    let maker = create(&mut cri, &pod, container("maker", &["sh", "-c", "head -c 3000000 /dev/urandom > /blob"]))
        .await
        .expect("create");
    start(&mut cri, &maker).await;
    wait_exited(&mut cri, &maker).await;
    let target = format!("{registry}/pushed/random-{}:v1", std::process::id());
    ok(&d, &["commit", &maker, &target]);

    let pushed = json(&d, &["push", &target]);
    // The base layer is mounted from gantry/busybox; the new layer and config uploaded.
    assert_eq!(pushed["Mounted"], 1, "{pushed}");
    assert_eq!(pushed["Uploaded"], 2, "{pushed}");
    let digest = pushed["Digest"].as_str().unwrap().to_string();
    assert_eq!(
        json(&d, &["inspect", &target])["RepoDigests"][0],
        format!("{}@{digest}", target.rsplit_once(':').unwrap().0)
    );
    // Pushing again sends nothing but the manifest.
    let again = json(&d, &["push", &target]);
    assert_eq!((again["Uploaded"].as_u64(), again["AlreadyThere"].as_u64()), (Some(0), Some(3)), "{again}");

    // skopeo sees the same manifest digest.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}", &format!("docker://{target}")])
        .output()
        .expect("skopeo");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest, "{}", String::from_utf8_lossy(&out.stderr));

    // Removed locally, pulled back through CRI (as crictl pull does): the same image, and it runs.
    let id = json(&d, &["inspect", &target])["Id"].clone();
    ok(&d, &["rmi", "--force", &target]);
    let pulled = cri
        .images
        .pull_image(gantry_proto::cri::v1::PullImageRequest {
            image: Some(gantry_proto::cri::v1::ImageSpec { image: target.clone(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("CRI pull")
        .into_inner()
        .image_ref;
    assert_eq!(serde_json::json!(pulled), id);
    let mut run = container("runner", &["sh", "-c", "wc -c < /blob"]);
    run.image = Some(gantry_proto::cri::v1::ImageSpec { image: target.clone(), ..Default::default() });
    let runner = create(&mut cri, &pod, run).await.expect("create from the pulled image");
    start(&mut cri, &runner).await;
    wait_exited(&mut cri, &runner).await;
    assert_eq!(log_of(&pod, "runner"), ["stdout F 3000000"]);
    remove_pod(&mut cri, &pod).await;

    // A registry that wants credentials: refused without, accepted after login.
    if let Ok(auth_registry) = std::env::var("GANTRY_TEST_AUTH_REGISTRY") {
        let (user, password) =
            (std::env::var("GANTRY_TEST_AUTH_USER").unwrap(), std::env::var("GANTRY_TEST_AUTH_PASSWORD").unwrap());
        let private = format!("{auth_registry}/private/copy:v1");
        ok(&d, &["tag", &target, &private]);
        let config = d.dir.path().join("client-config.json");
        let run = |args: &[&str]| {
            let out = std::process::Command::new(bin_dir().join("gantry"))
                .env("GANTRY_CONFIG", &config)
                .arg("--address")
                .arg(&d.socket)
                .args(args)
                .output()
                .expect("gantry");
            (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let (code, stderr) = run(&["push", &private]);
        assert_eq!(code, Some(1));
        assert!(stderr.to_lowercase().contains("unauthorized") || stderr.contains("username"), "{stderr}");
        assert_eq!(run(&["login", &auth_registry, "-u", &user, "-p", &password]).0, Some(0));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
        let (code, stderr) = run(&["push", &private]);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(run(&["logout", &auth_registry]).0, Some(0));
        assert_eq!(run(&["push", &private]).0, Some(1), "logged out");
    }
}

#[tokio::test]
async fn pinned_images_are_reported_and_only_a_forced_rmi_removes_them() {
    let busybox = busybox();
    let d = Daemon::start(&format!("pinned_images = [{busybox:?}]\n"));
    let mut cri = setup(&d).await;
    let listed =
        cri.images.list_images(gantry_proto::cri::v1::ListImagesRequest::default()).await.expect("list").into_inner();
    assert!(listed.images.iter().all(|i| i.pinned), "{listed:?}");
    let spec = Some(gantry_proto::cri::v1::ImageSpec { image: busybox.clone(), ..Default::default() });
    let err = cri
        .images
        .remove_image(gantry_proto::cri::v1::RemoveImageRequest { image: spec.clone() })
        .await
        .expect_err("a pinned image stays");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("pinned"), "{err}");
    let refused = gantry(&d, &["rmi", &busybox]);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("pinned"), "{}", refused.stderr);
    ok(&d, &["rmi", "--force", &busybox]);
    let status =
        cri.images.image_status(gantry_proto::cri::v1::ImageStatusRequest { image: spec, verbose: false }).await;
    assert!(status.expect("status").into_inner().image.is_none(), "removed by the forced rmi");
}

#[test]
fn a_bad_pinned_image_stops_gantryd_with_its_name() {
    let out = Daemon::prepare(
        "pinned_images = [\"not a reference\"]
",
    )
    .run_to_exit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("not a reference"), "{stderr}");
}

/// The high-water mark of a process's resident memory, in KiB.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// containerd CVE-2023-25153 class: an archive whose headers claim huge
/// documents is refused with a clear error, and gantryd never holds them
/// in memory: a 100 MiB index.json (over the 4 MiB bound for manifests,
/// configs and indexes) and a 256 MiB PAX header (which the tar reader
/// would read whole).
#[tokio::test]
async fn hostile_archives_are_refused_with_bounded_memory() {
    use std::io::Read;
    let d = Daemon::start("");
    let _ = d.connect().await;
    let pid = d.pid().expect("gantryd pid");
    let before = vm_hwm(pid);
    let path = d.dir.path().join("hostile.tar");
    let load = |build: &dyn Fn(&mut tar::Builder<std::fs::File>)| {
        let mut b = tar::Builder::new(std::fs::File::create(&path).expect("create"));
        build(&mut b);
        b.finish().expect("finish");
        drop(b);
        let out = gantry(&d, &["load", "-i", &path.display().to_string()]);
        let _ = std::fs::remove_file(&path);
        out
    };
    let entry = |b: &mut tar::Builder<std::fs::File>, name: &str, typ: tar::EntryType, size: u64, byte: u8| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("name");
        h.set_entry_type(typ);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, std::io::repeat(byte).take(size)).expect("append");
    };
    let out = load(&|b| {
        entry(b, "oci-layout", tar::EntryType::Regular, 0, b' ');
        entry(b, "index.json", tar::EntryType::Regular, 100 << 20, b' ');
    });
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("index.json is 104857600 bytes") && out.stderr.contains("4 MiB"), "{}", out.stderr);
    let out = load(&|b| {
        entry(b, "PaxHeaders/index.json", tar::EntryType::XHeader, 256 << 20, b'1');
        entry(b, "index.json", tar::EntryType::Regular, 2, b' ');
    });
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("tar extension header") && out.stderr.contains("268435456"), "{}", out.stderr);
    let grown = vm_hwm(pid).saturating_sub(before);
    assert!(grown < 64 << 10, "gantryd's resident memory grew by {grown} KiB");
    assert_eq!(ok(&d, &["images"]).lines().count(), 1, "nothing loaded");
}
