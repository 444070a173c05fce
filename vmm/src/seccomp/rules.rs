//! The allow-lists, as seccompiler rules. This file is also compiled by `build.rs`, which turns
//! the rules into BPF at build time, so it may use only `std`, `libc` and `seccompiler`.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `KVM_RUN` = `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xae80;

/// Which allow-list a thread gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread (and the device workers it starts).
    Vcpu,
    /// The main thread that waits for VM events.
    Vmm,
}

impl ThreadKind {
    /// Every kind, in the order the precompiled filters are stored.
    pub const ALL: [ThreadKind; 2] = [ThreadKind::Vcpu, ThreadKind::Vmm];

    /// The name of the kind's precompiled filter constant.
    pub fn const_name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "VCPU",
            ThreadKind::Vmm => "VMM",
        }
    }
}

const COMMON: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_prctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
];

const VMM_EXTRA: &[libc::c_long] = &[
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_signalfd4,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
];

fn arg_eq(index: u8, value: u64) -> Result<SeccompRule, BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        value,
    )?])
}

/// The seccompiler filter for `kind`: listed calls allowed, anything else kills the process.
pub fn seccomp_filter(kind: ThreadKind) -> Result<SeccompFilter, BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().map(|&nr| (nr, Vec::new())).collect();
    // Unix sockets only (vsock's guest-initiated connections).
    rules.insert(libc::SYS_socket, vec![arg_eq(0, libc::AF_UNIX as u64)?]);
    // FIONBIO: std's set_nonblocking (vsock sockets).
    let mut ioctls = vec![arg_eq(1, libc::FIONBIO)?];
    match kind {
        ThreadKind::Vcpu => ioctls.push(arg_eq(1, KVM_RUN)?),
        ThreadKind::Vmm => rules.extend(VMM_EXTRA.iter().map(|&nr| (nr, Vec::new()))),
    }
    rules.insert(libc::SYS_ioctl, ioctls);
    SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
}
