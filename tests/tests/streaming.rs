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

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Reads until the server closes; what it sent, or None if it did not
/// close within `secs`.
async fn until_closed(conn: &mut tokio::net::TcpStream, secs: u64) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), read_all).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// A SYN_STREAM whose header block inflates to 1 GiB of zeros (about
/// 1 MiB on the wire), compressed with the SPDY/3 dictionary.
fn zlib_bomb() -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut deflate = Compress::new(Compression::best(), true);
    deflate.set_dictionary(&gantry_runtime::streaming::spdy::dictionary()).expect("dictionary");
    let zeros = vec![0u8; 1 << 20];
    let mut block = Vec::with_capacity(2 << 20);
    for i in 0..1024 {
        let flush = if i == 1023 { FlushCompress::Sync } else { FlushCompress::None };
        let mut input = &zeros[..];
        loop {
            block.reserve(64 << 10);
            let before = deflate.total_in();
            deflate.compress_vec(input, &mut block, flush).expect("deflate");
            input = &input[(deflate.total_in() - before) as usize..];
            if input.is_empty() && block.len() < block.capacity() {
                break;
            }
        }
    }
    let mut payload = 1u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    payload.extend(block);
    let mut frame = vec![0x80, 3, 0, 1, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend(payload);
    frame
}

/// Hostile clients of the streaming server: one that never finishes its
/// request head is closed (408) after 10 s, an endless head is refused
/// (431) at 16 KiB, and a SYN_STREAM whose header block inflates to 1 GiB
/// ends the connection at 1 MiB inflated, gantryd's memory barely moving
/// (under 16 MiB; the old 16 MiB bound let it grow by about 33 MiB). A
/// WebSocket frame over 1 MiB ends that connection too.
#[tokio::test]
async fn hostile_streaming_clients_are_bounded_and_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::start("");
    let mut cri = setup(&d).await;
    let (pod, id) = running(&mut cri, &d, "hostile", &["sleep", "60"]).await;
    let url = exec_url(&mut cri, &id, &["true"], false, false).await.expect("exec url");
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').expect("path");
    let pid = d.pid().expect("gantryd pid");
    let before = vm_hwm_kib(pid);

    // Silent: closed after the head timeout.
    let mut silent = tokio::net::TcpStream::connect(host).await.expect("connect");
    let t = std::time::Instant::now();
    let answer = until_closed(&mut silent, 20).await.expect("the idle connection was not closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(t.elapsed() >= Duration::from_secs(9), "closed after {:?}", t.elapsed());

    // An endless head.
    let mut endless = tokio::net::TcpStream::connect(host).await.expect("connect");
    let mut head = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    head.extend(std::iter::repeat_n(b'a', 32 << 10));
    let _ = endless.write_all(&head).await;
    let answer = until_closed(&mut endless, 10).await.expect("not closed");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // The zlib bomb, after a real upgrade.
    let mut conn = tokio::net::TcpStream::connect(host).await.expect("connect");
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {V4}\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.expect("upgrade");
    let mut reply = vec![0u8; 4096];
    let n = conn.read(&mut reply).await.expect("reply");
    assert!(
        String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&reply[..n])
    );
    let bomb = zlib_bomb();
    assert!(bomb.len() < 1 << 20, "bomb of {} bytes", bomb.len());
    let _ = conn.write_all(&bomb).await;
    until_closed(&mut conn, 10).await.expect("the bomb's connection stays open");
    let grown = vm_hwm_kib(pid).saturating_sub(before);
    assert!(grown < 16 << 10, "gantryd's resident memory grew by {grown} KiB");

    // A WebSocket frame header claiming 8 MiB (under tungstenite's own
    // default bound of 16 MiB).
    let url = exec_url(&mut cri, &id, &["true"], false, false).await.expect("exec url");
    let path = url.split_once("://").and_then(|(_, r)| r.split_once('/')).map(|(_, p)| p.to_string()).expect("path");
    let mut ws = tokio::net::TcpStream::connect(host).await.expect("connect");
    let req = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    );
    ws.write_all(req.as_bytes()).await.expect("upgrade");
    let n = ws.read(&mut reply).await.expect("reply");
    assert!(
        String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&reply[..n])
    );
    // FIN + binary, masked, 64-bit length 8 MiB, mask key; then some bytes.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(8u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend(std::iter::repeat_n(0u8, 4096));
    let _ = ws.write_all(&frame).await;
    until_closed(&mut ws, 10).await.expect("the oversized WebSocket frame's connection stays open");
    remove_pod(&mut cri, &pod).await;
}
