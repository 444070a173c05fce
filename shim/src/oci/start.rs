//! `start`: release a created container by opening its exec FIFO for reading.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::cli::Global;
use super::container::{self, Record, RecordError, Status, EXEC_FIFO};
use super::hooks::{self, Point};
use super::vm::VmModeError;

/// A created container could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot start a container that has stopped")]
    Stopped,
    #[error("cannot start an already running container")]
    AlreadyRunning,
    #[error("container {id} has no process to start: its config.json has no \"process\"")]
    NoProcess { id: String },
    #[error(transparent)]
    Vm(#[from] VmModeError),
    #[error("cannot open the exec FIFO")]
    OpenFifo(#[source] nix::errno::Errno),
    #[error("cannot read the exec FIFO")]
    ReadFifo(#[source] std::io::Error),
    #[error("the container process exited before it was started")]
    Exited,
    #[error("unexpected data on the exec FIFO: {0:?}")]
    FifoData(Vec<u8>),
    #[error("cannot remove the exec FIFO")]
    RemoveFifo(#[source] std::io::Error),
}

/// `berth-runtime start`.
pub fn start(global: &Global, id: &str) -> Result<(), StartError> {
    let record = Record::load(global, id)?;
    start_record(global, &record)
}

/// Start a loaded container (used by `run` too).
pub fn start_record(global: &Global, record: &Record) -> Result<(), StartError> {
    match record.status(global) {
        Status::Created => {}
        Status::Stopped => return Err(StartError::Stopped),
        Status::Running | Status::Paused => return Err(StartError::AlreadyRunning),
    }
    let spec = record.spec(global)?;
    // The spec makes `process` optional until start: create held the container's
    // init at the exec FIFO (or the guest's at its gate), and it stays there.
    if spec.process().is_none() {
        return Err(StartError::NoProcess {
            id: record.id.clone(),
        });
    }
    // startContainer hooks run in the container: before the FIFO is answered, or
    // in the guest (with createContainer) when the VM starts the container.
    if record.vm.is_some() {
        super::vm::start(global, record)?;
    } else {
        release(global, record)?;
    }
    // A failing poststart hook is a warning: the container is already running.
    hooks::run_warning_on_failure(
        global,
        &spec,
        Point::Poststart,
        &record.state_json(Status::Running),
    );
    Ok(())
}

/// Open the FIFO for reading (which unblocks the process's open for writing), read
/// its `0`, and remove the FIFO; fails if the process died meanwhile.
fn release(global: &Global, record: &Record) -> Result<(), StartError> {
    let path = container::dir(global, &record.id).join(EXEC_FIFO);
    // Non-blocking: a dead writer must not hang us.
    let fd = nix::fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(StartError::OpenFifo)?;
    let mut file = std::fs::File::from(fd);
    let mut data = Vec::new();
    loop {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0);
        if ready > 0 {
            let mut buf = [0u8; 16];
            match file.read(&mut buf) {
                Ok(0) if !data.is_empty() => break,
                Ok(0) => {}
                Ok(n) => {
                    data.extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(StartError::ReadFifo(e)),
            }
        }
        if !container::alive(record.pid, record.start_time) {
            if !data.is_empty() {
                break;
            }
            let _ = std::fs::remove_file(&path);
            return Err(StartError::Exited);
        }
        if ready == 0 || data.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if data != b"0" {
        return Err(StartError::FifoData(data));
    }
    std::fs::remove_file(&path).map_err(StartError::RemoveFifo)?;
    Ok(())
}
