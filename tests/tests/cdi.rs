//! CDI devices: spec files (YAML and JSON, versions 0.3 to 1.0) in the
//! configured CDI directories describe real device nodes made here (`mknod`
//! 1:3 and 1:5 under test names); a container asking for them through
//! `CDI_devices` or `cdi.k8s.io/` annotations gets the nodes (with their
//! permissions in the device allowlist), mounts, environment and hooks.

use std::path::{Path, PathBuf};

use gantry_proto::cri::v1::{
    CdiDevice, ExecSyncRequest, NamespaceMode, RemoveContainerRequest, RunPodSandboxRequest, StopContainerRequest,
};
use gantry_tests::pods::*;
use gantry_tests::{Cri, Daemon};
use tonic::Code;

struct Fixture {
    cdi: PathBuf,
    marks: PathBuf,
}

/// Device nodes, a shared dir and the CDI spec files, in the daemon's dir.
fn lay_out(d: &Daemon) -> Fixture {
    let base = d.dir.path();
    let devs = base.join("devs");
    let cdi = base.join("cdi");
    let share = base.join("share");
    let marks = base.join("marks");
    for dir in [&devs, &cdi, &share, &marks] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    // 5:1 (the console) is outside the default allowlist: its `r` decides.
    for (name, major, minor) in [("gantry-null", "1", "3"), ("gantry-zero", "1", "5"), ("gantry-console", "5", "1")] {
        let ok = std::process::Command::new("mknod")
            .arg(devs.join(name))
            .args(["c", major, minor])
            .status()
            .expect("mknod")
            .success();
        assert!(ok, "mknod {name}");
    }
    std::fs::write(share.join("file"), "shared by cdi\n").expect("write");
    let hook = |point: &str, to: &Path| {
        format!(
            "    - hookName: {point}\n      path: /bin/sh\n      args: [sh, -c, 'cat >> {}; echo >> {}']\n      env: [PATH=/usr/bin:/bin]\n",
            to.display(),
            to.display()
        )
    };
    let yaml = format!(
        "cdiVersion: 0.5.0\nkind: test.gantry.dev/null\ncontainerEdits:\n  env: [CDI_KIND=null]\ndevices:\n\
         - name: n0\n  containerEdits:\n    env: [NULLDEV=yes]\n    deviceNodes:\n    - path: /dev/gantry-null\n      hostPath: {}\n      permissions: rw\n\
         \x20   mounts:\n    - hostPath: {}\n      containerPath: /cdi-share\n      options: [ro, bind]\n    hooks:\n{}{}{}\
         \x20   - hookName: startContainer\n      path: /bin/sh\n      args: [sh, -c, 'cat > /tmp/start-hook']\n\
         - name: outside\n  containerEdits:\n    deviceNodes:\n    - path: /etc/gantry-null\n      hostPath: {}\n\
         - name: failing\n  containerEdits:\n    hooks:\n    - hookName: createRuntime\n      path: /bin/sh\n      args: [sh, -c, 'echo no GPU here >&2; exit 3']\n",
        devs.join("gantry-null").display(),
        share.display(),
        hook("createRuntime", &marks.join("createRuntime")),
        hook("createContainer", &marks.join("createContainer")),
        hook("poststop", &marks.join("poststop")),
        devs.join("gantry-null").display(),
    );
    std::fs::write(cdi.join("null.yaml"), yaml).expect("write yaml");
    let json = serde_json::json!({
        "cdiVersion": "0.3.0",
        "kind": "test.gantry.dev/zero",
        "devices": [{"name": "z0", "containerEdits": {
            "env": ["ZERODEV=yes"],
            "deviceNodes": [{"path": "/dev/gantry-zero", "hostPath": devs.join("gantry-zero")}]
        }}, {"name": "c0", "containerEdits": {
            "deviceNodes": [{"path": "/dev/gantry-console", "hostPath": devs.join("gantry-console"), "permissions": "r"}]
        }}]
    });
    std::fs::write(cdi.join("zero.json"), json.to_string()).expect("write json");
    Fixture { cdi, marks }
}

fn daemon() -> (Daemon, Fixture) {
    let mut d = Daemon::prepare("");
    let f = lay_out(&d);
    let runc_root = d.dir.path().join("runc-root");
    d.append_config(&format!(
        "cdi_spec_dirs = [{:?}]\n[runtimes.runc]\nbinary = \"/usr/sbin/runc\"\nroot = {:?}\n",
        f.cdi.display().to_string(),
        runc_root.display().to_string()
    ));
    d.start_again();
    (d, f)
}

async fn exec(cri: &mut Cri, id: &str, script: &str) -> (i32, String) {
    let r = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .expect("exec_sync")
        .into_inner();
    let mut out = String::from_utf8_lossy(&r.stdout).to_string();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out.trim().to_string())
}

fn asking_for(name: &str, devices: &[&str], annotated: &[&str]) -> gantry_proto::cri::v1::ContainerConfig {
    let mut c = container(name, &["sleep", "60"]);
    c.cdi_devices = devices.iter().map(|d| CdiDevice { name: d.to_string() }).collect();
    if !annotated.is_empty() {
        c.annotations.insert("cdi.k8s.io/test".into(), annotated.join(","));
    }
    c
}

/// The hook documents appended to a marker file, one per line.
fn marks(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("hook state JSON"))
        .collect()
}

async fn remove(cri: &mut Cri, id: &str) {
    cri.runtime.stop_container(StopContainerRequest { container_id: id.into(), timeout: 1 }).await.expect("stop");
    cri.runtime.remove_container(RemoveContainerRequest { container_id: id.into() }).await.expect("remove");
}

#[tokio::test]
async fn cdi_devices_bring_nodes_mounts_env_and_hooks() {
    let (d, f) = daemon();
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "cdi", NamespaceMode::Container).await;
    let id = create(
        &mut cri,
        &pod,
        asking_for("gpu", &["test.gantry.dev/null=n0"], &["test.gantry.dev/zero=z0", "test.gantry.dev/zero=c0"]),
    )
    .await
    .expect("create");
    start(&mut cri, &id).await;

    // Nodes with their numbers and permissions: the console is read-only
    // in the device allowlist.
    let (code, out) =
        exec(&mut cri, &id, "stat -c '%t:%T' /dev/gantry-null /dev/gantry-zero /dev/gantry-console").await;
    assert_eq!((code, out.as_str()), (0, "1:3\n1:5\n5:1"), "{out}");
    let (code, out) =
        exec(&mut cri, &id, "echo x > /dev/gantry-null && head -c 3 /dev/gantry-zero | od -An -tx1").await;
    assert_eq!((code, out.trim()), (0, "00 00 00"), "{out}");
    let (code, out) = exec(&mut cri, &id, "echo x > /dev/gantry-console").await;
    assert_ne!(code, 0, "writing a device granted `r` is refused: {out}");
    let spec = &container_info(&mut cri, &id).await["runtimeSpec"];
    let rules = spec["linux"]["resources"]["devices"].as_array().cloned().unwrap_or_default();
    assert!(
        rules.iter().any(|r| r["allow"] == true && r["major"] == 5 && r["minor"] == 1 && r["access"] == "r"),
        "{rules:?}"
    );
    // Environment (the spec's and the device's), the read-only mount.
    let (_, out) = exec(&mut cri, &id, "echo $CDI_KIND $NULLDEV $ZERODEV; cat /cdi-share/file").await;
    assert_eq!(out, "null yes yes\nshared by cdi", "{out}");
    let (code, _) = exec(&mut cri, &id, "touch /cdi-share/x").await;
    assert_ne!(code, 0, "the CDI mount is read-only");

    // Hooks ran where the OCI spec says, with the container's state.
    let pid = container_info(&mut cri, &id).await["pid"].as_u64().expect("pid");
    for point in ["createRuntime", "createContainer"] {
        let docs = marks(&f.marks.join(point));
        assert_eq!(docs.len(), 1, "{point}: {docs:?}");
        assert_eq!(docs[0]["id"], id.as_str(), "{point}");
        assert_eq!(docs[0]["pid"].as_u64(), Some(pid), "{point}: the host's pid of the container");
    }
    let (_, started) = exec(&mut cri, &id, "cat /tmp/start-hook").await;
    let started: serde_json::Value = serde_json::from_str(&started).expect("startContainer state");
    assert_eq!((started["id"].as_str(), started["status"].as_str()), (Some(id.as_str()), Some("running")));
    assert!(marks(&f.marks.join("poststop")).is_empty());
    remove(&mut cri, &id).await;
    let docs = marks(&f.marks.join("poststop"));
    assert_eq!((docs.len(), docs[0]["status"].as_str()), (1, Some("stopped")), "{docs:?}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn an_external_runtime_runs_the_cdi_hooks_itself() {
    let (d, f) = daemon();
    let mut cri = setup(&d).await;
    let mut config = pod_config(&d, "cdirunc", NamespaceMode::Container);
    std::fs::create_dir_all(&config.log_directory).expect("log dir");
    config.metadata.as_mut().expect("metadata").uid = "uid-cdirunc".into();
    let logs = PathBuf::from(&config.log_directory);
    let pod_id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), runtime_handler: "runc".into() })
        .await
        .expect("runc pod")
        .into_inner()
        .pod_sandbox_id;
    let pod = Pod { id: pod_id, logs };
    let id = create(&mut cri, &pod, asking_for("gpu", &["test.gantry.dev/null=n0"], &[])).await.expect("create");
    start(&mut cri, &id).await;
    let (code, out) = exec(&mut cri, &id, "echo $NULLDEV; stat -c '%t:%T' /dev/gantry-null; cat /cdi-share/file").await;
    assert_eq!((code, out.as_str()), (0, "yes\n1:3\nshared by cdi"), "{out}");
    for point in ["createRuntime", "createContainer"] {
        let docs = marks(&f.marks.join(point));
        assert!(docs.iter().any(|doc| doc["id"] == id.as_str()), "{point} run by runc: {docs:?}");
    }
    remove(&mut cri, &id).await;
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn bad_cdi_requests_are_refused_naming_the_device_and_file() {
    let (d, f) = daemon();
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "cdibad", NamespaceMode::Container).await;
    let cases: [(&[&str], &[&str], &str); 3] = [
        (&["test.gantry.dev/null=n9"], &[], "test.gantry.dev/null=n9"),
        (&[], &["test.gantry.dev/zero=z0", "test.gantry.dev/gpu=missing"], "test.gantry.dev/gpu=missing"),
        (&["test.gantry.dev/null=outside"], &[], "not under /dev"),
    ];
    for (i, (devices, annotated, words)) in cases.into_iter().enumerate() {
        let err =
            create(&mut cri, &pod, asking_for(&format!("bad{i}"), devices, annotated)).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains(words), "{words:?} missing from {err}");
    }
    // A spec file that does not parse is named when a device is not found.
    std::fs::write(f.cdi.join("broken.yaml"), "cdiVersion: [1.0.0\nkind: x\n").expect("write");
    let err = create(&mut cri, &pod, asking_for("bad3", &["test.gantry.dev/gpu=g0"], &[])).await.expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("broken.yaml"), "{err}");
    // The devices of good files still work beside it.
    let id = create(&mut cri, &pod, asking_for("ok", &["test.gantry.dev/zero=z0"], &[])).await.expect("create");
    cri.runtime.remove_container(RemoveContainerRequest { container_id: id }).await.expect("remove");
    assert_eq!(count(&d.state.join("containers")), 0, "no bundle left");

    // A hook that fails fails the start, with its message.
    let id =
        create(&mut cri, &pod, asking_for("failing", &["test.gantry.dev/null=failing"], &[])).await.expect("create");
    let err = cri
        .runtime
        .start_container(gantry_proto::cri::v1::StartContainerRequest { container_id: id.clone() })
        .await
        .expect_err("the createRuntime hook fails");
    assert!(err.message().contains("createRuntime hook") && err.message().contains("no GPU here"), "{err}");
    cri.runtime.remove_container(RemoveContainerRequest { container_id: id }).await.expect("remove");
    remove_pod(&mut cri, &pod).await;
}
