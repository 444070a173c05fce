//! Seccomp confinement: once set up, each VMM thread allows only the system calls its job needs.
//!
//! - vCPU threads ([`ThreadKind::Vcpu`]): KVM_RUN and FIONBIO (no other ioctl), reads and writes on
//!   descriptors they already hold, memory management, futexes, signals for the kick, and what
//!   device activation needs (it runs on the vCPU thread that writes DRIVER_OK): thread creation,
//!   eventfds, poll, Unix-socket accept/connect for vsock. Device worker threads inherit this
//!   filter.
//! - The main (event) thread ([`ThreadKind::Vmm`]): the same minus KVM_RUN, plus signals to kick
//!   vCPUs (tgkill), signal handling and unlinking the vsock socket on exit.
//!
//! No thread may open files, exec, fork without threads, mount, ptrace or make non-Unix sockets.
//! A call outside the list kills the process (SECCOMP_RET_KILL_PROCESS).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `KVM_RUN` = `_IO(KVMIO, 0x80)`.
const KVM_RUN: u64 = 0xae80;

/// Errors of [`confine_current_thread`].
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter could not be compiled.
    #[error("could not compile the seccomp filter for {0:?} threads")]
    Build(ThreadKind, #[source] seccompiler::BackendError),
    /// The filter could not be installed.
    #[error("could not install the seccomp filter")]
    Apply(#[source] seccompiler::Error),
}

/// Which allow-list a thread gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread (and the device workers it starts).
    Vcpu,
    /// The main thread that waits for VM events.
    Vmm,
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns confinement of vCPU threads started from now on (see [`crate::Vmm::start`]) on or off.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

/// Whether new vCPU threads are confined.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
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

fn arg_eq(index: u8, value: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        value,
    )?])
}

/// The compiled filter for `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let build = |e| SeccompError::Build(kind, e);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().map(|&nr| (nr, Vec::new())).collect();
    // Unix sockets only (vsock's guest-initiated connections).
    rules.insert(
        libc::SYS_socket,
        vec![arg_eq(0, libc::AF_UNIX as u64).map_err(build)?],
    );
    // FIONBIO: std's set_nonblocking (vsock sockets).
    let mut ioctls = vec![arg_eq(1, libc::FIONBIO).map_err(build)?];
    match kind {
        ThreadKind::Vcpu => ioctls.push(arg_eq(1, KVM_RUN).map_err(build)?),
        ThreadKind::Vmm => rules.extend(VMM_EXTRA.iter().map(|&nr| (nr, Vec::new()))),
    }
    rules.insert(libc::SYS_ioctl, ioctls);
    let f = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(build)?;
    f.try_into().map_err(build)
}

/// Confines the calling thread (and threads it starts later) to `kind`'s allow-list.
pub fn confine_current_thread(kind: ThreadKind) -> Result<(), SeccompError> {
    let prog = filter(kind)?;
    seccompiler::apply_filter(&prog).map_err(SeccompError::Apply)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child and returns its wait status.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only calls async-signal-safe functions (seccomp set-up is prctl and
        // seccomp system calls on a prebuilt program, then raw system calls) before _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = f();
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn filters_compile() {
        assert!(!filter(ThreadKind::Vcpu).unwrap().is_empty());
        assert!(!filter(ThreadKind::Vmm).unwrap().is_empty());
    }

    #[test]
    fn confined_vcpu_thread_is_killed_outside_its_allow_list() {
        let prog = filter(ThreadKind::Vcpu).unwrap();
        // Allowed calls work: write to a pipe, KVM_RUN on a bad fd fails with EBADF, not SIGSYS.
        let status = in_child(|| {
            if seccompiler::apply_filter(&prog).is_err() {
                return 10;
            }
            let buf = [0u8; 1];
            // SAFETY: a zero-byte write to stderr from a valid buffer.
            let n = unsafe { libc::write(2, buf.as_ptr().cast(), 0) };
            if n != 0 {
                return 11;
            }
            // SAFETY: ioctl on an invalid fd only returns an error.
            let rc = unsafe { libc::ioctl(-1, KVM_RUN as _) };
            if rc != -1 {
                return 12;
            }
            0
        });
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);

        // openat is not on the list: the process dies of SIGSYS.
        let status = in_child(|| {
            if seccompiler::apply_filter(&prog).is_err() {
                return 10;
            }
            // SAFETY: the path is a valid C string.
            unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
            20
        });
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);

        // Neither is an ioctl other than KVM_RUN, nor an inet socket.
        for call in [0, 1] {
            let status = in_child(|| {
                if seccompiler::apply_filter(&prog).is_err() {
                    return 10;
                }
                if call == 0 {
                    // SAFETY: an ioctl on an invalid fd.
                    unsafe { libc::ioctl(-1, libc::TIOCGWINSZ) };
                } else {
                    // SAFETY: plain socket(2).
                    unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                }
                20
            });
            assert!(libc::WIFSIGNALED(status), "call {call}: status {status:#x}");
            assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
        }
    }

    #[test]
    fn confined_vmm_thread_may_kick_but_not_exec() {
        let prog = filter(ThreadKind::Vmm).unwrap();
        let status = in_child(|| {
            if seccompiler::apply_filter(&prog).is_err() {
                return 10;
            }
            // SAFETY: signal 0 to ourselves only checks permission.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    libc::syscall(libc::SYS_gettid),
                    0,
                )
            };
            if rc != 0 {
                return 11;
            }
            let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
            // SAFETY: execv with a valid path and a null-terminated argument array.
            unsafe { libc::execv(c"/bin/true".as_ptr(), argv.as_ptr()) };
            20
        });
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }
}
