//! Running the `berth-runtime` binary. The shim's SIGCHLD handler (in the
//! `containerd-shim` crate) reaps every child, so a command's exit status comes
//! from the crate's exit monitor, subscribed before the command is spawned.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use containerd_shim::monitor::{monitor_subscribe, wait_pid, Topic};

/// A berth-runtime command could not be run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot watch for exits")]
    Watch(#[source] containerd_shim::Error),
    #[error("cannot run {}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pid out of range")]
    Pid(#[source] std::num::TryFromIntError),
    #[error("berth-runtime {command} failed (exit {code}){}{message}", if message.is_empty() { "" } else { ": " })]
    Failed {
        command: String,
        code: i32,
        message: String,
    },
}

/// Where berth-runtime keeps its state for the shim's namespace.
pub fn state_root(namespace: &str) -> PathBuf {
    PathBuf::from("/run/containerd/berth").join(namespace)
}

/// The berth-runtime binary: `$BERTH_RUNTIME_BIN`, next to the shim, or in PATH.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("BERTH_RUNTIME_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let candidate = dir.join("berth-runtime");
        if candidate.is_file() {
            return candidate;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("berth-runtime");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("berth-runtime")
}

/// The standard streams a runtime command gets.
#[derive(Default)]
pub struct CommandStdio {
    /// The command's stdin (the container's, for create/exec); null when none.
    pub stdin: Option<Stdio>,
    /// The command's stdout; captured when none.
    pub stdout: Option<Stdio>,
    /// The command's stderr; captured when none.
    pub stderr: Option<Stdio>,
}

/// Run `berth-runtime --root ROOT ARGS`; returns what it printed on stdout, or
/// an error with its stderr when it fails.
pub fn run(namespace: &str, args: &[&str]) -> Result<String, RuntimeError> {
    run_with(namespace, args, CommandStdio::default())
}

/// [`run`] with the given standard streams.
pub fn run_with(
    namespace: &str,
    args: &[&str],
    stdio: CommandStdio,
) -> Result<String, RuntimeError> {
    let root = state_root(namespace);
    let mut command = Command::new(binary());
    command
        .arg("--root")
        .arg(&root)
        .arg("--log")
        .arg(root.join("berth-runtime.log"))
        .args(args)
        .stdin(stdio.stdin.unwrap_or_else(Stdio::null))
        .stdout(stdio.stdout.unwrap_or_else(Stdio::piped))
        .stderr(stdio.stderr.unwrap_or_else(Stdio::piped));
    let subscription = monitor_subscribe(Topic::Pid).map_err(RuntimeError::Watch)?;
    let mut child = command.spawn().map_err(|source| RuntimeError::Spawn {
        binary: binary(),
        source,
    })?;
    let pid = i32::try_from(child.id()).map_err(RuntimeError::Pid)?;
    let err_reader = child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        })
    });
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    let err = err_reader
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    // Never child.wait(): the crate's reaper owns waitpid.
    let code = wait_pid(pid, subscription);
    drop(child);
    if code != 0 {
        let logged = last_error(&root.join("berth-runtime.log"));
        let message = if err.trim().is_empty() {
            logged.trim()
        } else {
            err.trim()
        };
        return Err(RuntimeError::Failed {
            command: args.first().copied().unwrap_or("").to_string(),
            code,
            message: message.to_string(),
        });
    }
    Ok(out)
}

/// The message of the log file's last line, for commands whose stderr is the
/// container's.
fn last_error(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().last().unwrap_or_default();
    match line.split_once("msg=") {
        Some((_, message)) => message.trim_matches('"').to_string(),
        None => line.to_string(),
    }
}
