//! Connecting the monitor's stdio (`berth_agent::Stdio`) to the agent's stdio connections.
//!
//! * Pipes (`Stdio::Fds`): one thread per stream copies between the fd and its connection.
//! * A terminal (`Stdio::ConsoleSocket`): berth opens a host pty, sends the master to the
//!   monitor's session exactly as the ns runtime's container process does, and one thread pumps
//!   the slave ⇄ the guest's `tty` connection, forwarding window-size changes as `ResizeTty`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::termios;

use berth_agent::protocol::{RequestBody, StdioStream};
use berth_agent::Stdio;

use super::client::{self, Agent};
use super::VmError;

/// Spawns a thread with every signal blocked, so that signals sent to berth keep going to the
/// monitor's signalfd instead of killing the process through a helper thread.
pub fn spawn_quiet<F: FnOnce() + Send + 'static>(f: F) -> io::Result<()> {
    spawn_quiet_joinable(f).map(drop)
}

/// [`spawn_quiet`], keeping the thread's handle.
pub fn spawn_quiet_joinable<F: FnOnce() + Send + 'static>(f: F) -> io::Result<JoinHandle<()>> {
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )
    .map_err(io::Error::from)?;
    let spawned = std::thread::Builder::new().spawn(f);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    spawned
}

/// Wakes the monitor's supervision loop (which waits on a signalfd that includes SIGCHLD).
pub fn nudge() {
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGCHLD);
}

/// The streams of one process, being pumped; `started` lets the tty thread send resizes.
pub struct Attached {
    pub started: Arc<AtomicBool>,
    /// The threads carrying output to the host; they end once the guest closed its side.
    pub outputs: Vec<JoinHandle<()>>,
}

/// Opens the stdio connections for process `id` and starts pumping. Must run before the
/// process is started, so that no output is lost.
pub fn attach(dir: &Path, id: &str, stdio: Stdio, interactive: bool) -> Result<Attached, VmError> {
    let started = Arc::new(AtomicBool::new(false));
    let mut outputs = Vec::new();
    match stdio {
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            let out = client::attach(dir, id, StdioStream::Stdout)?;
            let err = client::attach(dir, id, StdioStream::Stderr)?;
            let input = if interactive {
                Some(client::attach(dir, id, StdioStream::Stdin)?)
            } else {
                None
            };
            outputs.push(spawn_quiet_joinable(move || copy_out(out, stdout))?);
            outputs.push(spawn_quiet_joinable(move || copy_out(err, stderr))?);
            match input {
                Some(conn) => spawn_quiet(move || copy_in(stdin, conn))?,
                None => drop(stdin),
            }
        }
        Stdio::ConsoleSocket { socket } => {
            let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
            make_raw(pty.slave.as_fd())?;
            berth_agent::stdio::send_console(socket.as_fd(), pty.master.as_fd())
                .map_err(io::Error::other)?;
            drop(pty.master);
            drop(socket);
            let conn = client::attach(dir, id, StdioStream::Tty)?;
            let dir = dir.to_path_buf();
            let id = id.to_string();
            let flag = Arc::clone(&started);
            outputs.push(spawn_quiet_joinable(move || {
                pump_tty(pty.slave, conn, dir, id, flag)
            })?);
        }
        Stdio::Terminal { .. } | Stdio::Inherit => {
            return Err(VmError::Config(
                "the vm runtime takes pipes or a console socket for stdio".into(),
            ))
        }
    }
    Ok(Attached { started, outputs })
}

/// Guest output → a pipe (EOF when the guest closes its side).
fn copy_out(mut conn: UnixStream, fd: OwnedFd) {
    let mut file = File::from(fd);
    let _ = io::copy(&mut conn, &mut file);
}

/// A pipe → guest input; EOF half-closes the connection, which the guest sees as EOF.
fn copy_in(fd: OwnedFd, mut conn: UnixStream) {
    let mut file = File::from(fd);
    let _ = io::copy(&mut file, &mut conn);
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

/// The pty slave passes bytes through untouched: the guest's own pty does the line discipline.
fn make_raw(slave: BorrowedFd<'_>) -> io::Result<()> {
    let mut attrs = termios::tcgetattr(slave).map_err(io::Error::from)?;
    termios::cfmakeraw(&mut attrs);
    termios::tcsetattr(slave, termios::SetArg::TCSANOW, &attrs).map_err(io::Error::from)
}

fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut size: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, which lives across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some((size.ws_row, size.ws_col))
}

/// The pty slave ⇄ the guest's tty connection, until either side is gone; window-size changes
/// of the host pty (the monitor copies the user's terminal size onto it) go to the guest.
fn pump_tty(
    slave: OwnedFd,
    mut conn: UnixStream,
    dir: PathBuf,
    id: String,
    started: Arc<AtomicBool>,
) {
    let mut slave = File::from(slave);
    let mut buf = [0u8; 16 * 1024];
    let mut sent_size = (0u16, 0u16);
    let mut resizer: Option<Agent> = None;
    loop {
        if started.load(Ordering::Acquire) {
            if let Some(size) =
                window_size(slave.as_fd()).filter(|s| *s != sent_size && *s != (0, 0))
            {
                if resizer.is_none() {
                    resizer = Agent::connect(&dir, Duration::from_secs(2)).ok();
                }
                if let Some(agent) = resizer.as_mut() {
                    let _ = agent.set_timeout(Some(Duration::from_secs(5)));
                    match agent.call_ok(RequestBody::ResizeTty {
                        id: id.clone(),
                        rows: size.0,
                        cols: size.1,
                    }) {
                        Ok(()) => sent_size = size,
                        Err(e) => {
                            tracing::debug!(error = %e, "could not resize the guest terminal");
                            resizer = None;
                            sent_size = size;
                        }
                    }
                }
            }
        }
        let (slave_ready, conn_ready) = {
            let mut fds = [
                PollFd::new(slave.as_fd(), PollFlags::POLLIN),
                PollFd::new(conn.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return,
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if conn_ready {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if slave.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        if slave_ready {
            match slave.read(&mut buf) {
                // EIO: the master is closed (the session ended).
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}
