//! The WebSocket side of the streaming server. Exec and attach speak the
//! channel protocols (`v5.channel.k8s.io`, `v4.channel.k8s.io`): every
//! binary message starts with a channel byte (0 stdin, 1 stdout, 2 stderr,
//! 3 error, 4 resize); v5 adds `255 CHANNEL`, the client closing its side of
//! a channel. The channels are presented to `remotecommand` as the same
//! streams SPDY gives it. Port-forward (`SPDY/3.1+portforward.k8s.io`, what
//! kubectl and crictl use over WebSocket) tunnels SPDY in binary messages,
//! so it runs the SPDY session over a byte-stream view of the socket.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::conn::Conn;
use super::session::{Closer, SpdyStream, StreamWriter};
use super::spdy::Frame;

pub const CHANNEL_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
pub const PORTFORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const CLOSE_SIGNAL: u8 = 255;

/// A WebSocket frame, and a whole message, may not be larger: kubectl's
/// messages are a read buffer's worth (32 KiB), and port-forward's SPDY
/// frames stay below the SPDY bounds.
pub const MAX_FRAME: usize = 1 << 20;
pub const MAX_MESSAGE: usize = 4 << 20;

pub async fn accept<S: Conn>(conn: S) -> WebSocketStream<S> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_frame_size(Some(MAX_FRAME))
        .max_message_size(Some(MAX_MESSAGE));
    WebSocketStream::from_raw_socket(conn, Role::Server, Some(config)).await
}

/// The channels an exec or attach uses, as streams named like SPDY's.
pub fn channels<S: Conn>(
    ws: WebSocketStream<S>,
    wanted: &[(u8, &'static str)],
) -> (mpsc::Receiver<SpdyStream>, Closer) {
    let (mut sink, mut source) = ws.split();
    let (frames_tx, mut frames_rx) = mpsc::channel::<Frame>(64);
    tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            let sent = match frame {
                Frame::Data { stream_id, data, .. } if !data.is_empty() => {
                    let mut msg = Vec::with_capacity(1 + data.len());
                    msg.push(stream_id as u8);
                    msg.extend_from_slice(&data);
                    sink.send(Message::Binary(msg.into())).await
                }
                Frame::GoAway { .. } => {
                    let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    break;
                }
                // Writes queued pongs.
                Frame::Ping(_) => sink.flush().await,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let (streams_tx, streams_rx) = mpsc::channel(wanted.len().max(1));
    let mut inputs = std::collections::HashMap::new();
    for &(channel, name) in wanted {
        let (tx, rx) = mpsc::channel(16);
        inputs.insert(channel, tx);
        let stream = SpdyStream {
            id: u32::from(channel),
            headers: vec![("streamtype".into(), name.into())],
            incoming: rx,
            out: StreamWriter::new(u32::from(channel), frames_tx.clone()),
        };
        // Capacity covers every channel: this never waits.
        let _ = streams_tx.try_send(stream);
    }
    let flush = frames_tx.clone();
    tokio::spawn(async move {
        // Held until the client goes: its closing tells the handler so.
        let _open = streams_tx;
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) if !b.is_empty() => {
                    if b[0] == CLOSE_SIGNAL {
                        if let Some(ch) = b.get(1) {
                            inputs.remove(ch);
                        }
                    } else if let Some(tx) = inputs.get(&b[0]) {
                        if tx.send(b[1..].to_vec()).await.is_err() {
                            inputs.remove(&b[0]);
                        }
                    }
                }
                Message::Ping(_) => {
                    let _ = flush.send(Frame::Ping(0)).await;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    (streams_rx, Closer::new(frames_tx))
}

/// A WebSocket seen as a byte stream: each write is one binary message,
/// reads return message payloads in order. SPDY runs over it unchanged.
pub struct ByteStream<S> {
    ws: WebSocketStream<S>,
    pending: Vec<u8>,
    offset: usize,
}

impl<S> ByteStream<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        ByteStream { ws, pending: Vec::new(), offset: 0 }
    }
}

fn io_err(e: tokio_tungstenite::tungstenite::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl<S: Conn> AsyncRead for ByteStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.offset < self.pending.len() {
                let n = buf.remaining().min(self.pending.len() - self.offset);
                let start = self.offset;
                buf.put_slice(&self.pending[start..start + n]);
                self.offset += n;
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Binary(b)))) => {
                    self.pending = b.to_vec();
                    self.offset = 0;
                }
                Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io_err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: Conn> AsyncWrite for ByteStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(io_err(e))),
            Poll::Pending => return Poll::Pending,
        }
        match Pin::new(&mut self.ws).start_send(Message::Binary(data.to_vec().into())) {
            Ok(()) => Poll::Ready(Ok(data.len())),
            Err(e) => Poll::Ready(Err(io_err(e))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_err)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_err)
    }
}
