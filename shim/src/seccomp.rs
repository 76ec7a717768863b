//! The spec's seccomp profile, compiled to a classic BPF program and
//! installed as the container's last step before exec.
//!
//! The program first looks at the calling convention (`seccomp_data.arch`):
//! each ABI the profile lists (the host's native one always) has its own
//! section with its own syscall numbers; any other kills the process, as
//! libseccomp's default for a foreign architecture does. On x86_64 one
//! audit architecture carries two ABIs: a number with `__X32_SYSCALL_BIT`
//! is an x32 call and is judged by the x32 numbers, never by the native
//! ones; an i386 call (`int $0x80`) has its own section too.
//!
//! Within a section the syscall number is found by a binary search over
//! ranges of numbers that share a verdict. A number with argument
//! conditions tries its rules in profile order, the first that holds
//! deciding, else the default action. Names unknown on an ABI are skipped,
//! as libseccomp does (gantryd refuses names no architecture has). When the
//! default action refuses, a number above the highest one the profile names
//! for that ABI answers ENOSYS, as runc does: a call newer than the profile
//! looks unimplemented, so libc falls back to the older call it replaces.
//!
//! Arguments are compared as 64-bit values (two 32-bit words), except on
//! i386, where the kernel reads only the low word of each register and so
//! does the filter.

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use crate::syscall_table::{self as table, Table};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const LD_IMM: u16 = 0x00; // BPF_LD | BPF_W | BPF_IMM
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06;
/// BPF_MAXINSNS.
const MAX_INSNS: usize = 4096;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_lo(i: usize) -> u32 {
    16 + 8 * i as u32
}
fn arg_hi(i: usize) -> u32 {
    20 + 8 * i as u32
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, jt: 0, jf: 0, k }
}

/// A system call ABI the filter tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    X86_64,
    X32,
    I386,
    Aarch64,
}

impl Abi {
    fn oci(self) -> Arch {
        match self {
            Abi::X86_64 => Arch::ScmpArchX86_64,
            Abi::X32 => Arch::ScmpArchX32,
            Abi::I386 => Arch::ScmpArchX86,
            Abi::Aarch64 => Arch::ScmpArchAarch64,
        }
    }

    fn audit_arch(self) -> u32 {
        match self {
            Abi::X86_64 | Abi::X32 => AUDIT_ARCH_X86_64,
            Abi::I386 => AUDIT_ARCH_I386,
            Abi::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    /// The number `seccomp_data.nr` holds for this call on this ABI.
    fn number(self, t: &Table, name: &str) -> Option<u32> {
        match self {
            Abi::X86_64 => t.number(name, table::X86_64),
            Abi::X32 => t.number(name, table::X32).map(|n| n | X32_SYSCALL_BIT),
            Abi::I386 => t.number(name, table::I386),
            Abi::Aarch64 => t.number(name, table::AARCH64),
        }
    }

    /// Whether the kernel reads all 64 bits of an argument register.
    fn wide_args(self) -> bool {
        self != Abi::I386
    }
}

/// The ABIs this host runs, its native one first. 32-bit ARM tasks on an
/// aarch64 host have no section: they are killed.
pub const HOST_ABIS: &[Abi] = if cfg!(target_arch = "x86_64") {
    &[Abi::X86_64, Abi::X32, Abi::I386]
} else if cfg!(target_arch = "aarch64") {
    &[Abi::Aarch64]
} else {
    &[]
};

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> u32 {
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

#[derive(Clone, Copy, Debug, PartialEq)]
struct Cond {
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    two: u64,
}

#[derive(Clone, Debug, PartialEq)]
struct Rule {
    conds: Vec<Cond>,
    ret: u32,
}

/// What a syscall number gets: an action, or rules to try in order.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Ret(u32),
    Rules(Vec<Rule>),
}

/// The condition `args[i] OP value` (MASKED_EQ: `args[i] & value == value_two`),
/// jumping to `Fail` when it does not hold. A narrow ABI's high word is 0.
fn condition(ops: &mut Vec<Op>, c: &Cond, wide: bool) {
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let ld_hi = || if wide { Op::Stmt(stmt(LD_W_ABS, arg_hi(c.index))) } else { Op::Stmt(stmt(LD_IMM, 0)) };
    let ld_lo = || Op::Stmt(stmt(LD_W_ABS, arg_lo(c.index)));
    let j = |code, k, jt, jf| Op::Jump { code, k, jt, jf };
    match c.op {
        LinuxSeccompOperator::ScmpCmpEq => {
            ops.extend([ld_hi(), j(JEQ_K, hi, To::Next, To::Fail), ld_lo(), j(JEQ_K, lo, To::Next, To::Fail)])
        }
        LinuxSeccompOperator::ScmpCmpNe => {
            ops.extend([ld_hi(), j(JEQ_K, hi, To::Next, To::Skip(2)), ld_lo(), j(JEQ_K, lo, To::Fail, To::Next)])
        }
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (dhi, dlo) = ((c.two >> 32) as u32, c.two as u32);
            ops.extend([
                ld_hi(),
                Op::Stmt(stmt(AND_K, hi)),
                j(JEQ_K, dhi, To::Next, To::Fail),
                ld_lo(),
                Op::Stmt(stmt(AND_K, lo)),
                j(JEQ_K, dlo, To::Next, To::Fail),
            ])
        }
        // Unsigned 64-bit: decided by the high word unless it is equal.
        LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
            let last = if c.op == LinuxSeccompOperator::ScmpCmpGt { JGT_K } else { JGE_K };
            ops.extend([
                ld_hi(),
                j(JGT_K, hi, To::Skip(3), To::Next),
                j(JEQ_K, hi, To::Next, To::Fail),
                ld_lo(),
                j(last, lo, To::Next, To::Fail),
            ])
        }
        LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
            // a < v is !(a >= v); a <= v is !(a > v).
            let last = if c.op == LinuxSeccompOperator::ScmpCmpLt { JGE_K } else { JGT_K };
            ops.extend([
                ld_hi(),
                j(JGT_K, hi, To::Fail, To::Next),
                j(JEQ_K, hi, To::Next, To::Skip(2)),
                ld_lo(),
                j(last, lo, To::Fail, To::Next),
            ])
        }
    }
}

/// Lays out one rule's block; `Fail` jumps past its end, to the next rule.
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
    let mut out = Vec::with_capacity(end);
    for (at, op) in ops.into_iter().enumerate() {
        out.push(match op {
            Op::Stmt(i) => i,
            Op::Jump { code, k, jt, jf } => Insn { code, jt: resolve(at, jt)?, jf: resolve(at, jf)?, k },
        });
    }
    Ok(out)
}

/// `if A <code> k`, skip the `skip` instructions that follow; with a jump
/// of its own when that is farther than a conditional jump reaches.
fn branch(code: u16, k: u32, skip: usize) -> Vec<Insn> {
    match u8::try_from(skip) {
        Ok(n) => vec![Insn { code, jt: n, jf: 0, k }],
        Err(_) => vec![Insn { code, jt: 0, jf: 1, k }, stmt(JA, skip as u32)],
    }
}

/// Syscall numbers with their verdicts, in order.
type Verdicts = Vec<(u32, Verdict)>;

/// Each syscall number the profile gives rules for on this ABI, in order,
/// and the highest number it names at all.
fn verdicts(profile: &LinuxSeccomp, t: &Table, abi: Abi) -> Result<(Verdicts, Option<u32>), String> {
    // Indexed by number (less the x32 bit): the numbers are small.
    let base = if abi == Abi::X32 { X32_SYSCALL_BIT } else { 0 };
    let mut by_nr: Vec<Vec<Rule>> = Vec::new();
    let mut highest = None;
    for rule in profile.syscalls().iter().flatten() {
        let ret = action(rule.action(), rule.errno_ret());
        let mut conds = Vec::new();
        for a in rule.args().iter().flatten() {
            if a.index() > 5 {
                return Err(format!("seccomp: argument index {} of {:?}: a syscall has 6", a.index(), rule.names()));
            }
            conds.push(Cond { index: a.index(), op: a.op(), value: a.value(), two: a.value_two().unwrap_or(0) });
        }
        for nr in rule.names().iter().filter_map(|name| abi.number(t, name)) {
            highest = highest.max(Some(nr));
            let i = (nr - base) as usize;
            if by_nr.len() <= i {
                by_nr.resize_with(i + 1, Vec::new);
            }
            // Kept even with the default action: it can stop a later rule.
            by_nr[i].push(Rule { conds: conds.clone(), ret });
        }
    }
    let verdicts = by_nr
        .into_iter()
        .enumerate()
        .filter(|(_, list)| !list.is_empty())
        .map(|(i, mut list)| {
            // Rules after an unconditional one are never reached.
            if let Some(end) = list.iter().position(|r| r.conds.is_empty()) {
                list.truncate(end + 1);
            }
            let v = if list[0].conds.is_empty() { Verdict::Ret(list[0].ret) } else { Verdict::Rules(list) };
            (base + i as u32, v)
        })
        .collect();
    Ok((verdicts, highest))
}

/// Ranges of numbers covering 0..=u32::MAX: (first number, verdict), each
/// running up to the next one's first number.
fn ranges(verdicts: Verdicts, highest: Option<u32>, default: u32, enosys: bool) -> Vec<(u32, Verdict)> {
    let mut out: Vec<(u32, Verdict)> = Vec::new();
    let mut push = |start: u32, v: Verdict| {
        let same = matches!((&v, out.last()), (Verdict::Ret(a), Some((_, Verdict::Ret(b)))) if a == b);
        if !same {
            out.push((start, v));
        }
    };
    let mut next = 0u32;
    for (nr, v) in verdicts {
        if nr > next {
            push(next, Verdict::Ret(default));
        }
        push(nr, v);
        next = nr + 1;
    }
    match highest {
        Some(h) if enosys => {
            if h + 1 > next {
                push(next, Verdict::Ret(default));
            }
            push(h + 1, Verdict::Ret(RET_ERRNO | ENOSYS));
        }
        _ => push(next, Verdict::Ret(default)),
    }
    out
}

fn leaf(v: &Verdict, wide: bool, default: u32) -> Result<Vec<Insn>, String> {
    let rules = match v {
        Verdict::Ret(r) => return Ok(vec![stmt(RET_K, *r)]),
        Verdict::Rules(rules) => rules,
    };
    let mut out = Vec::new();
    for rule in rules {
        let mut ops = Vec::new();
        for c in &rule.conds {
            condition(&mut ops, c, wide);
        }
        ops.push(Op::Stmt(stmt(RET_K, rule.ret)));
        out.extend(block(ops)?);
        if rule.conds.is_empty() {
            return Ok(out);
        }
    }
    out.push(stmt(RET_K, default));
    Ok(out)
}

/// A binary search over the ranges, the syscall number in A.
fn search(ranges: &[(u32, Verdict)], wide: bool, default: u32) -> Result<Vec<Insn>, String> {
    if let [(_, v)] = ranges {
        return leaf(v, wide, default);
    }
    let mid = ranges.len() / 2;
    let (below, from) = (search(&ranges[..mid], wide, default)?, search(&ranges[mid..], wide, default)?);
    let mut out = branch(JGE_K, ranges[mid].0, below.len());
    out.extend(below);
    out.extend(from);
    Ok(out)
}

/// Compiles for the host's ABIs.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<Insn>, String> {
    compile_for(profile, HOST_ABIS)
}

/// Compiles for a host that runs `host` (its native ABI first).
pub fn compile_for(profile: &LinuxSeccomp, host: &[Abi]) -> Result<Vec<Insn>, String> {
    let native = *host.first().ok_or("seccomp filters are not supported on this architecture")?;
    let listed = profile.architectures().clone().unwrap_or_default();
    let abis: Vec<Abi> = host.iter().copied().filter(|a| *a == native || listed.contains(&a.oci())).collect();
    let default = action(profile.default_action(), profile.default_errno_ret());
    let enosys = !matches!(
        profile.default_action(),
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog | LinuxSeccompAction::ScmpActTrace
    );
    let table = Table::load();
    let tree = |abi: Abi| -> Result<Vec<Insn>, String> {
        let (verdicts, highest) = verdicts(profile, &table, abi)?;
        search(&ranges(verdicts, highest, default, enosys), abi.wide_args(), default)
    };
    // One section per audit architecture, each starting with the number in A.
    let mut sections: Vec<(u32, Vec<Insn>)> = Vec::new();
    for &abi in abis.iter().filter(|a| **a != Abi::X32) {
        let mut section = vec![stmt(LD_W_ABS, NR)];
        if abi == Abi::X86_64 {
            let native = tree(abi)?;
            let x32 = if abis.contains(&Abi::X32) { tree(Abi::X32)? } else { vec![stmt(RET_K, RET_KILL_PROCESS)] };
            section.extend(branch(JSET_K, X32_SYSCALL_BIT, native.len()));
            section.extend(native);
            section.extend(x32);
        } else {
            section.extend(tree(abi)?);
        }
        sections.push((abi.audit_arch(), section));
    }
    // ld arch; one branch per section; kill (an architecture not listed); the sections.
    let mut body = vec![stmt(RET_K, RET_KILL_PROCESS)];
    let mut starts = Vec::new();
    for (_, s) in &sections {
        starts.push(body.len());
        body.extend_from_slice(s);
    }
    let mut branches: Vec<Insn> = Vec::new();
    for (i, (arch, _)) in sections.iter().enumerate().rev() {
        let mut b = branch(JEQ_K, *arch, branches.len() + starts[i]);
        b.extend(branches);
        branches = b;
    }
    let mut prog = vec![stmt(LD_W_ABS, ARCH)];
    prog.extend(branches);
    prog.extend(body);
    if prog.len() > MAX_INSNS {
        return Err(format!(
            "the seccomp profile compiles to {} instructions; the kernel takes {MAX_INSNS}",
            prog.len()
        ));
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

    /// Runs the program as the kernel would on one call.
    fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                o if (16..64).contains(&o) => {
                    let a = args[(o as usize - 16) / 8];
                    if o % 8 == 0 {
                        a as u32
                    } else {
                        (a >> 32) as u32
                    }
                }
                o => panic!("load at offset {o}"),
            }
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog.get(pc).unwrap_or_else(|| panic!("ran off the program at {pc}"));
            pc += 1;
            let jump = |cond: bool| if cond { i.jt as usize } else { i.jf as usize };
            match i.code {
                LD_W_ABS => a = word(i.k),
                LD_IMM => a = i.k,
                AND_K => a &= i.k,
                JA => pc += i.k as usize,
                JEQ_K => pc += jump(a == i.k),
                JGT_K => pc += jump(a > i.k),
                JGE_K => pc += jump(a >= i.k),
                JSET_K => pc += jump(a & i.k != 0),
                RET_K => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    const NEWUSER: u64 = 0x1000_0000;
    const SIGCHLD: u64 = 17;
    const EPERM_RET: u32 = RET_ERRNO | EPERM;
    const ENOSYS_RET: u32 = RET_ERRNO | ENOSYS;

    /// The shape of the runtime's default: an allowlist, clone without
    /// namespace flags, clone3 ENOSYS, socket refused for one family.
    const ALLOWLIST: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO",
        "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
        "syscalls":[
            {"names":["getpid","read","write","execve","personality_not_here"],"action":"SCMP_ACT_ALLOW"},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"}]},
            {"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
            {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
            {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[{"index":0,"value":4294967295,"valueTwo":40,"op":"SCMP_CMP_MASKED_EQ"}]},
            {"names":["socket"],"action":"SCMP_ACT_ALLOW"},
            {"names":["pwritev2"],"action":"SCMP_ACT_ERRNO"}
        ]}"#;

    fn nr(abi: Abi, name: &str) -> u32 {
        abi.number(&Table::load(), name).unwrap_or_else(|| panic!("{name} on {abi:?}"))
    }

    #[test]
    fn an_allowlist_holds_on_every_abi_of_an_x86_64_host() {
        let prog = compile_for(&profile(ALLOWLIST), &[Abi::X86_64, Abi::X32, Abi::I386]).unwrap();
        for abi in [Abi::X86_64, Abi::X32, Abi::I386] {
            let call = |name: &str, args: [u64; 6]| run(&prog, abi.audit_arch(), nr(abi, name), args);
            let none = [0; 6];
            assert_eq!(call("getpid", none), RET_ALLOW, "{abi:?}");
            assert_eq!(call("execve", none), RET_ALLOW, "{abi:?}");
            assert_eq!(call("unshare", [NEWUSER, 0, 0, 0, 0, 0]), EPERM_RET, "{abi:?}");
            assert_eq!(call("clone", [SIGCHLD, 0, 0, 0, 0, 0]), RET_ALLOW, "{abi:?}");
            assert_eq!(call("clone", [SIGCHLD | NEWUSER, 0, 0, 0, 0, 0]), EPERM_RET, "{abi:?}");
            assert_eq!(call("clone3", none), ENOSYS_RET, "{abi:?}");
            assert_eq!(call("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW, "{abi:?}");
            assert_eq!(call("personality", [0x0040_0000, 0, 0, 0, 0, 0]), EPERM_RET, "{abi:?}");
            assert_eq!(call("socket", [2, 0, 0, 0, 0, 0]), RET_ALLOW, "{abi:?}");
            assert_eq!(call("socket", [40, 0, 0, 0, 0, 0]), EPERM_RET, "{abi:?}");
            // The kernel reads an int: high bits must not smuggle AF_VSOCK past.
            assert_eq!(call("socket", [(1 << 32) | 40, 0, 0, 0, 0, 0]), EPERM_RET, "{abi:?}");
            assert_eq!(call("pwritev2", none), EPERM_RET, "{abi:?}");
        }
        let x86_64 = |n: u32| run(&prog, AUDIT_ARCH_X86_64, n, [0; 6]);
        // Past the highest number named (clone3; pwritev2 on x32): ENOSYS; a gap below it: EPERM.
        assert_eq!(x86_64(1000), ENOSYS_RET);
        assert_eq!(x86_64(nr(Abi::X86_64, "clone3") + 1), ENOSYS_RET);
        assert_eq!(x86_64(nr(Abi::X32, "pwritev2") + 1), ENOSYS_RET);
        assert_eq!(x86_64(nr(Abi::X32, "clone3") + 1), EPERM_RET);
        assert_eq!(x86_64(nr(Abi::X86_64, "getpid") + 1), EPERM_RET);
        assert_eq!(x86_64(X32_SYSCALL_BIT | 1000), ENOSYS_RET);
        // x32's execve is 520, not the native 59.
        assert_eq!(x86_64(X32_SYSCALL_BIT | 59), EPERM_RET);
        assert_eq!(run(&prog, AUDIT_ARCH_I386, 1000, [0; 6]), ENOSYS_RET);
        // On i386 the high word of a register is not the argument's.
        let i386_clone = nr(Abi::I386, "clone");
        assert_eq!(run(&prog, AUDIT_ARCH_I386, i386_clone, [(1 << 32) | SIGCHLD, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, AUDIT_ARCH_I386, i386_clone, [(7 << 32) | NEWUSER, 0, 0, 0, 0, 0]), EPERM_RET);
        // An architecture the host does not run.
        assert_eq!(run(&prog, AUDIT_ARCH_AARCH64, 172, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn unlisted_abis_are_killed_and_a_denylist_reaches_every_listed_one() {
        let deny = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["unshare","chmod"],"action":"SCMP_ACT_ERRNO"}]}"#;
        let host = [Abi::X86_64, Abi::X32, Abi::I386];
        let native_only = compile_for(&profile(deny), &host).unwrap();
        assert_eq!(run(&native_only, AUDIT_ARCH_X86_64, nr(Abi::X86_64, "unshare"), [0; 6]), EPERM_RET);
        assert_eq!(run(&native_only, AUDIT_ARCH_X86_64, 1000, [0; 6]), RET_ALLOW);
        assert_eq!(run(&native_only, AUDIT_ARCH_I386, nr(Abi::I386, "getpid"), [0; 6]), RET_KILL_PROCESS);
        assert_eq!(run(&native_only, AUDIT_ARCH_X86_64, nr(Abi::X32, "getpid"), [0; 6]), RET_KILL_PROCESS);
        let all = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[{"names":["unshare","chmod"],"action":"SCMP_ACT_ERRNO"}]}"#;
        let prog = compile_for(&profile(all), &host).unwrap();
        for abi in host {
            assert_eq!(run(&prog, abi.audit_arch(), nr(abi, "unshare"), [0; 6]), EPERM_RET, "{abi:?}");
            assert_eq!(run(&prog, abi.audit_arch(), nr(abi, "getpid"), [0; 6]), RET_ALLOW, "{abi:?}");
        }
    }

    #[test]
    fn aarch64_has_its_own_numbers() {
        let prog = compile_for(&profile(ALLOWLIST), &[Abi::Aarch64]).unwrap();
        let a = Abi::Aarch64;
        let call = |name: &str, arg0: u64| run(&prog, AUDIT_ARCH_AARCH64, nr(a, name), [arg0, 0, 0, 0, 0, 0]);
        assert_eq!(call("getpid", 0), RET_ALLOW);
        assert_eq!(call("unshare", NEWUSER), EPERM_RET);
        assert_eq!(call("clone", SIGCHLD), RET_ALLOW);
        assert_eq!(call("clone", NEWUSER), EPERM_RET);
        assert_eq!(call("clone3", 0), ENOSYS_RET);
        assert_eq!(call("socket", 40), EPERM_RET);
        assert_eq!(run(&prog, AUDIT_ARCH_AARCH64, 1000, [0; 6]), ENOSYS_RET);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 39, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn a_profile_naming_every_call_fits_and_long_jumps_land() {
        let table = Table::load();
        let names = table.names();
        // Alternate allow and errno so that few neighbours merge; some with conditions.
        let rules: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| match i % 10 {
                0 | 2 | 4 | 6 | 8 => serde_json::json!({"names": [n], "action": "SCMP_ACT_ALLOW"}),
                1 | 3 | 5 | 7 => serde_json::json!({"names": [n], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}),
                _ => serde_json::json!({"names": [n], "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 1, "value": 7, "op": "SCMP_CMP_GT"}]}),
            })
            .collect();
        let p = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], "syscalls": rules});
        let p: LinuxSeccomp = serde_json::from_value(p).unwrap();
        let host = [Abi::X86_64, Abi::X32, Abi::I386];
        let prog = compile_for(&p, &host).unwrap();
        assert!(prog.len() <= MAX_INSNS, "{}", prog.len());
        for abi in host {
            for (i, n) in names.iter().enumerate() {
                let Some(number) = abi.number(&table, n) else { continue };
                let got = |arg1| run(&prog, abi.audit_arch(), number, [0, arg1, 0, 0, 0, 0]);
                match i % 10 {
                    0 | 2 | 4 | 6 | 8 => assert_eq!(got(0), RET_ALLOW, "{n} on {abi:?}"),
                    1 | 3 | 5 | 7 => assert_eq!(got(0), RET_ERRNO | 13, "{n} on {abi:?}"),
                    _ => assert_eq!((got(8), got(7)), (RET_ALLOW, EPERM_RET), "{n} on {abi:?}"),
                }
            }
        }
    }
}
