//! The device allowlist on cgroup v2, which has no devices controller: the
//! spec's device rules compiled to an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE and attached to the container's cgroup
//! (BPF_CGROUP_DEVICE, with BPF_F_ALLOW_MULTI as runc), which the kernel
//! runs for every open and mknod of a device node by the cgroup's processes.
//!
//! Semantics are v1's devices controller: everything is denied unless a rule
//! allows it, and of the rules that match, the last one wins. A rule matches
//! a device by type (`a` matches all, and ignores major and minor as v1
//! does), major and minor (absent: any). Access is decided per kind (read,
//! write, mknod), as v1 keeps one exception per access: an access is allowed
//! when each kind it asks for is allowed by the last rule that matches the
//! device and names that kind. So "allow c 1:3 r" then "allow c 1:3 w"
//! allows opening 1:3 read-write, and "deny c 1:3 w" after an "allow rw"
//! still lets it be opened for reading only.
//!
//! The program: the context (`struct bpf_cgroup_dev_ctx`: access_type with
//! the device type in the low 16 bits and the access in the high 16, major,
//! minor) loaded into R2..R5; then one section per access kind, skipped when
//! the access does not ask for that kind, that tries the rules naming the
//! kind from last to first (one block each: compare type, major, minor; on a
//! match, allow = on to the next section, deny = return 0), ending in a
//! return 0 when none matched; after the last section, return 1.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

// struct bpf_cgroup_dev_ctx (linux/bpf.h).
const DEV_BLOCK: i32 = 1; // BPF_DEVCG_DEV_BLOCK
const DEV_CHAR: i32 = 2; // BPF_DEVCG_DEV_CHAR
const ACC_MKNOD: i32 = 1; // BPF_DEVCG_ACC_MKNOD
const ACC_READ: i32 = 2; // BPF_DEVCG_ACC_READ
const ACC_WRITE: i32 = 4; // BPF_DEVCG_ACC_WRITE

// eBPF opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const JMP_JA: u8 = 0x05; // BPF_JMP | BPF_JA
const JMP32_JNE_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K (32-bit compare: majors/minors are u32)
const JMP_JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const R0: u8 = 0;
const R1: u8 = 1; // the context on entry
const R2: u8 = 2; // device type
const R3: u8 = 3; // access asked for
const R4: u8 = 4; // major
const R5: u8 = 5; // minor

// bpf(2) commands, program and attach types, flags.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// One eBPF instruction (`struct bpf_insn`): opcode, dst_reg in the low
/// nibble and src_reg in the high one, a signed 16-bit offset, a 32-bit
/// immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

/// A rule as the program tests it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rule {
    allow: bool,
    /// None: any type (`a`).
    typ: Option<i32>,
    major: Option<u32>,
    minor: Option<u32>,
    /// ACC_* bits.
    access: i32,
}

fn rule(r: &LinuxDeviceCgroup) -> Result<Rule, String> {
    let typ = match r.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
        Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
        Some(LinuxDeviceType::A) | None => None,
        Some(LinuxDeviceType::P) => return Err("device rule of type p (FIFO): not a device".into()),
    };
    let number = |what: &str, n: Option<i64>| -> Result<Option<u32>, String> {
        match n {
            None => Ok(None),
            Some(n) if n < 0 => Ok(None), // -1 is the wildcard
            Some(n) => u32::try_from(n).map(Some).map_err(|_| format!("device rule: {what} {n} out of range")),
        }
    };
    let (major, minor) =
        if typ.is_none() { (None, None) } else { (number("major", r.major())?, number("minor", r.minor())?) };
    let mut access = 0;
    // No access named: all of them.
    for c in r.access().as_deref().filter(|a| !a.is_empty()).unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            other => return Err(format!("device rule: unknown access {other:?}")),
        };
    }
    Ok(Rule { allow: r.allow(), typ, major, minor, access })
}

/// Where a jump inside a rule's block goes.
enum To {
    /// The rule does not match: the next (earlier) rule's block.
    NextRule,
    /// Allowed: the next access kind's section.
    NextSection,
}

/// Compiles the rules (in spec order) into the program.
pub fn compile(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>, String> {
    let rules = rules.iter().map(rule).collect::<Result<Vec<_>, _>>()?;
    let mut prog = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for kind in [ACC_READ, ACC_WRITE, ACC_MKNOD] {
        // The section, with jumps still to resolve.
        let mut section: Vec<(Insn, Option<To>)> = Vec::new();
        // Per instruction: where its rule's block ends.
        let mut rule_ends: Vec<usize> = Vec::new();
        // Whether a rule matching every device ends the section (what is
        // after it could never run, and the verifier refuses dead code).
        let mut decided = false;
        for r in rules.iter().rev().filter(|r| r.access & kind != 0) {
            let start = section.len();
            decided = r.typ.is_none();
            if let Some(t) = r.typ {
                section.push((insn(JMP32_JNE_K, R2, 0, 0, t), Some(To::NextRule)));
            }
            if let Some(m) = r.major {
                section.push((insn(JMP32_JNE_K, R4, 0, 0, m as i32), Some(To::NextRule)));
            }
            if let Some(m) = r.minor {
                section.push((insn(JMP32_JNE_K, R5, 0, 0, m as i32), Some(To::NextRule)));
            }
            if r.allow {
                section.push((insn(JMP_JA, 0, 0, 0, 0), Some(To::NextSection)));
            } else {
                section.push((insn(ALU32_MOV_K, R0, 0, 0, 0), None));
                section.push((insn(JMP_EXIT, 0, 0, 0, 0), None));
            }
            let end = section.len();
            rule_ends.extend(std::iter::repeat_n(end, end - start));
            if decided {
                break;
            }
        }
        if !decided {
            // No rule matched: denied.
            section.push((insn(ALU32_MOV_K, R0, 0, 0, 0), None));
            section.push((insn(JMP_EXIT, 0, 0, 0, 0), None));
        }
        let len = section.len();
        // Skip the section unless the access asks for this kind.
        prog.push(insn(JMP_JSET_K, R3, 0, 1, kind));
        prog.push(insn(JMP_JA, 0, 0, jump(len)?, 0));
        for (i, (mut ins, to)) in section.into_iter().enumerate() {
            let target = match to {
                None => None,
                Some(To::NextRule) => Some(rule_ends[i]),
                Some(To::NextSection) => Some(len),
            };
            if let Some(t) = target {
                ins.off = jump(t - i - 1)?;
            }
            prog.push(ins);
        }
    }
    prog.push(insn(ALU32_MOV_K, R0, 0, 0, 1));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    Ok(prog)
}

fn jump(n: usize) -> Result<i16, String> {
    i16::try_from(n).map_err(|_| "device rules: too many for one program".to_string())
}

/// The start of `union bpf_attr` for BPF_PROG_LOAD (the kernel takes a
/// shorter struct as zeroes beyond it).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised repr(C) prefix of union bpf_attr
    // for `cmd`, and its size is passed; the pointers inside it point to
    // buffers that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// Loads the program; on failure the verifier's log is part of the error.
pub fn load(prog: &[Insn]) -> Result<OwnedFd, String> {
    // No GPL-only helpers are used, so any licence will do; runc's is this.
    let license = c"Apache";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"gantry_device");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(prog.len()).map_err(|_| "device program too long".to_string())?,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    let fd = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => fd,
        Err(first) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            match bpf(BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => fd,
                Err(_) => {
                    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                    let text = String::from_utf8_lossy(&log[..end]);
                    return Err(format!("loading the device eBPF program: {first}: {}", text.trim()));
                }
            }
        }
    };
    // SAFETY: bpf(BPF_PROG_LOAD) returned a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Compiles `rules`, loads the program and attaches it to the cgroup v2
/// directory `cgroup`. The attachment keeps the program alive; it goes
/// with the cgroup.
pub fn apply(cgroup: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), String> {
    let prog = load(&compile(rules)?)?;
    let dir = std::fs::File::open(cgroup).map_err(|e| format!("opening cgroup {}: {e}", cgroup.display()))?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| format!("attaching the device eBPF program to {}: {e}", cgroup.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a program of the instructions `compile` emits on one access.
    fn run(prog: &[Insn], typ: i32, access: i32, major: u32, minor: u32) -> u32 {
        let ctx = [(access << 16 | typ) as u32, major, minor];
        let mut reg = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..100_000 {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            assert_eq!(
                src,
                if i.code == LDX_MEM_W { R1 as usize } else { 0 },
                "only loads name a source (the context)"
            );
            pc += 1;
            match i.code {
                LDX_MEM_W => reg[dst] = ctx[i.off as usize / 4] as u64,
                ALU32_AND_K => reg[dst] = (reg[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => reg[dst] = ((reg[dst] as u32) >> i.imm) as u64,
                ALU32_MOV_K => reg[dst] = i.imm as u32 as u64,
                JMP_JA => pc = (pc as i64 + i.off as i64) as usize,
                JMP32_JNE_K if reg[dst] as u32 != i.imm as u32 => pc = (pc as i64 + i.off as i64) as usize,
                JMP32_JNE_K => {}
                JMP_JSET_K if reg[dst] & (i.imm as i64 as u64) != 0 => pc = (pc as i64 + i.off as i64) as usize,
                JMP_JSET_K => {}
                JMP_EXIT => return reg[0] as u32,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        panic!("no exit");
    }

    fn rules(json: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(json).expect("rules")
    }

    const RW: i32 = ACC_READ | ACC_WRITE;

    #[test]
    fn the_last_matching_rule_wins_per_access_kind() {
        let prog = compile(&rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rw"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"},
            {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "r"},
            {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "w"},
        ])))
        .expect("compile");
        // 1:3: read and mknod allowed, write denied by the later rule.
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 3), 1);
        assert_eq!(run(&prog, DEV_CHAR, ACC_MKNOD, 1, 3), 1);
        assert_eq!(run(&prog, DEV_CHAR, ACC_WRITE, 1, 3), 0);
        assert_eq!(run(&prog, DEV_CHAR, RW, 1, 3), 0);
        // A wildcard minor; no mknod.
        assert_eq!(run(&prog, DEV_CHAR, RW, 136, 7), 1);
        assert_eq!(run(&prog, DEV_CHAR, ACC_MKNOD, 136, 7), 0);
        // Not a block device of that number.
        assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 136, 7), 0);
        // Read and write from two rules.
        assert_eq!(run(&prog, DEV_BLOCK, RW, 8, 0), 1);
        assert_eq!(run(&prog, DEV_BLOCK, ACC_MKNOD, 8, 0), 0);
        // Anything else: the first rule.
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 5), 0);
    }

    #[test]
    fn allow_all_and_defaults() {
        // No rules: nothing allowed.
        let prog = compile(&[]).expect("compile");
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 3), 0);
        // A privileged container's single rule: everything.
        let prog = compile(&rules(serde_json::json!([{"allow": true, "access": "rwm"}]))).expect("compile");
        assert_eq!(run(&prog, DEV_BLOCK, RW | ACC_MKNOD, 8, 0), 1);
        // "a" ignores major and minor (as v1), no access means all.
        let prog = compile(&rules(serde_json::json!([
            {"allow": true, "type": "a", "major": 5, "minor": 5},
            {"allow": false, "type": "c", "major": 1, "minor": 3},
        ])))
        .expect("compile");
        assert_eq!(run(&prog, DEV_BLOCK, ACC_MKNOD, 8, 0), 1);
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 3), 0);
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 1, 5), 1);
        // Large numbers compare as u32.
        let prog = compile(&rules(serde_json::json!([
            {"allow": true, "type": "c", "major": 4_000_000_000u64, "minor": 1, "access": "r"},
        ])))
        .expect("compile");
        assert_eq!(run(&prog, DEV_CHAR, ACC_READ, 4_000_000_000, 1), 1);
        assert!(compile(&rules(serde_json::json!([{"allow": true, "type": "c", "access": "x"}]))).is_err());
    }
}

/// The real thing: a program attached to a cgroup of this host's cgroup2
/// tree, a child process in that cgroup, and what it may open and make.
#[cfg(test)]
mod kernel_tests {
    use std::ffi::CString;
    use std::path::PathBuf;

    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult, Pid};

    fn cgroup2_mount() -> Option<PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let found = crate::cgroup_mounts::mounts(&mountinfo).find(|(fstype, ..)| *fstype == "cgroup2");
        found.map(|(_, m, _)| PathBuf::from(m))
    }

    /// Kills the child (ours, by pid) and removes the cgroup, also when the
    /// test fails half-way.
    struct Cleanup {
        dir: PathBuf,
        child: Option<Pid>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(pid) = self.child.take() {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
            for _ in 0..100 {
                if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    /// Rule lists of every shape load: runc's default allowlist (what
    /// gantryd gives an unprivileged container), nothing, allow-all after
    /// deny-all, a deny after allows, partial accesses.
    #[test]
    fn rule_lists_of_every_shape_pass_the_verifier() {
        let mut default = vec![serde_json::json!({"allow": false, "access": "rwm"})];
        default.push(serde_json::json!({"allow": true, "type": "c", "access": "m"}));
        default.push(serde_json::json!({"allow": true, "type": "b", "access": "m"}));
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (10, 200)] {
            default
                .push(serde_json::json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"}));
        }
        default.push(serde_json::json!({"allow": true, "type": "c", "major": 136, "access": "rwm"}));
        let shapes = [
            serde_json::Value::Array(default),
            serde_json::json!([]),
            serde_json::json!([{"allow": false, "access": "rwm"}, {"allow": true, "access": "rwm"}]),
            serde_json::json!([
                {"allow": true, "type": "c", "major": 1, "access": "rw"},
                {"allow": false, "type": "c", "major": 1, "minor": 5, "access": "w"},
            ]),
            serde_json::json!([{"allow": true, "type": "b", "access": "r"}, {"allow": false, "access": "m"}]),
        ];
        for rules in shapes {
            let parsed: Vec<oci_spec::runtime::LinuxDeviceCgroup> =
                serde_json::from_value(rules.clone()).expect("rules");
            let prog = super::compile(&parsed).expect("compile");
            if let Err(e) = super::load(&prog) {
                panic!("{rules}: {e}");
            }
        }
    }

    /// What the child found, one bit per surprise.
    const NULL_DENIED: i32 = 1;
    const ZERO_NOT_DENIED: i32 = 2;
    const MKNOD_NOT_DENIED: i32 = 4;

    #[test]
    fn an_attached_program_allows_dev_null_and_denies_the_rest() {
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let mut cleanup =
            Cleanup { dir: mount.join(format!("gantry-device-filter-test-{}", std::process::id())), child: None };
        std::fs::create_dir(&cleanup.dir).expect("test cgroup");
        let rules: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_value(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        ]))
        .expect("rules");
        super::apply(&cleanup.dir, &rules).expect("attach");

        let tmp = tempfile::tempdir().expect("tempdir");
        let null = CString::new("/dev/null").expect("path");
        let zero = CString::new("/dev/zero").expect("path");
        let node = CString::new(tmp.path().join("null2").into_os_string().into_encoded_bytes()).expect("path");
        let (go_r, go_w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child only makes raw system calls on memory prepared
        // before the fork (no allocation, no locks) and ends with _exit.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let mut byte = 0u8;
                // SAFETY: raw system calls on live buffers and C strings;
                // errno is this thread's.
                unsafe {
                    libc::read(std::os::fd::AsRawFd::as_raw_fd(&go_r), (&mut byte as *mut u8).cast(), 1);
                    let mut found = 0;
                    if libc::open(null.as_ptr(), libc::O_RDWR) < 0 {
                        found |= NULL_DENIED;
                    }
                    if libc::open(zero.as_ptr(), libc::O_RDONLY) >= 0 || *libc::__errno_location() != libc::EPERM {
                        found |= ZERO_NOT_DENIED;
                    }
                    if libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) == 0
                        || *libc::__errno_location() != libc::EPERM
                    {
                        found |= MKNOD_NOT_DENIED;
                    }
                    libc::_exit(found);
                }
            }
            ForkResult::Parent { child } => {
                cleanup.child = Some(child);
                drop(go_r);
                std::fs::write(cleanup.dir.join("cgroup.procs"), child.to_string()).expect("child into the cgroup");
                nix::unistd::write(&go_w, b"g").expect("go");
                let status = waitpid(child, None).expect("wait");
                cleanup.child = None;
                assert_eq!(
                    status,
                    WaitStatus::Exited(child, 0),
                    "1: /dev/null denied, 2: /dev/zero not denied, 4: mknod not denied"
                );
            }
        }
    }
}
