//! The process's privileges, set last before exec: rlimits, oom_score_adj,
//! the capability sets, no_new_privs, and the user and groups.

use std::collections::HashSet;

use caps::{CapSet, Capability as Cap};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
use oci_spec::runtime::{Capabilities, Process};

fn to_caps(set: &Option<Capabilities>) -> HashSet<Cap> {
    set.iter().flatten().filter_map(|c| format!("CAP_{c}").parse::<Cap>().ok()).collect()
}

fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// Applies everything in order; the user change comes after the bounding
/// set is cut and before the final sets, with keepcaps so that a non-root
/// user keeps the capabilities the spec gives it.
pub fn apply(process: &Process) -> Result<(), String> {
    for rl in process.rlimits().iter().flatten() {
        let Some(res) = resource(&rl.typ().to_string()) else { continue };
        // Without CAP_SYS_RESOURCE a hard limit cannot be raised: clamp to
        // what we have rather than fail (these machines cap NOFILE at 20000).
        let (_, cur_hard) = getrlimit(res).map_err(|e| format!("getrlimit: {e}"))?;
        let (soft, hard) = (rl.soft(), rl.hard());
        if setrlimit(res, soft, hard).is_err() {
            let hard = hard.min(cur_hard);
            setrlimit(res, soft.min(hard), hard).map_err(|e| format!("setrlimit {}: {e}", rl.typ()))?;
            eprintln!("gantry-shim: {} clamped to {hard}", rl.typ());
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        // Lowering it below our own needs CAP_SYS_RESOURCE; keep ours then,
        // as containerd's restrict_oom_score_adj does.
        if std::fs::write("/proc/self/oom_score_adj", adj.to_string()).is_err() {
            eprintln!("gantry-shim: oom_score_adj {adj} refused; keeping the shim's");
        }
    }
    let caps = process.capabilities().clone().unwrap_or_default();
    let bounding = to_caps(caps.bounding());
    for c in caps::all() {
        if !bounding.contains(&c) {
            caps::drop(None, CapSet::Bounding, c).map_err(|e| format!("dropping {c} from the bounding set: {e}"))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    let user = process.user();
    let groups: Vec<Gid> = user.additional_gids().clone().unwrap_or_default().into_iter().map(Gid::from_raw).collect();
    setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    setgid(Gid::from_raw(user.gid())).map_err(|e| format!("setgid {}: {e}", user.gid()))?;
    setuid(Uid::from_raw(user.uid())).map_err(|e| format!("setuid {}: {e}", user.uid()))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    // Capabilities the shim itself lacks (CAP_SYS_RESOURCE on these machines)
    // cannot be given: a privileged container gets all the others.
    let held = caps::read(None, CapSet::Permitted).map_err(|e| format!("reading capabilities: {e}"))?;
    let clamp = |wanted: HashSet<Cap>| -> HashSet<Cap> { wanted.intersection(&held).copied().collect() };
    // Effective first: capset refuses a permitted set that no longer covers
    // the current effective one.
    for (set, wanted) in [
        (CapSet::Effective, to_caps(caps.effective())),
        (CapSet::Permitted, to_caps(caps.permitted())),
        (CapSet::Inheritable, to_caps(caps.inheritable())),
    ] {
        caps::set(None, set, &clamp(wanted)).map_err(|e| format!("setting {set:?} capabilities: {e}"))?;
    }
    let ambient = clamp(to_caps(caps.ambient()));
    if !ambient.is_empty() {
        caps::set(None, CapSet::Ambient, &ambient).map_err(|e| format!("setting ambient capabilities: {e}"))?;
    }
    if process.no_new_privileges().unwrap_or(false) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    }
    Ok(())
}
