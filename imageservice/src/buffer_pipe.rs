//! A bounded pipe between two threads that recycles its buffers: the
//! writing side fills a buffer from a reader and hands it over, the reading
//! side reads it as one stream and hands the buffer back. Used to move a
//! layer's decompression off the thread that writes its files.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// A filled buffer and how many of its bytes count.
type Filled = (Vec<u8>, usize);

/// `buffers` buffers of `size` bytes each, at most that much in flight.
pub fn buffer_pipe(buffers: usize, size: usize) -> (PipeWriter, PipeReader) {
    let (full_tx, full_rx) = sync_channel(buffers);
    let (empty_tx, empty_rx) = sync_channel(buffers);
    for _ in 0..buffers {
        // Cannot fail: the channel holds `buffers` and its receiver lives.
        let _ = empty_tx.send(vec![0; size]);
    }
    (
        PipeWriter { full: full_tx, empty: empty_rx },
        PipeReader { full: full_rx, empty: empty_tx, current: Vec::new(), len: 0, pos: 0 },
    )
}

pub struct PipeWriter {
    full: SyncSender<Filled>,
    empty: Receiver<Vec<u8>>,
}

impl PipeWriter {
    /// Fills the next buffer from `input` (as full as `input` allows) and
    /// hands it to the reader; `f` sees the bytes first. Returns how many
    /// bytes went over (0 at the end of `input`), or `None` once the reader
    /// is gone.
    pub fn fill_from(&mut self, input: &mut impl Read, f: impl FnOnce(&[u8])) -> io::Result<Option<usize>> {
        let Ok(mut buf) = self.empty.recv() else { return Ok(None) };
        let mut filled = 0;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(Some(0));
        }
        f(&buf[..filled]);
        Ok(self.full.send((buf, filled)).ok().map(|()| filled))
    }
}

/// The reading end; sees the end of the stream once the writer is dropped.
pub struct PipeReader {
    full: Receiver<Filled>,
    empty: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    len: usize,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_through_buffer(self, buf)
    }
}

/// `Read::read` for a reader whose `BufRead` side does the work.
pub(crate) fn read_through_buffer(reader: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
    let available = reader.fill_buf()?;
    let n = available.len().min(buf.len());
    buf[..n].copy_from_slice(&available[..n]);
    reader.consume(n);
    Ok(n)
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len {
            if !self.current.is_empty() {
                // The writer may have finished and gone: then nobody needs it back.
                let _ = self.empty.try_send(std::mem::take(&mut self.current));
            }
            match self.full.recv() {
                Ok((buf, len)) => (self.current, self.len, self.pos) = (buf, len, 0),
                Err(_) => (self.len, self.pos) = (0, 0),
            }
        }
        Ok(&self.current[self.pos..self.len])
    }
    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_a_stream_across_threads_with_few_buffers() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut writer, mut reader) = buffer_pipe(2, 4096);
        let input = data.clone();
        let sent = std::thread::spawn(move || {
            let mut input = &input[..];
            let mut total = 0;
            while let Some(n) = writer.fill_from(&mut input, |_| {}).unwrap() {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(sent.join().unwrap(), data.len());
        assert_eq!(got, data);
    }

    #[test]
    fn the_writer_stops_when_the_reader_is_gone() {
        let (mut writer, reader) = buffer_pipe(1, 16);
        drop(reader);
        assert_eq!(writer.fill_from(&mut &[1u8; 64][..], |_| {}).unwrap(), None);
    }
}
