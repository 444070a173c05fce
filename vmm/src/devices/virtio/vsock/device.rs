//! The virtio-vsock device and its worker thread.
//!
//! The worker `poll(2)`s the three queue eventfds, a kill eventfd and the muxer's sockets. Guest
//! packets from the tx queue go to the muxer; the muxer's packets fill rx buffers as long as the
//! guest provides them.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::warn;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

pub use super::muxer::VsockMetrics;
use super::muxer::{MuxerError, PollTarget};
use super::packet::{read_tx_packet, RxBuffer};
use super::{VsockMuxer, QUEUE_SIZE, TYPE_VSOCK};
use crate::devices::virtio::{
    irq, read_config_bytes, ActivateContext, ActivateError, DeviceWorker, Interrupt, VirtioDevice,
    VIRTIO_F_VERSION_1,
};
use crate::memory::GuestMemory;
use crate::seccomp::ThreadKind;

/// Header-only packets allowed to wait for rx buffers before the tx queue stops being read.
const MAX_RX_BACKLOG: usize = 1024;

/// Errors of [`Vsock::new`].
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The host-side Unix socket could not be set up.
    #[error("could not set up the vsock host socket")]
    Muxer(#[source] MuxerError),
}

/// The virtio-vsock device.
#[derive(Debug)]
pub struct Vsock {
    guest_cid: u64,
    metrics: Arc<VsockMetrics>,
    /// The muxer, on the worker thread while active.
    worker: DeviceWorker<VsockMuxer>,
}

impl Vsock {
    /// Listens on `uds_path` for host clients of guest `guest_cid`.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        let muxer = VsockMuxer::bind(guest_cid, uds_path).map_err(VsockError::Muxer)?;
        Ok(Self {
            guest_cid,
            metrics: muxer.metrics().clone(),
            worker: DeviceWorker::new("virtio-vsock", "device", muxer),
        })
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<VsockMetrics> {
        self.metrics.clone()
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn avail_features(&self) -> u64 {
        1u64 << VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data)
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        warn!(
            offset,
            "virtio-vsock: guest wrote the read-only config space"
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let (mem, queues, queue_evts, interrupt) = ctx.into_queues()?;
        self.worker.start(
            "vsock".into(),
            ThreadKind::Vsock,
            |muxer, kill_evt| Worker {
                muxer,
                queues,
                queue_evts,
                kill_evt,
                mem,
                interrupt,
            },
            Worker::run,
            |w| w.muxer,
        )
    }

    fn reset(&mut self) {
        self.worker.stop();
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.worker.stop();
    }
}

/// Moves packets between the queues and the muxer. No threads, no eventfds: the worker calls it.
pub struct QueueEngine<'a> {
    /// Guest memory.
    pub mem: &'a GuestMemory,
    /// The muxer.
    pub muxer: &'a mut VsockMuxer,
}

impl QueueEngine<'_> {
    /// Hands every available tx packet to the muxer (until the rx backlog is full); returns
    /// whether any used entry was added.
    pub fn process_tx(&mut self, queue: &mut Queue) -> bool {
        let mut used_any = false;
        while self.muxer.rx_backlog() < MAX_RX_BACKLOG {
            let Some(chain) = queue.pop_descriptor_chain(self.mem) else {
                break;
            };
            let head = chain.head_index();
            match read_tx_packet(chain, self.mem) {
                Ok(pkt) => self.muxer.send_pkt(pkt),
                Err(e) => {
                    warn!(error = %e, "virtio-vsock: refusing a tx packet");
                    let m = self.muxer.metrics();
                    m.malformed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            if let Err(e) = queue.add_used(self.mem, head, 0) {
                warn!(error = %e, "virtio-vsock: cannot add to the tx used ring");
                break;
            }
            used_any = true;
        }
        used_any
    }

    /// Fills rx buffers with the muxer's packets; returns whether any used entry was added.
    pub fn process_rx(&mut self, queue: &mut Queue) -> bool {
        let mut used_any = false;
        while self.muxer.has_rx() {
            let Some(chain) = queue.pop_descriptor_chain(self.mem) else {
                break;
            };
            let head = chain.head_index();
            let used_len = match RxBuffer::new(chain) {
                Ok(buf) => match self.muxer.recv_pkt(buf.max_payload()) {
                    Some(pkt) => buf.write(self.mem, &pkt).unwrap_or_else(|e| {
                        warn!(error = %e, "virtio-vsock: packet lost writing an rx buffer");
                        0
                    }),
                    None => {
                        // Nothing after all (the host socket had no data): keep the buffer.
                        queue.go_to_previous_position();
                        break;
                    }
                },
                Err(e) => {
                    warn!(error = %e, "virtio-vsock: unusable rx buffer");
                    self.muxer
                        .metrics()
                        .malformed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    0
                }
            };
            if let Err(e) = queue.add_used(self.mem, head, used_len) {
                warn!(error = %e, "virtio-vsock: cannot add to the rx used ring");
                break;
            }
            used_any = true;
        }
        used_any
    }
}

struct Worker {
    muxer: VsockMuxer,
    queues: [Queue; 3],
    queue_evts: [EventFd; 3],
    kill_evt: EventFd,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
}

enum Slot {
    Queue(usize),
    Kill,
    Muxer(PollTarget),
}

impl Worker {
    fn run(mut self) -> VsockMuxer {
        if let Err(e) = self.event_loop() {
            warn!(error = %e, "virtio-vsock: worker event loop failed; device stops");
        }
        self.muxer
    }

    fn event_loop(&mut self) -> std::io::Result<()> {
        // Packets may already be waiting (a notification raced with activation).
        self.process();
        loop {
            let mut slots = vec![Slot::Kill];
            let mut fds = vec![libc::pollfd {
                fd: self.kill_evt.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            for (i, evt) in self.queue_evts.iter().enumerate() {
                slots.push(Slot::Queue(i));
                fds.push(libc::pollfd {
                    fd: evt.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            for (fd, events, target) in self.muxer.poll_set() {
                slots.push(Slot::Muxer(target));
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
            }
            let timeout = self.muxer.next_deadline().map_or(-1, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
                i32::try_from(ms).unwrap_or(i32::MAX)
            });
            // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for (pfd, slot) in fds.iter().zip(&slots) {
                if pfd.revents == 0 {
                    continue;
                }
                match slot {
                    Slot::Kill => return Ok(()),
                    Slot::Queue(i) => {
                        // Non-blocking: a spurious wake finds nothing.
                        let _ = self.queue_evts[*i].read();
                    }
                    Slot::Muxer(target) => self.muxer.handle_ready(*target, pfd.revents),
                }
            }
            self.muxer.expire(Instant::now());
            self.process();
        }
    }

    fn process(&mut self) {
        // Queue order: rx, tx, event (the event queue carries nothing without migration).
        let [rx, tx, _event] = &mut self.queues;
        let mut engine = QueueEngine {
            mem: &self.mem,
            muxer: &mut self.muxer,
        };
        let mut used_rx = false;
        let mut used_tx = false;
        loop {
            let t = engine.process_tx(tx);
            let r = engine.process_rx(rx);
            used_tx |= t;
            used_rx |= r;
            // Tx may have stopped on a full backlog that rx just drained.
            if !(t && r) {
                break;
            }
        }
        let mut notify = false;
        if used_rx {
            notify |= rx.needs_notification(&self.mem).unwrap_or(true);
        }
        if used_tx {
            notify |= tx.needs_notification(&self.mem).unwrap_or(true);
        }
        if notify {
            if let Err(e) = self.interrupt.trigger(irq::VRING) {
                warn!(error = %e, "virtio-vsock: could not raise the interrupt");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::{op, PacketHeader, HDR_LEN, HOST_CID, MAX_PKT_PAYLOAD};
    use crate::testing::virtq::{DriverQueue, F_NEXT, F_WRITE};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use vm_memory::{Bytes, GuestAddress};

    const MEM: u64 = 0x40_0000;
    const RXQ: u64 = 0x1_0000;
    const TXQ: u64 = 0x2_0000;
    const RXBUF: u64 = 0x10_0000;
    const TXBUF: u64 = 0x20_0000;

    struct Fixture {
        mem: GuestMemory,
        rx: Queue,
        tx: Queue,
        rxd: DriverQueue,
        txd: DriverQueue,
        muxer: VsockMuxer,
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    fn queue(mem: &GuestMemory, d: &DriverQueue) -> Queue {
        d.init(mem);
        let mut q = Queue::new(16).unwrap();
        q.set_size(16);
        q.set_desc_table_address(Some(d.desc_table().0 as u32), Some(0));
        q.set_avail_ring_address(Some(d.avail_ring().0 as u32), Some(0));
        q.set_used_ring_address(Some(d.used_ring().0 as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(mem));
        q
    }

    fn fixture() -> Fixture {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let rxd = DriverQueue::new(GuestAddress(RXQ), 16);
        let txd = DriverQueue::new(GuestAddress(TXQ), 16);
        Fixture {
            rx: queue(&mem, &rxd),
            tx: queue(&mem, &txd),
            rxd,
            txd,
            muxer: VsockMuxer::bind(3, &path).unwrap(),
            mem,
            path,
            _dir: dir,
        }
    }

    fn guest_hdr(op: u16, src_port: u32, dst_port: u32, len: u32) -> PacketHeader {
        PacketHeader {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            type_: 1,
            op,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 0,
        }
    }

    impl Fixture {
        fn engine_rx(&mut self) -> bool {
            QueueEngine {
                mem: &self.mem,
                muxer: &mut self.muxer,
            }
            .process_rx(&mut self.rx)
        }

        /// Submits tx descriptors (addr, len, flags) and processes the queue.
        fn tx(&mut self, chain: &[(u64, u32, u16)]) {
            self.txd.add_chain(&self.mem, chain);
            let mut engine = QueueEngine {
                mem: &self.mem,
                muxer: &mut self.muxer,
            };
            assert!(engine.process_tx(&mut self.tx));
            assert!(self.txd.pop_used(&self.mem).is_some());
        }

        fn write_hdr(&self, at: u64, h: PacketHeader) {
            self.mem
                .write_slice(&h.to_bytes(), GuestAddress(at))
                .unwrap();
        }

        /// One rx buffer of `len` bytes; returns the packet written, if any.
        fn rx(&mut self, len: u32) -> Option<(PacketHeader, Vec<u8>)> {
            self.rxd.add_chain(&self.mem, &[(RXBUF, len, F_WRITE)]);
            let used = self.engine_rx();
            if !used {
                return None;
            }
            let (_, n) = self.rxd.pop_used(&self.mem).unwrap();
            let mut raw = [0u8; HDR_LEN];
            self.mem.read_slice(&mut raw, GuestAddress(RXBUF)).unwrap();
            let h = PacketHeader::from_bytes(&raw);
            assert_eq!(n, HDR_LEN as u32 + h.len);
            let mut payload = vec![0u8; h.len as usize];
            self.mem
                .read_slice(&mut payload, GuestAddress(RXBUF + HDR_LEN as u64))
                .unwrap();
            Some((h, payload))
        }
    }

    #[test]
    fn guest_connects_and_sends_through_the_queues() {
        let mut f = fixture();
        let listener = UnixListener::bind(format!("{}_80", f.path.display())).unwrap();
        // Header and payload in separate descriptors.
        f.write_hdr(TXBUF, guest_hdr(op::REQUEST, 1000, 80, 0));
        f.tx(&[(TXBUF, HDR_LEN as u32, 0)]);
        let (h, _) = f.rx(4096).unwrap();
        assert_eq!(h.op, op::RESPONSE);
        let (mut server, _) = listener.accept().unwrap();
        f.write_hdr(TXBUF, guest_hdr(op::RW, 1000, 80, 5));
        f.mem
            .write_slice(b"hello", GuestAddress(TXBUF + 0x1000))
            .unwrap();
        f.tx(&[(TXBUF, HDR_LEN as u32, 0), (TXBUF + 0x1000, 5, 0)]);
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        // Header and payload in one descriptor, payload split over two.
        f.write_hdr(TXBUF, guest_hdr(op::RW, 1000, 80, 6));
        f.mem
            .write_slice(b"wor", GuestAddress(TXBUF + HDR_LEN as u64))
            .unwrap();
        f.mem
            .write_slice(b"ld", GuestAddress(TXBUF + 0x1000))
            .unwrap();
        f.mem
            .write_slice(b"!", GuestAddress(TXBUF + 0x2000))
            .unwrap();
        f.tx(&[
            (TXBUF, HDR_LEN as u32 + 3, 0),
            (TXBUF + 0x1000, 2, 0),
            (TXBUF + 0x2000, 1, 0),
        ]);
        let mut got = [0u8; 6];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"world!");
        // Host to guest, through an rx buffer.
        server.write_all(b"reply").unwrap();
        let mut pkt = None;
        for _ in 0..100 {
            f.muxer.handle_ready(
                PollTarget::Conn(super::super::muxer::ConnKey {
                    local_port: 80,
                    peer_port: 1000,
                }),
                libc::POLLIN,
            );
            pkt = f.rx(4096);
            if pkt.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (h, payload) = pkt.unwrap();
        assert_eq!((h.op, h.src_port, h.dst_port), (op::RW, 80, 1000));
        assert_eq!(payload, b"reply");
    }

    #[test]
    fn malformed_tx_chains_are_refused_without_panic() {
        let mut f = fixture();
        let malformed = |f: &Fixture| {
            f.muxer
                .metrics()
                .malformed
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        // A looping chain (descriptors 0 and 1 point at each other).
        f.txd
            .add_raw(&f.mem, &[(TXBUF, 8, F_NEXT, 1), (TXBUF, 8, F_NEXT, 0)]);
        assert!(QueueEngine {
            mem: &f.mem,
            muxer: &mut f.muxer,
        }
        .process_tx(&mut f.tx));
        assert_eq!(f.txd.pop_used(&f.mem), Some((0, 0)));
        assert_eq!(malformed(&f), 1);
        // Short header.
        f.tx(&[(TXBUF, 20, 0)]);
        assert_eq!(malformed(&f), 2);
        // Write-only descriptor on the tx queue.
        f.write_hdr(TXBUF, guest_hdr(op::REQUEST, 1, 2, 0));
        f.tx(&[(TXBUF, HDR_LEN as u32, F_WRITE)]);
        assert_eq!(malformed(&f), 3);
        // Declared payload longer than the chain.
        f.write_hdr(TXBUF, guest_hdr(op::RW, 1, 2, 100));
        f.tx(&[(TXBUF, HDR_LEN as u32 + 10, 0)]);
        assert_eq!(malformed(&f), 4);
        // Oversized payload.
        f.write_hdr(TXBUF, guest_hdr(op::RW, 1, 2, MAX_PKT_PAYLOAD + 1));
        f.tx(&[
            (TXBUF, HDR_LEN as u32, 0),
            (TXBUF + 0x1000, MAX_PKT_PAYLOAD + 1, 0),
        ]);
        assert_eq!(malformed(&f), 5);
        // Header outside guest memory.
        f.tx(&[(MEM - 8, HDR_LEN as u32, 0)]);
        assert_eq!(malformed(&f), 6);
        // None of these produced a packet for the guest or a connection.
        assert!(f.rx(4096).is_none());
        assert_eq!(f.muxer.conn_count(), 0);
    }

    #[test]
    fn rx_buffers_that_cannot_hold_a_header_are_returned_empty() {
        let mut f = fixture();
        // A packet for no connection produces an RST for the guest.
        f.write_hdr(TXBUF, guest_hdr(op::RW, 1, 2, 0));
        f.tx(&[(TXBUF, HDR_LEN as u32, 0)]);
        // Too small a buffer: used with length 0, the RST stays queued.
        f.rxd.add_chain(&f.mem, &[(RXBUF, 10, F_WRITE)]);
        assert!(f.engine_rx());
        assert_eq!(f.rxd.pop_used(&f.mem).unwrap().1, 0);
        // A read-only rx buffer: refused likewise.
        f.rxd.add_chain(&f.mem, &[(RXBUF, 4096, 0)]);
        assert!(f.engine_rx());
        assert_eq!(f.rxd.pop_used(&f.mem).unwrap().1, 0);
        let (h, _) = f.rx(HDR_LEN as u32).unwrap();
        assert_eq!(h.op, op::RST);
        // Nothing left: the next buffer stays available.
        assert!(f.rx(4096).is_none());
    }

    #[test]
    fn device_model() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Vsock::new(42, &dir.path().join("s")).unwrap();
        assert_eq!(dev.device_type(), 19);
        assert_eq!(dev.queue_max_sizes().len(), 3);
        let mut cid = [0u8; 8];
        dev.read_config(0, &mut cid);
        assert_eq!(u64::from_le_bytes(cid), 42);
        let mut hi = [0u8; 4];
        dev.read_config(4, &mut hi);
        assert_eq!(hi, [0; 4]);
        assert_ne!(dev.avail_features() & (1 << VIRTIO_F_VERSION_1), 0);
    }
}
