//! Loading a device program and making it the one attached to a v2 cgroup, with
//! the bpf(2) system call.

use std::ffi::c_void;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use super::device_program::Insn;

/// A bpf(2) step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The kernel has no bpf(2) or no cgroup device programs.
    #[error("the kernel cannot run cgroup device programs (it needs CONFIG_BPF_SYSCALL=y and CONFIG_CGROUP_BPF=y)")]
    Unsupported(#[source] Errno),
    /// The verifier refused the program.
    #[error("the kernel refused the device program: {log}")]
    Rejected {
        /// The verifier's log (its last lines).
        log: String,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// Another bpf(2) step failed.
    #[error("failed to {step}")]
    Call {
        /// What was being done.
        step: &'static str,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

type Result<T> = std::result::Result<T, BpfError>;

// Commands, program and attach types, flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `union bpf_attr` member for BPF_PROG_LOAD, up to the program name.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
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
}

/// The member for BPF_PROG_ATTACH and BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The member for BPF_PROG_QUERY, up to the program count.
#[repr(C)]
#[derive(Default)]
struct ProgQuery {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    padding: u32,
}

/// The member for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFdById {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// bpf(`cmd`, `attr`): the non-negative result or the errno.
///
/// # Safety
/// `attr` must be the `union bpf_attr` member `cmd` reads, and every pointer in
/// it must be valid for what the kernel reads or writes through it for `cmd`.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::result::Result<libc::c_long, Errno> {
    let size = std::mem::size_of::<T>();
    // SAFETY: the caller guarantees `attr` and its pointers match `cmd`; the kernel
    // copies `size` bytes of it and writes results back within them.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, (attr as *mut T).cast::<c_void>(), size) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

fn owned_fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel returned a new descriptor that nothing else owns
    // (the fd-returning bpf commands' results always fit in an int).
    unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

/// Load `program` as a cgroup device program.
pub(crate) fn load(program: &[Insn]) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(program.len()).unwrap_or(u32::MAX),
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoad::default()
    };
    attr.prog_name[..12].copy_from_slice(b"berth_device");
    // SAFETY: `attr` is the BPF_PROG_LOAD member; `insns` points at `insn_cnt`
    // instructions laid out as `struct bpf_insn` and `license` at a C string, both
    // alive for the call; the log is off.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => Ok(owned_fd(fd)),
        Err(errno @ Errno::ENOSYS) => Err(BpfError::Unsupported(errno)),
        Err(errno) => {
            // Load again with the verifier's log to tell a refused program from a
            // kernel without the program type (which leaves the log empty).
            let log = verifier_log(program, &mut attr);
            match (log.is_empty(), errno) {
                (true, Errno::EINVAL) => Err(BpfError::Unsupported(errno)),
                (true, source) => Err(BpfError::Call {
                    step: "load the device program",
                    source,
                }),
                (false, source) => Err(BpfError::Rejected { log, source }),
            }
        }
    }
}

fn verifier_log(program: &[Insn], attr: &mut ProgLoad) -> String {
    let mut log = vec![0u8; 1 << 16];
    attr.insns = program.as_ptr() as u64;
    attr.log_level = 1;
    attr.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
    attr.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as in `load`, plus `log_buf` points at `log_size` writable bytes that
    // outlive the call.
    if let Ok(fd) = unsafe { bpf(BPF_PROG_LOAD, attr) } {
        drop(owned_fd(fd));
    }
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

/// The ids of the device programs attached to the cgroup itself.
fn attached(cgroup: BorrowedFd<'_>) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = ProgQuery {
        target_fd: fd_u32(cgroup),
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: u32::try_from(ids.len()).unwrap_or(0),
        ..ProgQuery::default()
    };
    // SAFETY: `attr` is the BPF_PROG_QUERY member; `prog_ids` points at `prog_cnt`
    // writable u32s that outlive the call.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }.map_err(|source| BpfError::Call {
        step: "list the cgroup's device programs",
        source,
    })?;
    ids.truncate(usize::try_from(attr.prog_cnt).unwrap_or(0).min(64));
    Ok(ids)
}

/// Attach `program` to `cgroup`, then detach the device programs attached before,
/// so that the new rules replace the old ones rather than adding to them.
pub(crate) fn replace(cgroup: BorrowedFd<'_>, program: BorrowedFd<'_>) -> Result<()> {
    let old = match attached(cgroup) {
        Err(BpfError::Call {
            source: source @ (Errno::EINVAL | Errno::ENOSYS),
            ..
        }) => return Err(BpfError::Unsupported(source)),
        other => other?,
    };
    let mut attr = ProgAttach {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(program),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttach::default()
    };
    // SAFETY: `attr` is the BPF_PROG_ATTACH member; it holds no pointers.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map_err(|source| BpfError::Call {
        step: "attach the device program to the cgroup",
        source,
    })?;
    for id in old {
        let mut by_id = GetFdById {
            prog_id: id,
            ..GetFdById::default()
        };
        // SAFETY: `by_id` is the BPF_PROG_GET_FD_BY_ID member; it holds no pointers.
        let old_program = match unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id) } {
            Ok(fd) => owned_fd(fd),
            // Detached and freed meanwhile.
            Err(Errno::ENOENT) => continue,
            Err(source) => {
                return Err(BpfError::Call {
                    step: "open a previous device program",
                    source,
                })
            }
        };
        let mut detach = ProgAttach {
            target_fd: fd_u32(cgroup),
            attach_bpf_fd: fd_u32(old_program.as_fd()),
            attach_type: BPF_CGROUP_DEVICE,
            ..ProgAttach::default()
        };
        // SAFETY: `detach` is the BPF_PROG_DETACH member; it holds no pointers.
        match unsafe { bpf(BPF_PROG_DETACH, &mut detach) } {
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(source) => {
                return Err(BpfError::Call {
                    step: "detach a previous device program",
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::device_program::build;
    use crate::cgroups::device_rules::ALWAYS_ALLOWED;

    #[test]
    fn the_kernel_verifies_built_programs_and_refuses_broken_ones() {
        if !nix::unistd::geteuid().is_root() {
            return println!("skipped: loading BPF programs needs root");
        }
        let program = build(ALWAYS_ALLOWED);
        match load(&program) {
            Ok(_) => {}
            Err(BpfError::Unsupported(errno)) => {
                return println!("skipped: no cgroup device programs here ({errno})")
            }
            Err(e) => panic!("{e}: {e:?}"),
        }
        // Returning without setting r0: the verifier's log says why.
        let exit_only = &program[program.len() - 1..];
        match load(exit_only) {
            Err(BpfError::Rejected { log, .. }) => assert!(log.contains("R0"), "{log}"),
            other => panic!("{other:?}"),
        }
    }
}
