//! Times the ways of making an unpacked layer durable, on a layer given as a
//! tar.gz (bench/pull.sh makes the 30000-file one):
//!
//!   durability LAYER.tar.gz DIR MODE
//!
//! MODE: `none` (unpack only, containerd 2.x's default), `syncfs` (one
//! syncfs after the unpack), `writeback+syncfs` (each file's writeback
//! started as it is closed, then one syncfs), `fsync-N` (every file and
//! directory fsynced afterwards by N threads). Unpacks into a new directory
//! below DIR and prints one JSON line; the directory is left for the caller
//! to remove.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gantry_imageservice::snapshot::apply::{apply_layer_with, ApplyOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, layer, dir, mode] = &args[..] else {
        return Err("usage: durability LAYER.tar.gz DIR MODE".into());
    };
    let root = Path::new(dir).join(format!("{mode}-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(layer)?);
    let gz = flate2::bufread::MultiGzDecoder::new(input);
    let options = ApplyOptions { writeback: mode == "writeback+syncfs" };
    let start = Instant::now();
    apply_layer_with(gz, &root, options)?;
    let unpacked = start.elapsed();
    match mode.as_str() {
        "none" => {}
        "syncfs" | "writeback+syncfs" => {
            let d = std::fs::File::open(&root)?;
            nix::unistd::syncfs(d.as_raw_fd())?;
        }
        m if m.starts_with("fsync-") => {
            let threads: usize = m["fsync-".len()..].parse()?;
            let mut paths = Vec::new();
            walk(&root, &mut paths)?;
            let chunk = paths.len().div_ceil(threads.max(1));
            std::thread::scope(|s| {
                let handles: Vec<_> = paths
                    .chunks(chunk.max(1))
                    .map(|part| {
                        s.spawn(move || -> std::io::Result<()> {
                            for p in part {
                                std::fs::File::open(p)?.sync_all()?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| h.join().map_err(|_| std::io::Error::other("panicked"))?)
            })?;
        }
        other => return Err(format!("unknown mode {other}").into()),
    }
    let total = start.elapsed();
    println!("{{\"mode\":\"{mode}\",\"unpack_ms\":{},\"total_ms\":{}}}", unpacked.as_millis(), total.as_millis());
    Ok(())
}

/// Every file and directory below `dir`, files first, `dir` itself last.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let t = entry.file_type()?;
        if t.is_dir() {
            walk(&entry.path(), out)?;
        } else if t.is_file() {
            out.push(entry.path());
        }
    }
    out.push(dir.to_path_buf());
    Ok(())
}
