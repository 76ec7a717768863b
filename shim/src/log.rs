//! The CRI log format kubelet reads:
//! `2026-01-02T15:04:05.123456789Z stdout F a full line` and `P` for the
//! pieces of a line too long to buffer.

use std::fs::File;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest line kept whole; longer ones are written in `P` pieces, as
/// containerd does (16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

pub struct CriLog {
    file: File,
}

/// Bytes of one stream not yet terminated by a newline.
#[derive(Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl CriLog {
    pub fn new(file: File) -> Self {
        CriLog { file }
    }

    fn write_line(&mut self, stream: &str, tag: char, content: &[u8]) -> io::Result<()> {
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(rfc3339_nano(SystemTime::now()).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.push(b' ');
        line.push(tag as u8);
        line.push(b' ');
        line.extend_from_slice(content);
        line.push(b'\n');
        // One write per line so concurrent readers never see half a line.
        self.file.write_all(&line)
    }

    /// Logs `data` read from `stream`, keeping an unterminated tail in `buf`.
    pub fn feed(&mut self, stream: &str, buf: &mut LineBuffer, data: &[u8]) -> io::Result<()> {
        buf.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf.pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl;
            let line = &buf.pending[start..end];
            let mut chunks = line.chunks(MAX_LINE).peekable();
            if line.is_empty() {
                self.write_line(stream, 'F', b"")?;
            }
            while let Some(c) = chunks.next() {
                let tag = if chunks.peek().is_some() { 'P' } else { 'F' };
                self.write_line(stream, tag, c)?;
            }
            start = end + 1;
        }
        buf.pending.drain(..start);
        while buf.pending.len() >= MAX_LINE {
            let piece: Vec<u8> = buf.pending.drain(..MAX_LINE).collect();
            self.write_line(stream, 'P', &piece)?;
        }
        Ok(())
    }

    /// The stream ended: whatever is left is a last, full line.
    pub fn finish(&mut self, stream: &str, buf: &mut LineBuffer) -> io::Result<()> {
        if !buf.pending.is_empty() {
            let rest = std::mem::take(&mut buf.pending);
            self.write_line(stream, 'F', &rest)?;
        }
        Ok(())
    }
}

/// `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ` in UTC.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_nanos())
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_nano_utc() {
        let t = UNIX_EPOCH + Duration::new(1_767_366_245, 999_999_999);
        assert_eq!(rfc3339_nano(t), "2026-01-02T15:04:05.999999999Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn lines_full_partial_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = CriLog::new(File::create(&path).unwrap());
        let mut buf = LineBuffer::default();
        log.feed("stdout", &mut buf, b"hello\nwor").unwrap();
        log.feed("stdout", &mut buf, b"ld\n\n").unwrap();
        let long = vec![b'x'; MAX_LINE + 10];
        log.feed("stderr", &mut buf, &long).unwrap();
        log.feed("stderr", &mut buf, b"\ntail").unwrap();
        log.finish("stderr", &mut buf).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let parts: Vec<(String, String, usize)> = text
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let _ts = it.next().unwrap();
                (it.next().unwrap().into(), it.next().unwrap().into(), it.next().unwrap_or("").len())
            })
            .collect();
        assert_eq!(
            parts,
            vec![
                ("stdout".into(), "F".into(), 5),
                ("stdout".into(), "F".into(), 5),
                ("stdout".into(), "F".into(), 0),
                ("stderr".into(), "P".into(), MAX_LINE),
                ("stderr".into(), "F".into(), 10),
                ("stderr".into(), "F".into(), 4),
            ]
        );
    }
}
