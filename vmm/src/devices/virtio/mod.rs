//! Virtio devices and the virtio-mmio transport.

pub mod block;
pub mod mmio;
pub mod net;
pub mod vsock;
mod worker;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;
pub(crate) use worker::DeviceWorker;

/// Device type of virtio-blk.
pub const TYPE_BLOCK: u32 = 2;

/// `VIRTIO_F_VERSION_1`: the device speaks virtio 1.x (mandatory for the modern transport).
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is set up and the device is live.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 128;
}

/// Interrupt causes reported in the InterruptStatus register.
pub mod irq {
    /// A used buffer was added to a queue.
    pub const VRING: u32 = 1;
    /// The configuration changed (or the device needs a reset).
    pub const CONFIG: u32 = 2;
}

/// The interrupt line of one virtio-mmio device: the InterruptStatus bits shared by transport
/// and device, and the eventfd that the VMM registers as a KVM irqfd.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    evt: EventFd,
    raised: AtomicU64,
}

impl Interrupt {
    /// A line signalling `evt`.
    pub fn new(evt: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            evt,
            raised: AtomicU64::new(0),
        }
    }

    /// Sets `cause` in InterruptStatus and signals the line.
    pub fn trigger(&self, cause: u32) -> std::io::Result<()> {
        self.status.fetch_or(cause, Ordering::SeqCst);
        self.raised.fetch_add(1, Ordering::Relaxed);
        self.evt.write(1)
    }

    /// Current InterruptStatus.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the acknowledged bits (InterruptACK).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// How many times the line was signalled since creation.
    pub fn raised_count(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }

    /// The eventfd behind the line (registered with KVM as an irqfd).
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Errors of [`VirtioDevice::activate`].
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver did not provide the expected number of queues.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device needs.
        expected: usize,
        /// Queues it got.
        got: usize,
    },
    /// The device is already active.
    #[error("device is already active")]
    AlreadyActive,
    /// An eventfd could not be duplicated for the device's worker.
    #[error("could not duplicate an eventfd for the device worker")]
    EventFd(#[source] std::io::Error),
    /// The worker thread could not be started.
    #[error("could not start the device worker thread")]
    Spawn(#[source] std::io::Error),
    /// The worker thread could not install its seccomp filter.
    #[error("could not confine the device worker thread")]
    Confine(#[source] crate::seccomp::SeccompError),
    /// The worker thread ended before reporting whether it is confined.
    #[error("the device worker thread ended before it was confined")]
    WorkerGone,
}

/// What a device receives when the driver sets DRIVER_OK.
#[derive(Debug)]
pub struct ActivateContext {
    /// Guest memory.
    pub mem: GuestMemory,
    /// The queues as the driver configured them.
    pub queues: Vec<Queue>,
    /// One eventfd per queue, signalled on QueueNotify (by KVM ioeventfd or by the transport).
    pub queue_evts: Vec<EventFd>,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The device's interrupt line.
    pub interrupt: Arc<Interrupt>,
}

/// What [`ActivateContext::into_queues`] hands a device with `N` queues: guest memory, the
/// queues, their eventfds and the interrupt line.
pub type ActivatedQueues<const N: usize> = (GuestMemory, [Queue; N], [EventFd; N], Arc<Interrupt>);

impl ActivateContext {
    /// Splits the context of a device with `N` queues into guest memory, the queues, their
    /// eventfds and the interrupt line; fails unless the driver set up exactly `N` queues.
    pub fn into_queues<const N: usize>(self) -> Result<ActivatedQueues<N>, ActivateError> {
        let Self {
            mem,
            queues,
            queue_evts,
            interrupt,
            ..
        } = self;
        let got = queues.len();
        let (Ok(queues), Ok(queue_evts)) = (
            <[Queue; N]>::try_from(queues),
            <[EventFd; N]>::try_from(queue_evts),
        ) else {
            return Err(ActivateError::QueueCount { expected: N, got });
        };
        Ok((mem, queues, queue_evts, interrupt))
    }
}

/// A virtio device behind a transport. Implementations hold no transport state.
pub trait VirtioDevice: Send {
    /// Virtio device type (2 for block).
    fn device_type(&self) -> u32;
    /// Features offered to the driver.
    fn avail_features(&self) -> u64;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts processing the queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Stops processing and returns to the pre-activation state.
    fn reset(&mut self);
}

/// Copies the part of `src` at `offset` into `data` (zero outside `src`), for config spaces.
pub(crate) fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(offset) = usize::try_from(offset) else {
        return;
    };
    if offset >= src.len() {
        return;
    }
    let n = data.len().min(src.len() - offset);
    data[..n].copy_from_slice(&src[offset..offset + n]);
}
