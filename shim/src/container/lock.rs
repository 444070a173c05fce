//! Advisory file locks that serialise changes to a container or to the container list.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::ContainerError;

/// An exclusive lock held until dropped.
pub struct ContainerLock {
    _lock: Flock<File>,
}

impl ContainerLock {
    /// Blocks until the lock file at `path` is ours.
    pub fn acquire(path: &Path) -> Result<ContainerLock, ContainerError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(ContainerError::io(path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, source)| {
            ContainerError::Lock {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(ContainerLock { _lock: lock })
    }
}
