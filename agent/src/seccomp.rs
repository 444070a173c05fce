//! `linux.seccomp`: translate the spec's filter into a classic BPF program and
//! install it.
//!
//! The program checks the architecture (x86_64 only; other ABIs, x32 included,
//! get `ENOSYS`), then tries each rule in spec order (the first whose syscall
//! number and argument conditions match decides), and falls back to the default
//! action. Argument comparisons are compiled by `seccompiler`.
//!
//! Like runc: unknown syscall names are skipped, rules whose action is the
//! default action are dropped, conditions on distinct arguments are ANDed and
//! conditions repeating an argument index become one rule each (ORed).
//! `flags` are ignored; `SCMP_ACT_NOTIFY` is refused.

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    sock_filter, BpfProgram, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule,
};

use crate::seccomp_table::X86_64;

/// A `linux.seccomp` that cannot be turned into a filter, or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter does not cover the native (x86_64) architecture.
    #[error("seccomp architectures {0} do not include x86_64, the only one supported")]
    Architecture(String),
    /// The host is not x86_64.
    #[error("seccomp filters are only supported on x86_64 hosts")]
    Host,
    /// An action this runtime cannot carry out.
    #[error("seccomp action {0} is not supported")]
    Action(String),
    /// A syscall argument condition seccompiler rejects.
    #[error("invalid seccomp argument condition on syscall {name}")]
    Condition {
        /// The syscall.
        name: String,
        /// seccompiler's reason.
        #[source]
        source: seccompiler::BackendError,
    },
    /// A rule too long for BPF's 8-bit jumps, or a program over the kernel's limit.
    #[error("the seccomp filter is too large ({0})")]
    TooLarge(String),
    /// seccomp(2) refused the filter.
    #[error("failed to install the seccomp filter")]
    Install(#[source] std::io::Error),
}

type Result<T> = std::result::Result<T, SeccompError>;

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const BPF_MAX_LEN: usize = 4096;
const EPERM: u32 = 1;

// BPF_LD | BPF_W | BPF_ABS, BPF_JMP | BPF_JEQ | BPF_K, BPF_JMP | BPF_JGE | BPF_K, BPF_RET | BPF_K.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;

/// A compiled filter, ready to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program(BpfProgram);

impl Program {
    /// The BPF instructions.
    pub fn instructions(&self) -> &[sock_filter] {
        &self.0
    }

    /// Install the filter on the calling thread. Without no_new_privs set, the
    /// caller needs CAP_SYS_ADMIN.
    pub fn install(&self) -> Result<()> {
        let len = u16::try_from(self.0.len())
            .map_err(|_| SeccompError::TooLarge(format!("{} instructions", self.0.len())))?;
        let prog = libc::sock_fprog {
            len,
            filter: self.0.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: seccompiler's `sock_filter` is `repr(C)` with the kernel's layout
        // (u16, u8, u8, u32), `prog` points at `len` of them, and the kernel copies
        // the program before returning, so nothing is retained.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::Install(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The x86_64 number of a syscall name.
pub fn syscall_number(name: &str) -> Option<i64> {
    X86_64
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| X86_64[i].1)
}

/// The BPF return value for an action.
fn action(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<u32> {
    use LinuxSeccompAction as A;
    match action {
        A::ScmpActErrno => Ok(SECCOMP_RET_ERRNO | (errno_ret.unwrap_or(EPERM) & 0xffff)),
        A::ScmpActNotify => Err(SeccompError::Action(action.to_string())),
        other => Ok(other.as_u32(errno_ret)),
    }
}

fn check_architectures(arches: &[Arch]) -> Result<()> {
    if !cfg!(target_arch = "x86_64") {
        return Err(SeccompError::Host);
    }
    if arches.is_empty()
        || arches
            .iter()
            .any(|a| matches!(a, Arch::ScmpArchNative | Arch::ScmpArchX86_64))
    {
        let others: Vec<String> = arches
            .iter()
            .filter(|a| !matches!(a, Arch::ScmpArchNative | Arch::ScmpArchX86_64))
            .map(ToString::to_string)
            .collect();
        if !others.is_empty() {
            tracing::debug!(
                "seccomp: architectures {} are not filtered; their syscalls fail with ENOSYS",
                others.join(", ")
            );
        }
        return Ok(());
    }
    let names: Vec<String> = arches.iter().map(ToString::to_string).collect();
    Err(SeccompError::Architecture(names.join(", ")))
}

fn operator(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> (SeccompCmpOp, u64) {
    use LinuxSeccompOperator as O;
    match op {
        O::ScmpCmpNe => (SeccompCmpOp::Ne, value),
        O::ScmpCmpLt => (SeccompCmpOp::Lt, value),
        O::ScmpCmpLe => (SeccompCmpOp::Le, value),
        O::ScmpCmpEq => (SeccompCmpOp::Eq, value),
        O::ScmpCmpGe => (SeccompCmpOp::Ge, value),
        O::ScmpCmpGt => (SeccompCmpOp::Gt, value),
        // libseccomp: (arg & value) == valueTwo.
        O::ScmpCmpMaskedEq => (SeccompCmpOp::MaskedEq(value), value_two.unwrap_or(0)),
    }
}

/// The argument-condition groups of one spec rule: empty for "any arguments",
/// otherwise alternatives (each a list of ANDed conditions).
fn condition_groups(
    name: &str,
    args: &[oci_spec::runtime::LinuxSeccompArg],
) -> Result<Vec<Vec<SeccompCondition>>> {
    let mut conditions = Vec::with_capacity(args.len());
    for arg in args {
        let (op, value) = operator(arg.op(), arg.value(), arg.value_two());
        let index = u8::try_from(arg.index()).unwrap_or(u8::MAX);
        let condition =
            SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(|source| {
                SeccompError::Condition {
                    name: name.to_owned(),
                    source,
                }
            })?;
        conditions.push(condition);
    }
    let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if conditions.is_empty() {
        Ok(Vec::new())
    } else if indexes.len() == args.len() {
        Ok(vec![conditions])
    } else {
        Ok(conditions.into_iter().map(|c| vec![c]).collect())
    }
}

/// Compile `linux.seccomp` into a BPF program.
pub fn compile(spec: &LinuxSeccomp) -> Result<Program> {
    check_architectures(spec.architectures().as_deref().unwrap_or_default())?;
    if let Some(flags) = spec.flags().as_ref().filter(|f| !f.is_empty()) {
        tracing::debug!("seccomp: ignoring flags {flags:?}");
    }
    let default = action(spec.default_action(), spec.default_errno_ret())?;
    let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, 4),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, enosys),
        stmt(BPF_LD_W_ABS, 0),
        jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, enosys),
    ];
    // Whether the accumulator still holds the syscall number.
    let mut nr_loaded = true;
    for rule in spec.syscalls().iter().flatten() {
        let ret = action(rule.action(), rule.errno_ret())?;
        if ret == default {
            continue;
        }
        for name in rule.names() {
            let Some(nr) = syscall_number(name) else {
                tracing::debug!("seccomp: skipping unknown syscall {name}");
                continue;
            };
            let nr = nr as u32;
            let groups = condition_groups(name, rule.args().as_deref().unwrap_or_default())?;
            if groups.is_empty() {
                if !nr_loaded {
                    prog.push(stmt(BPF_LD_W_ABS, 0));
                }
                prog.push(jump(BPF_JMP_JEQ_K, nr, 0, 1));
                prog.push(stmt(BPF_RET_K, ret));
                nr_loaded = true;
                continue;
            }
            for conditions in groups {
                let mut body: BpfProgram = SeccompRule::new(conditions)
                    .map_err(|source| SeccompError::Condition {
                        name: name.clone(),
                        source,
                    })?
                    .into();
                // seccompiler's rule starts with "JA 1; JA <next rule in its own
                // chain>"; the second is never reached here but the kernel still
                // checks its target, so aim it just past this rule's return.
                let past_return = u32::try_from(body.len().saturating_sub(1)).unwrap_or(0);
                if let Some(unreached) = body.get_mut(1) {
                    unreached.k = past_return;
                }
                // Skip the body and its return when the number differs; the
                // body's own mismatch jumps land just past the return too.
                let skip = u8::try_from(body.len() + 1)
                    .map_err(|_| SeccompError::TooLarge(format!("a rule for {name}")))?;
                if !nr_loaded {
                    prog.push(stmt(BPF_LD_W_ABS, 0));
                }
                prog.push(jump(BPF_JMP_JEQ_K, nr, 0, skip));
                prog.extend(body);
                prog.push(stmt(BPF_RET_K, ret));
                nr_loaded = false;
            }
        }
    }
    prog.push(stmt(BPF_RET_K, default));
    if prog.len() > BPF_MAX_LEN {
        return Err(SeccompError::TooLarge(format!(
            "{} instructions",
            prog.len()
        )));
    }
    Ok(Program(prog))
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
