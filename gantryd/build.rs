//! Records the commit gantryd is built from (for its build_info metric),
//! when the source is a git checkout and git is installed; "unknown" otherwise.

fn main() {
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty());
    if let Some(commit) = commit {
        println!("cargo:rustc-env=GANTRY_COMMIT={commit}");
    }
}
