//! Seccomp confinement: once set up, each VMM thread allows only the system calls its job needs.
//!
//! - vCPU threads ([`ThreadKind::Vcpu`]): KVM_RUN (no other ioctl), reads and writes on
//!   descriptors they already hold, memory management, futexes and signal return for the kick.
//!   They start no threads, poll nothing and touch no sockets: a DRIVER_OK write only asks the
//!   event thread to activate the device (see [`crate::devices::virtio::mmio`]).
//! - The main thread and the event thread ([`ThreadKind::Vmm`]): waiting for VM events,
//!   kicking vCPUs (tgkill), signal handling, activating devices (thread creation, eventfds,
//!   installing the workers' filters) and everything the workers need, since a worker's own
//!   filter is stacked on the one it inherits.
//! - Device workers, each with its own list: virtio-blk ([`ThreadKind::Block`]: positioned I/O
//!   on the backing file, fsync, epoll), virtio-net ([`ThreadKind::Net`]: tap I/O, poll),
//!   virtio-vsock ([`ThreadKind::Vsock`]: poll, Unix-socket accept/connect/send/recv).
//!
//! No thread may open files, exec, fork without threads, mount, ptrace or make non-Unix sockets.
//! A call outside the list kills the process (SECCOMP_RET_KILL_PROCESS).

use std::sync::atomic::{AtomicBool, Ordering};

use seccompiler::sock_filter;

// The rules themselves are compiled by build.rs; the crate uses them only to check the result.
#[cfg_attr(not(test), allow(dead_code))]
mod rules;

pub use rules::{ThreadKind, KVM_RUN};

/// The BPF programs, compiled from [`rules`] by `build.rs`.
mod precompiled {
    use super::sock_filter;
    include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));
}

/// Errors of [`confine_current_thread`].
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter could not be installed.
    #[error("could not install the seccomp filter for {0:?} threads")]
    Apply(ThreadKind, #[source] seccompiler::Error),
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns confinement of threads started from now on (vCPUs, the event thread and device
/// workers; see [`crate::Vmm::start`]) on or off.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

/// Whether new vCPU, event and worker threads are confined.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// The BPF program for `kind`, compiled at build time.
pub fn filter(kind: ThreadKind) -> &'static [sock_filter] {
    match kind {
        ThreadKind::Vcpu => precompiled::VCPU,
        ThreadKind::Vmm => precompiled::VMM,
        ThreadKind::Block => precompiled::BLOCK,
        ThreadKind::Net => precompiled::NET,
        ThreadKind::Vsock => precompiled::VSOCK,
    }
}

/// Confines the calling thread (and threads it starts later) to `kind`'s allow-list.
pub fn confine_current_thread(kind: ThreadKind) -> Result<(), SeccompError> {
    seccompiler::apply_filter(filter(kind)).map_err(|e| SeccompError::Apply(kind, e))
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
    fn precompiled_filters_match_the_rules() {
        for kind in ThreadKind::ALL {
            let prog: seccompiler::BpfProgram =
                rules::seccomp_filter(kind).unwrap().try_into().unwrap();
            assert!(!prog.is_empty());
            assert!(
                prog == filter(kind),
                "{kind:?}: rebuild to refresh the filter"
            );
        }
    }

    #[test]
    fn confined_vcpu_thread_is_killed_outside_its_allow_list() {
        let prog = filter(ThreadKind::Vcpu);
        // Allowed calls work: write to a pipe, KVM_RUN on a bad fd fails with EBADF, not SIGSYS.
        let status = in_child(|| {
            if seccompiler::apply_filter(prog).is_err() {
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
            if seccompiler::apply_filter(prog).is_err() {
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
                if seccompiler::apply_filter(prog).is_err() {
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

    /// Runs `call` in a child confined to `kind`; true when the call killed it with SIGSYS.
    fn killed_by(kind: ThreadKind, call: fn()) -> bool {
        let prog = filter(kind);
        let status = in_child(|| {
            if seccompiler::apply_filter(prog).is_err() {
                return 10;
            }
            call();
            20
        });
        if libc::WIFEXITED(status) {
            assert_eq!(libc::WEXITSTATUS(status), 20, "{kind:?}: child failed");
            return false;
        }
        assert!(libc::WIFSIGNALED(status), "{kind:?}: status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
        true
    }

    fn clone_process() {
        // SAFETY: a fork-like clone; if it were allowed, the new child would _exit at once.
        let rc = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
        if rc == 0 {
            // SAFETY: ends the clone's child.
            unsafe { libc::_exit(0) };
        }
    }

    fn clone3_thread() {
        // SAFETY: clone3 with a null argument only fails (EFAULT/EINVAL) when allowed.
        unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) };
    }

    fn unix_socket() {
        // SAFETY: plain socket(2); the descriptor is leaked by the exiting child.
        unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    }

    fn poll_nothing() {
        // SAFETY: poll over no descriptors with a zero timeout.
        unsafe { libc::poll(std::ptr::null_mut(), 0, 0) };
    }

    fn epoll_create() {
        // SAFETY: creates an epoll descriptor, leaked by the exiting child.
        unsafe { libc::epoll_create1(0) };
    }

    fn pread_stdin() {
        let mut b = [0u8; 1];
        // SAFETY: a zero-length pread into a valid buffer.
        unsafe { libc::pread(0, b.as_mut_ptr().cast(), 0, 0) };
    }

    fn kvm_run() {
        // SAFETY: ioctl on an invalid fd only returns an error.
        unsafe { libc::ioctl(-1, KVM_RUN as _) };
    }

    #[test]
    fn confined_vcpu_thread_can_no_longer_clone_poll_or_use_sockets() {
        // Devices are activated on the event thread: a vCPU starts no threads.
        assert!(killed_by(ThreadKind::Vcpu, clone_process));
        assert!(killed_by(ThreadKind::Vcpu, clone3_thread));
        assert!(killed_by(ThreadKind::Vcpu, poll_nothing));
        assert!(killed_by(ThreadKind::Vcpu, epoll_create));
        assert!(killed_by(ThreadKind::Vcpu, unix_socket));
        assert!(!killed_by(ThreadKind::Vcpu, kvm_run));
        // The event thread, which starts the workers, may.
        assert!(!killed_by(ThreadKind::Vmm, clone3_thread));
        assert!(!killed_by(ThreadKind::Vmm, unix_socket));
    }

    #[test]
    fn each_worker_kind_has_its_own_allow_list() {
        for kind in [ThreadKind::Block, ThreadKind::Net, ThreadKind::Vsock] {
            assert!(killed_by(kind, clone_process), "{kind:?}");
            assert!(killed_by(kind, clone3_thread), "{kind:?}");
            assert!(killed_by(kind, kvm_run), "{kind:?}");
        }
        // Disk I/O and epoll for block only; poll for net and vsock; Unix sockets for vsock.
        assert!(!killed_by(ThreadKind::Block, pread_stdin));
        assert!(killed_by(ThreadKind::Net, pread_stdin));
        assert!(killed_by(ThreadKind::Vsock, pread_stdin));
        assert!(!killed_by(ThreadKind::Block, epoll_create));
        assert!(killed_by(ThreadKind::Net, epoll_create));
        assert!(killed_by(ThreadKind::Vsock, epoll_create));
        assert!(!killed_by(ThreadKind::Net, poll_nothing));
        assert!(killed_by(ThreadKind::Block, unix_socket));
        assert!(killed_by(ThreadKind::Net, unix_socket));
        assert!(!killed_by(ThreadKind::Vsock, unix_socket));
        assert!(!killed_by(ThreadKind::Vsock, poll_nothing));
        assert!(killed_by(ThreadKind::Block, poll_nothing));
    }

    #[test]
    fn confined_vmm_thread_may_kick_but_not_exec() {
        let prog = filter(ThreadKind::Vmm);
        let status = in_child(|| {
            if seccompiler::apply_filter(prog).is_err() {
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
