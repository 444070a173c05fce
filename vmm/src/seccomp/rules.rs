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
    /// A vCPU thread: KVM_RUN and the device register accesses it dispatches, nothing more.
    Vcpu,
    /// The main thread and the event thread that activates devices and starts their workers
    /// (which inherit this filter under their own).
    Vmm,
    /// A virtio-blk worker.
    Block,
    /// A virtio-net worker.
    Net,
    /// The virtio-vsock worker.
    Vsock,
}

impl ThreadKind {
    /// Every kind, in the order the precompiled filters are stored.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Vcpu,
        ThreadKind::Vmm,
        ThreadKind::Block,
        ThreadKind::Net,
        ThreadKind::Vsock,
    ];

    /// The name of the kind's precompiled filter constant.
    pub fn const_name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "VCPU",
            ThreadKind::Vmm => "VMM",
            ThreadKind::Block => "BLOCK",
            ThreadKind::Net => "NET",
            ThreadKind::Vsock => "VSOCK",
        }
    }
}

/// What every confined thread may do once running: I/O on descriptors it holds, memory,
/// futexes, signal return and masks, time, and ending the thread.
const BASE: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_sched_yield,
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
];

/// vCPU threads: besides [`BASE`] (serial output, eventfd writes for irqfds, queue notify,
/// activation requests and worker kills, joining a worker on a device reset) only vectored
/// writes. No thread creation, no polling, no sockets: devices are activated on the event thread.
const VCPU_EXTRA: &[libc::c_long] = &[libc::SYS_writev];

/// virtio-blk workers wait on their eventfds with epoll.
const EPOLL: &[libc::c_long] = &[
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
];

/// virtio-blk workers: positioned reads and writes on the backing file, flushes.
const BLOCK_EXTRA: &[libc::c_long] = &[
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
];

/// virtio-net workers: poll over the tap and eventfds, frames to and from the tap.
const NET_EXTRA: &[libc::c_long] = &[
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_readv,
    libc::SYS_writev,
];

/// The virtio-vsock worker: poll over Unix sockets, accepting host clients, connecting to
/// `<uds_path>_P`, removing the listening socket when the device goes away with it.
const VSOCK_EXTRA: &[libc::c_long] = &[
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_fcntl,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
];

/// The main and event threads: everything the workers they start need (a worker's filter is
/// stacked on this one), plus starting threads, installing the workers' filters, waiting for VM
/// events, kicking vCPUs and handling signals.
const VMM_EXTRA: &[libc::c_long] = &[
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_sched_getaffinity,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_prctl,
    libc::SYS_seccomp,
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
    let extra: &[&[libc::c_long]] = match kind {
        ThreadKind::Vcpu => &[VCPU_EXTRA],
        ThreadKind::Vmm => &[VMM_EXTRA],
        ThreadKind::Block => &[EPOLL, BLOCK_EXTRA],
        ThreadKind::Net => &[NET_EXTRA],
        ThreadKind::Vsock => &[VSOCK_EXTRA],
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BASE
        .iter()
        .chain(extra.iter().flat_map(|l| l.iter()))
        .map(|&nr| (nr, Vec::new()))
        .collect();
    // F_GETFD everywhere: std checks in debug builds that a descriptor it closes is open.
    rules
        .entry(libc::SYS_fcntl)
        .or_insert(vec![arg_eq(1, libc::F_GETFD as u64)?]);
    let ioctls = match kind {
        // KVM_RUN only.
        ThreadKind::Vcpu => vec![arg_eq(1, KVM_RUN)?],
        // FIONBIO: std's set_nonblocking (vsock sockets).
        ThreadKind::Vmm | ThreadKind::Vsock => vec![arg_eq(1, libc::FIONBIO)?],
        ThreadKind::Block | ThreadKind::Net => Vec::new(),
    };
    if !ioctls.is_empty() {
        rules.insert(libc::SYS_ioctl, ioctls);
    }
    if matches!(kind, ThreadKind::Vmm | ThreadKind::Vsock) {
        // Unix sockets only (vsock's guest-initiated connections).
        rules.insert(libc::SYS_socket, vec![arg_eq(0, libc::AF_UNIX as u64)?]);
    }
    SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
}
