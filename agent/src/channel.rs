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
    /// A pid message that is not `P<pid>` and a newline.
    #[error("the container process sent an unreadable pid")]
    BadPid,
}

/// Create a pipe whose ends are close-on-exec.
pub(crate) fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// Parent: release the child, keeping the pipe for later messages.
pub(crate) fn send_go_kept(fd: BorrowedFd<'_>) -> Result<(), ChannelError> {
    write_all(fd, b"g")
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), ChannelError> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ChannelError::Io("write", e.into())),
        }
    }
    Ok(())
}

/// Parent: the set-up hooks ran; hand the child the state JSON (one line).
pub(crate) fn send_continue(fd: BorrowedFd<'_>, state: &[u8]) -> Result<(), ChannelError> {
    let mut message = Vec::with_capacity(state.len() + 2);
    message.push(b'c');
    message.extend(state.iter().filter(|b| **b != b'\n'));
    message.push(b'\n');
    write_all(fd, &message)
}

/// Child: ask the parent to run its set-up hooks (a lone `H` on the report pipe),
/// wait for it to say continue, and return the state JSON it sent.
pub(crate) fn request_hooks(
    report: BorrowedFd<'_>,
    sync: BorrowedFd<'_>,
) -> Result<Vec<u8>, ChannelError> {
    write_all(report, b"H")?;
    wait_go(sync)?;
    let mut line = Vec::new();
    let mut buf = [0u8; 1];
    loop {
        match nix::unistd::read(sync, &mut buf) {
            Ok(1) if buf[0] == b'\n' => return Ok(line),
            Ok(1) => line.push(buf[0]),
            Ok(_) => return Err(ChannelError::Abandoned),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ChannelError::Io("read", e.into())),
        }
    }
}

/// Child: tell the parent the pid (in the parent's pid namespace) of the process
/// that carries on in the container's pid namespace (`P<pid>` and a newline).
pub(crate) fn send_pid(report: BorrowedFd<'_>, pid: i32) -> Result<(), ChannelError> {
    write_all(report, format!("P{pid}\n").as_bytes())
}

/// What the parent reads next on the report pipe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The child asks for the set-up hooks.
    Hooks,
    /// The child forked into the container's pid namespace and exits; set-up goes
    /// on in this process, which waits to be released again.
    Pid(i32),
    /// The pipe closed: `None` means the child exec'd (or was released).
    Done(Option<Report>),
}

/// Parent: read the next [`Event`].
pub(crate) fn read_event(file: &mut std::fs::File) -> Result<Event, ChannelError> {
    let mut first = [0u8; 1];
    let n = loop {
        match file.read(&mut first) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ChannelError::Io("read", e)),
        }
    };
    if n == 0 {
        return Ok(Event::Done(None));
    }
    if first[0] == b'H' {
        return Ok(Event::Hooks);
    }
    if first[0] == b'P' {
        return read_pid(file).map(Event::Pid);
    }
    let mut buf = first.to_vec();
    file.read_to_end(&mut buf)
        .map_err(|e| ChannelError::Io("read", e))?;
    serde_json::from_slice(&buf)
        .map(|r| Event::Done(Some(r)))
        .map_err(ChannelError::Decode)
}

/// The digits of a `P<pid>` message, up to its newline.
fn read_pid(file: &mut std::fs::File) -> Result<i32, ChannelError> {
    let mut digits = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) if digits.len() < 10 => digits.push(byte[0]),
            Ok(_) => return Err(ChannelError::BadPid),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ChannelError::Io("read", e)),
        }
    }
    std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .filter(|pid| *pid > 0)
        .ok_or(ChannelError::BadPid)
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
    fn hook_requests_interleave_with_the_report() {
        let (report_r, report_w) = pipe().expect("pipe");
        let (sync_r, sync_w) = pipe().expect("pipe");
        let mut file = std::fs::File::from(report_r);
        send_continue(sync_w.as_fd(), b"{\"pid\":\n7}").expect("continue");
        let state = request_hooks(report_w.as_fd(), sync_r.as_fd()).expect("request");
        assert_eq!(state, b"{\"pid\":7}");
        assert_eq!(read_event(&mut file).expect("event"), Event::Hooks);
        let report = Report {
            kind: FailureKind::Setup,
            message: "x".into(),
        };
        send_report(report_w.as_fd(), &report);
        drop(report_w);
        assert_eq!(
            read_event(&mut file).expect("event"),
            Event::Done(Some(report))
        );
        send_go_kept(sync_w.as_fd()).expect("go");
        wait_go(sync_r.as_fd()).expect("go");
    }

    #[test]
    fn a_pid_message_comes_before_the_rest() {
        let (report_r, report_w) = pipe().expect("pipe");
        let mut file = std::fs::File::from(report_r);
        send_pid(report_w.as_fd(), 4242).expect("pid");
        write_all(report_w.as_fd(), b"H").expect("hooks");
        drop(report_w);
        assert_eq!(read_event(&mut file).expect("event"), Event::Pid(4242));
        assert_eq!(read_event(&mut file).expect("event"), Event::Hooks);
        assert_eq!(read_event(&mut file).expect("event"), Event::Done(None));

        for bad in [&b"P12"[..], b"Px\n", b"P0\n", b"P99999999999\n"] {
            let (report_r, report_w) = pipe().expect("pipe");
            let mut file = std::fs::File::from(report_r);
            write_all(report_w.as_fd(), bad).expect("write");
            drop(report_w);
            assert!(
                matches!(read_event(&mut file), Err(ChannelError::BadPid)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn go_and_abandon() {
        let (r, w) = pipe().expect("pipe");
        send_go_kept(w.as_fd()).expect("go");
        wait_go(r.as_fd()).expect("released");
        let (r, w) = pipe().expect("pipe");
        drop(w);
        assert!(matches!(wait_go(r.as_fd()), Err(ChannelError::Abandoned)));
    }
}
