//! The server side of SPDY/3 framing, as kubelet's streaming clients
//! (client-go's SPDY executor and port-forwarder, through moby/spdystream)
//! speak it after an HTTP `Upgrade: SPDY/3.1`: control frames open, answer
//! and reset streams; data frames carry bytes; header blocks are zlib
//! compressed with the SPDY/3 dictionary, one compression context per
//! direction for the whole connection. Those clients do no flow control,
//! so WINDOW_UPDATE is read and ignored and none is sent.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
/// Data frames larger than this are refused (SPDY/3's own limit).
const MAX_FRAME: usize = 1 << 24;
/// Control frames (compressed headers, pings…): nothing kubelet's clients
/// send comes close.
pub const MAX_CONTROL_FRAME: usize = 1 << 20;
/// A header block after inflating: a zlib bomb in a SYN_STREAM stops here
/// and ends the connection (the shared zlib context cannot go on).
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Header (name, value) pairs in a block, NUL-separated values counted
/// one by one (each would copy its name).
pub const MAX_HEADERS: usize = 256;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("reading from the connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        headers: Headers,
        fin: bool,
    },
    SynReply {
        stream_id: u32,
        headers: Headers,
        fin: bool,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last_stream_id: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// SETTINGS, HEADERS, WINDOW_UPDATE and unknown types: nothing to do.
    Ignored,
}

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1):
/// common header names as length-prefixed strings, then status lines,
/// dates and content types.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
        "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads frames from the client, inflating header blocks.
pub struct FrameReader<R> {
    io: R,
    inflate: Decompress,
    dict: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        FrameReader { io, inflate: Decompress::new(true), dict: dictionary() }
    }

    /// The next frame; `None` at a clean end of the connection.
    pub async fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let control = head[0] & 0x80 != 0;
        if len > MAX_FRAME || (control && len > MAX_CONTROL_FRAME) {
            return Err(SpdyError::Protocol(format!("frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        if head[0] & 0x80 == 0 {
            let stream_id = be32(&head[..4]) & 0x7fff_ffff;
            return Ok(Some(Frame::Data { stream_id, fin: flags & FLAG_FIN != 0, data: payload }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Protocol(format!("SPDY version {version}, only 3 is spoken")));
        }
        let short = || SpdyError::Protocol("control frame too short".into());
        let fin = flags & FLAG_FIN != 0;
        let frame = match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM => {
                if payload.len() < 10 {
                    return Err(short());
                }
                let stream_id = be32(&payload) & 0x7fff_ffff;
                let headers = self.headers(&payload[10..])?;
                Frame::SynStream { stream_id, headers, fin }
            }
            SYN_REPLY => {
                if payload.len() < 4 {
                    return Err(short());
                }
                let stream_id = be32(&payload) & 0x7fff_ffff;
                let headers = self.headers(&payload[4..])?;
                Frame::SynReply { stream_id, headers, fin }
            }
            RST_STREAM => {
                if payload.len() < 8 {
                    return Err(short());
                }
                Frame::RstStream { stream_id: be32(&payload) & 0x7fff_ffff, status: be32(&payload[4..]) }
            }
            PING => Frame::Ping(be32(payload.get(..4).ok_or_else(short)?)),
            GOAWAY => Frame::GoAway { last_stream_id: be32(payload.get(..4).ok_or_else(short)?) & 0x7fff_ffff },
            // HEADERS would need inflating to keep the zlib context in step;
            // spdystream never sends it to a server.
            8 => return Err(SpdyError::Protocol("HEADERS frames are not supported".into())),
            _ => Frame::Ignored,
        };
        Ok(Some(frame))
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity((compressed.len() * 4 + 256).min(MAX_HEADER_BLOCK));
        let mut input = compressed;
        loop {
            let before_in = self.inflate.total_in();
            if out.capacity() - out.len() < 1024 {
                out.reserve(4096);
            }
            let result = self.inflate.decompress_vec(input, &mut out, FlushDecompress::Sync);
            match result {
                Ok(Status::Ok | Status::StreamEnd | Status::BufError) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&self.dict).map_err(|e| SpdyError::Protocol(format!("zlib: {e}")))?;
                }
                Err(e) => return Err(SpdyError::Protocol(format!("inflating headers: {e}"))),
            }
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Protocol(format!("header block inflates past {} KiB", MAX_HEADER_BLOCK >> 10)));
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let bad = || SpdyError::Protocol("malformed header block".into());
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let s = b.get(pos..pos + n).ok_or_else(bad)?;
        pos += n;
        Ok(s)
    };
    let count = be32(take(4)?) as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        // Several values of one name are NUL-separated.
        for v in value.split('\0') {
            if headers.len() == MAX_HEADERS {
                return Err(SpdyError::Protocol(format!("more than {MAX_HEADERS} headers")));
            }
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

/// Encodes frames to the client, deflating header blocks.
pub struct FrameWriter {
    deflate: Compress,
}

impl Default for FrameWriter {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh compressor accepts a dictionary before its first input.
        let _ = deflate.set_dictionary(&dictionary());
        FrameWriter { deflate }
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

impl FrameWriter {
    pub fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let fin = |f: bool| if f { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data { stream_id, fin: last, data } => {
                let mut f = Vec::with_capacity(8 + data.len());
                f.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                f.push(fin(*last));
                f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                f.extend_from_slice(data);
                f
            }
            Frame::SynReply { stream_id, headers, fin: last } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend(self.header_block(headers));
                control(SYN_REPLY, fin(*last), &p)
            }
            Frame::SynStream { stream_id, headers, fin: last } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                p.extend(self.header_block(headers));
                control(SYN_STREAM, fin(*last), &p)
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, &p)
            }
            Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_stream_id } => {
                let mut p = last_stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&0u32.to_be_bytes());
                control(GOAWAY, 0, &p)
            }
            Frame::Ignored => vec![],
        }
    }

    fn header_block(&mut self, headers: &Headers) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.to_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw.as_slice();
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            // A sync flush ends each block on a byte boundary, so the peer
            // can inflate it without waiting for more.
            let _ = self.deflate.compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_dictionary_is_the_one_of_the_spdy3_draft() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(hex::encode(Sha256::digest(&d)), "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02");
    }

    #[tokio::test]
    async fn frames_round_trip_through_shared_zlib_contexts() {
        let mut w = FrameWriter::default();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                headers: vec![("streamtype".into(), "error".into()), ("port".into(), "80".into())],
                fin: false,
            },
            Frame::SynStream { stream_id: 3, headers: vec![("streamtype".into(), "stdout".into())], fin: true },
            Frame::Data { stream_id: 3, fin: true, data: b"hello".to_vec() },
            Frame::SynReply { stream_id: 5, headers: vec![], fin: false },
            Frame::RstStream { stream_id: 7, status: RST_CANCEL },
            Frame::Ping(9),
            Frame::GoAway { last_stream_id: 11 },
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(|f| w.encode(f)).collect();
        let mut r = FrameReader::new(bytes.as_slice());
        for f in &frames {
            assert_eq!(r.next().await.unwrap().as_ref(), Some(f));
        }
        assert_eq!(r.next().await.unwrap(), None);
    }

    /// A SYN_STREAM whose header block inflates to `inflated` bytes of
    /// zeros (a zlib bomb: about 1 KiB per MiB).
    fn bomb(inflated: usize) -> Vec<u8> {
        let mut deflate = Compress::new(Compression::best(), true);
        let _ = deflate.set_dictionary(&dictionary());
        let mut out = Vec::with_capacity(inflated / 512 + 1024);
        let zeros = vec![0u8; 1 << 20];
        let mut left = inflated;
        while left > 0 {
            let n = left.min(zeros.len());
            let mut input = &zeros[..n];
            while !input.is_empty() {
                out.reserve(64 << 10);
                let before = deflate.total_in();
                deflate.compress_vec(input, &mut out, FlushCompress::None).unwrap();
                input = &input[(deflate.total_in() - before) as usize..];
            }
            left -= n;
        }
        loop {
            out.reserve(64 << 10);
            let before = out.len();
            deflate.compress_vec(&[], &mut out, FlushCompress::Sync).unwrap();
            if out.len() == before || out.len() < out.capacity() {
                break;
            }
        }
        let mut p = 1u32.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        p.extend(out);
        control(SYN_STREAM, 0, &p)
    }

    #[tokio::test]
    async fn a_header_block_that_inflates_to_a_gibibyte_is_refused_at_a_mebibyte() {
        let frame = bomb(1 << 30);
        assert!(frame.len() < MAX_CONTROL_FRAME, "the bomb is {} bytes", frame.len());
        let mut r = FrameReader::new(frame.as_slice());
        let err = r.next().await.unwrap_err();
        assert!(err.to_string().contains("inflates past 1024 KiB"), "{err}");
    }

    #[tokio::test]
    async fn oversized_control_frames_and_header_counts_are_refused() {
        let big = control(SYN_STREAM, 0, &vec![0u8; MAX_CONTROL_FRAME + 1]);
        let err = FrameReader::new(big.as_slice()).next().await.unwrap_err();
        assert!(err.to_string().contains("frame of"), "{err}");
        // One header whose value is 100 000 NUL-separated empty values.
        let mut block = 1u32.to_be_bytes().to_vec();
        block.extend_from_slice(&4u32.to_be_bytes());
        block.extend_from_slice(b"name");
        block.extend_from_slice(&100_000u32.to_be_bytes());
        block.extend(std::iter::repeat_n(0u8, 100_000));
        let err = parse_header_block(&block).unwrap_err();
        assert!(err.to_string().contains("more than 256 headers"), "{err}");
    }
}
