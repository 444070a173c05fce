//! The block device's worker thread: waits on the queue's notification eventfd (signalled by KVM
//! ioeventfd on QueueNotify) and on a kill eventfd, runs the request engine, and raises the
//! interrupt when the driver wants one.

use std::sync::Arc;

use tracing::warn;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::device::DiskEngine;
use crate::devices::virtio::{irq, Interrupt};
use crate::memory::GuestMemory;

const QUEUE_TOKEN: u64 = 0;
const KILL_TOKEN: u64 = 1;

/// Everything an active block device needs, owned by its worker thread.
pub(crate) struct Worker {
    pub(crate) engine: DiskEngine,
    pub(crate) queue: Queue,
    pub(crate) mem: GuestMemory,
    pub(crate) interrupt: Arc<Interrupt>,
    pub(crate) queue_evt: EventFd,
    pub(crate) kill_evt: EventFd,
}

impl Worker {
    /// Runs until the kill eventfd fires (or epoll fails); hands the engine back.
    pub(crate) fn run(mut self) -> DiskEngine {
        if let Err(e) = self.event_loop() {
            warn!(error = %e, "virtio-blk: worker event loop failed; device stops");
        }
        self.engine
    }

    fn event_loop(&mut self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            self.queue_evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, QUEUE_TOKEN),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            self.kill_evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, KILL_TOKEN),
        )?;
        // Requests may already be waiting (a notification raced with activation).
        self.process();
        let mut events = [EpollEvent::default(); 2];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                match ev.data() {
                    KILL_TOKEN => return Ok(()),
                    _ => {
                        // Non-blocking: a spurious wake just finds nothing.
                        let _ = self.queue_evt.read();
                        self.process();
                    }
                }
            }
        }
    }

    fn process(&mut self) {
        if !self.engine.process_queue(&mut self.queue, &self.mem) {
            return;
        }
        let notify = self.queue.needs_notification(&self.mem).unwrap_or(true);
        if notify {
            if let Err(e) = self.interrupt.trigger(irq::VRING) {
                warn!(error = %e, "virtio-blk: could not raise the interrupt");
            }
        }
    }
}
