//! Command-line structure of `berth`, kept apart from what the commands do.

pub mod container;
pub mod image;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::context::DEFAULT_ROOT;

/// A container engine: every container runs in its own microVM or in Linux namespaces.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    /// Where berth keeps images, layers and containers.
    #[arg(long, global = true, env = "BERTH_ROOT", default_value = DEFAULT_ROOT)]
    pub root: PathBuf,

    /// Print debug logs on stderr.
    #[arg(long, short = 'D', global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start a container from an image.
    Run(container::RunArgs),
    /// Create a container without starting it.
    Create(container::CreateArgs),
    /// List containers.
    Ps(container::PsArgs),
    /// Print a container's output.
    Logs(container::LogsArgs),
    /// Stop running containers (SIGTERM, then SIGKILL after a grace period).
    Stop(container::StopArgs),
    /// Start stopped containers.
    Start(container::StartArgs),
    /// Restart containers.
    Restart(container::StopArgs),
    /// Send a signal to running containers.
    Kill(container::KillArgs),
    /// Remove containers.
    Rm(container::RmArgs),
    /// Run a command in a running container.
    Exec(container::ExecArgs),
    /// Block until containers stop, then print their exit codes.
    Wait(container::WaitArgs),
    /// Show low-level information on containers or images as JSON.
    Inspect(container::InspectArgs),
    /// Download an image from a registry.
    Pull(image::PullArgs),
    /// Upload an image to a registry.
    Push(image::PushArgs),
    /// List images.
    Images(image::ImagesArgs),
    /// Remove images.
    Rmi(image::RmiArgs),
    /// Give an image another name.
    Tag(image::TagArgs),
    /// Load images from an OCI layout or `docker save` archive.
    Load(image::LoadArgs),
    /// Save images to an OCI layout archive.
    Save(image::SaveArgs),
    /// Create an image from a root filesystem tarball.
    Import(image::ImportArgs),
    /// Supervise one container (internal: started by `run -d` and `start`).
    #[command(name = "__monitor", hide = true)]
    Monitor(container::MonitorArgs),
}
