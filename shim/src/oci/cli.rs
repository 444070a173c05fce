//! runc's command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// An OCI runtime with runc's command line.
#[derive(Debug, Parser)]
#[command(name = "berth-runtime", disable_version_flag = true)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: Global,
    /// Print the version.
    #[arg(short = 'v', long)]
    pub version: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options before the command.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Where container state is kept.
    #[arg(long, global = true, default_value = "/run/berth-runtime")]
    pub root: PathBuf,
    /// Log file (errors and, with --debug, debug messages).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// text or json.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for compatibility; cgroupfs is used (systemd-style paths are converted).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// `vm` runs every bundle in a microVM (as the `io.berth.runtime=vm` annotation does).
    #[arg(long, global = true, env = "BERTH_RUNTIME_MODE")]
    pub runtime_mode: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start(IdArgs),
    /// Print a container's state as JSON.
    State(IdArgs),
    /// Send a signal to a container's process.
    Kill(KillArgs),
    /// Remove a stopped container.
    Delete(DeleteArgs),
    /// Create and start a container.
    Run(RunArgs),
    /// Run a process in a running container.
    Exec(ExecArgs),
    /// List a container's processes.
    Ps(PsArgs),
    /// List containers.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Freeze a container's processes.
    Pause(IdArgs),
    /// Thaw a container's processes.
    Resume(IdArgs),
    /// Write a default config.json.
    Spec(SpecArgs),
    /// Print resource usage events.
    Events(EventsArgs),
    /// Change a container's resource limits.
    Update(UpdateArgs),
    /// (internal) vm mode's detached stdio relay.
    #[command(hide = true)]
    VmRelay(VmRelayArgs),
}

/// `vm-relay` arguments.
#[derive(Debug, Args)]
pub struct VmRelayArgs {
    /// Send a pty master here and relay it to the guest's tty.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Relay stdin too.
    #[arg(long)]
    pub interactive: bool,
    /// Run and relay this exec process (its process.json is in the state dir)
    /// instead of relaying the container's.
    #[arg(long)]
    pub exec: Option<String>,
    /// The container id.
    pub id: String,
}

/// A command that takes only a container id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The container id.
    pub id: String,
}

/// `create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container process's pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket the pty master is sent to (process.terminal).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Enter the root with MS_MOVE and chroot instead of pivot_root (for a
    /// root on a ramdisk).
    #[arg(long)]
    pub no_pivot: bool,
    /// Pass descriptors 3 to 3+N-1 on to the container process (ns mode).
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for compatibility.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// The container id.
    pub id: String,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Detach: return once started.
    #[arg(short, long)]
    pub detach: bool,
    /// Create options.
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal every process in the container's cgroup.
    #[arg(short, long)]
    pub all: bool,
    /// The container id.
    pub id: String,
    /// Signal name or number.
    #[arg(default_value = "TERM")]
    pub signal: String,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container first if it is running.
    #[arg(short, long)]
    pub force: bool,
    /// The container id.
    pub id: String,
}

/// `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// A process.json (OCI process) to run instead of the command line.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a pty (requires --console-socket).
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket the pty master is sent to.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the exec process's pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Detach: return once started.
    #[arg(short, long)]
    pub detach: bool,
    /// Extra environment, K=V.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// uid[:gid].
    #[arg(short, long)]
    pub user: Option<String>,
    /// The container id.
    pub id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// The container id.
    pub id: String,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Print only the ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `spec`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Where to write config.json.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Accepted; not supported.
    #[arg(long)]
    pub rootless: bool,
}

/// `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print one stats event and exit.
    #[arg(long)]
    pub stats: bool,
    /// Seconds between stats events.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// The container id.
    pub id: String,
}

/// `update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Read the new limits from FILE, a JSON linux.resources object ("-": stdin);
    /// the flags below override single fields of it.
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Block I/O weight (10 to 1000).
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds (-1: unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_quota: Option<i64>,
    /// Real-time period in microseconds (cgroup v1).
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// Real-time runtime in microseconds (cgroup v1).
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPUs the container may use (like 0-3,5).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use (like 0-1).
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Kernel memory limit: accepted and ignored (deprecated, as in runc).
    #[arg(long, allow_negative_numbers = true, value_parser = super::update::parse_size)]
    pub kernel_memory: Option<i64>,
    /// Kernel TCP buffer limit (cgroup v1), in bytes or with a unit like 16m.
    #[arg(long, allow_negative_numbers = true, value_parser = super::update::parse_size)]
    pub kernel_memory_tcp: Option<i64>,
    /// Memory limit, in bytes or with a unit like 512m (-1: unlimited).
    #[arg(short, long, allow_negative_numbers = true, value_parser = super::update::parse_size)]
    pub memory: Option<i64>,
    /// Memory soft limit, in bytes or with a unit like 256m.
    #[arg(long, allow_negative_numbers = true, value_parser = super::update::parse_size)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit, in bytes or with a unit like 1g (-1: unlimited swap).
    #[arg(long, allow_negative_numbers = true, value_parser = super::update::parse_size)]
    pub memory_swap: Option<i64>,
    /// Maximum number of processes (0 or -1: unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema: refused, berth-runtime has no resctrl support.
    #[arg(long, value_parser = super::update::refuse_resctrl)]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema: refused, berth-runtime has no resctrl support.
    #[arg(long, value_parser = super::update::refuse_resctrl)]
    pub mem_bw_schema: Option<String>,
    /// The container id.
    pub id: String,
}
