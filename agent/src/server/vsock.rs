//! Listeners the server accepts connections from.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::socket::{
    accept4, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};

/// A source of connected byte streams.
pub trait Listener: Send + 'static {
    /// Wait for the next connection.
    fn accept(&self) -> std::io::Result<OwnedFd>;
}

impl Listener for UnixListener {
    fn accept(&self) -> std::io::Result<OwnedFd> {
        // std's accept uses accept4(SOCK_CLOEXEC).
        UnixListener::accept(self).map(|(stream, _)| stream.into())
    }
}

/// A failure creating a listener.
#[derive(Debug, thiserror::Error)]
#[error("failed to {step} the listener on {what}")]
pub struct ListenError {
    step: &'static str,
    what: String,
    #[source]
    source: std::io::Error,
}

/// An AF_VSOCK stream listener.
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    /// Listen on `port` for connections from any CID.
    pub fn bind(port: u32) -> Result<VsockListener, ListenError> {
        let err = |step| {
            move |e: nix::errno::Errno| ListenError {
                step,
                what: format!("vsock port {port}"),
                source: e.into(),
            }
        };
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(err("create"))?;
        bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port)).map_err(err("bind"))?;
        let backlog = Backlog::new(64).map_err(err("size"))?;
        listen(&fd, backlog).map_err(err("start"))?;
        Ok(VsockListener { fd })
    }
}

impl Listener for VsockListener {
    fn accept(&self) -> std::io::Result<OwnedFd> {
        loop {
            match accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Bind a Unix listener at `path`, replacing a stale socket file.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|source| ListenError {
        step: "bind",
        what: path.display().to_string(),
        source,
    })
}
