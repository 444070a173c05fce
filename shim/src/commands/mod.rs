//! One module per command; `dispatch` routes a parsed command line to it.

mod create;
mod exec;
pub mod image;
mod inspect;
mod logs;
mod monitor;
mod ps;
mod rm;
mod run;
mod start;
mod stop;
mod wait;

use crate::cli::Command;
use crate::container::ContainerError;
use crate::context::Context;
use crate::monitor::MonitorError;
use crate::options::OptionError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

/// Why a command failed; `main` prints it with its chain of causes.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Image(#[from] StoreError),
    #[error(transparent)]
    ImageCommand(#[from] image::ImageCommandError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Config(#[from] crate::runtime::default::ConfigError),
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error("{0}")]
    Refused(String),
    #[error("{message}")]
    StartFailed { message: String, exit_code: i32 },
    #[error("could not read {path}")]
    ReadFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start berth's container monitor")]
    SpawnMonitor(#[source] std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CommandError {
    /// The exit status for this failure, as Docker's CLI gives it: a command that could not
    /// be executed in the container exits 127 (not found) or 126 (not executable); `run` and
    /// `create` exit 125 for every other failure; all other commands exit 1.
    pub fn exit_code(&self, creates_containers: bool) -> i32 {
        let specific = match self {
            CommandError::Monitor(e) => e.exit_code(),
            CommandError::Runtime(e) => e.exit_code(),
            CommandError::StartFailed { exit_code, .. } => *exit_code,
            _ => 125,
        };
        match specific {
            126 | 127 => specific,
            _ if creates_containers => 125,
            _ => 1,
        }
    }
}

/// Runs one command; Ok carries the exit status.
pub fn dispatch(ctx: &Context, command: Command) -> Result<i32, CommandError> {
    match command {
        Command::Run(args) => run::run(ctx, args),
        Command::Create(args) => create::create(ctx, &args),
        Command::Ps(args) => ps::ps(ctx, &args),
        Command::Logs(args) => logs::logs(ctx, &args),
        Command::Stop(args) => stop::stop(ctx, &args),
        Command::Restart(args) => stop::restart(ctx, &args),
        Command::Kill(args) => stop::kill(ctx, &args),
        Command::Start(args) => start::start(ctx, &args),
        Command::Rm(args) => rm::rm(ctx, &args),
        Command::Exec(args) => exec::exec(ctx, args),
        Command::Wait(args) => wait::wait(ctx, &args),
        Command::Inspect(args) => inspect::inspect(ctx, &args),
        Command::Pull(args) => ok(image::pull(ctx, &args)),
        Command::Push(args) => ok(image::push(ctx, &args)),
        Command::Images(args) => ok(image::images(ctx, &args)),
        Command::Rmi(args) => ok(image::rmi(ctx, &args)),
        Command::Tag(args) => ok(image::tag(ctx, &args)),
        Command::Load(args) => ok(image::load(ctx, &args)),
        Command::Save(args) => ok(image::save(ctx, &args)),
        Command::Import(args) => ok(image::import(ctx, &args)),
        Command::Monitor(args) => monitor::monitor(ctx, &args),
    }
}

fn ok(result: Result<(), image::ImageCommandError>) -> Result<i32, CommandError> {
    result.map(|()| 0).map_err(CommandError::from)
}
