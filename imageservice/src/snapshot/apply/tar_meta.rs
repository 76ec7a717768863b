//! What a tar entry says of the file beyond its name and content: owner,
//! mode, mtime (PAX's fractional one first), xattrs and device numbers, read
//! as Go's archive/tar does (blank numeric fields are 0).

use std::io::{self, Read};

use nix::sys::time::TimeSpec;

use super::error::ApplyError;

const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
const PAX_SPARSE_PREFIX: &[u8] = b"GNU.sparse.";

/// Ownership, mode, mtime and xattrs of an entry.
pub(super) struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime: TimeSpec,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub(super) fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, ApplyError> {
    let mut xattrs = Vec::new();
    let mut pax_mtime = None;
    if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Tar)? {
        for ext in exts {
            let ext = ext.map_err(ApplyError::Tar)?;
            let key = ext.key_bytes();
            if let Some(attr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                xattrs.push((attr.to_vec(), ext.value_bytes().to_vec()));
            } else if key == b"mtime" {
                let t = parse_pax_time(ext.value_bytes())
                    .ok_or_else(|| ApplyError::Tar(io::Error::new(io::ErrorKind::InvalidData, "bad PAX mtime")))?;
                pax_mtime = Some(t);
            } else if key.starts_with(PAX_SPARSE_PREFIX) {
                // Writing the sparse map as the file's content would corrupt it.
                return Err(ApplyError::Unsupported { path: name.to_string(), kind: "GNU sparse (PAX)".into() });
            }
        }
    }
    // PAX uid/gid were already merged into the header by the tar crate.
    let header = entry.header();
    let old = header.as_old();
    let tar_err = |what: &str| ApplyError::Tar(io::Error::new(io::ErrorKind::InvalidData, format!("{name:?}: {what}")));
    let uid = u32::try_from(blank_as_zero(header.uid(), &old.uid)?).map_err(|_| tar_err("uid out of range"))?;
    let gid = u32::try_from(blank_as_zero(header.gid(), &old.gid)?).map_err(|_| tar_err("gid out of range"))?;
    let mtime = match pax_mtime {
        Some(t) => t,
        None => {
            let secs = blank_as_zero(header.mtime(), &old.mtime)?;
            TimeSpec::new(i64::try_from(secs).map_err(|_| tar_err("mtime out of range"))?, 0)
        }
    };
    let mode = blank_as_zero(header.mode(), &old.mode)? & 0o7777;
    Ok(Meta { uid, gid, mode, mtime, xattrs })
}

/// A numeric header field left blank reads as 0, as in Go's archive/tar (and
/// so Docker and containerd).
fn blank_as_zero<T: From<u8>>(parsed: io::Result<T>, raw: &[u8]) -> Result<T, ApplyError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if is_blank(raw) => Ok(T::from(0)),
        Err(e) => Err(ApplyError::Tar(e)),
    }
}

fn is_blank(raw: &[u8]) -> bool {
    raw.iter().all(|b| *b == 0 || *b == b' ')
}

pub(super) fn device_numbers(header: &tar::Header) -> io::Result<(u32, u32)> {
    let raw = header
        .as_ustar()
        .map(|h| (&h.dev_major[..], &h.dev_minor[..]))
        .or_else(|| header.as_gnu().map(|h| (&h.dev_major[..], &h.dev_minor[..])));
    let field = |parsed: io::Result<Option<u32>>, raw: Option<&[u8]>| match parsed {
        Ok(v) => Ok(v.unwrap_or(0)),
        Err(_) if raw.is_some_and(is_blank) => Ok(0),
        Err(e) => Err(e),
    };
    Ok((field(header.device_major(), raw.map(|r| r.0))?, field(header.device_minor(), raw.map(|r| r.1))?))
}

/// A PAX time: decimal seconds, optionally negative, optionally fractional.
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    // Nanoseconds: the first nine digits, right-padded; the rest truncated.
    let nanos = frac.bytes().chain(std::iter::repeat(b'0')).take(9).fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(match (negative, nanos) {
        (false, _) => TimeSpec::new(secs, nanos),
        (true, 0) => TimeSpec::new(-secs, 0),
        (true, _) => TimeSpec::new(-secs - 1, 1_000_000_000 - nanos),
    })
}
