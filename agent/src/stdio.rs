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
    /// Like runc's `--console-socket`: the process opens a new pty in the container's own
    /// /dev/pts (so `tty` and ttyname() work inside), sends the master back over this Unix
    /// socket with SCM_RIGHTS, and makes the slave its controlling terminal and 0/1/2.
    ConsoleSocket {
        /// One end of a connected Unix socket; the caller reads the master from the other.
        socket: OwnedFd,
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
            Stdio::ConsoleSocket { socket } => vec![socket.as_raw_fd()],
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
            Stdio::Terminal { slave } => become_terminal(slave),
            Stdio::ConsoleSocket { socket } => {
                let slave = open_pty_and_send_master(socket.as_fd())?;
                become_terminal(&slave)
            }
        }
    }
}

/// A new session with `slave` as controlling terminal and as fds 0/1/2.
fn become_terminal(slave: &OwnedFd) -> Result<(), StdioError> {
    nix::unistd::setsid().map_err(err("setsid"))?;
    // SAFETY: TIOCSCTTY takes an int argument and only reads the fd,
    // which `slave` keeps open for the duration of the call.
    unsafe { tiocsctty(slave.as_raw_fd(), 0) }.map_err(err("TIOCSCTTY"))?;
    let high = dup_high(slave.as_fd())?;
    onto_std(&high, &high, &high)
}

/// Opens a pty pair in this mount namespace's /dev/pts, sends the master over `socket`,
/// and returns the slave.
fn open_pty_and_send_master(socket: BorrowedFd<'_>) -> Result<OwnedFd, StdioError> {
    use nix::fcntl::OFlag;

    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(err("open /dev/ptmx"))?;
    nix::pty::grantpt(&master).map_err(err("grant the pty"))?;
    nix::pty::unlockpt(&master).map_err(err("unlock the pty"))?;
    let name = nix::pty::ptsname_r(&master).map_err(err("name the pty"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(err("open the pty slave"))?;
    send_console(socket, master.as_fd())?;
    Ok(slave)
}

/// Sends a pty master over a connected Unix socket with SCM_RIGHTS (the sending side of a
/// console socket); [`receive_console`] takes it on the other end.
pub fn send_console(socket: BorrowedFd<'_>, master: BorrowedFd<'_>) -> Result<(), StdioError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

    let fds = [master.as_raw_fd()];
    let payload = [std::io::IoSlice::new(b"pty")];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &payload,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(err("send the pty master"))?;
    Ok(())
}

/// The caller's side of [`Stdio::ConsoleSocket`]: receives the pty master the process sent.
pub fn receive_console(socket: BorrowedFd<'_>) -> Result<OwnedFd, StdioError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

    let mut buf = [0u8; 8];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(err("receive the pty master"))?;
    let cmsgs = message
        .cmsgs()
        .map_err(err("read the pty master message"))?;
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS installed this descriptor in our table just now; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(StdioError {
        step: "receive the pty master (none was sent)",
        source: Errno::EBADMSG,
    })
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
