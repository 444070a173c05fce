//! Containers on disk: their records, live state, locks and the folders that hold them.
//!
//! Each container has a folder `<root>/containers/<id>/` with `config.json` (what the user asked
//! for, written once), `state.json` (what is happening now), `container.log` (its output), and the
//! overlay `upper`/`work`/`rootfs` folders. A `lock` file there serialises every change.

mod lock;
mod names;
mod record;
mod state;
mod store;

pub use lock::ContainerLock;
pub use record::{BindMount, ContainerRecord, HostConfig, ProcessConfig};
pub use state::{process_start_time, ContainerState, Status};
pub use store::{users_of_image, ContainerStore};

use std::path::PathBuf;

/// What can go wrong while reading or changing containers on disk.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("container name \"{0}\" is ambiguous: it matches more than one container")]
    Ambiguous(String),
    #[error("the container name \"{name}\" is already in use by container {id}")]
    NameInUse { name: String, id: String },
    #[error("invalid container name \"{0}\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("could not read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid container metadata")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("could not generate a container id")]
    Random(#[source] getrandom::Error),
}

impl ContainerError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ContainerError::Io { path, source }
    }
}
