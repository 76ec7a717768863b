//! Image volumes (CRI `Mount.image`): images mounted read-only into a
//! container from their unpacked layers, with `image_sub_path`, held while
//! the container exists.

use gantry_proto::cri::v1::{
    ImageSpec, Mount, NamespaceMode, PullImageRequest, RemoveImageRequest, StopContainerRequest,
};
use gantry_tests::pods::*;
use gantry_tests::{image_chain_ids, test_registry, Cri, Daemon};
use tonic::Code;

fn image(name: &str) -> String {
    format!("{}/gantry/{name}", test_registry())
}

fn volume(path: &str, image: &str, sub: &str) -> Mount {
    Mount {
        container_path: path.into(),
        image: Some(ImageSpec { image: image.into(), ..Default::default() }),
        image_sub_path: sub.into(),
        ..Default::default()
    }
}

async fn pull(cri: &mut Cri, reference: &str) {
    cri.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec { image: reference.into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("pull");
}

#[tokio::test]
async fn images_mount_read_only_with_sub_paths_and_stay_held() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let app2 = image("app2:latest");
    pull(&mut cri, &app2).await;
    let app2_layers = image_chain_ids(&mut cri, &app2).await;
    assert_eq!(app2_layers.len(), 2, "app2 is busybox's layer plus its own");
    let pod = run_pod(&mut cri, &d, "volumes", NamespaceMode::Container).await;

    // A one-layer image (a bind of its layer), a two-layer one (an overlay),
    // and a sub path of it.
    let mut c = container(
        "reader",
        &[
            "sh",
            "-c",
            "cat /multi/app2.txt; ls /single/bin/busybox; ls /sub; touch /multi/x || echo read-only; sleep 60",
        ],
    );
    c.mounts = vec![volume("/single", &busybox(), ""), volume("/multi", &app2, ""), volume("/sub", &app2, "etc")];
    let id = create(&mut cri, &pod, c).await.expect("create");
    start(&mut cri, &id).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let log = loop {
        let log = log_of(&pod, "reader");
        if log.iter().any(|l| l.ends_with("read-only")) || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for want in ["stdout F app2", "stdout F /single/bin/busybox", "stdout F passwd", "stdout F read-only"] {
        assert!(log.iter().any(|l| l.starts_with(want)), "{want:?} missing from {log:?}");
    }
    // ContainerStatus reports each mount with its image.
    let status = status(&mut cri, &id).await;
    let images: Vec<String> = status.mounts.iter().filter_map(|m| m.image.as_ref().map(|i| i.image.clone())).collect();
    assert_eq!(images, [busybox(), app2.clone(), app2.clone()], "{:?}", status.mounts);

    // The image goes, its layers stay while the container mounts them.
    cri.images
        .remove_image(RemoveImageRequest { image: Some(ImageSpec { image: app2.clone(), ..Default::default() }) })
        .await
        .expect("remove image");
    let layers = d.images_root().join("snapshots/layers");
    let top = layers.join(app2_layers[1].hex());
    assert!(top.is_dir(), "app2's own layer is kept while mounted");
    cri.runtime.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 1 }).await.expect("stop");
    remove_pod(&mut cri, &pod).await;
    assert!(d.state.join("containers").read_dir().map(|mut r| r.next().is_none()).unwrap_or(true));
    // Collected with the container (gantry's GC runs at RemoveImage and
    // after removals): poll a little.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while top.is_dir() && std::time::Instant::now() < deadline {
        let _ = cri.images.image_fs_info(gantry_proto::cri::v1::ImageFsInfoRequest {}).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!top.is_dir(), "app2's own layer goes once nothing holds it");
}

#[tokio::test]
async fn bad_image_volumes_are_refused_and_leave_nothing() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "badvolumes", NamespaceMode::Container).await;
    let cases = [
        (volume("/v", &image("never-pulled:latest"), ""), Code::NotFound, "never-pulled"),
        (volume("/v", &busybox(), "bin/sh"), Code::InvalidArgument, "symlink"),
        (volume("/v", &busybox(), "../etc"), Code::InvalidArgument, ".."),
        (volume("/v", &busybox(), "no/such/dir"), Code::InvalidArgument, "does not exist"),
        (Mount { host_path: "/tmp".into(), ..volume("/v", &busybox(), "") }, Code::InvalidArgument, "both host_path"),
    ];
    for (i, (mount, code, words)) in cases.into_iter().enumerate() {
        let mut c = container(&format!("bad{i}"), &["true"]);
        c.mounts = vec![mount];
        let err = create(&mut cri, &pod, c).await.expect_err("refused");
        assert_eq!(err.code(), code, "{err}");
        assert!(err.message().contains(words), "{words:?} missing from {err}");
    }
    assert_eq!(count(&d.state.join("containers")), 0, "no bundle (nor mount) left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&d.state.display().to_string()), "no image volume left mounted");
    remove_pod(&mut cri, &pod).await;
}
