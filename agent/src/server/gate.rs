//! The exec FIFO that holds a created container's process until StartContainer,
//! as runc's create/start split does: CreateContainer sets the container up
//! (namespaces, mounts, createContainer hooks) and leaves its process blocked
//! opening the FIFO for writing just before execve; StartContainer opens it for
//! reading, which lets the process go on.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

/// The FIFO's name in the container's state directory.
pub(super) const NAME: &str = "exec.fifo";

/// A failure making or opening the gate.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The FIFO could not be made or opened.
    #[error("failed to {op} the exec FIFO {}", path.display())]
    Fifo {
        /// What was done.
        op: &'static str,
        /// The FIFO.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The process exited before it reached the gate.
    #[error("the container's process exited before it was started")]
    Exited,
    /// Something other than the process's `0` came through.
    #[error("unexpected data on the exec FIFO: {0:?}")]
    Unexpected(Vec<u8>),
}

fn fifo_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GateError {
    let path = path.to_path_buf();
    move |source| GateError::Fifo { op, path, source }
}

/// A new gate in `dir`: its path, and an `O_PATH` descriptor for the process
/// (see [`crate::SpawnOptions::exec_fifo`]).
pub(super) fn make(dir: &Path) -> Result<(PathBuf, OwnedFd), GateError> {
    let path = dir.join(NAME);
    nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o622))
        .map_err(|e| fifo_error("create", &path)(e.into()))?;
    // Writable by the container's user whatever the umask.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622))
        .map_err(fifo_error("set the mode of", &path))?;
    let fd = nix::fcntl::open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| fifo_error("open", &path)(e.into()))?;
    Ok((path, fd))
}

/// Open the gate: read the process's `0` and remove the FIFO. Fails once
/// `exited` says the process is gone without having written.
pub(super) fn release(path: &Path, exited: impl Fn() -> bool) -> Result<(), GateError> {
    // Non-blocking: a process that died must not hang the start.
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fifo_error("open", path)(e.into()))?;
    let mut file = File::from(fd);
    let mut data = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(50u16)).unwrap_or(0);
        if ready > 0 {
            match file.read(&mut buf) {
                // The writer came and went.
                Ok(0) if !data.is_empty() => break,
                Ok(0) => {}
                Ok(n) => {
                    data.extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(fifo_error("read", path)(e)),
            }
        }
        if exited() {
            if !data.is_empty() {
                break;
            }
            let _ = std::fs::remove_file(path);
            return Err(GateError::Exited);
        }
        if ready > 0 && data.is_empty() {
            // POLLHUP before any writer: do not spin.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let _ = std::fs::remove_file(path);
    if data != b"0" {
        return Err(GateError::Unexpected(data));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_writer_is_let_through_and_the_fifo_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _fd) = make(dir.path()).expect("make");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o622);
        let writer_path = path.clone();
        // The process's side: blocks opening for writing until the gate opens.
        let writer = std::thread::spawn(move || {
            let mut fifo = File::options()
                .write(true)
                .open(writer_path)
                .expect("open for writing");
            fifo.write_all(b"0").expect("write");
        });
        release(&path, || false).expect("release");
        writer.join().expect("join");
        assert!(!path.exists());
    }

    #[test]
    fn a_process_that_died_fails_the_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _fd) = make(dir.path()).expect("make");
        let dead = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dead);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
        });
        let err = release(&path, || dead.load(Ordering::SeqCst)).expect_err("dead");
        killer.join().expect("join");
        assert!(matches!(err, GateError::Exited), "{err:?}");
        assert!(!path.exists());
    }

    #[test]
    fn other_data_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _fd) = make(dir.path()).expect("make");
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            let mut fifo = File::options()
                .write(true)
                .open(writer_path)
                .expect("open for writing");
            fifo.write_all(b"x1").expect("write");
        });
        let err = release(&path, || false).expect_err("bad data");
        writer.join().expect("join");
        assert!(
            matches!(err, GateError::Unexpected(ref d) if d == b"x1"),
            "{err:?}"
        );
    }

    #[test]
    fn a_second_gate_in_the_same_place_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = make(dir.path()).expect("make");
        let err = make(dir.path()).expect_err("exists");
        assert!(err.to_string().contains("exec.fifo"), "{err}");
    }
}
