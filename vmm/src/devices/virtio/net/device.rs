//! The virtio-net device model, its frame engine and its worker thread.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::warn;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::Bytes;
use vmm_sys_util::eventfd::EventFd;

use super::tap::{Tap, TapError};
use super::{features, MAX_FRAME_LEN, QUEUE_SIZE, TYPE_NET, VNET_HDR_LEN};
use crate::devices::virtio::{
    irq, read_config_bytes, ActivateContext, ActivateError, DeviceWorker, Interrupt, VirtioDevice,
    VIRTIO_F_VERSION_1,
};
use crate::memory::GuestMemory;
use crate::seccomp::ThreadKind;

/// Errors of [`Net::new`].
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The tap could not be opened.
    #[error("could not open the tap device")]
    Tap(#[source] TapError),
}

/// Where frames go to and come from: the tap, or a model of it in tests. Both calls are
/// non-blocking (`WouldBlock` when nothing is there) and move one whole frame, header included.
pub trait FrameIo: Send {
    /// Reads one frame.
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Writes one frame.
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize>;
}

/// Counters of one network device, readable while it runs.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Frames sent by the guest to the tap.
    pub tx_frames: AtomicU64,
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Guest frames the tap did not take.
    pub tx_dropped: AtomicU64,
    /// Host frames too large for the guest's buffer or too short.
    pub rx_dropped: AtomicU64,
    /// Chains refused as malformed.
    pub malformed: AtomicU64,
}

/// Moves frames between the queues and a [`FrameIo`]. No threads, no eventfds.
#[derive(Debug)]
pub struct NetEngine<T> {
    io: T,
    /// A frame read from the host that waits for an rx buffer.
    pending: Option<Vec<u8>>,
    metrics: Arc<NetMetrics>,
}

fn descriptors(chain: DescriptorChain<&GuestMemory>) -> Option<Vec<Descriptor>> {
    let descs: Vec<Descriptor> = chain.collect();
    // A loop, an index beyond the table or an unreadable descriptor ends the walk early.
    if descs.last().is_none_or(|d| d.has_next()) {
        return None;
    }
    Some(descs)
}

impl<T: FrameIo> NetEngine<T> {
    /// An engine over `io`.
    pub fn new(io: T) -> Self {
        Self {
            io,
            pending: None,
            metrics: Arc::default(),
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<NetMetrics> {
        &self.metrics
    }

    /// The frame source and sink.
    pub fn io(&self) -> &T {
        &self.io
    }

    /// Whether a host frame waits for an rx buffer (the host side need not be read meanwhile).
    pub fn rx_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn malformed(&self, what: &str) {
        warn!("virtio-net: {what}");
        self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
    }

    fn gather_tx(
        &self,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Option<Vec<u8>> {
        let Some(descs) = descriptors(chain) else {
            self.malformed("malformed tx descriptor chain");
            return None;
        };
        if descs.iter().any(Descriptor::is_write_only) {
            self.malformed("device-writable descriptor in a tx chain");
            return None;
        }
        let total: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
        if total < VNET_HDR_LEN as u64 || total > MAX_FRAME_LEN as u64 {
            self.malformed("tx frame shorter than its header or over the maximum");
            return None;
        }
        let mut frame = vec![0u8; total as usize];
        let mut at = 0usize;
        for d in &descs {
            let n = d.len() as usize;
            if mem.read_slice(&mut frame[at..at + n], d.addr()).is_err() {
                self.malformed("tx buffer outside guest memory");
                return None;
            }
            at += n;
        }
        Some(frame)
    }

    /// Sends every available tx chain to the host; returns whether any used entry was added.
    pub fn process_tx(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            if let Some(frame) = self.gather_tx(chain, mem) {
                match self.io.write_frame(&frame) {
                    Ok(_) => {
                        self.metrics.tx_frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        warn!(error = %e, "virtio-net: the tap refused a frame");
                        self.metrics.tx_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Err(e) = queue.add_used(mem, head, 0) {
                warn!(error = %e, "virtio-net: cannot add to the tx used ring");
                break;
            }
            used_any = true;
        }
        used_any
    }

    /// Copies `frame` into a writable chain; `None` when the chain is unusable or too small.
    fn scatter(
        &self,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
        frame: &[u8],
    ) -> Option<u32> {
        let descs = descriptors(chain)?;
        if descs.iter().any(|d| !d.is_write_only()) {
            return None;
        }
        let capacity: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
        if capacity < frame.len() as u64 {
            return None;
        }
        let mut at = 0usize;
        for d in &descs {
            if at == frame.len() {
                break;
            }
            let n = (d.len() as usize).min(frame.len() - at);
            mem.write_slice(&frame[at..at + n], d.addr()).ok()?;
            at += n;
        }
        // frame.len() <= MAX_FRAME_LEN.
        Some(frame.len() as u32)
    }

    /// Delivers host frames while the guest has rx buffers; returns whether any used entry was
    /// added.
    pub fn process_rx(&mut self, queue: &mut Queue, mem: &GuestMemory) -> bool {
        let mut used_any = false;
        loop {
            if self.pending.is_none() {
                let mut buf = vec![0u8; MAX_FRAME_LEN];
                match self.io.read_frame(&mut buf) {
                    Ok(n) if n < VNET_HDR_LEN => {
                        self.metrics.rx_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        // num_buffers: one buffer per frame (no MRG_RXBUF).
                        buf[10..12].copy_from_slice(&1u16.to_le_bytes());
                        self.pending = Some(buf);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn!(error = %e, "virtio-net: reading the tap failed");
                        break;
                    }
                }
            }
            let Some(frame) = self.pending.take() else {
                break;
            };
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                // No buffer: the frame waits for the guest's next rx notification.
                self.pending = Some(frame);
                break;
            };
            let head = chain.head_index();
            match self.scatter(chain, mem, &frame) {
                Some(len) => {
                    if let Err(e) = queue.add_used(mem, head, len) {
                        warn!(error = %e, "virtio-net: cannot add to the rx used ring");
                        break;
                    }
                    self.metrics.rx_frames.fetch_add(1, Ordering::Relaxed);
                    used_any = true;
                }
                None => {
                    // Unusable or too small: drop the frame, keep the buffer for the next one.
                    warn!(
                        len = frame.len(),
                        "virtio-net: rx buffer unusable or too small; frame dropped"
                    );
                    self.metrics.rx_dropped.fetch_add(1, Ordering::Relaxed);
                    queue.go_to_previous_position();
                }
            }
        }
        used_any
    }
}

/// The virtio-net device.
#[derive(Debug)]
pub struct Net {
    id: String,
    mac: Option<[u8; 6]>,
    metrics: Arc<NetMetrics>,
    /// The engine, on the worker thread while active.
    worker: DeviceWorker<NetEngine<Tap>>,
}

impl Net {
    /// Opens tap `host_dev_name` for interface `id`, offering `mac` to the guest.
    pub fn new(id: &str, host_dev_name: &str, mac: Option<[u8; 6]>) -> Result<Self, NetError> {
        let tap = Tap::open(host_dev_name).map_err(NetError::Tap)?;
        let engine = NetEngine::new(tap);
        Ok(Self {
            id: id.to_owned(),
            mac,
            metrics: engine.metrics().clone(),
            worker: DeviceWorker::new("virtio-net", "interface", engine),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn avail_features(&self) -> u64 {
        let mut f = 1u64 << VIRTIO_F_VERSION_1;
        if self.mac.is_some() {
            f |= 1 << features::MAC;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 2]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.mac.unwrap_or_default(), offset, data)
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        warn!(offset, "virtio-net: guest wrote the read-only config space");
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let (mem, queues, queue_evts, interrupt) = ctx.into_queues()?;
        self.worker.start(
            format!("net-{}", self.id),
            ThreadKind::Net,
            |engine, kill_evt| Worker {
                engine,
                queues,
                queue_evts,
                kill_evt,
                mem,
                interrupt,
            },
            Worker::run,
            |w| w.engine,
        )
    }

    fn reset(&mut self) {
        self.worker.stop();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.worker.stop();
    }
}

struct Worker {
    engine: NetEngine<Tap>,
    queues: [Queue; 2],
    queue_evts: [EventFd; 2],
    kill_evt: EventFd,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
}

impl Worker {
    fn run(mut self) -> NetEngine<Tap> {
        if let Err(e) = self.event_loop() {
            warn!(error = %e, "virtio-net: worker event loop failed; device stops");
        }
        self.engine
    }

    fn event_loop(&mut self) -> std::io::Result<()> {
        self.process();
        loop {
            let mut fds = vec![
                libc::pollfd {
                    fd: self.kill_evt.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.queue_evts[0].as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.queue_evts[1].as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if !self.engine.rx_pending() {
                fds.push(libc::pollfd {
                    fd: self.engine.io().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[0].revents != 0 {
                return Ok(());
            }
            for (i, evt) in self.queue_evts.iter().enumerate() {
                if fds[i + 1].revents != 0 {
                    // Non-blocking: a spurious wake finds nothing.
                    let _ = evt.read();
                }
            }
            self.process();
        }
    }

    fn process(&mut self) {
        let [rx, tx] = &mut self.queues;
        let used_tx = self.engine.process_tx(tx, &self.mem);
        let used_rx = self.engine.process_rx(rx, &self.mem);
        let mut notify = false;
        if used_rx {
            notify |= rx.needs_notification(&self.mem).unwrap_or(true);
        }
        if used_tx {
            notify |= tx.needs_notification(&self.mem).unwrap_or(true);
        }
        if notify {
            if let Err(e) = self.interrupt.trigger(irq::VRING) {
                warn!(error = %e, "virtio-net: could not raise the interrupt");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::virtq::{DriverQueue, F_NEXT, F_WRITE};
    use std::collections::VecDeque;
    use vm_memory::GuestAddress;

    /// A tap model: frames written are kept, frames to read are queued.
    #[derive(Default)]
    struct FakeTap {
        written: Vec<Vec<u8>>,
        to_read: VecDeque<Vec<u8>>,
        refuse_writes: bool,
    }

    impl FrameIo for FakeTap {
        fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let f = self
                .to_read
                .pop_front()
                .ok_or(std::io::ErrorKind::WouldBlock)?;
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            Ok(n)
        }

        fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
            if self.refuse_writes {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.written.push(frame.to_vec());
            Ok(frame.len())
        }
    }

    const MEM: u64 = 0x40_0000;

    struct Fixture {
        mem: GuestMemory,
        queue: Queue,
        driver: DriverQueue,
        engine: NetEngine<FakeTap>,
    }

    fn fixture() -> Fixture {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let driver = DriverQueue::new(GuestAddress(0x1_0000), 16);
        driver.init(&mem);
        let mut queue = Queue::new(16).unwrap();
        queue.set_size(16);
        queue.set_desc_table_address(Some(driver.desc_table().0 as u32), Some(0));
        queue.set_avail_ring_address(Some(driver.avail_ring().0 as u32), Some(0));
        queue.set_used_ring_address(Some(driver.used_ring().0 as u32), Some(0));
        queue.set_ready(true);
        Fixture {
            mem,
            queue,
            driver,
            engine: NetEngine::new(FakeTap::default()),
        }
    }

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; len];
        f[..VNET_HDR_LEN].fill(0);
        f
    }

    #[test]
    fn tx_frames_reach_the_tap_whole() {
        let mut f = fixture();
        let fr = frame(100, 0xab);
        f.mem
            .write_slice(&fr[..30], GuestAddress(0x10_0000))
            .unwrap();
        f.mem
            .write_slice(&fr[30..], GuestAddress(0x20_0000))
            .unwrap();
        f.driver
            .add_chain(&f.mem, &[(0x10_0000, 30, 0), (0x20_0000, 70, 0)]);
        assert!(f.engine.process_tx(&mut f.queue, &f.mem));
        assert_eq!(f.driver.pop_used(&f.mem), Some((0, 0)));
        assert_eq!(f.engine.io.written, vec![fr]);
        // A refused write is counted, the chain still returned.
        f.engine.io.refuse_writes = true;
        f.driver.add_chain(&f.mem, &[(0x10_0000, 60, 0)]);
        assert!(f.engine.process_tx(&mut f.queue, &f.mem));
        assert_eq!(f.engine.metrics().tx_dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn malformed_tx_chains_are_refused() {
        let mut f = fixture();
        f.driver.add_raw(
            &f.mem,
            &[(0x10_0000, 64, F_NEXT, 1), (0x10_0000, 64, F_NEXT, 0)],
        );
        f.driver.add_chain(&f.mem, &[(0x10_0000, 4, 0)]); // shorter than the header
        f.driver.add_chain(&f.mem, &[(0x10_0000, 64, F_WRITE)]); // wrong direction
        f.driver.add_chain(&f.mem, &[(MEM - 16, 64, 0)]); // outside memory
        f.driver
            .add_chain(&f.mem, &[(0x10_0000, MAX_FRAME_LEN as u32 + 1, 0)]); // oversized
        assert!(f.engine.process_tx(&mut f.queue, &f.mem));
        assert!(f.engine.io.written.is_empty());
        assert_eq!(f.engine.metrics().malformed.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn rx_frames_wait_for_buffers_and_big_ones_are_dropped() {
        let mut f = fixture();
        f.engine.io.to_read.push_back(frame(60, 1));
        f.engine.io.to_read.push_back(frame(3000, 2));
        f.engine.io.to_read.push_back(frame(80, 3));
        f.engine.io.to_read.push_back(vec![0; 4]); // shorter than the header
                                                   // No buffers: the first frame waits.
        assert!(!f.engine.process_rx(&mut f.queue, &f.mem));
        assert!(f.engine.rx_pending());
        // One 1500-byte buffer (two descriptors): frame 1 lands.
        f.driver.add_chain(
            &f.mem,
            &[(0x10_0000, 12, F_WRITE), (0x10_1000, 1488, F_WRITE)],
        );
        assert!(f.engine.process_rx(&mut f.queue, &f.mem));
        assert_eq!(f.driver.pop_used(&f.mem), Some((0, 60)));
        let mut hdr = [0u8; 12];
        f.mem.read_slice(&mut hdr, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&hdr[10..12], &1u16.to_le_bytes(), "num_buffers is 1");
        let mut body = [0u8; 48];
        f.mem
            .read_slice(&mut body, GuestAddress(0x10_1000))
            .unwrap();
        assert!(body.iter().all(|&b| b == 1));
        // The 3000-byte frame does not fit a 1500-byte buffer: dropped, buffer kept for frame 3.
        f.driver.add_chain(&f.mem, &[(0x10_0000, 1500, F_WRITE)]);
        assert!(f.engine.process_rx(&mut f.queue, &f.mem));
        let (_, len) = f.driver.pop_used(&f.mem).unwrap();
        assert_eq!(len, 80);
        let m = f.engine.metrics();
        assert_eq!(m.rx_frames.load(Ordering::Relaxed), 2);
        assert_eq!(m.rx_dropped.load(Ordering::Relaxed), 2);
        assert!(!f.engine.rx_pending());
    }
}
