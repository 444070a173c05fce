//! OCI hooks: run with the state JSON on stdin, in the runtime's namespaces.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Hook, Spec};

/// The hook points of the runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Deprecated; runs with createRuntime.
    Prestart,
    /// After the container's environment was created.
    CreateRuntime,
    /// After createRuntime (run in the runtime's namespaces here).
    CreateContainer,
    /// At `start`, before the user process runs (run in the runtime's namespaces here).
    StartContainer,
    /// After the user process started.
    Poststart,
    /// After the container was deleted.
    Poststop,
}

/// The hooks configured for `point`.
pub fn hooks_for(spec: &Spec, point: Point) -> Vec<Hook> {
    let Some(hooks) = spec.hooks() else {
        return Vec::new();
    };
    let list = match point {
        Point::Prestart => hooks.prestart(),
        Point::CreateRuntime => hooks.create_runtime(),
        Point::CreateContainer => hooks.create_container(),
        Point::StartContainer => hooks.start_container(),
        Point::Poststart => hooks.poststart(),
        Point::Poststop => hooks.poststop(),
    };
    list.clone().unwrap_or_default()
}

/// Run every hook of `point` in order; the first failure stops them.
pub fn run(spec: &Spec, point: Point, state: &serde_json::Value) -> Result<()> {
    let input = serde_json::to_vec(state)?;
    for hook in hooks_for(spec, point) {
        run_one(&hook, &input)
            .with_context(|| format!("{point:?} hook {}", hook.path().display()))?;
    }
    Ok(())
}

fn run_one(hook: &Hook, input: &[u8]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0);
            cmd.args(rest);
        }
    }
    cmd.env_clear();
    for var in hook.env().iter().flatten() {
        if let Some((k, v)) = var.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().context("cannot run the hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(input);
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            bail!("the hook failed: {status}");
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the hook timed out");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
