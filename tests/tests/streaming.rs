//! Exec and port-forward through the streaming server over SPDY, as kubelet
//! and crictl use them: stdin/stdout/stderr, exit codes on the error
//! stream, a TTY with resize, single-use URLs, and a forwarded connection
//! into the pod's network namespace.

use std::time::Duration;

use gantry_proto::cri::v1::{AttachRequest, ExecRequest, NamespaceMode, PortForwardRequest, StopContainerRequest};
use gantry_tests::pods::*;
use gantry_tests::streaming::connect;
use gantry_tests::{Cri, Daemon};
use tonic::Code;

const V4: &str = "v4.channel.k8s.io";

async fn exec_url(cri: &mut Cri, id: &str, cmd: &[&str], tty: bool, stdin: bool) -> Result<String, tonic::Status> {
    cri.runtime
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .map(|r| r.into_inner().url)
}

async fn running(cri: &mut Cri, d: &Daemon, name: &str, command: &[&str]) -> (Pod, String) {
    let pod = run_pod(cri, d, name, NamespaceMode::Pod).await;
    let id = create(cri, &pod, container("app", command)).await.expect("create");
    start(cri, &id).await;
    (pod, id)
}

#[tokio::test]
async fn exec_streams_stdin_stdout_stderr_and_the_exit_code() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let (pod, id) = running(&mut cri, &d, "stream-exec", &["sleep", "60"]).await;

    // Non-interactive with stdin: what goes in comes back out.
    let url = exec_url(&mut cri, &id, &["sh", "-c", "cat; echo to-stderr >&2"], false, true).await.expect("exec");
    let mut c = connect(&url, &[V4, "v3.channel.k8s.io"]).await.expect("upgrade");
    assert_eq!(c.protocol, V4);
    let [error, stdin, stdout, stderr] = c.open_streams(["error", "stdin", "stdout", "stderr"]).await;
    c.send(stdin, b"line one\nline two\n", false).await;
    c.send(stdin, b"", true).await;
    let got = c.receive(&[error, stdout, stderr]).await;
    assert_eq!(got.text(stdout), "line one\nline two\n");
    assert_eq!(got.text(stderr), "to-stderr\n");
    let status: serde_json::Value = serde_json::from_str(&got.text(error)).expect("a JSON status");
    assert_eq!(status["status"], "Success", "{status}");

    // A non-zero exit: kubelet's Status with the code in its causes.
    let url = exec_url(&mut cri, &id, &["sh", "-c", "exit 3"], false, false).await.unwrap();
    let mut c = connect(&url, &[V4]).await.expect("upgrade");
    let [error, stdout, stderr] = c.open_streams(["error", "stdout", "stderr"]).await;
    let got = c.receive(&[error, stdout, stderr]).await;
    let status: serde_json::Value = serde_json::from_str(&got.text(error)).expect("a JSON status");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    // A client that goes away takes its command with it.
    let url = exec_url(&mut cri, &id, &["sleep", "47"], false, false).await.unwrap();
    let mut c = connect(&url, &[V4]).await.expect("upgrade");
    for kind in ["error", "stdout", "stderr"] {
        c.open(&[("streamtype", kind)]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ps = cri
            .runtime
            .exec_sync(gantry_proto::cri::v1::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["ps".into()],
                timeout: 5,
            })
            .await
            .expect("ps")
            .into_inner();
        if !String::from_utf8_lossy(&ps.stdout).contains("sleep 47") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the abandoned exec still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The URL was single-use; unknown ones are refused alike.
    let (code, body) = connect(&url, &[V4]).await.err().expect("a used URL is refused");
    assert_eq!(code, 404, "{body}");
    let forged = format!("{}nope", &url[..url.rfind('/').unwrap() + 1]);
    assert_eq!(connect(&forged, &[V4]).await.err().map(|e| e.0), Some(404));
    // A protocol the server does not speak.
    let url = exec_url(&mut cri, &id, &["true"], false, false).await.unwrap();
    assert_eq!(connect(&url, &["v9.channel.k8s.io"]).await.err().map(|e| e.0), Some(403));

    // Exec into a container that no longer runs is refused by the RPC.
    cri.runtime.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.expect("stop");
    let err = exec_url(&mut cri, &id, &["true"], false, false).await.expect_err("stopped");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn exec_with_a_tty_and_resize() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let (pod, id) = running(&mut cri, &d, "stream-tty", &["sleep", "60"]).await;

    let url = exec_url(&mut cri, &id, &["sh"], true, true).await.expect("exec");
    let mut c = connect(&url, &[V4]).await.expect("upgrade");
    let [error, stdin, stdout, resize] = c.open_streams(["error", "stdin", "stdout", "resize"]).await;
    c.send(resize, br#"{"Width":123,"Height":45}"#, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send(
        stdin,
        b"test -t 0 && echo is-a-tty; tty; stat -c group=%g $(tty); ls -l /proc/self/fd/0; stty size; exit 7\n",
        false,
    )
    .await;
    let got = c.receive(&[error, stdout]).await;
    let out = got.text(stdout);
    assert!(out.contains("is-a-tty"), "{out:?}");
    // The terminal comes from the container's own devpts (gid=5), so it
    // has a name there.
    assert!(!out.contains("not a tty") && out.contains("\n/dev/pts/"), "{out:?}");
    assert!(out.contains("group=5") && out.contains("/proc/self/fd/0 -> /dev/pts/"), "{out:?}");
    assert!(out.contains("45 123"), "the resize did not reach the terminal: {out:?}");
    let status: serde_json::Value = serde_json::from_str(&got.text(error)).expect("a JSON status");
    assert_eq!(status["details"]["causes"][0]["message"], "7", "{status}");

    // A command that cannot run says so on its terminal, with a shell's code.
    let url = exec_url(&mut cri, &id, &["no-such-command"], true, false).await.expect("exec");
    let mut c = connect(&url, &[V4]).await.expect("upgrade");
    let [error, stdout] = c.open_streams(["error", "stdout"]).await;
    c.open(&[("streamtype", "resize")]).await;
    let got = c.receive(&[error, stdout]).await;
    assert!(got.text(stdout).contains("no-such-command"), "{:?}", got.text(stdout));
    let status: serde_json::Value = serde_json::from_str(&got.text(error)).expect("a JSON status");
    assert_eq!(status["details"]["causes"][0]["message"], "127", "{status}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn port_forward_reaches_a_server_in_the_pod() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    // An echo server in the pod: it has no network but loopback.
    let (pod, _) = running(&mut cri, &d, "stream-pf", &["nc", "-ll", "-p", "8080", "-e", "cat"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let url = cri
        .runtime
        .port_forward(PortForwardRequest { pod_sandbox_id: pod.id.clone(), port: vec![8080] })
        .await
        .expect("port forward")
        .into_inner()
        .url;
    let mut c = connect(&url, &["portforward.k8s.io"]).await.expect("upgrade");

    // A closed port: an error on that pair's error stream, the connection stays.
    let err = c.open(&[("streamtype", "error"), ("port", "9"), ("requestid", "0")]).await;
    let data = c.open(&[("streamtype", "data"), ("port", "9"), ("requestid", "0")]).await;
    let got = c.receive(&[err, data]).await;
    assert!(got.text(err).contains("port 9"), "{:?}", got.text(err));

    for round in 1..=2 {
        let rid = round.to_string();
        let err = c.open(&[("streamtype", "error"), ("port", "8080"), ("requestid", &rid)]).await;
        let data = c.open(&[("streamtype", "data"), ("port", "8080"), ("requestid", &rid)]).await;
        let msg = format!("ping {round}\n");
        c.send(data, msg.as_bytes(), false).await;
        c.send(data, b"", true).await;
        let got = c.receive(&[data, err]).await;
        assert_eq!(got.text(err), "", "round {round}");
        assert_eq!(got.text(data), msg, "round {round}");
    }

    let err = cri
        .runtime
        .port_forward(PortForwardRequest { pod_sandbox_id: "no-such-pod".into(), port: vec![80] })
        .await
        .expect_err("unknown pod");
    assert_eq!(err.code(), Code::NotFound);
    remove_pod(&mut cri, &pod).await;
}

async fn attach_url(cri: &mut Cri, id: &str, tty: bool) -> String {
    cri.runtime
        .attach(AttachRequest { container_id: id.into(), stdin: true, tty, stdout: true, stderr: !tty })
        .await
        .expect("attach")
        .into_inner()
        .url
}

#[tokio::test]
async fn attach_joins_the_containers_own_stdio() {
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let pod = run_pod(&mut cri, &d, "stream-attach", NamespaceMode::Pod).await;

    // Pipes: stdin in, stdout and stderr apart; the end of the container ends the session.
    let mut config = container("piped", &["sh", "-c", "read line; echo got $line; echo oops >&2"]);
    config.stdin = true;
    config.stdin_once = true;
    let id = create(&mut cri, &pod, config).await.expect("create");
    start(&mut cri, &id).await;
    let url = attach_url(&mut cri, &id, false).await;
    let mut c = connect(&url, &[V4]).await.expect("upgrade");
    let [error, stdin, stdout, stderr] = c.open_streams(["error", "stdin", "stdout", "stderr"]).await;
    c.send(stdin, b"hello\n", false).await;
    let got = c.receive(&[error, stdout, stderr]).await;
    assert_eq!(got.text(stdout), "got hello\n");
    assert_eq!(got.text(stderr), "oops\n");
    let status: serde_json::Value = serde_json::from_str(&got.text(error)).expect("a JSON status");
    assert_eq!(status["status"], "Success", "{status}");
    assert_eq!(wait_exited(&mut cri, &id).await.exit_code, 0);
    // The log has it too (two pipes: no order between them).
    let mut log = log_of(&pod, "piped");
    log.sort();
    assert_eq!(log, ["stderr F oops", "stdout F got hello"]);

    // stdin_once: the end of the client's stdin is the end of the container's,
    // so `cat` finishes (critest's attach does just this).
    let mut config = container("cat", &["cat"]);
    config.stdin = true;
    config.stdin_once = true;
    let id = create(&mut cri, &pod, config).await.expect("create");
    start(&mut cri, &id).await;
    let url = attach_url(&mut cri, &id, false).await;
    let mut c = connect(&url, &[V4]).await.expect("upgrade");
    let [error, stdin, stdout, stderr] = c.open_streams(["error", "stdin", "stdout", "stderr"]).await;
    c.send(stdin, b"echoed back\n", true).await;
    let got = c.receive(&[error, stdout, stderr]).await;
    assert_eq!(got.text(stdout), "echoed back\n");

    // A terminal: the container's stdio is a pty, resized from the client.
    let mut config = container("tty", &["sh", "-c", "read x; test -t 0 && echo tty-$x; tty; stty size"]);
    config.stdin = true;
    config.tty = true;
    let id = create(&mut cri, &pod, config).await.expect("create");
    start(&mut cri, &id).await;
    let url = attach_url(&mut cri, &id, true).await;
    let mut c = connect(&url, &[V4]).await.expect("upgrade");
    let [error, stdin, stdout, resize] = c.open_streams(["error", "stdin", "stdout", "resize"]).await;
    c.send(resize, br#"{"Width":90,"Height":20}"#, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send(stdin, b"abc\n", false).await;
    let got = c.receive(&[error, stdout]).await;
    let out = got.text(stdout);
    assert!(out.contains("tty-abc") && out.contains("20 90"), "{out:?}");
    assert!(out.contains("\n/dev/pts/0") && !out.contains("not a tty"), "{out:?}");

    // Attaching to a container that is not running is refused.
    wait_exited(&mut cri, &id).await;
    let err = cri
        .runtime
        .attach(AttachRequest { container_id: id.clone(), stdout: true, ..Default::default() })
        .await
        .map(|_| ())
        .expect_err("exited");
    assert_eq!(err.code(), Code::FailedPrecondition);
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn exec_over_websocket_with_the_v5_channel_protocol() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let (pod, id) = running(&mut cri, &d, "stream-ws", &["sleep", "60"]).await;
    let url = exec_url(&mut cri, &id, &["sh", "-c", "cat; echo done >&2; exit 4"], false, true).await.unwrap();
    let mut request = url.replace("http://", "ws://").into_client_request().expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("websocket upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
    ws.send(Message::Binary(b"\x00over websocket\n".to_vec().into())).await.unwrap();
    // v5: the client closes its stdin with the close signal for channel 0.
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let mut channels: std::collections::HashMap<u8, Vec<u8>> = Default::default();
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Binary(b) if !b.is_empty() => channels.entry(b[0]).or_default().extend_from_slice(&b[1..]),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let text = |ch: u8| String::from_utf8_lossy(channels.get(&ch).map(Vec::as_slice).unwrap_or_default()).into_owned();
    assert_eq!(text(1), "over websocket\n");
    assert_eq!(text(2), "done\n");
    let status: serde_json::Value = serde_json::from_str(&text(3)).expect("a JSON status");
    assert_eq!(status["details"]["causes"][0]["message"], "4", "{status}");
    remove_pod(&mut cri, &pod).await;
}

#[tokio::test]
async fn the_streaming_server_speaks_tls_when_given_a_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key, ca) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
    // A throwaway CA and a server certificate it signs: rustls refuses a
    // self-signed certificate used as its own CA.
    let script = "set -e
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=gantry-test-ca -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out server.csr
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' >ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out cert.pem";
    let made =
        std::process::Command::new("sh").arg("-c").arg(script).current_dir(dir.path()).output().expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let d = Daemon::start(&format!("stream_tls_cert = {cert:?}\nstream_tls_key = {key:?}\n"));
    let mut cri = setup(&d).await;
    let (pod, id) = running(&mut cri, &d, "stream-tls", &["sleep", "60"]).await;
    let url = exec_url(&mut cri, &id, &["echo", "over tls"], false, false).await.unwrap();
    assert!(url.starts_with("https://"), "{url}");
    let mut c = gantry_tests::streaming::connect_with(&url, &[V4], Some(&ca)).await.expect("TLS upgrade");
    let [error, stdout, stderr] = c.open_streams(["error", "stdout", "stderr"]).await;
    let got = c.receive(&[error, stdout, stderr]).await;
    assert_eq!(got.text(stdout), "over tls\n");
    remove_pod(&mut cri, &pod).await;
}
