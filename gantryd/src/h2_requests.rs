//! Two things gRPC clients send that tonic's HTTP/2 stack would get wrong,
//! mended on the way in, before hyper parses the request:
//!
//! - gRPC C-core clients (Python `grpcio`, C++, Ruby…) send the unix socket's
//!   path, or a percent-encoded form of it, as `:authority`. h2 refuses that
//!   as a malformed authority and resets every stream (PROTOCOL_ERROR), while
//!   containerd (grpc-go) takes it. An authority h2 would refuse becomes
//!   `localhost`, what grpc-go itself sends over a unix socket.
//! - A call whose client deadline (`grpc-timeout`) expires must end with
//!   DEADLINE_EXCEEDED, as grpc-go servers answer; tonic's own timeout answers
//!   CANCELLED. The header is renamed to `gantry-grpc-timeout`, which
//!   `deadline::DeadlineLayer` enforces.
//!
//! This needs the client's header blocks decoded (HPACK: the `loona-hpack`
//! crate, with the dynamic table the client's encoder assumes). A block that
//! needs neither change goes on byte for byte; once one block is rewritten,
//! every later block of the connection is re-encoded as literals that never
//! touch the server's dynamic table, so the two tables cannot disagree.
//! Every other frame, and everything the server sends, passes untouched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The renamed deadline header, read by `deadline::DeadlineLayer`.
pub const DEADLINE_HEADER: &str = "gantry-grpc-timeout";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Every HTTP/2 peer accepts frames this large (SETTINGS_MAX_FRAME_SIZE's floor).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this closes the connection (h2 itself refuses
/// header lists over 16 MiB; CRI requests carry a few hundred bytes).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The HPACK dynamic table size h2 allows unless told otherwise.
const HPACK_TABLE_SIZE: usize = 4096;

enum Stage {
    /// Checking the client's connection preface.
    Preface,
    /// Reading frames.
    Frames,
    /// Not HTTP/2 with prior knowledge: everything passes untouched.
    Opaque,
}

/// A header block being gathered from a HEADERS frame and its CONTINUATIONs.
struct Block {
    stream_id: u32,
    end_stream: bool,
    /// The frames as received, sent on unchanged when nothing needs mending.
    raw: Vec<u8>,
    fragment: Vec<u8>,
}

/// A client connection whose requests reach the server mended; see the
/// module's header.
pub struct MendedRequests<S> {
    inner: S,
    stage: Stage,
    /// Bytes read from the client, not yet looked at.
    input: BytesMut,
    /// Bytes ready for the server.
    output: BytesMut,
    /// Payload bytes of a frame passing through that are still to come.
    passing: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    /// A block was rewritten: from now on every block is re-encoded.
    reencode: bool,
    eof: bool,
}

impl<S> MendedRequests<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_SIZE);
        MendedRequests {
            inner,
            stage: Stage::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            passing: 0,
            block: None,
            decoder,
            reencode: false,
            eof: false,
        }
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.stage {
                Stage::Opaque => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return Ok(());
                }
                Stage::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.stage = Stage::Opaque;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    let preface = self.input.split_to(PREFACE.len());
                    self.output.unsplit(preface);
                    self.stage = Stage::Frames;
                }
                Stage::Frames => {
                    if self.passing > 0 {
                        let n = self.passing.min(self.input.len());
                        if n == 0 {
                            return Ok(());
                        }
                        let payload = self.input.split_to(n);
                        self.output.unsplit(payload);
                        self.passing -= n;
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
                    let kind = self.input[3];
                    if kind != HEADERS && kind != CONTINUATION {
                        if self.block.is_some() {
                            return Err(protocol_error("a frame between HEADERS and its CONTINUATION"));
                        }
                        let header = self.input.split_to(FRAME_HEADER_LEN);
                        self.output.unsplit(header);
                        self.passing = len;
                        continue;
                    }
                    if len > MAX_HEADER_BLOCK {
                        return Err(protocol_error("header frame too large"));
                    }
                    if self.input.len() < FRAME_HEADER_LEN + len {
                        return Ok(());
                    }
                    let frame = self.input.split_to(FRAME_HEADER_LEN + len);
                    self.header_frame(&frame)?;
                }
            }
        }
    }

    fn header_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let mut payload = &frame[FRAME_HEADER_LEN..];
        if frame[3] == HEADERS {
            if self.block.is_some() {
                return Err(protocol_error("HEADERS before the previous block ended"));
            }
            let mut padding = 0;
            if flags & PADDED != 0 {
                let (&pad, rest) = payload.split_first().ok_or_else(|| protocol_error("short HEADERS frame"))?;
                padding = usize::from(pad);
                payload = rest;
            }
            if flags & PRIORITY != 0 {
                payload = payload.get(5..).ok_or_else(|| protocol_error("short HEADERS frame"))?;
            }
            let end = payload.len().checked_sub(padding).ok_or_else(|| protocol_error("padding exceeds HEADERS"))?;
            self.block = Some(Block {
                stream_id,
                end_stream: flags & END_STREAM != 0,
                raw: frame.to_vec(),
                fragment: payload[..end].to_vec(),
            });
        } else {
            let block = self.block.as_mut().ok_or_else(|| protocol_error("CONTINUATION without HEADERS"))?;
            if block.stream_id != stream_id {
                return Err(protocol_error("CONTINUATION of another stream"));
            }
            if block.fragment.len() + payload.len() > MAX_HEADER_BLOCK {
                return Err(protocol_error("header block too large"));
            }
            block.raw.extend_from_slice(frame);
            block.fragment.extend_from_slice(payload);
        }
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.finish_block(block)?;
            }
        }
        Ok(())
    }

    fn finish_block(&mut self, block: Block) -> io::Result<()> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| headers.push((name.into_owned(), value.into_owned())))
            .map_err(|e| protocol_error(&format!("HPACK: {e:?}")))?;
        let mut changed = false;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                *value = b"localhost".to_vec();
                changed = true;
            } else if name.as_slice() == b"grpc-timeout" {
                *name = DEADLINE_HEADER.as_bytes().to_vec();
                changed = true;
            }
        }
        if !changed && !self.reencode {
            self.output.put_slice(&block.raw);
            return Ok(());
        }
        self.reencode = true;
        let mut encoded = Vec::new();
        for (name, value) in &headers {
            encode_literal(&mut encoded, name, value);
        }
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
        let mut kind = HEADERS;
        // An empty block still needs its one HEADERS frame.
        let first: &[u8] = &[];
        let mut next = chunks.next().unwrap_or(first);
        loop {
            let last = chunks.peek().is_none();
            let mut flags = if last { END_HEADERS } else { 0 };
            if kind == HEADERS && block.end_stream {
                flags |= END_STREAM;
            }
            put_frame_header(&mut self.output, next.len(), kind, flags, block.stream_id);
            self.output.put_slice(next);
            kind = CONTINUATION;
            match chunks.next() {
                Some(chunk) => next = chunk,
                None => break,
            }
        }
        Ok(())
    }
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    let len = len as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id & 0x7fff_ffff);
}

/// HPACK "literal header field without indexing, new name", strings raw:
/// the server's dynamic table is never touched.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    // A 7-bit prefix integer with the Huffman bit clear (RFC 7541, 5.1).
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2 from the client: {what}"))
}

impl<S: AsyncRead + Unpin> AsyncRead for MendedRequests<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The client is done; hand on whatever was left half-framed.
                this.eof = true;
                let rest = this.input.split();
                this.output.unsplit(rest);
                continue;
            }
            this.input.extend_from_slice(read.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MendedRequests<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for MendedRequests<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame_header(&mut out, payload.len(), kind, flags, stream);
        out.put_slice(payload);
        out.to_vec()
    }

    /// What the server reads when a client sends `input`.
    async fn mended(input: Vec<u8>) -> Vec<u8> {
        let mut conn = MendedRequests::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        conn.read_to_end(&mut out).await.expect("read");
        out
    }

    type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

    /// The header blocks (decoded) and other frames in `bytes` after the preface.
    fn frames_of(bytes: &[u8]) -> (Vec<HeaderList>, Vec<(u8, Vec<u8>)>) {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let (mut blocks, mut others, mut fragment) = (vec![], vec![], vec![]);
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[9..9 + len];
            if kind == HEADERS || kind == CONTINUATION {
                fragment.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    blocks.push(decoder.decode(&fragment).expect("valid HPACK"));
                    fragment.clear();
                }
            } else {
                others.push((kind, payload.to_vec()));
            }
            rest = &rest[9 + len..];
        }
        (blocks, others)
    }

    fn request(authority: &str, extra: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut h: Vec<(Vec<u8>, Vec<u8>)> = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/runtime.v1.RuntimeService/Version"),
            (":authority", authority),
            ("content-type", "application/grpc"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        h.extend(extra.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())));
        h
    }

    fn header<'a>(block: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
        block.iter().find(|(n, _)| n.as_slice() == name.as_bytes()).map(|(_, v)| v.as_slice())
    }

    #[tokio::test]
    async fn a_valid_request_passes_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let block = request("localhost", &[]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        for _ in 0..2 {
            let encoded = enc.encode(block.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            input.extend(frame(HEADERS, END_HEADERS, 1, &encoded));
            input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
        }
        assert_eq!(mended(input.clone()).await, input);
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_and_later_blocks_stay_consistent() {
        // The client's encoder indexes the path, then refers to it by index.
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for (stream, authority) in [(1, "/run/gantry/gantry.sock"), (3, "/run/gantry/gantry.sock"), (5, "%2Frun")] {
            let block = request(authority, &[("x-seq", &stream.to_string())]);
            let encoded = enc.encode(block.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            // Split in two to exercise CONTINUATION, with padding on HEADERS.
            let (a, b) = encoded.split_at(encoded.len() / 2);
            let mut padded = vec![3u8];
            padded.extend_from_slice(a);
            padded.extend_from_slice(&[0, 0, 0]);
            input.extend(frame(HEADERS, PADDED, stream, &padded));
            input.extend(frame(CONTINUATION, END_HEADERS, stream, b));
            input.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
        }
        let (blocks, others) = frames_of(&mended(input).await);
        assert_eq!(blocks.len(), 3);
        for (i, block) in blocks.iter().enumerate() {
            assert_eq!(header(block, ":authority"), Some(&b"localhost"[..]), "block {i}");
            assert_eq!(header(block, ":path"), Some(&b"/runtime.v1.RuntimeService/Version"[..]));
            assert_eq!(header(block, "x-seq"), Some([1, 3, 5][i].to_string().as_bytes()));
        }
        assert_eq!(others.len(), 3, "DATA frames pass");
    }

    #[tokio::test]
    async fn grpc_timeout_is_renamed() {
        let mut enc = loona_hpack::Encoder::new();
        let block = request("localhost", &[("grpc-timeout", "1500m")]);
        let encoded = enc.encode(block.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &encoded));
        let (blocks, _) = frames_of(&mended(input).await);
        assert_eq!(header(&blocks[0], DEADLINE_HEADER), Some(&b"1500m"[..]));
        assert_eq!(header(&blocks[0], "grpc-timeout"), None);
    }

    #[tokio::test]
    async fn a_large_block_is_split_into_continuations() {
        let mut enc = loona_hpack::Encoder::new();
        let big = "v".repeat(40_000);
        let block = request("/run/x.sock", &[("x-big", &big)]);
        let encoded = enc.encode(block.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut input = PREFACE.to_vec();
        for (i, chunk) in encoded.chunks(MAX_FRAME).enumerate() {
            let last = (i + 1) * MAX_FRAME >= encoded.len();
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            input.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
        }
        let (blocks, _) = frames_of(&mended(input).await);
        assert_eq!(header(&blocks[0], "x-big"), Some(big.as_bytes()));
        assert_eq!(header(&blocks[0], ":authority"), Some(&b"localhost"[..]));
    }

    #[tokio::test]
    async fn not_http2_passes_untouched() {
        let input = b"GET / HTTP/1.1\r\nHost: /x\r\n\r\n".to_vec();
        assert_eq!(mended(input.clone()).await, input);
    }

    #[tokio::test]
    async fn broken_framing_closes_the_connection() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b"x"));
        let mut conn = MendedRequests::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        assert!(conn.read_to_end(&mut out).await.is_err());
    }
}
