//! The streaming server behind CRI `Exec`, `Attach` and `PortForward`: the
//! RPC returns a single-use URL with a random token that expires; kubelet
//! (or crictl) connects to it and upgrades the HTTP connection to SPDY/3.1,
//! then runs the remotecommand (`v4.channel.k8s.io` … `channel.k8s.io`) or
//! `portforward.k8s.io` protocol over it. Binds to 127.0.0.1 by default.

mod conn;
#[doc(hidden)]
pub mod fuzz;
mod portforward;
mod remotecommand;
pub mod session;
pub mod spdy;
mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::RuntimeError;
use crate::runtime::Runtime;

/// How long a URL stays valid before its first use, as kubelet's.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Protocols offered for exec and attach, best first.
const REMOTECOMMAND_PROTOCOLS: [&str; 4] =
    ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";
const MAX_REQUEST_HEAD: usize = 16 << 10;
/// A client must finish its TLS handshake and its request head within
/// this: a connection that sends nothing (or a byte a minute) is closed.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What a token was issued for.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec { container_id: String, cmd: Vec<String>, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    Attach { container_id: String, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    PortForward { sandbox_id: String },
}

impl Pending {
    fn path(&self) -> &'static str {
        match self {
            Pending::Exec { .. } => "exec",
            Pending::Attach { .. } => "attach",
            Pending::PortForward { .. } => "portforward",
        }
    }
}

/// Issued tokens and when; each works once, within `TOKEN_TTL`.
#[derive(Default)]
struct Tokens(HashMap<String, (Pending, Instant)>);

impl Tokens {
    fn issue(&mut self, what: Pending, now: Instant) -> String {
        // Expired ones go here, so the map never grows past a TTL's worth.
        self.0.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_TTL);
        let token = new_token();
        self.0.insert(token.clone(), (what, now));
        token
    }

    fn redeem(&mut self, kind: &str, token: &str, now: Instant) -> Option<Pending> {
        let (what, at) = self.0.remove(token)?;
        (now.duration_since(at) < TOKEN_TTL && what.path() == kind).then_some(what)
    }
}

/// A connection to the streaming server: plain TCP or TLS over it.
pub use conn::Conn;

/// The server's certificate chain and key (PEM files), for HTTPS URLs.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, RuntimeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        RuntimeError::InvalidArgument(format!("streaming TLS {what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad("certificate", &files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", &files.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad("key", &files.key, &e))?;
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| RuntimeError::Internal(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate and key", &files.cert, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

pub struct StreamServer {
    addr: SocketAddr,
    scheme: &'static str,
    tokens: Mutex<Tokens>,
    runtime: Weak<Runtime>,
}

fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 18] = rand::thread_rng().gen();
    // URL-safe without escaping.
    hex::encode(bytes)
}

impl StreamServer {
    /// Binds `addr` (port 0: any free port) and serves in the background.
    pub async fn start(
        addr: SocketAddr,
        tls: Option<&TlsFiles>,
        runtime: &Arc<Runtime>,
    ) -> Result<Arc<Self>, RuntimeError> {
        let acceptor = tls.map(tls_acceptor).transpose()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| RuntimeError::Internal(format!("binding the streaming server to {addr}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| RuntimeError::Internal(format!("streaming server: {e}")))?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let server = Arc::new(StreamServer {
            addr,
            scheme,
            tokens: Mutex::new(Tokens::default()),
            runtime: Arc::downgrade(runtime),
        });
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, peer)) = listener.accept().await else { continue };
                let s = s.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let result = match acceptor {
                        Some(a) => match tokio::time::timeout(HEAD_TIMEOUT, a.accept(conn)).await {
                            Ok(Ok(tls)) => s.handle(tls).await,
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")),
                        },
                        None => s.handle(conn).await,
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "streaming request failed");
                    }
                });
            }
        });
        tracing::info!(%addr, scheme, "streaming server listening");
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Issues a single-use URL for `what`.
    pub fn register(&self, what: Pending) -> String {
        let path = what.path();
        let token = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).issue(what, Instant::now());
        format!("{}://{}/{path}/{token}", self.scheme, self.addr)
    }

    fn redeem(&self, kind: &str, token: &str) -> Option<Pending> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).redeem(kind, token, Instant::now())
    }

    async fn handle(self: Arc<Self>, mut conn: impl Conn) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1024);
        let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
        let head_len = loop {
            let mut chunk = [0u8; 2048];
            let Ok(n) = tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await else {
                return respond(&mut conn, 408, "request head not received in time").await;
            };
            let n = n?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_REQUEST_HEAD {
                return respond(&mut conn, 431, "request head too large").await;
            }
        };
        let mut header_slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut header_slots);
        if req.parse(&buf[..head_len]).is_err() {
            return respond(&mut conn, 400, "malformed HTTP request").await;
        }
        let path = req.path.unwrap_or("").split('?').next().unwrap_or("").to_string();
        let header_values = |name: &str| -> Vec<String> {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .flat_map(|h| {
                    String::from_utf8_lossy(h.value).split(',').map(|v| v.trim().to_string()).collect::<Vec<_>>()
                })
                .collect()
        };
        let upgrade = header_values("upgrade");
        let offered = header_values("x-stream-protocol-version");
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let Some(what) = self.redeem(kind, token) else {
            return respond(&mut conn, 404, &format!("unknown, used or expired stream URL {path:?}")).await;
        };
        if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
            let key = header_values("sec-websocket-key").into_iter().next().unwrap_or_default();
            let offered = header_values("sec-websocket-protocol");
            if head_len != buf.len() {
                return respond(&mut conn, 400, "data before the WebSocket handshake finished").await;
            }
            return self.serve_websocket(conn, what, &key, &offered).await;
        }
        if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
            return respond(&mut conn, 400, "upgrade to SPDY/3.1 or websocket").await;
        }
        let supported: &[&str] = match what {
            Pending::Exec { .. } | Pending::Attach { .. } => &REMOTECOMMAND_PROTOCOLS,
            Pending::PortForward { .. } => &[PORTFORWARD_PROTOCOL],
        };
        let Some(protocol) = supported.iter().find(|p| offered.iter().any(|o| o == *p)) else {
            let msg =
                format!("none of the offered stream protocols {offered:?} is supported; use one of {supported:?}");
            return respond(&mut conn, 403, &msg).await;
        };
        let Some(runtime) = self.runtime.upgrade() else {
            return respond(&mut conn, 503, "gantryd is shutting down").await;
        };
        let reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
        );
        conn.write_all(reply.as_bytes()).await?;
        // Bytes the client sent after its request head are already SPDY.
        let early = std::io::Cursor::new(buf.split_off(head_len));
        let (r, w) = tokio::io::split(conn);
        let (streams, closer) = session::start(tokio::io::AsyncReadExt::chain(early, r), w);
        match what {
            Pending::Exec { container_id, cmd, tty, stdin, stdout, stderr } => {
                let opts = remotecommand::Options { tty, stdin, stdout, stderr, version: protocol.to_string() };
                remotecommand::exec(&runtime, &container_id, &cmd, opts, streams, closer).await;
            }
            Pending::Attach { container_id, tty, stdin, stdout, stderr } => {
                let opts = remotecommand::Options { tty, stdin, stdout, stderr, version: protocol.to_string() };
                remotecommand::attach(&runtime, &container_id, opts, streams, closer).await;
            }
            Pending::PortForward { sandbox_id } => {
                portforward::serve(&runtime, &sandbox_id, streams, closer).await;
            }
        }
        Ok(())
    }
}

impl StreamServer {
    async fn serve_websocket(
        &self,
        mut conn: impl Conn,
        what: Pending,
        key: &str,
        offered: &[String],
    ) -> std::io::Result<()> {
        let supported: &[&str] = match what {
            Pending::Exec { .. } | Pending::Attach { .. } => &websocket::CHANNEL_PROTOCOLS,
            Pending::PortForward { .. } => &[websocket::PORTFORWARD_TUNNEL],
        };
        let Some(protocol) = supported.iter().find(|p| offered.iter().any(|o| o == *p)) else {
            let msg =
                format!("none of the offered WebSocket protocols {offered:?} is supported; use one of {supported:?}");
            return respond(&mut conn, 403, &msg).await;
        };
        if key.is_empty() {
            return respond(&mut conn, 400, "missing Sec-WebSocket-Key").await;
        }
        let Some(runtime) = self.runtime.upgrade() else {
            return respond(&mut conn, 503, "gantryd is shutting down").await;
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
        );
        conn.write_all(reply.as_bytes()).await?;
        let ws = websocket::accept(conn).await;
        match what {
            Pending::Exec { container_id, cmd, tty, stdin, stdout, stderr } => {
                let (streams, closer) = websocket::channels(ws, &channel_set(tty, stdin, stdout, stderr));
                let opts = remotecommand::Options { tty, stdin, stdout, stderr, version: protocol.to_string() };
                remotecommand::exec(&runtime, &container_id, &cmd, opts, streams, closer).await;
            }
            Pending::Attach { container_id, tty, stdin, stdout, stderr } => {
                let (streams, closer) = websocket::channels(ws, &channel_set(tty, stdin, stdout, stderr));
                let opts = remotecommand::Options { tty, stdin, stdout, stderr, version: protocol.to_string() };
                remotecommand::attach(&runtime, &container_id, opts, streams, closer).await;
            }
            Pending::PortForward { sandbox_id } => {
                let (r, w) = tokio::io::split(websocket::ByteStream::new(ws));
                let (streams, closer) = session::start(r, w);
                portforward::serve(&runtime, &sandbox_id, streams, closer).await;
            }
        }
        Ok(())
    }
}

/// The channels of a remotecommand session over WebSocket, by number.
fn channel_set(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Vec<(u8, &'static str)> {
    let mut set = vec![(3, "error")];
    if stdin {
        set.push((0, "stdin"));
    }
    if stdout {
        set.push((1, "stdout"));
    }
    if stderr && !tty {
        set.push((2, "stderr"));
    }
    if tty {
        set.push((4, "resize"));
    }
    set
}

async fn respond(conn: &mut impl Conn, code: u16, message: &str) -> std::io::Result<()> {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let body = format!("{message}\n");
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_work_once_for_their_kind_within_the_ttl() {
        let pf = || Pending::PortForward { sandbox_id: "p".into() };
        let mut t = Tokens::default();
        let start = Instant::now();
        let token = t.issue(pf(), start);
        assert!(t.redeem("exec", &token, start).is_none(), "wrong kind");
        let token = t.issue(pf(), start);
        assert!(t.redeem("portforward", &token, start).is_some());
        assert!(t.redeem("portforward", &token, start).is_none(), "reused");
        let token = t.issue(pf(), start);
        assert!(t.redeem("portforward", &token, start + TOKEN_TTL).is_none(), "expired");
        // Expired tokens are dropped when new ones are issued.
        t.issue(pf(), start);
        t.issue(pf(), start + TOKEN_TTL * 2);
        assert_eq!(t.0.len(), 1);
    }
}
