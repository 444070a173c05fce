//! Parent/child synchronisation: a "go" byte one way, a failure report the other.

use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};

/// What class of failure the child hit; decides the caller's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FailureKind {
    /// The command does not exist (127).
    NotFound,
    /// The command exists but cannot be executed (126).
    NotExecutable,
    /// Anything else during set-up (125).
    Setup,
}

/// The child's account of why it did not reach execve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Report {
    pub kind: FailureKind,
    pub message: String,
}

/// A failure on one of the set-up pipes.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Reading or writing a pipe failed.
    #[error("failed to {0} the set-up pipe")]
    Io(&'static str, #[source] std::io::Error),
    /// The child wrote something that is not a report.
    #[error("the container process sent an unreadable report")]
    Decode(#[source] serde_json::Error),
    /// The parent went away before saying go.
    #[error("the parent closed the sync pipe before releasing the container")]
    Abandoned,
}

/// Create a pipe whose ends are close-on-exec.
pub(crate) fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// Parent: release the child.
pub(crate) fn send_go(fd: OwnedFd) -> Result<(), ChannelError> {
    std::fs::File::from(fd)
        .write_all(b"g")
        .map_err(|e| ChannelError::Io("write", e))
}

/// Child: block until the parent releases us.
pub(crate) fn wait_go(fd: BorrowedFd<'_>) -> Result<(), ChannelError> {
    let mut buf = [0u8; 1];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(ChannelError::Abandoned),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ChannelError::Io("read", e.into())),
        }
    }
}

/// Child: best-effort report of a failure (the parent may be gone).
pub(crate) fn send_report(fd: BorrowedFd<'_>, report: &Report) {
    if let Ok(bytes) = serde_json::to_vec(report) {
        let mut file = match fd.try_clone_to_owned() {
            Ok(owned) => std::fs::File::from(owned),
            Err(_) => return,
        };
        let _ = file.write_all(&bytes);
    }
}

/// Parent: read until EOF; `None` means the child exec'd (the pipe closed on exec).
pub(crate) fn read_report(fd: OwnedFd) -> Result<Option<Report>, ChannelError> {
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut buf)
        .map_err(|e| ChannelError::Io("read", e))?;
    if buf.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(ChannelError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn report_round_trips_and_eof_means_success() {
        let (r, w) = pipe().expect("pipe");
        let report = Report {
            kind: FailureKind::NotFound,
            message: "exec: \"x\": executable file not found in $PATH".into(),
        };
        send_report(w.as_fd(), &report);
        drop(w);
        assert_eq!(read_report(r).expect("read"), Some(report));

        let (r, w) = pipe().expect("pipe");
        drop(w);
        assert_eq!(read_report(r).expect("read"), None);
    }

    #[test]
    fn go_and_abandon() {
        let (r, w) = pipe().expect("pipe");
        send_go(w).expect("go");
        wait_go(r.as_fd()).expect("released");
        let (r, w) = pipe().expect("pipe");
        drop(w);
        assert!(matches!(wait_go(r.as_fd()), Err(ChannelError::Abandoned)));
    }
}
