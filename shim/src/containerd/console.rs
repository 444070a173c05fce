//! The console socket: berth-runtime sends the pty master over it.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// The console socket or the pty master it carries failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("no randomness for the console socket's name")]
    Random(#[source] getrandom::Error),
    #[error("cannot listen on {}", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the console socket")]
    Setup(#[source] std::io::Error),
    #[error("no connection on the console socket")]
    NoConnection,
    #[error("cannot accept on the console socket")]
    Accept(#[source] std::io::Error),
    #[error("cannot receive the pty master")]
    Receive(#[source] nix::errno::Errno),
    #[error("bad control message on the console socket")]
    ControlMessage(#[source] nix::errno::Errno),
    #[error("the console socket message carried no descriptor")]
    NoDescriptor,
    #[error("cannot set the window size")]
    WindowSize(#[source] std::io::Error),
}

/// A listening console socket, removed when dropped.
pub struct ConsoleSocket {
    listener: UnixListener,
    /// Its path.
    pub path: PathBuf,
}

impl ConsoleSocket {
    /// Listen on a new socket in the temporary directory.
    pub fn new() -> Result<ConsoleSocket, ConsoleError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(ConsoleError::Random)?;
        let path = std::env::temp_dir().join(format!("berth-console-{}.sock", hex::encode(bytes)));
        match UnixListener::bind(&path) {
            Ok(listener) => Ok(ConsoleSocket { listener, path }),
            Err(source) => Err(ConsoleError::Listen { path, source }),
        }
    }

    /// Accept the runtime's connection and receive the master (it has been sent
    /// by the time the runtime command returns).
    pub fn receive(&self) -> Result<File, ConsoleError> {
        self.listener
            .set_nonblocking(true)
            .map_err(ConsoleError::Setup)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(ConsoleError::NoConnection);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(ConsoleError::Accept(e)),
            }
        };
        stream.set_nonblocking(false).map_err(ConsoleError::Setup)?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(ConsoleError::Receive)?;
        for cmsg in msg.cmsgs().map_err(ConsoleError::ControlMessage)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    return Ok(File::from(owned));
                }
            }
        }
        Err(ConsoleError::NoDescriptor)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Set a pty's window size.
pub fn set_size(master: &File, width: u32, height: u32) -> Result<(), ConsoleError> {
    let size = libc::winsize {
        ws_row: u16::try_from(height).unwrap_or(u16::MAX),
        ws_col: u16::try_from(width).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(ConsoleError::WindowSize(std::io::Error::last_os_error()));
    }
    Ok(())
}
