//! The one recipe that turns a [`VmConfig`] into a ready-to-run [`Vmm`].
//!
//! Order (fixed): validate config → guest memory → KVM VM, memory slots, irqchip, PIT → legacy
//! devices on the PIO bus, virtio-mmio devices on the MMIO bus (with ioeventfd/irqfd) → kernel,
//! initramfs, command line, boot_params → vCPUs. Nothing runs until [`Vmm::start`], which starts
//! the event thread (device activation, see [`crate::devices::virtio::mmio`]) and then one thread
//! per vCPU.

use std::fs::OpenOptions;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use tracing::{debug, warn};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::mptable;
use crate::devices::legacy::exit_port::ExitPort;
use crate::devices::legacy::{i8042, serial, SerialDevice, SerialOutput, I8042};
use crate::devices::virtio::block::{Block, BlockError, BlockMetrics};
use crate::devices::virtio::mmio::{self, MmioTransport, MMIO_WINDOW_SIZE};
use crate::devices::virtio::net::{Net, NetError, NetMetrics};
use crate::devices::virtio::vsock::{Vsock, VsockError, VsockMetrics};
use crate::devices::virtio::VirtioDevice;
use crate::devices::{Bus, BusError};
use crate::loader::{self, BootInfo, LoaderError, MmioDeviceInfo};
use crate::memory::{self, GuestMemory, MemoryError, MMIO_MEM_START};
use crate::seccomp::{self, ThreadKind};
use crate::vmm_config::{ConfigError, SerialConfig, VmConfig};
use crate::vstate::vcpu::VcpuHandle;
use crate::vstate::{Vcpu, VcpuError, VcpuExitReason, Vm, VmError};

/// First GSI given to virtio-mmio devices (legacy devices use 0..=4).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Last usable GSI on the IOAPIC.
pub const MAX_IRQ: u32 = 23;

/// Errors of [`build_vm`] and [`Vmm`].
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error("invalid VM configuration")]
    Config(#[source] ConfigError),
    /// Guest memory could not be created.
    #[error("could not create guest memory")]
    Memory(#[source] MemoryError),
    /// The KVM VM could not be set up.
    #[error("could not set up the KVM VM")]
    Vm(#[source] VmError),
    /// An eventfd could not be created.
    #[error("could not create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// The serial output file could not be opened.
    #[error("could not open the serial output file")]
    SerialFile(#[source] std::io::Error),
    /// A device could not be placed on a bus.
    #[error("could not place a device on a bus")]
    Bus(#[source] BusError),
    /// A legacy device's irqfd could not be registered.
    #[error("could not register a legacy device interrupt")]
    LegacyIrq(#[source] kvm_ioctls::Error),
    /// A drive could not be opened.
    #[error("could not set up a drive")]
    Block(#[source] BlockError),
    /// A network interface could not be set up.
    #[error("could not set up a network interface")]
    Net(#[source] NetError),
    /// The vsock device could not be set up.
    #[error("could not set up the vsock device")]
    Vsock(#[source] VsockError),
    /// A virtio-mmio transport could not be created.
    #[error("could not create a virtio-mmio transport")]
    Mmio(#[source] mmio::MmioError),
    /// A virtio-mmio transport could not be wired to KVM.
    #[error("could not wire a virtio-mmio device to KVM")]
    MmioWiring(#[source] mmio::kvm::KvmWiringError),
    /// More devices than interrupt lines.
    #[error("too many virtio devices: out of interrupt lines")]
    OutOfIrqs,
    /// The MP table could not be written.
    #[error("could not write the MP table")]
    MpTable(#[source] mptable::MpTableError),
    /// The kernel could not be loaded.
    #[error("could not load the kernel")]
    Loader(#[source] LoaderError),
    /// A vCPU could not be created, configured or started.
    #[error("vCPU setup failed")]
    Vcpu(#[source] VcpuError),
    /// The VM was already started.
    #[error("the VM was already started")]
    AlreadyStarted,
    /// Waiting for VM events failed.
    #[error("could not wait for VM events")]
    Wait(#[source] std::io::Error),
    /// The event thread could not be started.
    #[error("could not start the event thread")]
    EventThread(#[source] std::io::Error),
    /// The event thread could not install its seccomp filter.
    #[error("could not confine the event thread")]
    EventThreadConfine(#[source] crate::seccomp::SeccompError),
}

/// A virtio-blk device as attached to the VM.
#[derive(Debug, Clone)]
pub struct AttachedBlock {
    /// Drive id from the configuration.
    pub drive_id: String,
    /// MMIO base of its window.
    pub mmio_base: u64,
    /// Its GSI.
    pub gsi: u32,
    /// The transport (registers, interrupt status).
    pub transport: Arc<Mutex<MmioTransport>>,
    /// The device's counters.
    pub metrics: Arc<BlockMetrics>,
}

/// A virtio-net device as attached to the VM.
#[derive(Debug, Clone)]
pub struct AttachedNet {
    /// Interface id from the configuration.
    pub iface_id: String,
    /// MMIO base of its window.
    pub mmio_base: u64,
    /// Its GSI.
    pub gsi: u32,
    /// The transport (registers, interrupt status).
    pub transport: Arc<Mutex<MmioTransport>>,
    /// The device's counters.
    pub metrics: Arc<NetMetrics>,
}

/// The virtio-vsock device as attached to the VM.
#[derive(Debug, Clone)]
pub struct AttachedVsock {
    /// MMIO base of its window.
    pub mmio_base: u64,
    /// Its GSI.
    pub gsi: u32,
    /// The transport (registers, interrupt status).
    pub transport: Arc<Mutex<MmioTransport>>,
    /// The device's counters.
    pub metrics: Arc<VsockMetrics>,
}

/// Why a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmExit {
    /// The guest asked for a reset through the i8042 (`reboot=k`): orderly shutdown.
    Reset,
    /// A vCPU thread ended on its own.
    VcpuExited {
        /// The vCPU.
        id: u8,
        /// Why.
        reason: VcpuExitReason,
    },
    /// The wait timed out; the VM was stopped.
    Timeout,
    /// The guest wrote this value to the exit port (`exit_on_port`).
    ExitPort(u32),
    /// [`Vmm::stop_evt`] was signalled (SIGTERM in the binary); the VM was stopped.
    Stopped,
}

/// A built VM and its devices.
pub struct Vmm {
    // Field order matters for drop: vCPUs and devices before the VM, memory last.
    vcpu_handles: Vec<VcpuHandle>,
    vcpus: Vec<Vcpu>,
    blocks: Vec<AttachedBlock>,
    nets: Vec<AttachedNet>,
    vsock: Option<AttachedVsock>,
    serial: Arc<Mutex<SerialDevice>>,
    pio_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    stop: Arc<AtomicBool>,
    reset_evt: EventFd,
    vcpu_exit_evt: EventFd,
    port_exit_evt: EventFd,
    port_exit_value: Arc<AtomicU32>,
    stop_evt: EventFd,
    activate_evt: EventFd,
    event_thread: Option<EventThread>,
    boot: Option<BootInfo>,
    vm: Vm,
    mem: GuestMemory,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("vcpus", &self.vcpus.len())
            .field("running", &self.vcpu_handles.len())
            .field("blocks", &self.blocks)
            .field("nets", &self.nets)
            .field("vsock", &self.vsock)
            .field("pio_bus", &self.pio_bus)
            .field("mmio_bus", &self.mmio_bus)
            .finish_non_exhaustive()
    }
}

fn serial_output(cfg: &SerialConfig) -> Result<SerialOutput, BuildError> {
    Ok(match cfg {
        SerialConfig::Stdout => SerialOutput::Stdout,
        SerialConfig::Off => SerialOutput::Sink,
        SerialConfig::File(path) => SerialOutput::File(Arc::new(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(BuildError::SerialFile)?,
        ))),
    })
}

fn eventfd() -> Result<EventFd, BuildError> {
    EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)
}

fn attach_legacy(
    vm: &VmFd,
    pio: &mut Bus,
    out: SerialOutput,
    reset_evt: &EventFd,
) -> Result<Arc<Mutex<SerialDevice>>, BuildError> {
    let com1_irq = eventfd()?;
    vm.register_irqfd(&com1_irq, serial::COM1_IRQ)
        .map_err(BuildError::LegacyIrq)?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(com1_irq, out)));
    pio.insert(serial.clone(), serial::COM1_PORT, serial::COM1_PORT_LEN)
        .map_err(BuildError::Bus)?;
    let reset = reset_evt.try_clone().map_err(BuildError::EventFd)?;
    pio.insert(
        Arc::new(Mutex::new(I8042::new(reset))),
        i8042::I8042_PORT,
        i8042::I8042_PORT_LEN,
    )
    .map_err(BuildError::Bus)?;
    Ok(serial)
}

/// Places virtio-mmio devices: windows from [`MMIO_MEM_START`], 4 KiB apart, GSIs from
/// [`VIRTIO_IRQ_BASE`], in attachment order.
struct MmioPlacer<'a> {
    vm: &'a VmFd,
    activate_evt: &'a EventFd,
    mem: &'a GuestMemory,
    bus: &'a mut Bus,
    next: u64,
    placed: Vec<MmioDeviceInfo>,
}

impl MmioPlacer<'_> {
    fn attach(
        &mut self,
        device: Box<dyn VirtioDevice>,
    ) -> Result<(u64, u32, Arc<Mutex<MmioTransport>>), BuildError> {
        let gsi = u32::try_from(self.next)
            .ok()
            .and_then(|i| VIRTIO_IRQ_BASE.checked_add(i))
            .filter(|&g| g <= MAX_IRQ)
            .ok_or(BuildError::OutOfIrqs)?;
        let mmio_base = MMIO_MEM_START + self.next * MMIO_WINDOW_SIZE;
        let mut transport =
            MmioTransport::new(self.mem.clone(), device, eventfd()?).map_err(BuildError::Mmio)?;
        transport.set_activate_evt(self.activate_evt.try_clone().map_err(BuildError::EventFd)?);
        let transport = Arc::new(Mutex::new(transport));
        mmio::kvm::register(self.vm, &transport, mmio_base, gsi).map_err(BuildError::MmioWiring)?;
        self.bus
            .insert(transport.clone(), mmio_base, MMIO_WINDOW_SIZE)
            .map_err(BuildError::Bus)?;
        self.next += 1;
        self.placed.push(MmioDeviceInfo {
            base: mmio_base,
            size: MMIO_WINDOW_SIZE,
            irq: gsi,
        });
        Ok((mmio_base, gsi, transport))
    }
}

fn attach_blocks(
    cfg: &VmConfig,
    placer: &mut MmioPlacer,
) -> Result<Vec<AttachedBlock>, BuildError> {
    let mut out = Vec::new();
    for drive in &cfg.drives {
        let block = Block::new(drive).map_err(BuildError::Block)?;
        let metrics = block.metrics();
        let (mmio_base, gsi, transport) = placer.attach(Box::new(block))?;
        out.push(AttachedBlock {
            drive_id: drive.drive_id.clone(),
            mmio_base,
            gsi,
            transport,
            metrics,
        });
    }
    Ok(out)
}

fn attach_nets(cfg: &VmConfig, placer: &mut MmioPlacer) -> Result<Vec<AttachedNet>, BuildError> {
    let mut out = Vec::new();
    for ncfg in &cfg.net {
        let net =
            Net::new(&ncfg.iface_id, &ncfg.host_dev_name, ncfg.mac()).map_err(BuildError::Net)?;
        let metrics = net.metrics();
        let (mmio_base, gsi, transport) = placer.attach(Box::new(net))?;
        out.push(AttachedNet {
            iface_id: ncfg.iface_id.clone(),
            mmio_base,
            gsi,
            transport,
            metrics,
        });
    }
    Ok(out)
}

fn attach_vsock(
    cfg: &VmConfig,
    placer: &mut MmioPlacer,
) -> Result<Option<AttachedVsock>, BuildError> {
    let Some(vcfg) = &cfg.vsock else {
        return Ok(None);
    };
    let vsock = Vsock::new(vcfg.guest_cid, &vcfg.uds_path).map_err(BuildError::Vsock)?;
    let metrics = vsock.metrics();
    let (mmio_base, gsi, transport) = placer.attach(Box::new(vsock))?;
    Ok(Some(AttachedVsock {
        mmio_base,
        gsi,
        transport,
        metrics,
    }))
}

/// What [`build_devices_and_boot`] sets up.
struct Setup {
    activate_evt: EventFd,
    serial: Arc<Mutex<SerialDevice>>,
    reset_evt: EventFd,
    port_exit_evt: EventFd,
    port_exit_value: Arc<AtomicU32>,
    blocks: Vec<AttachedBlock>,
    nets: Vec<AttachedNet>,
    vsock: Option<AttachedVsock>,
    boot: Option<BootInfo>,
    pio_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
}

/// irqchip and PIT, legacy and virtio devices, kernel: everything between the VM and its vCPUs.
fn build_devices_and_boot(
    cfg: &VmConfig,
    serial_out: Option<SerialOutput>,
    vm: &Vm,
    mem: &GuestMemory,
) -> Result<Setup, BuildError> {
    vm.setup_irqchip().map_err(BuildError::Vm)?;
    debug!("irqchip and PIT created");

    let reset_evt = eventfd()?;
    let mut pio_bus = Bus::new();
    let out = match serial_out {
        Some(out) => out,
        None => serial_output(&cfg.serial)?,
    };
    let serial = attach_legacy(vm.fd(), &mut pio_bus, out, &reset_evt)?;
    let port_exit_evt = eventfd()?;
    let port_exit_value = Arc::new(AtomicU32::new(0));
    if let Some(port) = cfg.exit_on_port {
        let dev = ExitPort::new(
            port_exit_evt.try_clone().map_err(BuildError::EventFd)?,
            port_exit_value.clone(),
        );
        pio_bus
            .insert(Arc::new(Mutex::new(dev)), u64::from(port), 1)
            .map_err(BuildError::Bus)?;
    }
    let mut mmio_bus = Bus::new();
    let activate_evt = eventfd()?;
    let mut placer = MmioPlacer {
        vm: vm.fd(),
        activate_evt: &activate_evt,
        mem,
        bus: &mut mmio_bus,
        next: 0,
        placed: Vec::new(),
    };
    let blocks = attach_blocks(cfg, &mut placer)?;
    let nets = attach_nets(cfg, &mut placer)?;
    let vsock = attach_vsock(cfg, &mut placer)?;
    let devices = placer.placed;

    mptable::setup_mptable(mem, cfg.machine.vcpu_count).map_err(BuildError::MpTable)?;
    let boot = match &cfg.boot_source {
        Some(boot_cfg) => {
            Some(loader::load_linux(mem, boot_cfg, &devices).map_err(BuildError::Loader)?)
        }
        None => None,
    };
    Ok(Setup {
        activate_evt,
        serial,
        reset_evt,
        port_exit_evt,
        port_exit_value,
        blocks,
        nets,
        vsock,
        boot,
        pio_bus: Arc::new(pio_bus),
        mmio_bus: Arc::new(mmio_bus),
    })
}

/// Builds a VM from `cfg` with the given serial output (overriding `cfg.serial` when `Some`).
///
/// Without a boot source the vCPUs are left in their reset state for the caller to set up
/// (harness guests); with one, the kernel is loaded and vCPU 0 points at its entry.
pub fn build_vm(cfg: &VmConfig, serial_out: Option<SerialOutput>) -> Result<Vmm, BuildError> {
    let t0 = Instant::now();
    cfg.validate().map_err(BuildError::Config)?;

    let mem = memory::create_guest_memory(cfg.machine.mem_size_mib).map_err(BuildError::Memory)?;

    let vm = Vm::new().map_err(BuildError::Vm)?;
    // Order matters for start-up time: registering the memory slot first, on the fresh VM, then
    // the irqchip (whose IRQ routing waits for an SRCU grace period), measured fastest here by
    // far (the other orders wait for full grace periods, several ms each).
    vm.register_memory(&mem).map_err(BuildError::Vm)?;
    debug!(
        us = t0.elapsed().as_micros(),
        "VM created, memory registered"
    );
    let setup = build_devices_and_boot(cfg, serial_out, &vm, &mem);
    debug!(us = t0.elapsed().as_micros(), "devices and kernel set up");
    let cpuid = vm.supported_cpuid().map_err(BuildError::Vm)?;
    let Setup {
        activate_evt,
        serial,
        reset_evt,
        port_exit_evt,
        port_exit_value,
        blocks,
        nets,
        vsock,
        boot,
        pio_bus,
        mmio_bus,
    } = setup?;

    let mut vcpus = Vec::new();
    for id in 0..cfg.machine.vcpu_count {
        let vcpu = Vcpu::new(
            &vm,
            id,
            cfg.machine.vcpu_count,
            &cpuid,
            pio_bus.clone(),
            mmio_bus.clone(),
        )
        .map_err(BuildError::Vcpu)?;
        if let Some(boot) = &boot {
            loader::configure_vcpu(&vcpu, &mem, boot).map_err(BuildError::Loader)?;
        }
        vcpus.push(vcpu);
    }
    debug!(us = t0.elapsed().as_micros(), "vCPUs created");

    Ok(Vmm {
        vcpu_handles: Vec::new(),
        vcpus,
        blocks,
        nets,
        vsock,
        serial,
        pio_bus,
        mmio_bus,
        stop: Arc::new(AtomicBool::new(false)),
        reset_evt,
        vcpu_exit_evt: eventfd()?,
        port_exit_evt,
        port_exit_value,
        stop_evt: eventfd()?,
        activate_evt,
        event_thread: None,
        boot,
        vm,
        mem,
    })
}

impl Vmm {
    /// Guest memory.
    pub fn guest_memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// The KVM VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// vCPUs not yet started (to adjust registers before [`Vmm::start`]).
    pub fn vcpus(&self) -> &[Vcpu] {
        &self.vcpus
    }

    /// Attached virtio-blk devices, in configuration order.
    pub fn blocks(&self) -> &[AttachedBlock] {
        &self.blocks
    }

    /// Attached virtio-net devices, in configuration order.
    pub fn nets(&self) -> &[AttachedNet] {
        &self.nets
    }

    /// The virtio-vsock device, if configured.
    pub fn vsock(&self) -> Option<&AttachedVsock> {
        self.vsock.as_ref()
    }

    /// COM1.
    pub fn serial(&self) -> &Arc<Mutex<SerialDevice>> {
        &self.serial
    }

    /// Where the kernel was loaded, when there is a boot source.
    pub fn boot_info(&self) -> Option<&BootInfo> {
        self.boot.as_ref()
    }

    /// An eventfd that makes [`Vmm::wait`] stop the VM and return [`VmmExit::Stopped`] when
    /// written (the binary writes it from its SIGTERM handler).
    pub fn stop_evt(&self) -> Result<EventFd, BuildError> {
        self.stop_evt.try_clone().map_err(BuildError::EventFd)
    }

    /// Every virtio-mmio transport, in placement order.
    fn transports(&self) -> Vec<Arc<Mutex<MmioTransport>>> {
        let blocks = self.blocks.iter().map(|b| b.transport.clone());
        let nets = self.nets.iter().map(|n| n.transport.clone());
        let vsock = self.vsock.iter().map(|v| v.transport.clone());
        blocks.chain(nets).chain(vsock).collect()
    }

    /// Starts the event thread, then one thread per vCPU.
    pub fn start(&mut self) -> Result<(), BuildError> {
        if self.vcpus.is_empty() {
            return Err(BuildError::AlreadyStarted);
        }
        if self.event_thread.is_none() {
            let evt = self.activate_evt.try_clone().map_err(BuildError::EventFd)?;
            self.event_thread = Some(EventThread::start(evt, self.transports())?);
        }
        for vcpu in self.vcpus.drain(..) {
            let exit_evt = self
                .vcpu_exit_evt
                .try_clone()
                .map_err(BuildError::EventFd)?;
            let handle = vcpu
                .start(self.stop.clone(), exit_evt)
                .map_err(BuildError::Vcpu)?;
            self.vcpu_handles.push(handle);
        }
        Ok(())
    }

    /// Waits until the guest resets, a vCPU ends or `timeout` passes, then stops the VM.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<VmmExit, BuildError> {
        use std::os::fd::AsRawFd;
        const RESET: u64 = 0;
        const VCPU: u64 = 1;
        const PORT: u64 = 2;
        const STOP: u64 = 3;
        let epoll = Epoll::new().map_err(BuildError::Wait)?;
        epoll
            .ctl(
                ControlOperation::Add,
                self.reset_evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, RESET),
            )
            .map_err(BuildError::Wait)?;
        epoll
            .ctl(
                ControlOperation::Add,
                self.vcpu_exit_evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, VCPU),
            )
            .map_err(BuildError::Wait)?;
        for (fd, token) in [
            (self.port_exit_evt.as_raw_fd(), PORT),
            (self.stop_evt.as_raw_fd(), STOP),
        ] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(BuildError::Wait)?;
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut events = [EpollEvent::default(); 4];
        let exit = loop {
            let ms = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break VmmExit::Timeout;
                    }
                    i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
                }
                None => -1,
            };
            let n = match epoll.wait(ms, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BuildError::Wait(e)),
            };
            if events[..n].iter().any(|e| e.data() == STOP) {
                break VmmExit::Stopped;
            }
            if events[..n].iter().any(|e| e.data() == PORT) {
                break VmmExit::ExitPort(self.port_exit_value.load(Ordering::SeqCst));
            }
            if events[..n].iter().any(|e| e.data() == RESET) {
                break VmmExit::Reset;
            }
            if n > 0 {
                if let Some(pos) = self.vcpu_handles.iter().position(VcpuHandle::is_finished) {
                    let h = self.vcpu_handles.remove(pos);
                    let id = h.id();
                    break VmmExit::VcpuExited {
                        id,
                        reason: h.join(),
                    };
                }
            }
        };
        self.stop_vcpus();
        Ok(exit)
    }

    /// Stops and joins every vCPU thread.
    pub fn stop_vcpus(&mut self) {
        self.stop.store(true, Ordering::Release);
        // A kick can land just before a thread enters KVM_RUN; repeat until all have left.
        while self.vcpu_handles.iter().any(|h| !h.is_finished()) {
            for h in &self.vcpu_handles {
                h.kick();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for h in self.vcpu_handles.drain(..) {
            h.join();
        }
        // No vCPU is left to ask for an activation.
        if let Some(t) = self.event_thread.take() {
            t.stop();
        }
    }
}

/// The event thread: activates virtio devices when a vCPU's DRIVER_OK write asks for it, so that
/// device worker threads are started (and confined to their own filters) from here and never
/// from a vCPU thread. It is confined to [`ThreadKind::Vmm`]'s filter.
struct EventThread {
    handle: std::thread::JoinHandle<()>,
    stop_evt: EventFd,
}

impl EventThread {
    fn start(
        activate_evt: EventFd,
        transports: Vec<Arc<Mutex<MmioTransport>>>,
    ) -> Result<Self, BuildError> {
        let stop_evt = eventfd()?;
        let stop = stop_evt.try_clone().map_err(BuildError::EventFd)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name("vmm-event".into())
            .spawn(move || {
                let confined = if seccomp::enabled() {
                    seccomp::confine_current_thread(ThreadKind::Vmm)
                } else {
                    Ok(())
                };
                let ok = confined.is_ok();
                // The starter waits for this message.
                let _ = tx.send(confined);
                if ok {
                    if let Err(e) = event_loop(&activate_evt, &stop, &transports) {
                        warn!(error = %e, "event thread failed; no more device activations");
                    }
                }
            })
            .map_err(BuildError::EventThread)?;
        let confined = rx.recv();
        match confined {
            Ok(Ok(())) => Ok(Self { handle, stop_evt }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(BuildError::EventThreadConfine(e))
            }
            Err(_) => {
                let _ = handle.join();
                Err(BuildError::EventThread(std::io::Error::other(
                    "the event thread ended before it was confined",
                )))
            }
        }
    }

    fn stop(self) {
        if let Err(e) = self.stop_evt.write(1) {
            warn!(error = %e, "could not signal the event thread to stop");
            return;
        }
        if self.handle.join().is_err() {
            warn!("the event thread panicked");
        }
    }
}

fn event_loop(
    activate_evt: &EventFd,
    stop: &EventFd,
    transports: &[Arc<Mutex<MmioTransport>>],
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const ACTIVATE: u64 = 0;
    const STOP: u64 = 1;
    let epoll = Epoll::new()?;
    for (fd, token) in [
        (activate_evt.as_raw_fd(), ACTIVATE),
        (stop.as_raw_fd(), STOP),
    ] {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )?;
    }
    let mut events = [EpollEvent::default(); 2];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if events[..n].iter().any(|e| e.data() == STOP) {
            return Ok(());
        }
        if n > 0 {
            // Non-blocking: a wake with nothing to read only finds nothing pending.
            let _ = activate_evt.read();
            for t in transports {
                t.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .activate_pending();
            }
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.stop_vcpus();
    }
}
