//! OCI lifecycle hooks: run a hook with the container's state JSON on its stdin.
//!
//! [`crate::spawn_with`] runs them at the runtime spec's moments when given
//! [`SpawnHooks`]: prestart and createRuntime in the caller (the runtime's
//! namespaces) once the container's namespaces and mounts exist, createContainer in
//! the container's namespaces after its mounts and before pivot_root, and
//! startContainer in the container just before the user process execs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

/// A hook that did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("{point} hook {path}: {message}")]
pub struct HookError {
    /// The hook point, e.g. `CreateRuntime`.
    pub point: &'static str,
    /// The hook's path.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// The hooks [`crate::spawn_with`] runs during set-up, and the state they read.
#[derive(Debug, Clone, Default)]
pub struct SpawnHooks {
    /// The spec's hooks (poststart and poststop are left to the caller).
    pub hooks: Hooks,
    /// The runtime-spec state object (status `created`); its `pid` is set to the
    /// container's host pid before the hooks see it.
    pub state: serde_json::Value,
}

impl SpawnHooks {
    /// Whether any set-up hook is configured.
    pub fn any(&self) -> bool {
        let some = |h: &Option<Vec<Hook>>| h.as_ref().is_some_and(|v| !v.is_empty());
        some(self.hooks.prestart())
            || some(self.hooks.create_runtime())
            || some(self.hooks.create_container())
            || some(self.hooks.start_container())
    }
}

/// Run `hooks` in order with `state` on stdin; the first failure stops them.
pub fn run_all(point: &'static str, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    for hook in hooks {
        run_one(hook, state).map_err(|message| HookError {
            point,
            path: hook.path().display().to_string(),
            message,
        })?;
    }
    Ok(())
}

fn run_one(hook: &Hook, input: &[u8]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(hook.path());
    if let Some((arg0, rest)) = hook.args().as_deref().and_then(<[String]>::split_first) {
        cmd.arg0(arg0);
        cmd.args(rest);
    }
    cmd.env_clear();
    for var in hook.env().iter().flatten() {
        if let Some((k, v)) = var.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the hook: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(input);
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("the hook failed: {status}")),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for the hook: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the hook timed out".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The hooks of one list, or none.
pub(crate) fn list(hooks: &Option<Vec<Hook>>) -> &[Hook] {
    hooks.as_deref().unwrap_or_default()
}
