//! Container set-up from an OCI runtime spec: namespaces, mounts, pivot_root,
//! cgroups, process and stdio. Used by `berth run --runtime=ns` on the host and
//! by the guest agent inside a microVM.

pub mod cgroups;
mod channel;
mod child;
pub mod create;
mod devices;
pub mod exec;
pub mod hooks;
pub mod init;
mod mountopts;
mod namespaces;
pub mod process;
pub mod protocol;
pub mod rootfs;
pub mod seccomp;
mod seccomp_table;
pub mod server;
pub mod spec;
pub mod stdio;
pub mod syscall;

pub use create::{spawn, spawn_with, ContainerSetup, Rootfs, SpawnError, SpawnOptions, Spawned};
pub use exec::{spawn_exec, ExecSetup};
pub use stdio::Stdio;

/// Errors reachable through [`SpawnError`]'s sources.
pub use channel::ChannelError;
pub use namespaces::NamespaceError;
