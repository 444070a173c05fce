//! Stdio connections: attachment bookkeeping and the byte pumps between a
//! process's pipes (or pty master) and the host's connections.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{shutdown, Shutdown};

use super::reaper::lock;
use crate::protocol::StdioStream;

/// How long a pump waits for more output once its process exited.
const DRAIN_MS: u16 = 100;

/// The connections attached to one container or exec id, not yet used.
#[derive(Debug, Default)]
pub(crate) struct Attached {
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
    pub(crate) tty: Option<OwnedFd>,
}

/// Connections waiting for their process to start, by id.
#[derive(Debug, Default)]
pub(crate) struct Attachments {
    pending: Mutex<HashMap<String, Attached>>,
}

impl Attachments {
    /// Record a connection; a second one for the same stream replaces the first.
    pub(crate) fn attach(&self, id: String, stream: StdioStream, conn: OwnedFd) {
        let mut pending = lock(&self.pending);
        let entry = pending.entry(id).or_default();
        let slot = match stream {
            StdioStream::Stdin => &mut entry.stdin,
            StdioStream::Stdout => &mut entry.stdout,
            StdioStream::Stderr => &mut entry.stderr,
            StdioStream::Tty => &mut entry.tty,
        };
        *slot = Some(conn);
    }

    /// Whether every one of `streams` is attached to `id`.
    pub(crate) fn has_all(&self, id: &str, streams: &[StdioStream]) -> bool {
        let pending = lock(&self.pending);
        let Some(entry) = pending.get(id) else {
            return streams.is_empty();
        };
        streams.iter().all(|s| match s {
            StdioStream::Stdin => entry.stdin.is_some(),
            StdioStream::Stdout => entry.stdout.is_some(),
            StdioStream::Stderr => entry.stderr.is_some(),
            StdioStream::Tty => entry.tty.is_some(),
        })
    }

    /// Take the connections attached to `id` (none attached gives all `None`).
    pub(crate) fn take(&self, id: &str) -> Attached {
        lock(&self.pending).remove(id).unwrap_or_default()
    }
}

/// Set when the process exited: pumps stop once their source has been quiet
/// for [`DRAIN_MS`].
pub(crate) type ExitFlag = Arc<AtomicBool>;

/// Where a pump writes.
pub(crate) enum Sink {
    /// A connection or pipe; on the pump's end, its write side is shut down
    /// (for a socket) and the descriptor closed.
    Fd(OwnedFd),
    /// Discard the bytes.
    Discard,
}

/// Start a thread copying `from` to `to` until `from` ends (EOF, EIO from a pty
/// master whose slave is gone), or `exited` is set and `from` was quiet for a
/// while. Output the sink refuses is discarded so the process never blocks.
pub(crate) fn start(
    name: &str,
    from: OwnedFd,
    to: Sink,
    exited: ExitFlag,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || copy(from.as_fd(), to, &exited))
}

fn copy(from: BorrowedFd<'_>, to: Sink, exited: &AtomicBool) {
    let mut out = match to {
        Sink::Fd(fd) => Some(File::from(fd)),
        Sink::Discard => None,
    };
    let mut buf = vec![0u8; 32 * 1024];
    let mut reader = match from.try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(_) => return finish(out),
    };
    loop {
        let mut fds = [PollFd::new(from, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(DRAIN_MS)) {
            Ok(0) => {
                if exited.load(Ordering::SeqCst) {
                    break;
                }
                continue;
            }
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {
                continue
            }
            // EIO: a pty master whose slave side is closed everywhere.
            Err(_) => break,
        };
        if let Some(sink) = out.as_mut() {
            if sink.write_all(&buf[..n]).is_err() {
                // The peer went away: keep draining so the process never blocks.
                out = None;
            }
        }
    }
    finish(out);
}

fn finish(out: Option<File>) {
    if let Some(file) = out {
        let _ = (&file).flush();
        // Half-close so the peer sees EOF even if another copy of the socket
        // is still open somewhere; not a socket (a pipe) is fine too.
        let _ = shutdown(std::os::fd::AsRawFd::as_raw_fd(&file), Shutdown::Write);
    }
}
