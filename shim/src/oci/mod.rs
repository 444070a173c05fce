//! `berth-runtime`: an OCI runtime with runc's command line, built on the
//! `berth-agent` library's container set-up.
//!
//! One file per command (like youki's liboci-cli and libcontainer); the
//! command-line structures live in [`cli`], the on-disk container record in
//! [`container`]. The create/start split works as in runc: `create` leaves the
//! container's process blocked opening `ROOT/ID/exec.fifo` for writing just before
//! execve, and `start` opens it for reading. The process is not reaped by
//! berth-runtime (which exits): like runc's, it is reparented to the caller's
//! subreaper or init, and `state` derives the status from its pid, start time and
//! the FIFO's presence.

pub mod cli;
pub mod container;
pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod hooks;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;
pub mod vm;

use std::io::Write;
use std::path::Path;

use clap::Parser;

use cli::{Cli, Command, Global};

/// The runtime-spec version this runtime implements.
pub const SPEC_VERSION: &str = "1.2.0";

/// Why a command failed; [`main`] prints it with its causes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Create(#[from] create::CreateError),
    #[error(transparent)]
    Start(#[from] start::StartError),
    #[error(transparent)]
    Kill(#[from] kill::KillError),
    #[error(transparent)]
    Delete(#[from] delete::DeleteError),
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error(transparent)]
    Freeze(#[from] pause::FreezeError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Vm(#[from] vm::VmModeError),
}

/// Why `state`, `ps`, `list`, `events` or `update` failed: they read a container
/// record and its cgroup and print or change it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Record(#[from] container::RecordError),
    #[error("container {0:?} is not running")]
    NotRunning(String),
    #[error("invalid format {0:?} (table or json)")]
    Format(String),
    #[error("cannot list the container's processes")]
    Processes(#[source] berth_agent::cgroups::CgroupError),
    #[error("invalid resource limits")]
    Limits(#[source] oci_spec::OciSpecError),
    #[error("invalid resource limits")]
    Resources(#[from] update::ResourcesError),
    #[error("cannot apply the new limits to the container's cgroup")]
    Apply(#[source] berth_agent::cgroups::CgroupError),
    #[error("cannot encode the output as JSON")]
    Output(#[source] serde_json::Error),
    #[error(transparent)]
    Vm(#[from] vm::VmModeError),
}

/// Parse the command line, run the command and return the process's exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if cli.version {
        println!("berth-runtime version {}", env!("CARGO_PKG_VERSION"));
        println!("spec: {SPEC_VERSION}");
        return 0;
    }
    let global = cli.global;
    let Some(command) = cli.command else {
        eprintln!("berth-runtime: no command given (see --help)");
        return 2;
    };
    match dispatch(&global, command) {
        Ok(code) => code,
        Err(e) => {
            let message = crate::error_chain(&e);
            log_error(&global, &message);
            eprintln!("berth-runtime: {message}");
            1
        }
    }
}

fn dispatch(global: &Global, command: Command) -> Result<i32, Error> {
    if global.debug {
        log_line(global, "debug", &format!("command: {command:?}"));
    }
    match command {
        Command::Create(args) => create::create(global, &args)?,
        Command::Start(args) => start::start(global, &args.id)?,
        Command::State(args) => state::state(global, &args.id)?,
        Command::Kill(args) => kill::kill(global, &args)?,
        Command::Delete(args) => delete::delete(global, &args)?,
        Command::Run(args) => return Ok(run::run(global, &args)?),
        Command::Exec(args) => return Ok(exec::exec(global, &args)?),
        Command::Ps(args) => ps::ps(global, &args)?,
        Command::List(args) => list::list(global, &args)?,
        Command::Pause(args) => pause::pause(global, &args.id)?,
        Command::Resume(args) => pause::resume(global, &args.id)?,
        Command::Spec(args) => spec::spec(&args)?,
        Command::Events(args) => events::events(global, &args)?,
        Command::Update(args) => update::update(global, &args)?,
        Command::VmRelay(args) => return Ok(vm::relay(global, args)?),
    }
    Ok(0)
}

/// Append a message to `--log` in the chosen format (runc's: logrus text or JSON).
pub fn log_line(global: &Global, level: &str, message: &str) {
    let Some(path) = &global.log else {
        if global.debug && level == "debug" {
            eprintln!("berth-runtime: debug: {message}");
        }
        return;
    };
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let line = if global.log_format == "json" {
        serde_json::json!({"level": level, "msg": message, "time": time}).to_string()
    } else {
        format!("time={time:?} level={level} msg={message:?}")
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(path))
    {
        let _ = writeln!(file, "{line}");
    }
}

fn log_error(global: &Global, message: &str) {
    log_line(global, "error", message);
}
