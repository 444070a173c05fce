//! `Start`, `Kill`, `Delete`, `Pause` and `Resume`.

use std::sync::Arc;

use containerd_shim::api::{
    DeleteRequest, DeleteResponse, Empty, KillRequest, StartRequest, StartResponse,
};
use containerd_shim::protos::events::task::{TaskDelete, TaskPaused, TaskResumed, TaskStart};
use containerd_shim::protos::ttrpc::Result as TtrpcResult;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::process::Status;
use super::service::Inner;
use super::{exec, internal, not_found, reaper, rootfs, runtime};

/// `Start`: the init process (`berth-runtime start`) or an exec.
pub fn start(inner: &Arc<Inner>, req: StartRequest) -> TtrpcResult<StartResponse> {
    if !req.exec_id.is_empty() {
        let pid = exec::start(inner, &req.exec_id)?;
        return Ok(StartResponse {
            pid,
            ..Default::default()
        });
    }
    let process = inner.process(&req.id, "")?;
    runtime::run(&inner.namespace, &["start", &inner.id]).map_err(internal)?;
    let pid = {
        let mut state = process.state();
        if state.status == Status::Created {
            state.status = Status::Running;
        }
        u32::try_from(state.pid).unwrap_or(0)
    };
    inner.publisher.publish(TaskStart {
        container_id: inner.id.clone(),
        pid,
        ..Default::default()
    });
    Ok(StartResponse {
        pid,
        ..Default::default()
    })
}

/// `Kill`: `berth-runtime kill` for the init process, kill(2) for an exec.
pub fn kill(inner: &Arc<Inner>, req: KillRequest) -> TtrpcResult<Empty> {
    let process = inner.process(&req.id, &req.exec_id)?;
    let (pid, status) = {
        let state = process.state();
        (state.pid, state.status)
    };
    if status == Status::Stopped {
        return Err(not_found("process already finished"));
    }
    if req.exec_id.is_empty() {
        let signal = req.signal.to_string();
        let mut args = vec!["kill"];
        if req.all {
            args.push("--all");
        }
        args.extend([inner.id.as_str(), signal.as_str()]);
        runtime::run(&inner.namespace, &args).map_err(internal)?;
    } else if pid > 0 {
        let signal = Signal::try_from(i32::try_from(req.signal).unwrap_or(0)).map_err(internal)?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(internal)?;
    }
    Ok(Empty::default())
}

/// `Delete`: an exec is forgotten; the container is deleted (`berth-runtime
/// delete --force`) and its rootfs unmounted.
pub fn delete(inner: &Arc<Inner>, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
    if !req.exec_id.is_empty() {
        let process = inner.process(&req.id, &req.exec_id)?;
        if let Some(container) = inner.container().as_mut() {
            container.execs.remove(&req.exec_id);
        }
        let state = process.state();
        reaper::unwatch(inner, state.pid);
        return Ok(DeleteResponse {
            pid: u32::try_from(state.pid).unwrap_or(0),
            exit_status: state.exit_status,
            exited_at: state.exited_at.clone().into(),
            ..Default::default()
        });
    }
    let Some(container) = inner.container().take() else {
        return Err(not_found(format!("container {}", req.id)));
    };
    if let Err(e) = runtime::run(&inner.namespace, &["delete", "--force", &inner.id]) {
        log::warn!("delete {}: {e:#}", inner.id);
    }
    if container.mounted {
        rootfs::unmount(&container.bundle);
    }
    let (pid, exit_status, exited_at) = {
        let state = container.init.state();
        (
            u32::try_from(state.pid).unwrap_or(0),
            state.exit_status,
            state.exited_at.clone(),
        )
    };
    inner.publisher.publish(TaskDelete {
        container_id: inner.id.clone(),
        pid,
        exit_status,
        exited_at: exited_at.clone().into(),
        id: inner.id.clone(),
        ..Default::default()
    });
    Ok(DeleteResponse {
        pid,
        exit_status,
        exited_at: exited_at.into(),
        ..Default::default()
    })
}

/// `Pause` (`freeze`) or `Resume`.
pub fn pause(inner: &Arc<Inner>, id: &str, freeze: bool) -> TtrpcResult<Empty> {
    let process = inner.process(id, "")?;
    let command = if freeze { "pause" } else { "resume" };
    runtime::run(&inner.namespace, &[command, &inner.id]).map_err(internal)?;
    {
        let mut state = process.state();
        if state.status != Status::Stopped {
            state.status = if freeze {
                Status::Paused
            } else {
                Status::Running
            };
        }
    }
    if freeze {
        inner.publisher.publish(TaskPaused {
            container_id: inner.id.clone(),
            ..Default::default()
        });
    } else {
        inner.publisher.publish(TaskResumed {
            container_id: inner.id.clone(),
            ..Default::default()
        });
    }
    Ok(Empty::default())
}
