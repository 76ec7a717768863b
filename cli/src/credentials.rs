//! Registry credentials for `gantry login`/`logout`, kept on the client in
//! Docker's config.json format (`{"auths": {"HOST": {"auth": base64(user:pass)}}}`)
//! in a 0600 file: `$GANTRY_CONFIG`, else `~/.config/gantry/config.json`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Value};

pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("GANTRY_CONFIG") {
        return p.into();
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    home.join(".config/gantry/config.json")
}

fn read() -> anyhow::Result<Value> {
    let path = config_path();
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{} is not JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({"auths": {}})),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Written beside and renamed over, created 0600: it holds passwords.
fn write(v: &Value) -> anyhow::Result<()> {
    let path = config_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(v)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = vec![];
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

pub fn login(registry: &str, username: &str, password: &str) -> anyhow::Result<()> {
    let mut v = read()?;
    if !v["auths"].is_object() {
        v["auths"] = json!({});
    }
    v["auths"][registry] = json!({"auth": b64(format!("{username}:{password}").as_bytes())});
    write(&v)
}

/// False if there was nothing stored for `registry`.
pub fn logout(registry: &str) -> anyhow::Result<bool> {
    let mut v = read()?;
    let removed = v["auths"].as_object_mut().and_then(|a| a.remove(registry)).is_some();
    if removed {
        write(&v)?;
    }
    Ok(removed)
}

/// The registry host of an image reference, as Docker decides it.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

/// (username, password) stored for the registry of `image`, if any.
pub fn for_image(image: &str) -> anyhow::Result<Option<(String, String)>> {
    let v = read()?;
    let registry = registry_of(image);
    let Some(auth) = v["auths"][&registry]["auth"].as_str() else { return Ok(None) };
    let decoded = unb64(auth).and_then(|b| String::from_utf8(b).ok()).context("a stored auth is not base64")?;
    Ok(decoded.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_registries_are_found() {
        for s in ["", "a", "ab", "abc", "user:p@ss w0rd!"] {
            assert_eq!(unb64(&b64(s.as_bytes())).as_deref(), Some(s.as_bytes()), "{s}");
        }
        assert_eq!(b64(b"gantry:secret"), "Z2FudHJ5OnNlY3JldA==");
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/a/b:c"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/x"), "localhost");
    }
}
