//! The ttrpc Task service: state shared by the operations, and the trait
//! implementation that dispatches to them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use containerd_shim::protos::ttrpc::{Result as TtrpcResult, TtrpcContext};
use containerd_shim::ExitSignal;

use super::events::Publisher;
use super::process::Process;
use super::reaper::Exits;
use super::{create, exec, lifecycle, not_found, query};

/// The container this shim runs.
pub struct Container {
    /// Its bundle directory.
    pub bundle: PathBuf,
    /// Whether the shim mounted its rootfs.
    pub mounted: bool,
    /// The init process.
    pub init: Arc<Process>,
    /// Exec processes by exec id.
    pub execs: HashMap<String, Arc<Process>>,
}

/// What the operations share.
pub struct Inner {
    /// containerd's namespace.
    pub namespace: String,
    /// The container (and shim) id.
    pub id: String,
    /// Event publishing.
    pub publisher: Publisher,
    /// Exits and the pids watched for them.
    pub exits: Mutex<Exits>,
    /// The container, once created.
    pub container: Mutex<Option<Container>>,
    /// Set to end the shim.
    pub exit: Arc<ExitSignal>,
}

impl Inner {
    /// The container, locked.
    pub fn container(&self) -> MutexGuard<'_, Option<Container>> {
        self.container.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process `exec_id` ("" for init) of container `id`.
    pub fn process(&self, id: &str, exec_id: &str) -> TtrpcResult<Arc<Process>> {
        let guard = self.container();
        let container = match guard.as_ref() {
            Some(c) if id.is_empty() || id == self.id => c,
            _ => return Err(not_found(format!("container {id}"))),
        };
        if exec_id.is_empty() {
            return Ok(container.init.clone());
        }
        container
            .execs
            .get(exec_id)
            .cloned()
            .ok_or_else(|| not_found(format!("process {exec_id}")))
    }
}

/// The Task service.
#[derive(Clone)]
pub struct Service {
    /// Shared state.
    pub inner: Arc<Inner>,
}

impl containerd_shim::Task for Service {
    fn create(&self, _: &TtrpcContext, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        create::create(&self.inner, req)
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        lifecycle::start(&self.inner, req)
    }

    fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        exec::exec(&self.inner, req)
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        query::state(&self.inner, req)
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        lifecycle::kill(&self.inner, req)
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        lifecycle::delete(&self.inner, req)
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let process = self.inner.process(&req.id, &req.exec_id)?;
        let (exit_status, exited_at) = process.wait();
        Ok(WaitResponse {
            exit_status,
            exited_at: exited_at.into(),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        query::pids(&self.inner, req)
    }

    fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        lifecycle::pause(&self.inner, &req.id, true)
    }

    fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        lifecycle::pause(&self.inner, &req.id, false)
    }

    fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let process = self.inner.process(&req.id, &req.exec_id)?;
        let io = process.io.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(io) = io.as_ref() {
            io.resize(req.width, req.height).map_err(super::internal)?;
        }
        Ok(Empty::default())
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let process = self.inner.process(&req.id, &req.exec_id)?;
        let io = process.io.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(io) = io.as_ref() {
            io.close_stdin();
        }
        Ok(Empty::default())
    }

    fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        query::update(&self.inner, req)
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        query::stats(&self.inner, req)
    }

    fn connect(&self, _: &TtrpcContext, _req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let task_pid = self
            .inner
            .container()
            .as_ref()
            .map(|c| c.init.pid())
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: u32::try_from(task_pid).unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.inner.container().is_none() {
            self.inner.exit.signal();
        }
        Ok(Empty::default())
    }
}
