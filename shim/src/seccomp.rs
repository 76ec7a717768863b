//! The spec's seccomp profile, compiled to a classic BPF program and
//! installed as the container's last step before exec. The program checks
//! the architecture, then tries each rule in order (a syscall number, and
//! for rules with arguments every condition on them, 64-bit values compared
//! as two 32-bit words), and returns the first matching rule's action, else
//! the default action. Syscall names unknown on this architecture are
//! skipped, as libseccomp does.

use std::str::FromStr;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_lo(i: usize) -> u32 {
    16 + 8 * i as u32
}
fn arg_hi(i: usize) -> u32 {
    20 + 8 * i as u32
}

#[derive(Clone, Copy)]
pub struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, jt: 0, jf: 0, k }
}

/// A jump target inside one rule's block, resolved when the block is laid out.
#[derive(Clone, Copy)]
enum To {
    Next,
    /// Skip this many following instructions.
    Skip(u8),
    /// The end of the block: the rule does not match.
    Fail,
}

enum Op {
    Stmt(Insn),
    Jump { code: u16, k: u32, jt: To, jf: To },
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> u32 {
    const EPERM: u32 = 1;
    match a {
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | (errno.unwrap_or(EPERM) & 0xffff),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | (errno.unwrap_or(0) & 0xffff),
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActNotify => RET_ERRNO | EPERM,
    }
}

/// The condition `args[i] OP value` (MASKED_EQ: `args[i] & value == value_two`),
/// jumping to `Fail` when it does not hold.
fn condition(ops: &mut Vec<Op>, index: usize, op: LinuxSeccompOperator, value: u64, two: u64) -> Result<(), String> {
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    let ld = |off| Op::Stmt(stmt(LD_W_ABS, off));
    let j = |code, k, jt, jf| Op::Jump { code, k, jt, jf };
    match op {
        LinuxSeccompOperator::ScmpCmpEq => ops.extend([
            ld(arg_hi(index)),
            j(JEQ_K, hi, To::Next, To::Fail),
            ld(arg_lo(index)),
            j(JEQ_K, lo, To::Next, To::Fail),
        ]),
        LinuxSeccompOperator::ScmpCmpNe => ops.extend([
            ld(arg_hi(index)),
            j(JEQ_K, hi, To::Next, To::Skip(2)),
            ld(arg_lo(index)),
            j(JEQ_K, lo, To::Fail, To::Next),
        ]),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (dhi, dlo) = ((two >> 32) as u32, two as u32);
            ops.extend([
                ld(arg_hi(index)),
                Op::Stmt(stmt(AND_K, hi)),
                j(JEQ_K, dhi, To::Next, To::Fail),
                ld(arg_lo(index)),
                Op::Stmt(stmt(AND_K, lo)),
                j(JEQ_K, dlo, To::Next, To::Fail),
            ])
        }
        // Unsigned 64-bit: decided by the high word unless it is equal.
        LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
            let last = if op == LinuxSeccompOperator::ScmpCmpGt { JGT_K } else { JGE_K };
            ops.extend([
                ld(arg_hi(index)),
                j(JGT_K, hi, To::Skip(3), To::Next),
                j(JEQ_K, hi, To::Next, To::Fail),
                ld(arg_lo(index)),
                j(last, lo, To::Next, To::Fail),
            ])
        }
        LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
            // a < v is !(a >= v); a <= v is !(a > v).
            let last = if op == LinuxSeccompOperator::ScmpCmpLt { JGE_K } else { JGT_K };
            ops.extend([
                ld(arg_hi(index)),
                j(JGT_K, hi, To::Fail, To::Next),
                j(JEQ_K, hi, To::Next, To::Skip(2)),
                ld(arg_lo(index)),
                j(last, lo, To::Fail, To::Next),
            ])
        }
    }
    Ok(())
}

/// Lays out one rule's block; the block ends by reloading the syscall number
/// (its `Fail` target), so the next rule starts from it.
fn block(ops: Vec<Op>) -> Result<Vec<Insn>, String> {
    let end = ops.len();
    let resolve = |at: usize, to: To| -> Result<u8, String> {
        let off = match to {
            To::Next => 0,
            To::Skip(n) => n as usize,
            To::Fail => end - at - 1,
        };
        u8::try_from(off).map_err(|_| "a seccomp rule has too many conditions".to_string())
    };
    let mut out = Vec::with_capacity(end + 1);
    for (at, op) in ops.into_iter().enumerate() {
        out.push(match op {
            Op::Stmt(i) => i,
            Op::Jump { code, k, jt, jf } => Insn { code, jt: resolve(at, jt)?, jf: resolve(at, jf)?, k },
        });
    }
    out.push(stmt(LD_W_ABS, NR));
    Ok(out)
}

fn native_arch() -> (u32, &'static str) {
    if cfg!(target_arch = "aarch64") {
        (AUDIT_ARCH_AARCH64, "SCMP_ARCH_AARCH64")
    } else {
        (AUDIT_ARCH_X86_64, "SCMP_ARCH_X86_64")
    }
}

pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<Insn>, String> {
    let default = action(profile.default_action(), profile.default_errno_ret());
    let (arch, _) = native_arch();
    let mut prog = vec![
        stmt(LD_W_ABS, ARCH),
        // Another architecture's calling convention: the default action.
        Insn { code: JEQ_K, jt: 1, jf: 0, k: arch },
        stmt(RET_K, default),
        stmt(LD_W_ABS, NR),
    ];
    for rule in profile.syscalls().iter().flatten() {
        let ret = action(rule.action(), rule.errno_ret());
        if ret == default {
            continue;
        }
        for name in rule.names() {
            let Ok(sysno) = syscalls::Sysno::from_str(name) else { continue };
            let mut ops = vec![Op::Jump { code: JEQ_K, k: sysno.id() as u32, jt: To::Next, jf: To::Fail }];
            for a in rule.args().iter().flatten() {
                condition(&mut ops, a.index(), a.op(), a.value(), a.value_two().unwrap_or(0))?;
            }
            ops.push(Op::Stmt(stmt(RET_K, ret)));
            prog.extend(block(ops)?);
        }
    }
    prog.push(stmt(RET_K, default));
    if prog.len() > 4096 {
        return Err(format!("the seccomp profile compiles to {} instructions; the kernel takes 4096", prog.len()));
    }
    Ok(prog)
}

/// Installs the filter on this thread (inherited across fork and exec).
pub fn install(profile: &LinuxSeccomp) -> Result<(), String> {
    let prog = compile(profile)?;
    let filters: Vec<libc::sock_filter> =
        prog.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    let fprog = libc::sock_fprog { len: filters.len() as u16, filter: filters.as_ptr() as *mut libc::sock_filter };
    // SAFETY: fprog points at `filters`, alive until the call returns; the
    // kernel copies the program.
    let rc = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog) };
    if rc != 0 {
        return Err(format!("installing the seccomp filter: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("profile")
    }

    #[test]
    fn rules_become_blocks_that_reload_the_syscall_number() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["chmod","fchmod","no_such_call"],"action":"SCMP_ACT_ERRNO"},
                {"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}
            ]}"#,
        );
        let prog = compile(&p).unwrap();
        // 4 header + chmod (3) + fchmod (3) + clone (1 + 6 + 1 + 1) + default.
        assert_eq!(prog.len(), 4 + 3 + 3 + 9 + 1);
        let last = prog.last().unwrap();
        assert_eq!((last.code, last.k), (RET_K, RET_ALLOW));
        // Every jump stays inside the program.
        for (i, insn) in prog.iter().enumerate() {
            if insn.code & 0x07 == 0x05 {
                assert!(i + 1 + (insn.jt.max(insn.jf) as usize) < prog.len(), "jump out of range at {i}");
            }
        }
    }
}
