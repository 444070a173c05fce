//! `Create`: mount the rootfs, set up stdio and run `berth-runtime create`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::{CreateTaskRequest, CreateTaskResponse};
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};
use containerd_shim::protos::ttrpc::Result as TtrpcResult;

use super::console::{ConsoleError, ConsoleSocket};
use super::io::{self, Io, StdioError};
use super::process::Process;
use super::rootfs::RootfsError;
use super::runtime::{self, CommandStdio, RuntimeError};
use super::service::{Container, Inner};
use super::{internal, reaper, rootfs};

/// A container's or an exec's process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Io(#[from] StdioError),
    #[error("cannot read {}", path.display())]
    ReadPidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid pid file {}", path.display())]
    InvalidPidFile {
        path: PathBuf,
        #[source]
        source: std::num::ParseIntError,
    },
}

/// A container could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Run a runtime command that starts a container process (`create` or
/// `exec --detach`) with `process`'s stdio; returns its pid and the shim's side
/// of its stdio.
pub fn spawn_process(
    inner: &Inner,
    process: &Process,
    args: &[&str],
    pid_file: &Path,
) -> Result<(i32, Io), SpawnError> {
    let _ = std::fs::remove_file(pid_file);
    let pid_arg = pid_file.to_string_lossy().into_owned();
    let io = if process.terminal {
        let socket = ConsoleSocket::new()?;
        let socket_arg = socket.path.to_string_lossy().into_owned();
        let mut full: Vec<&str> = args[..args.len() - 1].to_vec();
        full.extend(["--pid-file", &pid_arg, "--console-socket", &socket_arg]);
        full.push(args[args.len() - 1]);
        runtime::run(&inner.namespace, &full)?;
        let master = socket.receive()?;
        io::console(master, &process.stdin, &process.stdout)?
    } else {
        let (io, child) = io::pipes(&process.stdin, &process.stdout, &process.stderr)?;
        let mut full: Vec<&str> = args[..args.len() - 1].to_vec();
        full.extend(["--pid-file", &pid_arg]);
        full.push(args[args.len() - 1]);
        let devnull = || std::process::Stdio::null();
        runtime::run_with(
            &inner.namespace,
            &full,
            CommandStdio {
                stdin: Some(child.stdin.map_or_else(devnull, Into::into)),
                stdout: Some(child.stdout.map_or_else(devnull, Into::into)),
                stderr: Some(child.stderr.map_or_else(devnull, Into::into)),
            },
        )?;
        io
    };
    let text = std::fs::read_to_string(pid_file).map_err(|source| SpawnError::ReadPidFile {
        path: pid_file.to_path_buf(),
        source,
    })?;
    let pid = text
        .trim()
        .parse()
        .map_err(|source| SpawnError::InvalidPidFile {
            path: pid_file.to_path_buf(),
            source,
        })?;
    Ok((pid, io))
}

fn create_in(inner: &Arc<Inner>, req: &CreateTaskRequest) -> Result<(Container, i32), CreateError> {
    let bundle = PathBuf::from(&req.bundle);
    let mounted = rootfs::mount(&bundle, &req.rootfs)?;
    let process = Arc::new(Process::new(
        "",
        &req.stdin,
        &req.stdout,
        &req.stderr,
        req.terminal,
        None,
    ));
    let bundle_arg = bundle.to_string_lossy().into_owned();
    let result = spawn_process(
        inner,
        &process,
        &["create", "--bundle", &bundle_arg, &req.id],
        &bundle.join("init.pid"),
    );
    let (pid, io) = match result {
        Ok(spawned) => spawned,
        Err(e) => {
            if mounted {
                rootfs::unmount(&bundle);
            }
            return Err(e.into());
        }
    };
    *process.io.lock().unwrap_or_else(|e| e.into_inner()) = Some(io);
    reaper::watch(inner, &process, pid);
    Ok((
        Container {
            bundle,
            mounted,
            init: process,
            execs: Default::default(),
        },
        pid,
    ))
}

/// `Create`.
pub fn create(inner: &Arc<Inner>, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
    if inner.container().is_some() {
        return Err(super::rpc_error(
            containerd_shim::protos::ttrpc::Code::ALREADY_EXISTS,
            format!("container {} already exists", req.id),
        ));
    }
    std::fs::create_dir_all(runtime::state_root(&inner.namespace)).map_err(internal)?;
    let (container, pid) = create_in(inner, &req).map_err(internal)?;
    *inner.container() = Some(container);
    inner.publisher.publish(TaskCreate {
        container_id: req.id.clone(),
        bundle: req.bundle.clone(),
        rootfs: req.rootfs.clone(),
        io: Some(TaskIO {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            ..Default::default()
        })
        .into(),
        checkpoint: req.checkpoint.clone(),
        pid: u32::try_from(pid).unwrap_or(0),
        ..Default::default()
    });
    Ok(CreateTaskResponse {
        pid: u32::try_from(pid).unwrap_or(0),
        ..Default::default()
    })
}
