//! Arguments of the container commands, with Docker's names and defaults.

use std::path::PathBuf;

use clap::Args;

/// Options that describe a container, shared by `run` and `create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Which runtime isolates the container: `ns` (Linux namespaces) or `vm` (a microVM).
    /// Default: "default-runtime" in /etc/berth/config.json, else `vm` where the built-in
    /// VMM can boot a guest, else `ns`.
    #[arg(long, env = "BERTH_RUNTIME")]
    pub runtime: Option<String>,
    /// With --runtime=vm: the program that runs the VM, `builtin` (berth-vmm, KVM) or `qemu`
    /// (default: the fastest that can boot the guest here).
    #[arg(long, env = "BERTH_HYPERVISOR", value_parser = ["builtin", "qemu"])]
    pub hypervisor: Option<String>,
    /// With --runtime=vm: `kvm` (hardware) or `tcg` (QEMU's emulation; default: kvm where it
    /// can boot the guest).
    #[arg(long, env = "BERTH_ACCEL", value_parser = ["kvm", "tcg"])]
    pub accel: Option<String>,
    /// Keep standard input open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// The container's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file, one KEY=VALUE a line.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User to run as: name, uid, name:group or uid:gid.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Bind mount a host path: /host/path:/container/path[:ro].
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volume: Vec<String>,
    /// Memory limit, like 64m or 1g.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Number of CPUs, like 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes (-1 for no limit).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Storage options: `size=10G` gives a vm container's writable layer a disk of its own.
    #[arg(long = "storage-opt", value_name = "KEY=VALUE")]
    pub storage_opt: Vec<String>,
    /// When to pull the image from its registry first.
    #[arg(long, default_value = "missing", value_parser = ["missing", "always", "never"])]
    pub pull: String,
    /// Image to create the container from.
    pub image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones.
    #[arg(short, long)]
    pub all: bool,
    /// Only print container ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container stops.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    /// Prefix each line with its timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the container's output and wait for it.
    #[arg(short, long)]
    pub attach: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send (name or number).
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill and remove running containers.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep standard input open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Run in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Set an environment variable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Only look at containers or at images.
    #[arg(long = "type", value_parser = ["container", "image"])]
    pub kind: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The container to supervise.
    pub id: String,
    /// File descriptor to report start-up success or failure on.
    #[arg(long)]
    pub report_fd: Option<i32>,
}
