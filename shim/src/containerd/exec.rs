//! `Exec` (record the process) and starting it (`berth-runtime exec --detach`).

use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::api::{Empty, ExecProcessRequest};
use containerd_shim::protos::events::task::{TaskExecAdded, TaskExecStarted};
use containerd_shim::protos::ttrpc::{Code, Result as TtrpcResult};

use super::create::{spawn_process, SpawnError};
use super::process::Process;
use super::service::Inner;
use super::{internal, not_found, reaper, rpc_error};

/// `Exec`: remember the process; `Start` runs it.
pub fn exec(inner: &Arc<Inner>, req: ExecProcessRequest) -> TtrpcResult<Empty> {
    let spec = req.spec.as_ref().map(|any| any.value.clone());
    let mut guard = inner.container();
    let Some(container) = guard.as_mut() else {
        return Err(not_found(format!("container {}", req.id)));
    };
    if container.execs.contains_key(&req.exec_id) {
        return Err(rpc_error(
            Code::ALREADY_EXISTS,
            format!("exec {} already exists", req.exec_id),
        ));
    }
    let process = Process::new(
        &req.exec_id,
        &req.stdin,
        &req.stdout,
        &req.stderr,
        req.terminal,
        spec,
    );
    container
        .execs
        .insert(req.exec_id.clone(), Arc::new(process));
    drop(guard);
    inner.publisher.publish(TaskExecAdded {
        container_id: req.id.clone(),
        exec_id: req.exec_id.clone(),
        ..Default::default()
    });
    Ok(Empty::default())
}

/// An exec could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no container")]
    NoContainer,
    #[error("cannot write the process spec {}", path.display())]
    WriteSpec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

fn start_in(inner: &Arc<Inner>, process: &Arc<Process>) -> Result<i32, ExecError> {
    let bundle = inner
        .container()
        .as_ref()
        .map(|c| c.bundle.clone())
        .ok_or(ExecError::NoContainer)?;
    let spec_path = bundle.join(format!("exec-{}.json", process.exec_id));
    if let Err(source) = std::fs::write(&spec_path, process.spec.as_deref().unwrap_or(b"{}")) {
        return Err(ExecError::WriteSpec {
            path: spec_path,
            source,
        });
    }
    let spec_arg = spec_path.to_string_lossy().into_owned();
    let result = spawn_process(
        inner,
        process,
        &["exec", "--detach", "--process", &spec_arg, &inner.id],
        &bundle.join(format!("exec-{}.pid", process.exec_id)),
    );
    let _ = std::fs::remove_file(&spec_path);
    let (pid, io) = result?;
    *process.io.lock().unwrap_or_else(|e| e.into_inner()) = Some(io);
    reaper::watch(inner, process, pid);
    Ok(pid)
}

/// Start exec `exec_id`; returns its pid.
pub fn start(inner: &Arc<Inner>, exec_id: &str) -> TtrpcResult<u32> {
    let process = inner.process(&inner.id, exec_id)?;
    let pid = start_in(inner, &process).map_err(internal)?;
    let pid = u32::try_from(pid).unwrap_or(0);
    inner.publisher.publish(TaskExecStarted {
        container_id: inner.id.clone(),
        exec_id: exec_id.to_string(),
        pid,
        ..Default::default()
    });
    Ok(pid)
}
