//! vCPUs: one thread each, running KVM_RUN and dispatching port I/O and MMIO exits to the buses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;

use kvm_bindings::{kvm_regs, kvm_sregs, CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use tracing::{debug, warn};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::vm::Vm;
use crate::arch::{cpuid, lapic, msr};
use crate::devices::Bus;

/// Offset from SIGRTMIN of the signal used to kick vCPU threads out of KVM_RUN.
const VCPU_KICK_SIGNAL_OFFSET: i32 = 0;

/// Errors of [`Vcpu`].
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("could not create vCPU {id}")]
    Create {
        /// vCPU index.
        id: u8,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A register ioctl failed.
    #[error("could not {what} of vCPU {id}")]
    Regs {
        /// What was being done.
        what: &'static str,
        /// vCPU index.
        id: u8,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The boot MSR list could not be built.
    #[error("could not build the boot MSR list")]
    MsrList(#[source] vmm_sys_util::fam::Error),
    /// KVM set fewer boot MSRs than asked.
    #[error("KVM set {set} of the {wanted} boot MSRs of vCPU {id}")]
    MsrsRefused {
        /// vCPU index.
        id: u8,
        /// How many KVM set.
        set: usize,
        /// How many were asked.
        wanted: usize,
    },
    /// The kick signal handler could not be installed.
    #[error("could not install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// The vCPU thread could not be started.
    #[error("could not start the thread of vCPU {id}")]
    Spawn {
        /// vCPU index.
        id: u8,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Why a vCPU thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuExitReason {
    /// The VMM asked it to stop.
    Stopped,
    /// The guest executed `hlt` with interrupts off (KVM_EXIT_HLT).
    Halted,
    /// Triple fault or similar (KVM_EXIT_SHUTDOWN).
    Shutdown,
    /// A system event (PSCI/ACPI reset or shutdown).
    SystemEvent(u32),
    /// KVM could not run the vCPU.
    Failed(String),
}

/// One vCPU, configured but not yet running.
#[derive(Debug)]
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    pio_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(SIGRTMIN() + VCPU_KICK_SIGNAL_OFFSET, kick_handler)
            .map_err(VcpuError::Signal);
    });
    result
}

impl Vcpu {
    /// Creates vCPU `id` of `count` with `cpuid` (the host-supported CPUID, see
    /// [`Vm::supported_cpuid`]) adjusted for it ([`cpuid::normalize`]), the boot MSRs
    /// ([`msr::BOOT_MSRS`]) and its local APIC's LINT0/LINT1 ([`lapic::set_lint`]).
    pub fn new(
        vm: &Vm,
        id: u8,
        count: u8,
        cpuid: &CpuId,
        pio_bus: Arc<Bus>,
        mmio_bus: Arc<Bus>,
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Create { id, source })?;
        let vcpu = Self {
            id,
            fd,
            pio_bus,
            mmio_bus,
        };
        let mut cpuid = cpuid.clone();
        cpuid::normalize(cpuid.as_mut_slice(), id, count);
        vcpu.fd
            .set_cpuid2(&cpuid)
            .map_err(|source| vcpu.regs_err("set CPUID", source))?;
        vcpu.set_boot_msrs()?;
        vcpu.set_lint()?;
        Ok(vcpu)
    }

    fn set_boot_msrs(&self) -> Result<(), VcpuError> {
        let entries = msr::boot_msr_entries();
        let msrs = Msrs::from_entries(&entries).map_err(VcpuError::MsrList)?;
        let set = self
            .fd
            .set_msrs(&msrs)
            .map_err(|source| self.regs_err("set boot MSRs", source))?;
        if set != entries.len() {
            return Err(VcpuError::MsrsRefused {
                id: self.id,
                set,
                wanted: entries.len(),
            });
        }
        Ok(())
    }

    fn set_lint(&self) -> Result<(), VcpuError> {
        let mut state = self
            .fd
            .get_lapic()
            .map_err(|source| self.regs_err("read the local APIC", source))?;
        lapic::set_lint(&mut state, self.id == 0);
        self.fd
            .set_lapic(&state)
            .map_err(|source| self.regs_err("set the local APIC", source))
    }

    fn regs_err(&self, what: &'static str, source: kvm_ioctls::Error) -> VcpuError {
        VcpuError::Regs {
            what,
            id: self.id,
            source,
        }
    }

    /// vCPU index.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// General-purpose registers.
    pub fn regs(&self) -> Result<kvm_regs, VcpuError> {
        self.fd
            .get_regs()
            .map_err(|source| self.regs_err("read registers", source))
    }

    /// Sets the general-purpose registers.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<(), VcpuError> {
        self.fd
            .set_regs(regs)
            .map_err(|source| self.regs_err("set registers", source))
    }

    /// Special registers (segments, control registers, EFER).
    pub fn sregs(&self) -> Result<kvm_sregs, VcpuError> {
        self.fd
            .get_sregs()
            .map_err(|source| self.regs_err("read special registers", source))
    }

    /// Sets the special registers.
    pub fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), VcpuError> {
        self.fd
            .set_sregs(sregs)
            .map_err(|source| self.regs_err("set special registers", source))
    }

    /// The underlying KVM vCPU.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Starts the vCPU thread. It runs until `stop` is set and the thread is kicked, or the guest
    /// does something that ends it; then it signals `exit_evt`.
    pub fn start(self, stop: Arc<AtomicBool>, exit_evt: EventFd) -> Result<VcpuHandle, VcpuError> {
        install_kick_handler()?;
        let id = self.id;
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                let confined = if crate::seccomp::enabled() {
                    crate::seccomp::confine_current_thread(crate::seccomp::ThreadKind::Vcpu)
                } else {
                    Ok(())
                };
                debug!(vcpu = id, "vCPU thread runs");
                let reason = match confined {
                    Ok(()) => self.run_loop(&stop),
                    Err(e) => VcpuExitReason::Failed(format!("{e}")),
                };
                debug!(vcpu = id, ?reason, "vCPU thread ends");
                if let Err(e) = exit_evt.write(1) {
                    warn!(vcpu = id, error = %e, "could not signal vCPU exit");
                }
                reason
            })
            .map_err(|source| VcpuError::Spawn { id, source })?;
        Ok(VcpuHandle { id, handle })
    }

    fn run_loop(mut self, stop: &AtomicBool) -> VcpuExitReason {
        loop {
            if stop.load(Ordering::Acquire) {
                return VcpuExitReason::Stopped;
            }
            match self.fd.run() {
                Ok(exit) => match exit {
                    VcpuExit::IoIn(port, data) => {
                        if !self.pio_bus.read(u64::from(port), data) {
                            data.fill(0xff);
                        }
                    }
                    VcpuExit::IoOut(port, data) => {
                        if !self.pio_bus.write(u64::from(port), data) {
                            debug!(port, "write to unclaimed port");
                        }
                    }
                    VcpuExit::MmioRead(addr, data) => {
                        if !self.mmio_bus.read(addr, data) {
                            data.fill(0);
                        }
                    }
                    VcpuExit::MmioWrite(addr, data) => {
                        if !self.mmio_bus.write(addr, data) {
                            debug!(addr, "write to unclaimed MMIO address");
                        }
                    }
                    VcpuExit::Hlt => return VcpuExitReason::Halted,
                    VcpuExit::Shutdown => return VcpuExitReason::Shutdown,
                    VcpuExit::SystemEvent(kind, _) => return VcpuExitReason::SystemEvent(kind),
                    VcpuExit::Intr => {}
                    other => return VcpuExitReason::Failed(format!("{other:?}")),
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => return VcpuExitReason::Failed(format!("KVM_RUN: {e}")),
            }
        }
    }
}

/// A running vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    id: u8,
    handle: JoinHandle<VcpuExitReason>,
}

impl VcpuHandle {
    /// vCPU index.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Interrupts KVM_RUN so the thread sees the stop flag.
    pub fn kick(&self) {
        // ESRCH once the thread is gone: nothing to kick.
        let _ = self.handle.kill(SIGRTMIN() + VCPU_KICK_SIGNAL_OFFSET);
    }

    /// Waits for the thread; the caller sets the stop flag and kicks first.
    pub fn join(self) -> VcpuExitReason {
        self.handle
            .join()
            .unwrap_or_else(|_| VcpuExitReason::Failed("vCPU thread panicked".into()))
    }
}
