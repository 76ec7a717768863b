//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay:
//! the streaming server's framing, fed arbitrary client bytes.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spdy::FrameReader;

fn block_on<F: std::future::Future>(f: F) -> Option<F::Output> {
    tokio::runtime::Builder::new_current_thread().enable_time().build().ok().map(|rt| rt.block_on(f))
}

/// SPDY/3 frames and zlib header blocks, as a client sends them.
pub fn spdy(data: &[u8]) {
    block_on(async {
        let mut reader = FrameReader::new(data);
        // Each frame consumes at least its 8-byte head.
        for _ in 0..=data.len() / 8 {
            match reader.next().await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
}

/// WebSocket framing as the server reads it (tungstenite with Gantry's
/// bounds), the messages then taken as the port-forward tunnel's byte
/// stream and read as SPDY.
pub fn websocket(data: &[u8]) {
    let data = data.to_vec();
    block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&data).await;
            let _ = client.shutdown().await;
            // Keep reading what the server answers (pongs, closes).
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        });
        let ws = super::websocket::accept(server).await;
        let mut bytes = super::websocket::ByteStream::new(ws);
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0usize;
        while let Ok(n) = bytes.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n;
            assert!(total <= 64 << 20, "more bytes out of the WebSocket than any input could make");
        }
        drop(bytes);
        let _ = writer.await;
    });
}
