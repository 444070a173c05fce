//! The virtio-mmio transport (virtio 1.2, 4.2.2, "modern" version 2 registers).
//!
//! [`MmioTransport`] is a plain state machine: register reads and writes go in, device
//! activation and resets come out. It knows nothing about KVM; [`kvm`] holds the thin wrapper
//! that wires its queue eventfds to KVM ioeventfds and its interrupt line to a KVM irqfd.
//!
//! Activation is deferred when the transport has an activation eventfd
//! ([`MmioTransport::set_activate_evt`], as the builder gives every transport): the DRIVER_OK
//! write, made on a vCPU thread, only marks the activation pending and signals the eventfd; the
//! VMM's event thread then calls [`MmioTransport::activate_pending`], which starts the device's
//! worker thread. So vCPU threads never create threads, and their seccomp filter forbids it.
//! Queue notifications that arrive in between stay latched in the queue eventfds.

use std::sync::{Arc, Mutex};

use tracing::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{status, ActivateContext, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::devices::BusDevice;
use crate::memory::GuestMemory;

/// Size of one device's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// "virt" in little endian.
pub const MMIO_MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern virtio-mmio version.
pub const MMIO_VERSION: u32 = 2;

/// Register offsets.
#[allow(missing_docs)]
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Errors of [`MmioTransport::new`].
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// A queue size advertised by the device is not a power of two in 1..=32768.
    #[error("device advertises an invalid queue size")]
    QueueSize(#[source] virtio_queue::Error),
    /// An eventfd could not be created.
    #[error("could not create an eventfd for the transport")]
    EventFd(#[source] std::io::Error),
}

/// One virtio device behind the virtio-mmio register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    queue_evts: Vec<EventFd>,
    queues: Vec<Queue>,
    /// A queue register got a value the queue refused; the queue cannot go live until reset.
    queue_invalid: Vec<bool>,
    device_status: u8,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    config_generation: u32,
    active: bool,
    /// QueueNotify writes that reached the transport (zero when KVM ioeventfd takes them).
    notify_exits: u64,
    /// Signalled to ask the event thread for an activation; `None` activates in place.
    activate_evt: Option<EventFd>,
    /// DRIVER_OK was accepted and the activation has not run yet.
    activation_pending: bool,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device.device_type())
            .field("status", &self.device_status)
            .field("acked_features", &self.acked_features)
            .field("active", &self.active)
            .finish()
    }
}

impl MmioTransport {
    /// Puts `device` behind a fresh transport; the interrupt line signals `irq_evt`.
    pub fn new(
        mem: GuestMemory,
        device: Box<dyn VirtioDevice>,
        irq_evt: EventFd,
    ) -> Result<Self, MmioError> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).map_err(MmioError::QueueSize))
            .collect::<Result<Vec<_>, _>>()?;
        let queue_evts = queues
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(MmioError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irq_evt)),
            queue_evts,
            queue_invalid: vec![false; queues.len()],
            queues,
            device_status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            config_generation: 0,
            active: false,
            notify_exits: 0,
            activate_evt: None,
            activation_pending: false,
        })
    }

    /// The interrupt line (shared with the device once active).
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// The per-queue notification eventfds.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// Current device status byte.
    pub fn device_status(&self) -> u8 {
        self.device_status
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// QueueNotify writes that trapped to the transport instead of going to an ioeventfd.
    pub fn notify_exits(&self) -> u64 {
        self.notify_exits
    }

    /// Whether the device was activated (DRIVER_OK accepted).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Defers activation: on DRIVER_OK, `evt` is signalled and the device is activated only
    /// when [`MmioTransport::activate_pending`] is called (on the VMM's event thread).
    pub fn set_activate_evt(&mut self, evt: EventFd) {
        self.activate_evt = Some(evt);
    }

    /// Whether DRIVER_OK was accepted and the deferred activation has not run yet.
    pub fn activation_pending(&self) -> bool {
        self.activation_pending
    }

    /// Runs a deferred activation, if one is pending and the driver has not reset or failed the
    /// device since it asked for it.
    pub fn activate_pending(&mut self) {
        if !std::mem::take(&mut self.activation_pending) {
            return;
        }
        if !self.active
            && self.status_is(
                status::DRIVER_OK,
                status::FAILED | status::DEVICE_NEEDS_RESET,
            )
        {
            self.activate();
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only between FEATURES_OK and DRIVER_OK.
    fn queue_config_allowed(&self) -> bool {
        self.status_is(status::FEATURES_OK, status::DRIVER_OK | status::FAILED)
    }

    fn status_is(&self, set: u8, clear: u8) -> bool {
        self.device_status & (set | clear) == set
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_invalid.fill(false);
        self.activation_pending = false;
        // Drain notifications that arrived for the old queues.
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        self.interrupt.clear();
        self.device_status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
    }

    /// Reads a register; `data` is the access (1, 2, 4 or 8 bytes).
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 {
            warn!(
                offset,
                len = data.len(),
                "virtio-mmio: register read of wrong width"
            );
            data.fill(0);
            return;
        }
        let value: u32 = match offset {
            reg::MAGIC_VALUE => MMIO_MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => 0,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.avail_features() as u32,
                1 => (self.device.avail_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.device_status.into(),
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                debug!(offset, "virtio-mmio: read of unknown register");
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Writes a register.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            if self.status_is(status::DRIVER, status::FAILED) {
                self.device.write_config(offset - reg::CONFIG, data);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn!(
                offset,
                len = data.len(),
                "virtio-mmio: register write of wrong width"
            );
            return;
        };
        let v = u32::from_le_bytes(bytes);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                if !self.status_is(status::DRIVER, status::FEATURES_OK | status::FAILED) {
                    warn!("virtio-mmio: driver features written outside negotiation");
                    return;
                }
                match self.driver_features_sel {
                    0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(v),
                    1 => {
                        self.acked_features =
                            (self.acked_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => {
                if !self.queue_config_allowed() {
                    warn!(
                        offset,
                        "virtio-mmio: queue register written in the wrong state"
                    );
                    return;
                }
                let idx = self.queue_sel as usize;
                let Some(q) = self.queues.get_mut(idx) else {
                    warn!("virtio-mmio: queue register written for a queue that does not exist");
                    return;
                };
                let low = |old: u64| (old & !0xffff_ffff) | u64::from(v);
                let high = |old: u64| (old & 0xffff_ffff) | (u64::from(v) << 32);
                let res = match offset {
                    reg::QUEUE_NUM => u16::try_from(v)
                        .map_err(|_| virtio_queue::Error::InvalidSize)
                        .and_then(|size| q.try_set_size(size)),
                    reg::QUEUE_READY => {
                        q.set_ready(v == 1);
                        Ok(())
                    }
                    reg::QUEUE_DESC_LOW => {
                        q.try_set_desc_table_address(GuestAddress(low(q.desc_table())))
                    }
                    reg::QUEUE_DESC_HIGH => {
                        q.try_set_desc_table_address(GuestAddress(high(q.desc_table())))
                    }
                    reg::QUEUE_DRIVER_LOW => {
                        q.try_set_avail_ring_address(GuestAddress(low(q.avail_ring())))
                    }
                    reg::QUEUE_DRIVER_HIGH => {
                        q.try_set_avail_ring_address(GuestAddress(high(q.avail_ring())))
                    }
                    reg::QUEUE_DEVICE_LOW => {
                        q.try_set_used_ring_address(GuestAddress(low(q.used_ring())))
                    }
                    _ => q.try_set_used_ring_address(GuestAddress(high(q.used_ring()))),
                };
                if let Err(e) = res {
                    warn!(offset, value = v, error = %e, "virtio-mmio: invalid queue setting");
                    self.queue_invalid[idx] = true;
                }
            }
            reg::QUEUE_NOTIFY => {
                // Reached only when no ioeventfd took the write.
                self.notify_exits += 1;
                if let Some(evt) = self.queue_evts.get(v as usize) {
                    if let Err(e) = evt.write(1) {
                        warn!(error = %e, "virtio-mmio: could not signal queue eventfd");
                    }
                }
            }
            reg::INTERRUPT_ACK => {
                if self.status_is(status::DRIVER_OK, 0) {
                    self.interrupt.ack(v);
                }
            }
            reg::STATUS => self.set_status(v as u8),
            _ => debug!(
                offset,
                "virtio-mmio: write to unknown or read-only register"
            ),
        }
    }

    fn set_status(&mut self, new: u8) {
        use status::*;
        if new == 0 {
            self.reset();
            return;
        }
        let old = self.device_status;
        if new & FAILED != 0 {
            self.device_status |= FAILED;
            return;
        }
        // The driver only ever adds one bit in this order (virtio 1.2, 3.1.1).
        match (old, new) {
            (0, ACKNOWLEDGE) => self.device_status = new,
            (ACKNOWLEDGE, s) if s == ACKNOWLEDGE | DRIVER => self.device_status = new,
            (s, n) if s == ACKNOWLEDGE | DRIVER && n == s | FEATURES_OK => {
                if self.features_acceptable() {
                    self.device_status = new;
                } else {
                    // FEATURES_OK stays clear; the driver reads status back and gives up.
                    warn!(
                        acked = self.acked_features,
                        offered = self.device.avail_features(),
                        "virtio-mmio: refusing feature set"
                    );
                }
            }
            (s, n) if s == ACKNOWLEDGE | DRIVER | FEATURES_OK && n == s | DRIVER_OK => {
                self.device_status = new;
                self.request_activation();
            }
            _ => warn!(old, new, "virtio-mmio: invalid device status transition"),
        }
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.avail_features();
        self.acked_features & !offered == 0 && self.acked_features & (1 << VIRTIO_F_VERSION_1) != 0
    }

    /// Activates now, or, with an activation eventfd, asks the event thread to.
    fn request_activation(&mut self) {
        let Some(evt) = &self.activate_evt else {
            self.activate();
            return;
        };
        match evt.write(1) {
            Ok(()) => self.activation_pending = true,
            Err(e) => {
                warn!(error = %e, "virtio-mmio: could not request the device activation");
                self.needs_reset();
            }
        }
    }

    fn activate(&mut self) {
        let queues_ok = self
            .queues
            .iter()
            .zip(&self.queue_invalid)
            .all(|(q, invalid)| !invalid && q.ready() && q.is_valid(&self.mem));
        if !queues_ok {
            warn!("virtio-mmio: DRIVER_OK with a queue not ready or invalid");
            self.needs_reset();
            return;
        }
        let queue_evts = match self
            .queue_evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(evts) => evts,
            Err(e) => {
                warn!(error = %e, "virtio-mmio: could not clone queue eventfds");
                self.needs_reset();
                return;
            }
        };
        let queues = match self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(queues) => queues,
            Err(e) => {
                warn!(error = %e, "virtio-mmio: could not copy queue state");
                self.needs_reset();
                return;
            }
        };
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues,
            queue_evts,
            acked_features: self.acked_features,
            interrupt: self.interrupt.clone(),
        };
        match self.device.activate(ctx) {
            Ok(()) => self.active = true,
            Err(e) => {
                warn!(error = %e, "virtio-mmio: device activation failed");
                self.needs_reset();
            }
        }
    }

    fn needs_reset(&mut self) {
        self.device_status |= status::DEVICE_NEEDS_RESET;
        if let Err(e) = self.interrupt.trigger(super::irq::CONFIG) {
            warn!(error = %e, "virtio-mmio: could not signal config interrupt");
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        MmioTransport::read(self, offset, data)
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        MmioTransport::write(self, offset, data)
    }
}

/// KVM wiring of a transport: QueueNotify writes go straight to the queue eventfds (ioeventfd)
/// and the interrupt eventfd raises a GSI (irqfd).
pub mod kvm {
    use super::*;
    use kvm_ioctls::{IoEventAddress, VmFd};

    /// Errors of [`register`].
    #[derive(Debug, thiserror::Error)]
    pub enum KvmWiringError {
        /// KVM_IOEVENTFD failed.
        #[error("could not register queue {queue}'s notify ioeventfd")]
        IoEvent {
            /// The queue.
            queue: u32,
            /// The cause.
            #[source]
            source: kvm_ioctls::Error,
        },
        /// KVM_IRQFD failed.
        #[error("could not register the interrupt irqfd on GSI {gsi}")]
        IrqFd {
            /// The GSI.
            gsi: u32,
            /// The cause.
            #[source]
            source: kvm_ioctls::Error,
        },
    }

    /// Registers the transport at MMIO `base` and interrupt `gsi` with KVM.
    pub fn register(
        vm: &VmFd,
        transport: &Arc<Mutex<MmioTransport>>,
        base: u64,
        gsi: u32,
    ) -> Result<(), KvmWiringError> {
        let t = transport
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, evt) in t.queue_evts().iter().enumerate() {
            let queue = i as u32;
            vm.register_ioevent(evt, &IoEventAddress::Mmio(base + reg::QUEUE_NOTIFY), queue)
                .map_err(|source| KvmWiringError::IoEvent { queue, source })?;
        }
        vm.register_irqfd(t.interrupt().eventfd(), gsi)
            .map_err(|source| KvmWiringError::IrqFd { gsi, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::{irq, ActivateError};
    use status::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Probe {
        activations: AtomicUsize,
        resets: AtomicUsize,
        last_features: std::sync::Mutex<u64>,
        config: std::sync::Mutex<[u8; 8]>,
    }

    struct Dummy {
        probe: Arc<Probe>,
        fail_activate: bool,
    }

    const DUMMY_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << 3) | 1;

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn avail_features(&self) -> u64 {
            DUMMY_FEATURES
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            let cfg = *self.probe.config.lock().unwrap();
            crate::devices::virtio::read_config_bytes(&cfg, offset, data)
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            let mut cfg = self.probe.config.lock().unwrap();
            let o = offset as usize;
            cfg[o..o + data.len()].copy_from_slice(data);
        }
        fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
            if self.fail_activate {
                return Err(ActivateError::AlreadyActive);
            }
            assert_eq!(ctx.queues.len(), 2);
            *self.probe.last_features.lock().unwrap() = ctx.acked_features;
            self.probe.activations.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn reset(&mut self) {
            self.probe.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn transport(fail_activate: bool) -> (MmioTransport, Arc<Probe>) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let probe = Arc::new(Probe::default());
        let dev = Dummy {
            probe: probe.clone(),
            fail_activate,
        };
        let t =
            MmioTransport::new(mem, Box::new(dev), EventFd::new(EFD_NONBLOCK).unwrap()).unwrap();
        (t, probe)
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn negotiate(t: &mut MmioTransport, features: u64) {
        w(t, reg::STATUS, ACKNOWLEDGE.into());
        w(t, reg::STATUS, (ACKNOWLEDGE | DRIVER).into());
        w(t, reg::DRIVER_FEATURES_SEL, 0);
        w(t, reg::DRIVER_FEATURES, features as u32);
        w(t, reg::DRIVER_FEATURES_SEL, 1);
        w(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
        w(t, reg::STATUS, (ACKNOWLEDGE | DRIVER | FEATURES_OK).into());
    }

    /// Sets DRIVER_OK on top of ACKNOWLEDGE | DRIVER | FEATURES_OK.
    fn set_driver_ok(t: &mut MmioTransport) {
        w(
            t,
            reg::STATUS,
            (ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK).into(),
        );
    }

    fn setup_queue(t: &mut MmioTransport, sel: u32, size: u32, base: u64) {
        w(t, reg::QUEUE_SEL, sel);
        w(t, reg::QUEUE_NUM, size);
        w(t, reg::QUEUE_DESC_LOW, base as u32);
        w(t, reg::QUEUE_DESC_HIGH, (base >> 32) as u32);
        w(t, reg::QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
        w(t, reg::QUEUE_DRIVER_HIGH, 0);
        w(t, reg::QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
        w(t, reg::QUEUE_DEVICE_HIGH, 0);
        w(t, reg::QUEUE_READY, 1);
    }

    #[test]
    fn identification_registers() {
        let (mut t, _) = transport(false);
        assert_eq!(r(&mut t, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(r(&mut t, reg::VERSION), 2);
        assert_eq!(r(&mut t, reg::DEVICE_ID), 42);
        assert_eq!(r(&mut t, reg::VENDOR_ID), 0);
        assert_eq!(r(&mut t, reg::CONFIG_GENERATION), 0);
        // Registers are 32-bit only; a narrow read yields zeros.
        let mut b = [0xffu8; 2];
        t.read(reg::MAGIC_VALUE, &mut b);
        assert_eq!(b, [0, 0]);
    }

    #[test]
    fn device_features_are_read_in_two_halves() {
        let (mut t, _) = transport(false);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), DUMMY_FEATURES as u32);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1); // VERSION_1 is bit 32
        w(&mut t, reg::DEVICE_FEATURES_SEL, 2);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 0);
    }

    #[test]
    fn feature_negotiation_across_both_halves_and_activation() {
        let (mut t, probe) = transport(false);
        negotiate(&mut t, (1 << VIRTIO_F_VERSION_1) | (1 << 3));
        assert_eq!(
            r(&mut t, reg::STATUS),
            u32::from(ACKNOWLEDGE | DRIVER | FEATURES_OK)
        );
        assert_eq!(t.acked_features(), (1 << 32) | (1 << 3));
        // Features are frozen after FEATURES_OK.
        w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
        w(&mut t, reg::DRIVER_FEATURES, 1);
        assert_eq!(t.acked_features(), (1 << 32) | (1 << 3));

        setup_queue(&mut t, 0, 16, 0x1_0000);
        setup_queue(&mut t, 1, 8, 0x2_0000);
        w(&mut t, reg::QUEUE_SEL, 0);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 16);
        assert_eq!(r(&mut t, reg::QUEUE_READY), 1);
        w(&mut t, reg::QUEUE_SEL, 1);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 8);
        w(&mut t, reg::QUEUE_SEL, 7);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0);

        set_driver_ok(&mut t);
        assert!(t.is_active());
        assert_eq!(probe.activations.load(Ordering::SeqCst), 1);
        assert_eq!(*probe.last_features.lock().unwrap(), (1 << 32) | (1 << 3));

        // Queue registers are frozen once live.
        w(&mut t, reg::QUEUE_SEL, 0);
        w(&mut t, reg::QUEUE_READY, 0);
        assert_eq!(r(&mut t, reg::QUEUE_READY), 1);

        // Reset by writing 0.
        w(&mut t, reg::STATUS, 0);
        assert_eq!(r(&mut t, reg::STATUS), 0);
        assert!(!t.is_active());
        assert_eq!(probe.resets.load(Ordering::SeqCst), 1);
        assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
        assert_eq!(t.acked_features(), 0);
    }

    #[test]
    fn deferred_activation_runs_only_on_request_and_not_after_a_reset() {
        let (mut t, probe) = transport(false);
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        t.set_activate_evt(evt.try_clone().unwrap());
        let driver_ok = |t: &mut MmioTransport| {
            negotiate(t, 1 << VIRTIO_F_VERSION_1);
            setup_queue(t, 0, 16, 0x1_0000);
            setup_queue(t, 1, 8, 0x2_0000);
            set_driver_ok(t);
        };
        driver_ok(&mut t);
        // DRIVER_OK is visible at once, the activation only requested.
        assert_eq!(
            r(&mut t, reg::STATUS),
            u32::from(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
        );
        assert!(!t.is_active());
        assert!(t.activation_pending());
        assert_eq!(evt.read().unwrap(), 1);
        assert_eq!(probe.activations.load(Ordering::SeqCst), 0);
        t.activate_pending();
        assert!(t.is_active());
        assert!(!t.activation_pending());
        assert_eq!(probe.activations.load(Ordering::SeqCst), 1);
        // A second call does nothing.
        t.activate_pending();
        assert_eq!(probe.activations.load(Ordering::SeqCst), 1);

        // A reset between the request and the event thread cancels it.
        w(&mut t, reg::STATUS, 0);
        driver_ok(&mut t);
        assert!(t.activation_pending());
        w(&mut t, reg::STATUS, 0);
        assert!(!t.activation_pending());
        t.activate_pending();
        assert!(!t.is_active());
        assert_eq!(probe.activations.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn features_ok_is_refused_without_version_1_or_with_unoffered_bits() {
        let (mut t, _) = transport(false);
        negotiate(&mut t, 1 << 3);
        assert_eq!(r(&mut t, reg::STATUS), u32::from(ACKNOWLEDGE | DRIVER));

        let (mut t, _) = transport(false);
        negotiate(&mut t, (1 << VIRTIO_F_VERSION_1) | (1 << 40));
        assert_eq!(r(&mut t, reg::STATUS), u32::from(ACKNOWLEDGE | DRIVER));
        // The driver can retry with a valid set.
        w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
        w(&mut t, reg::DRIVER_FEATURES, 1);
        w(
            &mut t,
            reg::STATUS,
            (ACKNOWLEDGE | DRIVER | FEATURES_OK).into(),
        );
        assert_eq!(
            r(&mut t, reg::STATUS),
            u32::from(ACKNOWLEDGE | DRIVER | FEATURES_OK)
        );
    }

    #[test]
    fn invalid_status_transitions_are_ignored() {
        let (mut t, probe) = transport(false);
        // Skipping ACKNOWLEDGE.
        w(&mut t, reg::STATUS, DRIVER.into());
        assert_eq!(r(&mut t, reg::STATUS), 0);
        // Jumping straight to DRIVER_OK.
        w(&mut t, reg::STATUS, ACKNOWLEDGE.into());
        w(&mut t, reg::STATUS, (ACKNOWLEDGE | DRIVER_OK).into());
        assert_eq!(r(&mut t, reg::STATUS), u32::from(ACKNOWLEDGE));
        // Features before DRIVER are ignored.
        w(&mut t, reg::DRIVER_FEATURES, 1);
        assert_eq!(t.acked_features(), 0);
        // Queue setup before FEATURES_OK is ignored.
        w(&mut t, reg::QUEUE_NUM, 4);
        w(&mut t, reg::QUEUE_READY, 1);
        assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
        // FAILED sticks.
        w(&mut t, reg::STATUS, (ACKNOWLEDGE | FAILED).into());
        assert_eq!(r(&mut t, reg::STATUS), u32::from(ACKNOWLEDGE | FAILED));
        assert_eq!(probe.activations.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn driver_ok_with_unready_queue_sets_needs_reset() {
        let (mut t, probe) = transport(false);
        negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 16, 0x1_0000);
        // Queue 1 never made ready.
        set_driver_ok(&mut t);
        assert!(!t.is_active());
        assert_ne!(r(&mut t, reg::STATUS) & u32::from(DEVICE_NEEDS_RESET), 0);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), irq::CONFIG);
        assert_eq!(probe.activations.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn failing_activation_sets_needs_reset() {
        let (mut t, _) = transport(true);
        negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 16, 0x1_0000);
        setup_queue(&mut t, 1, 8, 0x2_0000);
        set_driver_ok(&mut t);
        assert!(!t.is_active());
        assert_ne!(r(&mut t, reg::STATUS) & u32::from(DEVICE_NEEDS_RESET), 0);
    }

    #[test]
    fn queue_size_outside_limits_makes_the_queue_invalid() {
        let (mut t, probe) = transport(false);
        negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 32, 0x1_0000); // above QueueNumMax 16
        setup_queue(&mut t, 1, 8, 0x2_0000);
        set_driver_ok(&mut t);
        assert!(!t.is_active());
        assert_eq!(probe.activations.load(Ordering::SeqCst), 0);

        // A misaligned descriptor table is refused the same way.
        let (mut t, _) = transport(false);
        negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 16, 0x1_0008);
        setup_queue(&mut t, 1, 8, 0x2_0000);
        set_driver_ok(&mut t);
        assert!(!t.is_active());
    }

    #[test]
    fn notify_interrupt_status_and_ack() {
        let (mut t, _) = transport(false);
        negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 16, 0x1_0000);
        setup_queue(&mut t, 1, 8, 0x2_0000);
        set_driver_ok(&mut t);

        w(&mut t, reg::QUEUE_NOTIFY, 1);
        assert_eq!(t.queue_evts()[1].read().unwrap(), 1);
        assert!(t.queue_evts()[0].read().is_err()); // nothing pending (non-blocking)
        w(&mut t, reg::QUEUE_NOTIFY, 9); // no such queue: ignored
        assert_eq!(t.notify_exits(), 2);

        t.interrupt().trigger(irq::VRING).unwrap();
        t.interrupt().trigger(irq::CONFIG).unwrap();
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), irq::VRING | irq::CONFIG);
        assert_eq!(t.interrupt().eventfd().read().unwrap(), 2);
        w(&mut t, reg::INTERRUPT_ACK, irq::VRING);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), irq::CONFIG);
        w(&mut t, reg::INTERRUPT_ACK, irq::CONFIG);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
        assert_eq!(t.interrupt().raised_count(), 2);
    }

    #[test]
    fn config_space_any_width() {
        let (mut t, probe) = transport(false);
        *probe.config.lock().unwrap() = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut b = [0u8; 2];
        t.read(reg::CONFIG + 2, &mut b);
        assert_eq!(b, [3, 4]);
        let mut b = [0xffu8; 4];
        t.read(reg::CONFIG + 6, &mut b);
        assert_eq!(b, [7, 8, 0, 0]);
        // Config writes need at least DRIVER.
        t.write(reg::CONFIG, &[9]);
        assert_eq!(probe.config.lock().unwrap()[0], 1);
        w(&mut t, reg::STATUS, ACKNOWLEDGE.into());
        w(&mut t, reg::STATUS, (ACKNOWLEDGE | DRIVER).into());
        t.write(reg::CONFIG, &[9]);
        assert_eq!(probe.config.lock().unwrap()[0], 9);
    }
}
