//! `State`, `Pids`, `Stats` (`berth-runtime events --stats`) and `Update`.

use std::fs::File;
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;

use containerd_shim::api::{
    Empty, PidsRequest, PidsResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    Status as TaskStatus, UpdateTaskRequest,
};
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::Result as TtrpcResult;
use containerd_shim::protos::types::task::ProcessInfo;
use nix::fcntl::OFlag;
use serde_json::Value;

use super::process::Status;
use super::runtime::CommandStdio;
use super::service::Inner;
use super::{internal, runtime};

/// `State`.
pub fn state(inner: &Arc<Inner>, req: StateRequest) -> TtrpcResult<StateResponse> {
    let process = inner.process(&req.id, &req.exec_id)?;
    let bundle = inner
        .container()
        .as_ref()
        .map(|c| c.bundle.to_string_lossy().into_owned())
        .unwrap_or_default();
    let state = process.state();
    let status = match state.status {
        Status::Created => TaskStatus::CREATED,
        Status::Running => TaskStatus::RUNNING,
        Status::Paused => TaskStatus::PAUSED,
        Status::Stopped => TaskStatus::STOPPED,
    };
    Ok(StateResponse {
        id: if req.exec_id.is_empty() {
            inner.id.clone()
        } else {
            req.exec_id.clone()
        },
        bundle,
        pid: u32::try_from(state.pid).unwrap_or(0),
        status: status.into(),
        stdin: process.stdin.clone(),
        stdout: process.stdout.clone(),
        stderr: process.stderr.clone(),
        terminal: process.terminal,
        exit_status: state.exit_status,
        exited_at: state.exited_at.clone().into(),
        exec_id: req.exec_id.clone(),
        ..Default::default()
    })
}

/// `Pids`: `berth-runtime ps --format json`.
pub fn pids(inner: &Arc<Inner>, req: PidsRequest) -> TtrpcResult<PidsResponse> {
    inner.process(&req.id, "")?;
    let out =
        runtime::run(&inner.namespace, &["ps", "--format", "json", &inner.id]).map_err(internal)?;
    let pids: Vec<u32> = serde_json::from_str(out.trim()).map_err(internal)?;
    Ok(PidsResponse {
        processes: pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn number(value: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// `Stats`: one `berth-runtime events --stats` event as cgroup v1 metrics.
pub fn stats(inner: &Arc<Inner>, req: StatsRequest) -> TtrpcResult<StatsResponse> {
    inner.process(&req.id, "")?;
    let out =
        runtime::run(&inner.namespace, &["events", "--stats", &inner.id]).map_err(internal)?;
    let event: Value = serde_json::from_str(out.trim()).map_err(internal)?;
    let data = &event["data"];
    let metrics = Metrics {
        pids: Some(PidsStat {
            current: number(data, &["pids", "current"]),
            limit: number(data, &["pids", "limit"]),
            ..Default::default()
        })
        .into(),
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: number(data, &["cpu", "usage", "total"]),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStat {
            usage: Some(MemoryEntry {
                usage: number(data, &["memory", "usage", "usage"]),
                limit: number(data, &["memory", "usage", "limit"]),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let value = metrics.write_to_bytes().map_err(internal)?;
    Ok(StatsResponse {
        stats: Some(Any {
            type_url: "io.containerd.cgroups.v1.Metrics".to_string(),
            value,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
}

/// `Update`: the OCI LinuxResources (JSON in the Any) passed unchanged to
/// `berth-runtime update --resources -` on its stdin, so every field gets through.
pub fn update(inner: &Arc<Inner>, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
    inner.process(&req.id, "")?;
    let Some(resources) = req.resources.as_ref() else {
        return Ok(Empty::default());
    };
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(internal)?;
    // A writer thread, so JSON larger than the pipe buffer cannot block the shim.
    let json = resources.value.clone();
    let writer = std::thread::spawn(move || File::from(write_end).write_all(&json));
    let stdio = CommandStdio {
        stdin: Some(Stdio::from(read_end)),
        ..CommandStdio::default()
    };
    let args = ["update", "--resources", "-", inner.id.as_str()];
    let result = runtime::run_with(&inner.namespace, &args, stdio);
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked")));
    result.map_err(internal)?;
    // berth-runtime succeeded, so it read the whole object: a failed write
    // here means something else went wrong.
    written.map_err(internal)?;
    Ok(Empty::default())
}
