//! The container process's standard streams.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

/// Where the container process's fds 0, 1 and 2 come from.
#[derive(Debug)]
pub enum Stdio {
    /// The child uses the caller's 0/1/2.
    Inherit,
    /// Three descriptors become the child's 0/1/2.
    Fds {
        /// Becomes fd 0.
        stdin: OwnedFd,
        /// Becomes fd 1.
        stdout: OwnedFd,
        /// Becomes fd 2.
        stderr: OwnedFd,
    },
    /// A pty slave (the caller did openpty()); it becomes the child's controlling
    /// terminal and its 0/1/2.
    Terminal {
        /// The slave side.
        slave: OwnedFd,
    },
}

/// A failure while installing the standard streams.
#[derive(Debug, thiserror::Error)]
#[error("failed to {step} while setting up stdio")]
pub struct StdioError {
    step: &'static str,
    #[source]
    source: Errno,
}

fn err(step: &'static str) -> impl FnOnce(Errno) -> StdioError {
    move |source| StdioError { step, source }
}

nix::ioctl_write_int_bad!(tiocsctty, libc::TIOCSCTTY);

impl Stdio {
    /// The descriptors this value holds (for closing in a process that must not keep them).
    pub(crate) fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        match self {
            Stdio::Inherit => Vec::new(),
            Stdio::Fds {
                stdin,
                stdout,
                stderr,
            } => vec![stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()],
            Stdio::Terminal { slave } => vec![slave.as_raw_fd()],
        }
    }

    /// In the child: make these the process's fds 0/1/2 (and, for a terminal,
    /// start a new session with it as the controlling terminal).
    pub(crate) fn install(&self) -> Result<(), StdioError> {
        match self {
            Stdio::Inherit => Ok(()),
            Stdio::Fds {
                stdin,
                stdout,
                stderr,
            } => {
                // Move all three above 2 first so no dup2 clobbers a source.
                let high = [stdin, stdout, stderr]
                    .map(|fd| dup_high(fd.as_fd()))
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                onto_std(&high[0], &high[1], &high[2])
            }
            Stdio::Terminal { slave } => {
                nix::unistd::setsid().map_err(err("setsid"))?;
                // SAFETY: TIOCSCTTY takes an int argument and only reads the fd,
                // which `slave` keeps open for the duration of the call.
                unsafe { tiocsctty(slave.as_raw_fd(), 0) }.map_err(err("TIOCSCTTY"))?;
                let high = dup_high(slave.as_fd())?;
                onto_std(&high, &high, &high)
            }
        }
    }
}

/// A close-on-exec duplicate numbered 3 or higher.
fn dup_high(fd: BorrowedFd<'_>) -> Result<OwnedFd, StdioError> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(err("duplicate a descriptor"))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn onto_std(stdin: &OwnedFd, stdout: &OwnedFd, stderr: &OwnedFd) -> Result<(), StdioError> {
    nix::unistd::dup2_stdin(stdin).map_err(err("dup2 onto stdin"))?;
    nix::unistd::dup2_stdout(stdout).map_err(err("dup2 onto stdout"))?;
    nix::unistd::dup2_stderr(stderr).map_err(err("dup2 onto stderr"))
}
