//! `berth-vmm`: boots one VM from a JSON configuration file or from flags.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Context;
use berth_vmm::vmm_config::{
    BootSourceConfig, DriveConfig, NetConfig, SerialConfig, VmConfig, VsockConfig,
};
use berth_vmm::vstate::VcpuExitReason;
use berth_vmm::{build_vm, privileges, seccomp, VmmExit};
use clap::Parser;
use tracing::debug;
use vmm_sys_util::eventfd::EventFd;

/// berth's built-in VMM: one KVM VM with virtio-blk drives, virtio-net, virtio-vsock and a
/// serial console.
#[derive(Debug, Parser)]
#[command(
    name = "berth-vmm",
    version,
    after_help = "Exit status:\n  \
      0  the guest reset through the i8042 (Linux `reboot` with reboot=k: orderly shutdown)\n  \
      1  VMM error (configuration, set-up, runtime)\n  \
      2  command-line usage error\n  \
      3  the guest powered off: it wrote to --exit-on-port, or halted with interrupts off\n  \
      4  triple fault (KVM_EXIT_SHUTDOWN)\n  \
      5  a vCPU failed (KVM could not run it, or an exit the VMM does not handle)\n  \
      6  stopped by SIGTERM or SIGINT (vCPUs stopped, devices closed)"
)]
struct Cli {
    /// JSON configuration file (machine-config, boot-source, drives, serial); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Uncompressed ELF kernel (vmlinux).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long)]
    vcpus: Option<u8>,
    /// Guest memory in MiB.
    #[arg(long)]
    mem_mib: Option<usize>,
    /// A drive: PATH or PATH,ro (repeatable; ids are drive0, drive1, ...).
    #[arg(long = "drive")]
    drives: Vec<String>,
    /// Serial output: stdout, off, or file:PATH.
    #[arg(long)]
    serial: Option<String>,
    /// A network interface on a host tap: TAP or TAP,MAC (repeatable; ids are eth0, eth1, ...).
    #[arg(long = "net")]
    nets: Vec<String>,
    /// A virtio-vsock device: CID,UDS_PATH (host clients connect to UDS_PATH and write
    /// `CONNECT <port>\n`; guest connections to host port P go to UDS_PATH_P).
    #[arg(long)]
    vsock: Option<String>,
    /// A debug-exit I/O port (like QEMU's isa-debug-exit): a guest write there ends the VM
    /// with exit status 3. Decimal or 0x-prefixed hex.
    #[arg(long, value_parser = parse_port)]
    exit_on_port: Option<u16>,
    /// Do not confine the VMM's threads with seccomp.
    #[arg(long)]
    no_seccomp: bool,
    /// Print the resolved configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
}

fn parse_port(s: &str) -> Result<u16, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a port number: {e}"))
}

/// Exit statuses (documented in --help).
mod status {
    pub const RESET: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const POWER_OFF: u8 = 3;
    pub const TRIPLE_FAULT: u8 = 4;
    pub const VCPU_FAILED: u8 = 5;
    pub const SIGNALLED: u8 = 6;
}

/// The raw fd of the VMM's stop eventfd, for the signal handler (-1 until set).
static STOP_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(_: libc::c_int) {
    let fd = STOP_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; `one` is 8 valid bytes; a failed write only
        // means the VM is already stopping.
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

fn install_stop_handler(stop_evt: EventFd) -> anyhow::Result<()> {
    // The eventfd lives for the rest of the process.
    STOP_FD.store(stop_evt.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(stop_evt);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction struct is zero-initialised plain data; the handler only calls
        // async-signal-safe functions.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            anyhow::bail!(
                "could not install the handler for signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

fn resolve(cli: &Cli) -> anyhow::Result<VmConfig> {
    let mut cfg = match &cli.config {
        Some(path) => VmConfig::from_json_file(path)?,
        None => VmConfig::default(),
    };
    if let Some(v) = cli.vcpus {
        cfg.machine.vcpu_count = v;
    }
    if let Some(m) = cli.mem_mib {
        cfg.machine.mem_size_mib = m;
    }
    if let Some(kernel) = &cli.kernel {
        cfg.boot_source = Some(BootSourceConfig {
            kernel_image_path: kernel.clone(),
            initrd_path: cli.initrd.clone(),
            boot_args: cli.cmdline.clone(),
        });
    } else if cli.initrd.is_some() || cli.cmdline.is_some() {
        let boot = cfg
            .boot_source
            .as_mut()
            .context("--initrd and --cmdline need a kernel (--kernel or the config file)")?;
        if cli.initrd.is_some() {
            boot.initrd_path = cli.initrd.clone();
        }
        if cli.cmdline.is_some() {
            boot.boot_args = cli.cmdline.clone();
        }
    }
    for (i, spec) in cli.drives.iter().enumerate() {
        let (path, ro) = match spec.strip_suffix(",ro") {
            Some(p) => (p, true),
            None => (spec.as_str(), false),
        };
        cfg.drives.push(DriveConfig {
            drive_id: format!("drive{i}"),
            path_on_host: path.into(),
            is_read_only: ro,
        });
    }
    if let Some(s) = &cli.serial {
        cfg.serial = match s.as_str() {
            "stdout" => SerialConfig::Stdout,
            "off" => SerialConfig::Off,
            other => match other.strip_prefix("file:") {
                Some(p) => SerialConfig::File(p.into()),
                None => anyhow::bail!("--serial must be stdout, off or file:PATH, not {other:?}"),
            },
        };
    }
    for (i, spec) in cli.nets.iter().enumerate() {
        let (tap, mac) = match spec.split_once(',') {
            Some((t, m)) => (t, Some(m.to_owned())),
            None => (spec.as_str(), None),
        };
        cfg.net.push(NetConfig {
            iface_id: format!("eth{i}"),
            host_dev_name: tap.to_owned(),
            guest_mac: mac,
        });
    }
    if cli.exit_on_port.is_some() {
        cfg.exit_on_port = cli.exit_on_port;
    }
    if let Some(spec) = &cli.vsock {
        let (cid, path) = spec
            .split_once(',')
            .context("--vsock must be CID,UDS_PATH")?;
        cfg.vsock = Some(VsockConfig {
            guest_cid: cid
                .parse()
                .with_context(|| format!("--vsock CID {cid:?} is not a number"))?,
            uds_path: path.into(),
        });
    }
    Ok(cfg)
}

fn run() -> anyhow::Result<ExitCode> {
    let t0 = std::time::Instant::now();
    // Without RUST_LOG, a fixed level: parsing an EnvFilter touches (and keeps resident) a lot
    // of code for nothing.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    let cfg = resolve(&cli)?;
    if cli.print_config {
        println!("{}", serde_json::to_string_pretty(&cfg)?);
        return Ok(ExitCode::SUCCESS);
    }
    if cfg.boot_source.is_none() {
        anyhow::bail!("no kernel: pass --kernel or a config file with a boot-source");
    }
    debug!(us = t0.elapsed().as_micros(), "configuration resolved");
    let mut vmm = build_vm(&cfg, None).context("could not build the VM")?;
    debug!(us = t0.elapsed().as_micros(), "VM built");
    install_stop_handler(vmm.stop_evt()?)?;
    // Everything privileged is open now (/dev/kvm, taps, drives, sockets). No other thread
    // exists yet, so every thread started from here on inherits the empty capability sets.
    privileges::drop_capabilities().context("could not drop capabilities")?;
    debug!(us = t0.elapsed().as_micros(), "capabilities dropped");
    seccomp::set_enabled(!cli.no_seccomp);
    vmm.start().context("could not start the vCPUs")?;
    debug!(us = t0.elapsed().as_micros(), "vCPUs started");
    if !cli.no_seccomp {
        seccomp::confine_current_thread(seccomp::ThreadKind::Vmm)
            .context("could not confine the VMM thread")?;
    }
    let code = match vmm.wait(None).context("VM failed")? {
        VmmExit::Reset => status::RESET,
        VmmExit::ExitPort(_) => status::POWER_OFF,
        VmmExit::Stopped => status::SIGNALLED,
        VmmExit::Timeout => status::ERROR,
        VmmExit::VcpuExited { id, reason } => {
            eprintln!("berth-vmm: vCPU {id} stopped: {reason:?}");
            match reason {
                VcpuExitReason::Halted => status::POWER_OFF,
                VcpuExitReason::Shutdown => status::TRIPLE_FAULT,
                _ => status::VCPU_FAILED,
            }
        }
    };
    Ok(ExitCode::from(code))
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-vmm: {e:#}");
            ExitCode::from(status::ERROR)
        }
    }
}
