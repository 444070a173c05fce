//! The host ⇄ guest-agent wire protocol.
//!
//! Transport: byte streams (vsock inside the VM, any `Read`/`Write` in tests).
//! A frame is a big-endian `u32` length followed by that many bytes of JSON.
//!
//! * Control connections (port [`CONTROL_PORT`]): the host sends [`Request`]s,
//!   the agent answers each with a [`Response`] carrying the same `id`.
//! * Stdio connections (port [`STDIO_PORT`]): the host opens one connection per
//!   stream and first sends one [`StdioAttach`] frame; after that the connection
//!   carries raw bytes.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The protocol version both sides must agree on (2 added pause/resume, process
/// listing, signalling every process, resource updates, stats limits and the
/// set-up hooks' state; 3 sets the container's process up at CreateContainer,
/// its stdio attached before).
pub const PROTOCOL_VERSION: u32 = 3;
/// The vsock port of control connections.
pub const CONTROL_PORT: u32 = 1024;
/// The vsock port of stdio connections.
pub const STDIO_PORT: u32 = 1025;
/// The largest frame body accepted, in bytes.
pub const MAX_FRAME: u32 = 4 << 20;

/// A request on a control connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Echoed in the response.
    pub id: u64,
    /// What is asked.
    pub body: RequestBody,
}

impl Request {
    /// A request of the current protocol version.
    pub fn new(id: u64, body: RequestBody) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        }
    }
}

/// What a [`Request`] asks for.
// The spec and process are kept inline (not boxed) so both sides build requests
// plainly; a request is built once and serialized, so the size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestBody {
    /// Liveness and version check → [`ResponseBody::Pong`].
    Ping,
    /// Create a container as runc's `create` does: its namespaces, cgroup, mounts
    /// and process are set up (createContainer hooks included), and the process
    /// waits just before executing the command until
    /// [`RequestBody::StartContainer`] → [`ResponseBody::Created`]. Its stdio
    /// streams must be attached before. A command that cannot be found or run
    /// fails the create (with Docker's exit code).
    CreateContainer {
        /// The container id.
        id: String,
        /// The OCI runtime spec (`root.path` is ignored; `linux.cgroupsPath` is used).
        spec: oci_spec::runtime::Spec,
        /// Where the root filesystem comes from.
        rootfs: GuestRootfs,
        /// Allocate a pty (only a `tty` stdio stream is used).
        terminal: bool,
        /// Keep stdin open.
        interactive: bool,
        /// The runtime-spec state (status `created`) the spec's set-up hooks
        /// read on stdin; the agent sets its `pid` to the guest pid. The hooks
        /// the spec holds run in the guest: createContainer during the create,
        /// in the container's namespaces before pivot_root; startContainer at
        /// start, in the container just before the command is executed.
        /// Without it the agent builds one from the spec.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook_state: Option<serde_json::Value>,
    },
    /// Let a created container's process go on (its startContainer hooks run,
    /// then it executes the command) → [`ResponseBody::Started`].
    StartContainer {
        /// The container id.
        id: String,
    },
    /// Run another process in a running container, immediately → [`ResponseBody::Started`].
    Exec {
        /// The container id.
        container_id: String,
        /// The exec id, used for stdio attachment, wait, signal and resize.
        exec_id: String,
        /// The process to run.
        process: oci_spec::runtime::Process,
        /// Allocate a pty (only a `tty` stdio stream is used).
        terminal: bool,
        /// Keep stdin open.
        interactive: bool,
    },
    /// Block until a container or exec process exits → [`ResponseBody::Exited`].
    Wait {
        /// A container id or an exec id.
        id: String,
    },
    /// Send a signal → [`ResponseBody::Ok`].
    Signal {
        /// A container id or an exec id.
        id: String,
        /// The signal number.
        signal: i32,
    },
    /// Send a signal to every process in a container's cgroup (and its
    /// sub-cgroups); nothing to do once it exited → [`ResponseBody::Ok`].
    SignalAll {
        /// The container id.
        id: String,
        /// The signal number.
        signal: i32,
    },
    /// Resize a terminal → [`ResponseBody::Ok`].
    ResizeTty {
        /// A container id or an exec id.
        id: String,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Resource usage from the container's cgroup → [`ResponseBody::Stats`].
    Stats {
        /// The container id.
        id: String,
    },
    /// Freeze every process in the container's cgroup; answered once they are
    /// frozen → [`ResponseBody::Ok`].
    Pause {
        /// The container id.
        id: String,
    },
    /// Thaw a paused container → [`ResponseBody::Ok`].
    Resume {
        /// The container id.
        id: String,
    },
    /// The processes in the container's cgroup (and its sub-cgroups) →
    /// [`ResponseBody::Processes`].
    ListProcesses {
        /// The container id.
        id: String,
    },
    /// Apply new limits to the container's cgroup → [`ResponseBody::Ok`].
    UpdateResources {
        /// The container id.
        id: String,
        /// The limits; what is left out is not changed.
        resources: oci_spec::runtime::LinuxResources,
    },
    /// Answer [`ResponseBody::Ok`], sync and power the VM off.
    Shutdown,
}

/// The container's root filesystem as seen from the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRootfs {
    /// Guest block devices (or, for tests, directories), BOTTOM layer first, e.g.
    /// `["/dev/vdb", "/dev/vdc"]`; each an ext4 filesystem holding one unpacked
    /// layer at its root, mounted read-only.
    pub layers: Vec<String>,
    /// The writable layer.
    pub upper: Upper,
}

/// Where the container's writable layer lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Upper {
    /// A tmpfs, optionally limited in size.
    Tmpfs {
        /// The size limit in bytes.
        size_bytes: Option<u64>,
    },
    /// An ext4 scratch disk (or, for tests, a directory).
    Device {
        /// The guest device path.
        path: String,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The answer.
    pub body: ResponseBody,
}

/// What a [`Response`] says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseBody {
    /// Answer to [`RequestBody::Ping`].
    Pong {
        /// The agent's [`PROTOCOL_VERSION`].
        version: u32,
        /// The agent's crate version.
        agent: String,
    },
    /// The container was created.
    Created,
    /// The process started.
    Started {
        /// Its guest pid.
        pid: i32,
    },
    /// The process exited.
    Exited {
        /// The exit code (128 + signal number when killed by a signal).
        exit_code: i32,
        /// The container's cgroup saw an OOM kill.
        oom_killed: bool,
    },
    /// Resource usage.
    Stats {
        /// Memory in use, in bytes.
        memory_bytes: u64,
        /// Number of processes.
        pids: u64,
        /// CPU time used, in nanoseconds.
        cpu_usage_ns: u64,
        /// The memory limit in bytes; `None` when unlimited.
        #[serde(default)]
        memory_limit_bytes: Option<u64>,
        /// The process limit; `None` when unlimited.
        #[serde(default)]
        pids_limit: Option<u64>,
    },
    /// The container's processes, by guest pid.
    Processes {
        /// One entry per process.
        processes: Vec<ProcessInfo>,
    },
    /// Done.
    Ok,
    /// The request failed.
    Error {
        /// What went wrong (with the error chain).
        message: String,
        /// Docker's exit code where one applies (127 command not found, 126 not
        /// executable).
        #[serde(default)]
        exit_code: Option<i32>,
    },
}

impl ResponseBody {
    /// An error without an exit code.
    pub fn error(message: impl Into<String>) -> ResponseBody {
        ResponseBody::Error {
            message: message.into(),
            exit_code: None,
        }
    }
}

/// A process in the guest, with what `ps -ef` shows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// The guest pid.
    pub pid: i32,
    /// The parent's guest pid.
    pub ppid: i32,
    /// The real user id.
    pub uid: u32,
    /// The user's name from the container's /etc/passwd, when it has one.
    #[serde(default)]
    pub user: Option<String>,
    /// When it started, in seconds since the Unix epoch (guest clock).
    pub start_time: u64,
    /// CPU time used (user + system), in milliseconds.
    pub cpu_time_ms: u64,
    /// Its controlling terminal (`pts/0`), if any.
    #[serde(default)]
    pub tty: Option<String>,
    /// The command line, or `[name]` when it has none.
    pub cmd: String,
}

/// The first frame on a stdio connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioAttach {
    /// A container id or an exec id.
    pub id: String,
    /// Which stream this connection carries.
    pub stream: StdioStream,
}

/// A standard stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdioStream {
    /// host → agent; the host half-closes for EOF.
    Stdin,
    /// agent → host.
    Stdout,
    /// agent → host.
    Stderr,
    /// Both ways: the pty master (only with `terminal: true`).
    Tty,
}

/// A failure reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The underlying stream failed.
    #[error("failed to read or write a frame")]
    Io(#[source] io::Error),
    /// The length prefix is larger than [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes")]
    Oversized {
        /// The announced length.
        len: u64,
    },
    /// The stream ended in the middle of a frame.
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    /// The body is not the JSON expected.
    #[error("malformed frame body")]
    Json(#[source] serde_json::Error),
}

impl ProtocolError {
    /// Whether the connection can still be used after this error (the whole
    /// frame was consumed, only its content was bad).
    pub fn is_recoverable(&self) -> bool {
        matches!(self, ProtocolError::Json(_))
    }
}

/// Write one frame holding `value` as JSON, and flush.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, value: &T) -> Result<(), ProtocolError> {
    let body = serde_json::to_vec(value).map_err(ProtocolError::Json)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len <= MAX_FRAME)
        .ok_or(ProtocolError::Oversized {
            len: body.len() as u64,
        })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).map_err(ProtocolError::Io)?;
    w.flush().map_err(ProtocolError::Io)
}

/// Read one frame's raw body; `None` on a clean end of stream before a frame.
pub fn read_frame_bytes<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e)),
        }
    }
    let len = u32::from_be_bytes(header);
    if len > MAX_FRAME {
        return Err(ProtocolError::Oversized {
            len: u64::from(len),
        });
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => ProtocolError::Io(e),
    })?;
    Ok(Some(body))
}

/// Read one frame and parse it; `None` on a clean end of stream before a frame.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, ProtocolError> {
    match read_frame_bytes(r)? {
        None => Ok(None),
        Some(body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(ProtocolError::Json),
    }
}

/// The error response for a request of another protocol version, or `None`
/// when the versions match.
pub fn check_version(request: &Request) -> Option<ResponseBody> {
    (request.version != PROTOCOL_VERSION).then(|| {
        ResponseBody::error(format!(
            "protocol version mismatch: the host speaks version {}, the agent speaks version {}",
            request.version, PROTOCOL_VERSION
        ))
    })
}
