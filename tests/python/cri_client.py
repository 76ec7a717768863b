"""A CRI client on gRPC C-core (Python grpcio), as tests/tests/grpc_clients.rs
runs it: the stubs are generated from proto/cri/api.proto at run time, and
the channel names the unix socket as C-core does (its path becomes the
HTTP/2 :authority). Prints one line per step; exits non-zero at the first
step that fails."""

import argparse
import importlib
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def stubs(proto_dir):
    out = tempfile.mkdtemp(prefix="gantry-cri-py-")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}", "api.proto"])
    if rc != 0:
        sys.exit(f"protoc failed on {proto_dir}/api.proto: {rc}")
    sys.path.insert(0, out)
    return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")


def main():
    p = argparse.ArgumentParser()
    for flag in ["socket", "proto-dir", "image", "silent-registry", "cgroup-parent", "log-dir"]:
        p.add_argument("--" + flag, required=True)
    a = p.parse_args()
    pb, rpc = stubs(a.proto_dir)
    channel = grpc.insecure_channel("unix:" + a.socket)
    runtime = rpc.RuntimeServiceStub(channel)
    images = rpc.ImageServiceStub(channel)

    v = runtime.Version(pb.VersionRequest(), timeout=10)
    print("version", v.runtime_name, v.runtime_version, flush=True)

    images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=a.image)), timeout=60)
    listed = images.ListImages(pb.ListImagesRequest(), timeout=10)
    assert any(a.image in img.repo_tags for img in listed.images), listed
    print("pulled", a.image, flush=True)

    pod_config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="python-pod", namespace="default", uid="python-pod-uid"),
        hostname="python-pod",
        log_directory=a.log_dir,
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=a.cgroup_parent),
    )
    pod = runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config), timeout=60).pod_sandbox_id
    status = runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=10).status
    assert status.state == pb.SANDBOX_READY, status
    print("pod ready", pod, flush=True)

    container_config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="sleeper"),
        image=pb.ImageSpec(image=a.image),
        command=["sleep", "3600"],
        log_path="sleeper.log",
    )
    created = runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=pod, config=container_config, sandbox_config=pod_config), timeout=60
    )
    cid = created.container_id
    runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    state = runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=10).status.state
    assert state == pb.CONTAINER_RUNNING, state
    print("container running", cid, flush=True)

    out = runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["echo", "hello"], timeout=10), timeout=30)
    assert out.exit_code == 0 and out.stdout == b"hello\n", out
    print("exec hello", flush=True)

    started = time.monotonic()
    try:
        images.PullImage(
            pb.PullImageRequest(image=pb.ImageSpec(image=a.silent_registry + "/never/answers:1")), timeout=0.8
        )
        sys.exit("a pull from a registry that never answers succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (e.code(), e.details())
    assert time.monotonic() - started < 10
    print("deadline exceeded", flush=True)

    runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
    runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    left = runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items
    assert not left, left
    print("removed", flush=True)


if __name__ == "__main__":
    main()
