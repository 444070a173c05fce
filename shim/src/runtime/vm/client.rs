//! The host side of the guest agent's protocol, over the hybrid vsock Unix socket
//! (`CONNECT <port>\n` → `OK <n>\n`, then the stream is the guest port).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_agent::protocol::{
    read_frame, write_frame, ProtocolError, Request, RequestBody, Response, ResponseBody,
    StdioAttach, StdioStream, CONTROL_PORT, STDIO_PORT,
};

use super::hypervisor::{SERIAL_LOG, VSOCK_SOCKET};

/// What the agent prints on the serial console once it listens.
const READY: &[u8] = b"berth-agent: ready";
/// How long to wait for that line before trying to connect anyway.
const SILENT_CONSOLE: Duration = Duration::from_secs(20);

/// The agent could not be reached or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the guest agent through {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the guest agent's protocol failed")]
    Protocol(#[from] ProtocolError),
    #[error("the guest agent closed the connection")]
    Closed,
    #[error("{message}")]
    Agent {
        message: String,
        exit_code: Option<i32>,
    },
    #[error("the guest agent answered {0} unexpectedly")]
    Unexpected(String),
    #[error("the VM exited before its agent was ready ({status}); see its serial console log {}", serial.display())]
    Died { status: String, serial: PathBuf },
    #[error("the guest agent was not ready after {}s ({last}); see the VM's serial console log {}", limit.as_secs(), serial.display())]
    Timeout {
        limit: Duration,
        serial: PathBuf,
        last: String,
    },
}

/// Opens a stream to guest port `port` through `<dir>/vsock.sock`.
pub fn connect(dir: &Path, port: u32, timeout: Duration) -> Result<UnixStream, ClientError> {
    let socket = dir.join(VSOCK_SOCKET);
    let err = |source| ClientError::Connect {
        path: socket.clone(),
        source,
    };
    // Through the folder's descriptor: socket paths are limited to 108 bytes.
    let folder: OwnedFd = std::fs::File::open(dir).map_err(err)?.into();
    let short = format!("/proc/self/fd/{}/{VSOCK_SOCKET}", folder.as_raw_fd());
    let mut stream = UnixStream::connect(&short).map_err(err)?;
    drop(folder);
    stream.set_read_timeout(Some(timeout)).map_err(err)?;
    stream.set_write_timeout(Some(timeout)).map_err(err)?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(err)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("nothing listens on guest port {port}"),
                )))
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "the vsock backend answered {:?} to CONNECT {port}",
                String::from_utf8_lossy(&line)
            ),
        )));
    }
    stream.set_read_timeout(None).map_err(err)?;
    stream.set_write_timeout(None).map_err(err)?;
    Ok(stream)
}

/// A stdio connection for stream `stream` of process `id` (a container or exec id).
pub fn attach(dir: &Path, id: &str, stream: StdioStream) -> Result<UnixStream, ClientError> {
    let mut conn = connect(dir, STDIO_PORT, Duration::from_secs(5))?;
    write_frame(
        &mut conn,
        &StdioAttach {
            id: id.to_string(),
            stream,
        },
    )?;
    Ok(conn)
}

/// A control connection to the guest agent.
pub struct Agent {
    stream: UnixStream,
    next_id: u64,
}

impl Agent {
    pub fn connect(dir: &Path, timeout: Duration) -> Result<Agent, ClientError> {
        Ok(Agent {
            stream: connect(dir, CONTROL_PORT, timeout)?,
            next_id: 1,
        })
    }

    /// Bounds how long one answer may take (None: forever, for `Wait`).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Sends a request and reads its answer; an `Error` answer becomes `ClientError::Agent`.
    pub fn call(&mut self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        write_frame(&mut self.stream, &Request::new(id, body))?;
        loop {
            let response: Response = read_frame(&mut self.stream)?.ok_or(ClientError::Closed)?;
            if response.id != id {
                continue;
            }
            return match response.body {
                ResponseBody::Error { message, exit_code } => {
                    Err(ClientError::Agent { message, exit_code })
                }
                body => Ok(body),
            };
        }
    }

    /// Like `call`, expecting `Ok`.
    pub fn call_ok(&mut self, body: RequestBody) -> Result<(), ClientError> {
        match self.call(body)? {
            ResponseBody::Ok => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Waits until the agent in a booting VM answers a Ping; `vm_exited` says whether (and how)
    /// the VM process is gone.
    pub fn wait_ready(
        dir: &Path,
        limit: Duration,
        mut vm_exited: impl FnMut() -> Option<String>,
    ) -> Result<Agent, ClientError> {
        let serial = dir.join(SERIAL_LOG);
        let started = Instant::now();
        let deadline = started + limit;
        let mut last_error;
        loop {
            if let Some(status) = vm_exited() {
                return Err(ClientError::Died { status, serial });
            }
            // Connecting before the guest listens can wedge the vsock backend (seen with
            // vhost-device-vsock 0.3): wait for the agent's line on the console first (or, in
            // case the console says nothing, a while).
            let announced = std::fs::read(&serial)
                .is_ok_and(|text| text.windows(READY.len()).any(|w| w == READY));
            if !announced && started.elapsed() < SILENT_CONSOLE && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            match Agent::connect(dir, Duration::from_secs(1)).and_then(|mut agent| {
                agent
                    .set_timeout(Some(Duration::from_secs(5)))
                    .map_err(|source| ClientError::Connect {
                        path: dir.join(VSOCK_SOCKET),
                        source,
                    })?;
                match agent.call(RequestBody::Ping)? {
                    ResponseBody::Pong { .. } => Ok(agent),
                    other => Err(ClientError::Unexpected(format!("{other:?}"))),
                }
            }) {
                Ok(agent) => {
                    tracing::debug!(elapsed = ?started.elapsed(), "the guest agent is ready");
                    return Ok(agent);
                }
                // A version mismatch or other refusal will not get better.
                Err(e @ ClientError::Agent { .. }) => return Err(e),
                Err(e) => last_error = e,
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    limit,
                    serial,
                    last: crate::error_chain(&last_error),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
