//! `berth-vmm`: boots one VM from a JSON configuration file or from flags.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth_vmm::vmm_config::{
    BootSourceConfig, DriveConfig, NetConfig, SerialConfig, VmConfig, VsockConfig,
};
use berth_vmm::{build_vm, VmmExit};
use clap::Parser;

/// berth's built-in VMM: one KVM VM with virtio-blk drives and a serial console.
#[derive(Debug, Parser)]
#[command(name = "berth-vmm", version)]
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
    /// Print the resolved configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cfg = resolve(&cli)?;
    if cli.print_config {
        println!("{}", serde_json::to_string_pretty(&cfg)?);
        return Ok(ExitCode::SUCCESS);
    }
    if cfg.boot_source.is_none() {
        anyhow::bail!("no kernel: pass --kernel or a config file with a boot-source");
    }
    let mut vmm = build_vm(&cfg, None).context("could not build the VM")?;
    vmm.start().context("could not start the vCPUs")?;
    match vmm.wait(None).context("VM failed")? {
        VmmExit::Reset => Ok(ExitCode::SUCCESS),
        VmmExit::VcpuExited { id, reason } => {
            eprintln!("berth-vmm: vCPU {id} stopped: {reason:?}");
            Ok(ExitCode::FAILURE)
        }
        VmmExit::Timeout => Ok(ExitCode::FAILURE),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-vmm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
