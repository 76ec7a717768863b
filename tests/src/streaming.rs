//! A small SPDY/3.1 client for the streaming tests, speaking to gantryd's
//! streaming server as client-go does: an HTTP upgrade, then streams opened
//! with a `streamtype` header (and `port`/`requestID` for port-forward).
//! It reuses gantryd's frame codec, which is symmetric.

use std::collections::HashMap;

use gantry_runtime::streaming::spdy::{Frame, FrameReader, FrameWriter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Reader = tokio::io::ReadHalf<Box<dyn Io>>;
type Writer = tokio::io::WriteHalf<Box<dyn Io>>;

pub struct SpdyClient {
    reader: FrameReader<Reader>,
    writer: FrameWriter,
    out: Writer,
    next_id: u32,
    /// The protocol the server chose.
    pub protocol: String,
}

/// What came back on the streams: bytes per stream ID and which ended.
#[derive(Debug, Default)]
pub struct Received {
    pub data: HashMap<u32, Vec<u8>>,
    pub finished: Vec<u32>,
}

impl Received {
    pub fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(Vec::as_slice).unwrap_or_default()).into_owned()
    }
}

/// Upgrades `url` offering `protocols`; the HTTP status and body on refusal.
pub async fn connect(url: &str, protocols: &[&str]) -> Result<SpdyClient, (u16, String)> {
    connect_with(url, protocols, None).await
}

/// As `connect`; an https URL is checked against `ca` (a PEM certificate).
pub async fn connect_with(
    url: &str,
    protocols: &[&str],
    ca: Option<&std::path::Path>,
) -> Result<SpdyClient, (u16, String)> {
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err((0, format!("not an http(s) URL: {url}"))),
    };
    let (host, path) = rest.split_once('/').ok_or((0, format!("no path in {url}")))?;
    let tcp = TcpStream::connect(host).await.map_err(|e| (0, e.to_string()))?;
    let mut conn: Box<dyn Io> = if tls {
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
        let ca = ca.ok_or((0, "an https URL needs a CA".to_string()))?;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| (0, e.to_string()))? {
            roots.add(cert.map_err(|e| (0, e.to_string()))?).map_err(|e| (0, e.to_string()))?;
        }
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| (0, e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let ip = host.rsplit_once(':').map_or(host, |h| h.0).to_string();
        let name = ServerName::try_from(ip).map_err(|e| (0, e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| (0, format!("TLS: {e}")))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut req = format!("POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
    for p in protocols {
        req += &format!("X-Stream-Protocol-Version: {p}\r\n");
    }
    req += "Content-Length: 0\r\n\r\n";
    conn.write_all(req.as_bytes()).await.map_err(|e| (0, e.to_string()))?;
    // Read the response head byte by byte: what follows it is SPDY.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if conn.read(&mut b).await.map_err(|e| (0, e.to_string()))? == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    if code != 101 {
        let mut body = String::new();
        let _ = conn.read_to_string(&mut body).await;
        return Err((code, body));
    }
    let protocol =
        head.lines().find_map(|l| l.strip_prefix("X-Stream-Protocol-Version: ")).unwrap_or_default().trim().to_string();
    let (r, w) = tokio::io::split(conn);
    Ok(SpdyClient { reader: FrameReader::new(r), writer: FrameWriter::default(), out: w, next_id: 1, protocol })
}

impl SpdyClient {
    /// Opens a stream with these headers and waits for the server's reply.
    /// Opens one stream of each `streamtype`, in order (as kubectl does for
    /// exec and attach); their ids in the same order.
    pub async fn open_streams<const N: usize>(&mut self, types: [&str; N]) -> [u32; N] {
        let mut ids = [0; N];
        for (id, t) in ids.iter_mut().zip(types) {
            *id = self.open(&[("streamtype", t)]).await;
        }
        ids
    }

    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.write(Frame::SynStream { stream_id: id, headers, fin: false }).await;
        match self.reader.next().await {
            Ok(Some(Frame::SynReply { stream_id, .. })) if stream_id == id => id,
            other => panic!("expected the reply to stream {id}, got {other:?}"),
        }
    }

    pub async fn send(&mut self, id: u32, data: &[u8], fin: bool) {
        self.write(Frame::Data { stream_id: id, fin, data: data.to_vec() }).await;
    }

    async fn write(&mut self, frame: Frame) {
        let bytes = self.writer.encode(&frame);
        self.out.write_all(&bytes).await.expect("writing to the streaming server");
    }

    /// Reads until every stream in `until` finished or the connection ends.
    pub async fn receive(&mut self, until: &[u32]) -> Received {
        let mut got = Received::default();
        while !until.iter().all(|id| got.finished.contains(id)) {
            match self.reader.next().await {
                Ok(Some(Frame::Data { stream_id, fin, data })) => {
                    got.data.entry(stream_id).or_default().extend_from_slice(&data);
                    if fin {
                        got.finished.push(stream_id);
                    }
                }
                Ok(Some(Frame::GoAway { .. })) | Ok(None) | Err(_) => break,
                Ok(Some(_)) => {}
            }
        }
        got
    }
}
