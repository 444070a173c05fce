//! OCI hooks: run with the state JSON on stdin.

use oci_spec::runtime::{Hook, Spec};

use super::cli::Global;

/// The hooks of a point could not be run, or one failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The state given to hooks on stdin could not be encoded.
    #[error("cannot encode the container state for the hooks")]
    State(#[source] serde_json::Error),
    /// A hook failed (the agent's message names it).
    #[error(transparent)]
    Failed(#[from] berth_agent::hooks::HookError),
}

/// The hook points of the runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Deprecated; runs with createRuntime.
    Prestart,
    /// After the container's environment was created.
    CreateRuntime,
    /// In the container's namespaces, before pivot_root.
    CreateContainer,
    /// In the container, before the user process execs.
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

/// Run every hook of `point` in order (in the runtime's namespaces); the first
/// failure stops them. The set-up points normally run inside
/// [`berth_agent::spawn_with`] instead, at their moments.
pub fn run(spec: &Spec, point: Point, state: &serde_json::Value) -> Result<(), HookError> {
    let input = serde_json::to_vec(state).map_err(HookError::State)?;
    berth_agent::hooks::run_all(point.name(), &hooks_for(spec, point), &input)?;
    Ok(())
}

/// Run every hook of `point` in order, as the runtime spec wants for poststart and
/// poststop: a failing hook is logged as a warning (on stderr and in `--log`) and
/// the remaining ones still run.
pub fn run_warning_on_failure(
    global: &Global,
    spec: &Spec,
    point: Point,
    state: &serde_json::Value,
) {
    let input = match serde_json::to_vec(state) {
        Ok(input) => input,
        Err(e) => return warn(global, &HookError::State(e)),
    };
    for hook in hooks_for(spec, point) {
        let one = std::slice::from_ref(&hook);
        if let Err(e) = berth_agent::hooks::run_all(point.name(), one, &input) {
            warn(global, &HookError::Failed(e));
        }
    }
}

fn warn(global: &Global, error: &HookError) {
    let message = crate::error_chain(error);
    eprintln!("berth-runtime: warning: {message}");
    super::log_line(global, "warning", &message);
}

impl Point {
    /// The point's name in the runtime spec, as hook errors give it.
    pub fn name(self) -> &'static str {
        match self {
            Point::Prestart => "Prestart",
            Point::CreateRuntime => "CreateRuntime",
            Point::CreateContainer => "CreateContainer",
            Point::StartContainer => "StartContainer",
            Point::Poststart => "Poststart",
            Point::Poststop => "Poststop",
        }
    }
}
