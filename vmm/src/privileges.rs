//! Giving up privileges once the VM is set up.
//!
//! By the time the vCPUs run, everything that needs privileges is done: /dev/kvm, taps, drives,
//! the serial file and the vsock socket are open. [`drop_capabilities`] then clears the calling
//! thread's effective, permitted, inheritable and ambient capability sets and its bounding set,
//! and sets `no_new_privs`, so that neither this process nor anything it could exec regains
//! them. Capabilities are per thread: call it on the main thread before any other thread starts,
//! and every thread started afterwards inherits the empty sets.

use caps::{CapSet, Capability};

/// Errors of [`drop_capabilities`].
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("could not set no_new_privs")]
    NoNewPrivs(#[source] std::io::Error),
    /// A capability set could not be read or changed.
    #[error("could not clear the {0:?} capability set")]
    Caps(CapSet, #[source] caps::errors::CapsError),
}

/// Sets `no_new_privs` and clears every capability set of the calling thread.
///
/// The bounding set can only be lowered with CAP_SETPCAP; without it (an unprivileged VMM, which
/// has no capabilities to lose) it is left as it is, and `no_new_privs` keeps exec from using it.
pub fn drop_capabilities() -> Result<(), PrivilegeError> {
    // SAFETY: prctl with integer arguments only; it changes no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(PrivilegeError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    // The bounding set first: lowering it needs CAP_SETPCAP in the effective set.
    let can_bound = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(|e| PrivilegeError::Caps(CapSet::Effective, e))?;
    if can_bound {
        caps::clear(None, CapSet::Bounding)
            .map_err(|e| PrivilegeError::Caps(CapSet::Bounding, e))?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| PrivilegeError::Caps(set, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `field` in /proc/self/status (first whitespace-separated token).
    fn status_field(status: &str, field: &str) -> Option<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_owned)
    }

    #[test]
    fn drop_clears_every_set_and_sets_no_new_privs() {
        // In a forked child: the drop is irreversible and the test runner must keep its
        // capabilities. The child is single-threaded, so /proc/self is the dropping thread.
        // SAFETY: the child only drops capabilities, reads a /proc file and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = (|| {
                let privileged = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
                    .unwrap_or(false);
                if drop_capabilities().is_err() {
                    return 10;
                }
                let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
                    return 11;
                };
                let zero =
                    |f: &str| status_field(&status, f).as_deref() == Some("0000000000000000");
                if !zero("CapEff") || !zero("CapPrm") || !zero("CapInh") || !zero("CapAmb") {
                    return 12;
                }
                if privileged && !zero("CapBnd") {
                    return 13;
                }
                if status_field(&status, "NoNewPrivs").as_deref() != Some("1") {
                    return 14;
                }
                // Nothing to regain: raising a capability again fails.
                if caps::raise(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).is_ok() {
                    return 15;
                }
                if privileged {
                    0
                } else {
                    1
                }
            })();
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        match libc::WEXITSTATUS(status) {
            0 => {}
            1 => println!("not privileged: the bounding set was left as it is"),
            code => panic!("child failed check {code}"),
        }
    }
}
