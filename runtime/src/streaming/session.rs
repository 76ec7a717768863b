//! One upgraded SPDY connection: a reader task demultiplexes frames into
//! streams, a writer task serialises everything sent back. Handlers receive
//! streams as the client opens them and talk through `SpdyStream`.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{Frame, FrameReader, FrameWriter, Headers, RST_CANCEL, RST_REFUSED_STREAM};

/// Data frames are cut to this size.
const CHUNK: usize = 32 << 10;
/// A connection that sends nothing (not even a ping) for this long is
/// closed: containerd's default `stream_idle_timeout`.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4 * 3600);
/// Streams a client may hold open at once (an exec uses up to five, a
/// port-forward two per connection it forwards).
const MAX_OPEN_STREAMS: usize = 128;

/// A stream the client opened: its headers, the bytes it sends (the
/// channel ends at its FIN), and a handle to send back.
pub struct SpdyStream {
    pub id: u32,
    pub headers: Headers,
    pub incoming: mpsc::Receiver<Vec<u8>>,
    pub out: StreamWriter,
}

impl SpdyStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The client's input on this stream, taken out of it (to hand to a task).
    pub fn take_input(&mut self) -> mpsc::Receiver<Vec<u8>> {
        let (_, closed) = mpsc::channel(1);
        std::mem::replace(&mut self.incoming, closed)
    }
}

/// Relays a local output to a stream until EOF (a pty master's EIO, once
/// the last slave is closed, counts as EOF) or until the client is gone.
pub async fn pump_out(mut from: impl AsyncRead + Unpin, to: StreamWriter) {
    let mut buf = vec![0u8; 32 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || !to.send(&buf[..n]).await {
            break;
        }
    }
}

/// Relays a stream's input to a local writer, shutting it at the client's FIN.
pub async fn pump_in(mut from: mpsc::Receiver<Vec<u8>>, mut to: impl AsyncWrite + Unpin) {
    while let Some(data) = from.recv().await {
        if to.write_all(&data).await.is_err() {
            return;
        }
        let _ = to.flush().await;
    }
    let _ = to.shutdown().await;
}

/// Sends data on one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    tx: mpsc::Sender<Frame>,
}

impl StreamWriter {
    pub(super) fn new(id: u32, tx: mpsc::Sender<Frame>) -> Self {
        StreamWriter { id, tx }
    }

    /// Sends `data`; false once the connection is gone.
    pub async fn send(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            let frame = Frame::Data { stream_id: self.id, fin: false, data: chunk.to_vec() };
            if self.tx.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Half-closes the stream (FIN): the client sees its end.
    pub async fn close(&self) {
        let _ = self.tx.send(Frame::Data { stream_id: self.id, fin: true, data: vec![] }).await;
    }
}

/// Runs the connection: returns the channel of streams the client opens and
/// a handle that ends the connection (GOAWAY, then close) when dropped by
/// every holder or on `shutdown`.
pub fn start<R, W>(reader: R, mut writer: W) -> (mpsc::Receiver<SpdyStream>, Closer)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (frames_tx, mut frames_rx) = mpsc::channel::<Frame>(64);
    let (streams_tx, streams_rx) = mpsc::channel::<SpdyStream>(16);

    tokio::spawn(async move {
        let mut encoder = FrameWriter::default();
        while let Some(frame) = frames_rx.recv().await {
            let last = matches!(frame, Frame::GoAway { .. });
            // Flushed per frame: over a WebSocket a write is only queued.
            if writer.write_all(&encoder.encode(&frame)).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            if last {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });

    let out = frames_tx.clone();
    tokio::spawn(async move {
        let mut reader = FrameReader::new(reader);
        let mut open: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
        loop {
            let frame = match tokio::time::timeout(IDLE_TIMEOUT, reader.next()).await {
                Err(_) => {
                    tracing::debug!("streaming connection idle for {IDLE_TIMEOUT:?}: closed");
                    break;
                }
                Ok(r) => r,
            };
            let frame = match frame {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "streaming connection ended");
                    break;
                }
            };
            match frame {
                Frame::SynStream { stream_id, headers, fin } => {
                    if open.len() >= MAX_OPEN_STREAMS {
                        let _ = out.send(Frame::RstStream { stream_id, status: RST_REFUSED_STREAM }).await;
                        continue;
                    }
                    let (tx, rx) = mpsc::channel(16);
                    if !fin {
                        open.insert(stream_id, tx);
                    }
                    if out.send(Frame::SynReply { stream_id, headers: vec![], fin: false }).await.is_err() {
                        break;
                    }
                    let stream = SpdyStream {
                        id: stream_id,
                        headers,
                        incoming: rx,
                        out: StreamWriter { id: stream_id, tx: out.clone() },
                    };
                    if streams_tx.send(stream).await.is_err() {
                        // Nobody takes streams any more: refuse it.
                        let _ = out.send(Frame::RstStream { stream_id, status: RST_CANCEL }).await;
                    }
                }
                Frame::Data { stream_id, fin, data } => {
                    if let Some(tx) = open.get(&stream_id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            open.remove(&stream_id);
                        }
                    }
                    if fin {
                        open.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    open.remove(&stream_id);
                }
                Frame::Ping(id) => {
                    let _ = out.send(Frame::Ping(id)).await;
                }
                Frame::GoAway { .. } => break,
                Frame::SynReply { .. } | Frame::Ignored => {}
            }
        }
        // The client is gone: dropping `open` ends every stream's input.
    });

    (streams_rx, Closer { tx: frames_tx })
}

/// Ends the connection.
pub struct Closer {
    tx: mpsc::Sender<Frame>,
}

impl Closer {
    pub(super) fn new(tx: mpsc::Sender<Frame>) -> Self {
        Closer { tx }
    }

    pub async fn shutdown(self) {
        let _ = self.tx.send(Frame::GoAway { last_stream_id: 0 }).await;
    }
}
