//! The user process: rlimits, user and groups, capabilities, no_new_privs,
//! working directory, PATH lookup and execve.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use nix::errno::Errno;
use nix::sys::resource::Resource;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

use crate::seccomp::{Program, SeccompError};
use crate::spec::DEFAULT_PATH;
use crate::syscall::{Syscall, SyscallError};

/// A failure while turning the set-up process into the user process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A bare command name not found in PATH (exit code 127).
    #[error("exec: \"{0}\": executable file not found in $PATH")]
    NotInPath(String),
    /// A command path that does not exist (exit code 127).
    #[error("exec: \"{0}\": stat {0}: no such file or directory")]
    NoSuchFile(String),
    /// The command exists but cannot be executed (exit code 126).
    #[error("exec: \"{cmd}\": {reason}")]
    NotExecutable {
        /// The command.
        cmd: String,
        /// The kernel's reason, e.g. `permission denied`.
        reason: String,
    },
    /// `process.args` is missing or empty.
    #[error("the process has no args")]
    NoArgs,
    /// An argument or environment entry with a NUL byte.
    #[error("argument or environment entry {0:?} contains a NUL byte")]
    Nul(String),
    /// A capability name the `caps` crate does not know.
    #[error("unknown capability {0}")]
    UnknownCapability(String),
    /// A set-up system call failed.
    #[error("failed to {step}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// The failed call.
        #[source]
        source: SyscallError,
    },
    /// The seccomp filter could not be installed.
    #[error("failed to apply the seccomp filter")]
    Seccomp(#[source] SeccompError),
    /// execve(2) failed for another reason.
    #[error("exec: \"{cmd}\" failed")]
    Exec {
        /// The command.
        cmd: String,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
}

impl ProcessError {
    /// Docker's exit code for this failure: 127 not found, 126 not executable, 125 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProcessError::NotInPath(_) | ProcessError::NoSuchFile(_) => 127,
            ProcessError::NotExecutable { .. } => 126,
            _ => 125,
        }
    }
}

type Result<T> = std::result::Result<T, ProcessError>;

fn step<T>(step: &'static str, result: std::result::Result<T, SyscallError>) -> Result<T> {
    result.map_err(|source| ProcessError::Step { step, source })
}

pub(crate) fn rlimit_resource(typ: PosixRlimitType) -> Resource {
    match typ {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

fn to_caps(set: Option<&Capabilities>) -> Result<CapsHashSet> {
    set.into_iter()
        .flatten()
        .map(|cap| {
            let name = format!("CAP_{cap}");
            name.parse()
                .map_err(|_| ProcessError::UnknownCapability(name.clone()))
        })
        .collect()
}

/// Everything between the finished rootfs and execve, as root: OOM score,
/// rlimits, working directory, bounding set, user and groups, capabilities,
/// no_new_privs, chdir. Without noNewPrivileges the seccomp filter is installed
/// here, before capabilities are dropped (as runc does); with it, [`exec`] does
/// just before execve.
pub fn prepare(sys: &dyn Syscall, process: &Process, seccomp: Option<&Program>) -> Result<()> {
    if let Some(score) = process.oom_score_adj() {
        step(
            "set the OOM score adjustment",
            sys.write_file(Path::new("/proc/self/oom_score_adj"), &score.to_string()),
        )?;
    }
    for rlimit in process.rlimits().iter().flatten() {
        let resource = rlimit_resource(rlimit.typ());
        step(
            "set an rlimit",
            sys.set_rlimit(resource, rlimit.soft(), rlimit.hard()),
        )?;
    }
    let cwd = process.cwd();
    if sys.file_kind(cwd).is_none() {
        step(
            "create the working directory",
            sys.create_dir_all(cwd, Mode::from_bits_truncate(0o755)),
        )?;
    }
    if process.no_new_privileges() != Some(true) {
        if let Some(program) = seccomp {
            program.install().map_err(ProcessError::Seccomp)?;
        }
    }
    let capabilities = process.capabilities().as_ref();
    if let Some(bounding) = capabilities.map(|c| to_caps(c.bounding().as_ref())) {
        let bounding = bounding?;
        let mut drop: Vec<_> = caps::all().difference(&bounding).copied().collect();
        drop.sort_by_key(|c| c.index());
        for cap in drop {
            step("drop a bounding capability", sys.drop_bounding(cap))?;
        }
    }
    let user = process.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    step("keep capabilities across setuid", sys.set_keepcaps(true))?;
    step("set supplementary groups", sys.set_groups(&groups))?;
    step(
        "set the user and group",
        sys.set_id(Uid::from_raw(user.uid()), Gid::from_raw(user.gid())),
    )?;
    step("reset keepcaps", sys.set_keepcaps(false))?;
    if let Some(c) = capabilities {
        let sets = [
            (CapSet::Effective, c.effective()),
            (CapSet::Inheritable, c.inheritable()),
            (CapSet::Permitted, c.permitted()),
            (CapSet::Ambient, c.ambient()),
        ];
        for (set, caps) in sets {
            let caps = to_caps(caps.as_ref())?;
            step("set capabilities", sys.set_capability(set, &caps))?;
        }
    }
    if process.no_new_privileges() == Some(true) {
        step("set no_new_privs", sys.set_no_new_privs())?;
    }
    step("enter the working directory", sys.chdir(cwd))
}

/// The PATH value from a process environment (Docker's default when absent).
pub fn path_var(env: &[String]) -> &str {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

/// Resolve a command the way Go's exec.LookPath (and so Docker) does.
pub fn find_executable(cmd: &str, path: &str) -> Result<PathBuf> {
    if cmd.contains('/') {
        return match Path::new(cmd).symlink_metadata() {
            Ok(_) => Ok(PathBuf::from(cmd)),
            Err(_) => Err(ProcessError::NoSuchFile(cmd.to_owned())),
        };
    }
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(cmd);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(ProcessError::NotInPath(cmd.to_owned()))
}

fn cstrings(list: &[String]) -> Result<Vec<CString>> {
    list.iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| ProcessError::Nul(s.clone())))
        .collect()
}

/// Give the command the signal state a freshly started process has: an ignored
/// signal stays ignored across execve, and whoever started the runtime may have
/// ignored some (Rust ignores SIGPIPE in its own processes: a shell pipeline in
/// the container would then see EPIPE errors instead of ending quietly); the
/// mask is inherited too.
fn reset_signals() {
    /// The kernel's `struct sigaction` for rt_sigaction(2) on x86_64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // 1..=64: every signal number on Linux (_NSIG is 65). The raw system call,
    // because the C library refuses to touch the two it reserves for itself
    // (32 and 33), which a parent may still have left ignored. SIGKILL and
    // SIGSTOP cannot be changed and just fail with EINVAL.
    for signal in 1..=64 {
        // SAFETY: rt_sigaction reads the valid struct above (default
        // disposition, no handler) and writes nothing (null old action); the
        // last argument is the size of the kernel's signal set.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Look up args[0] in the process's own PATH and execve it with the process's env.
/// With noNewPrivileges, `seccomp` is installed just before execve. Descriptors 3 to
/// 3+`preserve_fds`-1 stay open (runc's `--preserve-fds`); the others above 2 close.
pub fn exec(process: &Process, seccomp: Option<&Program>, preserve_fds: u32) -> Result<Infallible> {
    let args = process.args().as_deref().unwrap_or_default();
    let cmd = args.first().ok_or(ProcessError::NoArgs)?;
    let env = process.env().as_deref().unwrap_or_default();
    let program = find_executable(cmd, path_var(env))?;
    let program_c = CString::new(program.as_os_str().as_encoded_bytes())
        .map_err(|_| ProcessError::Nul(cmd.clone()))?;
    let argv = cstrings(args)?;
    let envp = cstrings(env)?;
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(Mode::from_bits_truncate(umask));
    // Nothing the caller left open may leak into the container.
    let first = 3u32.saturating_add(preserve_fds);
    for fd in 3..first {
        // Inherited descriptors may be close-on-exec; preserved ones must not be.
        // SAFETY: F_SETFD only changes the flags of a descriptor (EBADF if none).
        unsafe { libc::fcntl(fd as libc::c_int, libc::F_SETFD, 0) };
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    unsafe {
        libc::close_range(
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    // Before a noNewPrivileges filter, which might deny the calls.
    reset_signals();
    if process.no_new_privileges() == Some(true) {
        if let Some(program) = seccomp {
            program.install().map_err(ProcessError::Seccomp)?;
        }
    }
    let errno = match nix::unistd::execve(&program_c, &argv, &envp) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    Err(match errno {
        Errno::ENOENT => ProcessError::NoSuchFile(cmd.clone()),
        Errno::EACCES | Errno::EPERM | Errno::ENOEXEC | Errno::EISDIR => {
            let reason = match errno {
                Errno::ENOEXEC => "exec format error",
                Errno::EISDIR => "is a directory",
                _ => "permission denied",
            };
            ProcessError::NotExecutable {
                cmd: cmd.clone(),
                reason: reason.to_owned(),
            }
        }
        source => ProcessError::Exec {
            cmd: cmd.clone(),
            source,
        },
    })
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
