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

/// Turns confinement of vCPU threads started from now on (see [`crate::Vmm::start`]) on or off.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

/// Whether new vCPU threads are confined.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// The BPF program for `kind`, compiled at build time.
pub fn filter(kind: ThreadKind) -> &'static [sock_filter] {
    match kind {
        ThreadKind::Vcpu => precompiled::VCPU,
        ThreadKind::Vmm => precompiled::VMM,
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
