//! Stdio: containerd's FIFOs pumped to and from the container's pipes, or its
//! pty master.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::console::ConsoleError;

/// A process's stdio could not be wired up.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("cannot create a pipe")]
    Pipe(#[source] nix::errno::Errno),
    #[error("cannot clone the pty master")]
    ClonePty(#[source] std::io::Error),
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

type Writer = Arc<Mutex<Option<File>>>;

/// The shim's side of a process's stdio.
pub struct Io {
    stdin: Writer,
    console: Option<File>,
    done: Receiver<()>,
    outputs: usize,
}

/// The container's ends of the pipes, for the runtime command to pass on.
#[derive(Default)]
pub struct ChildStdio {
    /// The read end of the stdin pipe (None: /dev/null).
    pub stdin: Option<OwnedFd>,
    /// The write end of the stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// The write end of the stderr pipe.
    pub stderr: Option<OwnedFd>,
}

fn pipe() -> Result<(File, File), StdioError> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StdioError::Pipe)?;
    Ok((File::from(read), File::from(write)))
}

/// Pipes between containerd's FIFOs (empty paths: none) and the container.
pub fn pipes(stdin: &str, stdout: &str, stderr: &str) -> Result<(Io, ChildStdio), StdioError> {
    let (tx, done) = channel();
    let mut child = ChildStdio::default();
    let writer: Writer = Arc::new(Mutex::new(None));
    if !stdin.is_empty() {
        let (read, write) = pipe()?;
        child.stdin = Some(read.into());
        *writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(write);
        spawn_stdin(stdin.to_string(), writer.clone(), true);
    }
    let mut outputs = 0;
    for (path, slot) in [(stdout, &mut child.stdout), (stderr, &mut child.stderr)] {
        if path.is_empty() {
            continue;
        }
        let (read, write) = pipe()?;
        *slot = Some(write.into());
        spawn_output(read, path.to_string(), tx.clone());
        outputs += 1;
    }
    Ok((
        Io {
            stdin: writer,
            console: None,
            done,
            outputs,
        },
        child,
    ))
}

/// Pump between containerd's FIFOs and a pty master.
pub fn console(master: File, stdin: &str, stdout: &str) -> Result<Io, StdioError> {
    let (tx, done) = channel();
    let writer: Writer = Arc::new(Mutex::new(None));
    if !stdin.is_empty() {
        *writer.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(master.try_clone().map_err(StdioError::ClonePty)?);
        spawn_stdin(stdin.to_string(), writer.clone(), false);
    }
    let mut outputs = 0;
    if !stdout.is_empty() {
        spawn_output(
            master.try_clone().map_err(StdioError::ClonePty)?,
            stdout.to_string(),
            tx,
        );
        outputs = 1;
    }
    Ok(Io {
        stdin: writer,
        console: Some(master),
        done,
        outputs,
    })
}

/// Copy the stdin FIFO into `writer`; at its end, close the writer if `close`.
fn spawn_stdin(path: String, writer: Writer, close: bool) {
    std::thread::spawn(move || {
        let Ok(mut fifo) = File::open(&path) else {
            return;
        };
        let mut buf = [0u8; 32 * 1024];
        loop {
            let n = match fifo.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut guard = writer.lock().unwrap_or_else(|e| e.into_inner());
            let Some(target) = guard.as_mut() else {
                break;
            };
            if target.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        if close {
            writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    });
}

/// Copy `source` into the FIFO at `path` until its end; a FIFO nobody reads any
/// more is skipped, the output drained so the container never blocks.
fn spawn_output(mut source: File, path: String, done: Sender<()>) {
    std::thread::spawn(move || {
        let mut fifo = OpenOptions::new().write(true).open(&path).ok();
        let mut buf = [0u8; 32 * 1024];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if let Some(target) = fifo.as_mut() {
                if target.write_all(&buf[..n]).is_err() {
                    fifo = None;
                }
            }
        }
        drop(fifo);
        let _ = done.send(());
    });
}

impl Io {
    /// Wait up to `timeout` for the output pumps to reach the end.
    pub fn wait_output(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for _ in 0..self.outputs {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                return;
            }
        }
    }

    /// Close the container's stdin (non-tty).
    pub fn close_stdin(&self) {
        if self.console.is_none() {
            self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// Set the pty's window size.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), StdioError> {
        if let Some(master) = &self.console {
            super::console::set_size(master, width, height)?;
        }
        Ok(())
    }
}
