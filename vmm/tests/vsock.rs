//! virtio-vsock through real KVM: the test plays the guest's vsock driver (rx buffers and tx
//! packets written straight into guest memory, QueueNotify and register accesses done by the
//! remote hand at CPL3) against host Unix-socket clients on the hybrid-vsock socket.
//!
//! Skipped, with the reason printed, when /dev/kvm cannot be opened.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_vmm::build_vm;
use berth_vmm::devices::virtio::irq;
use berth_vmm::devices::virtio::mmio::reg;
use berth_vmm::devices::virtio::vsock::{op, shutdown, PacketHeader, HDR_LEN, HOST_CID};
use berth_vmm::testing::virtq::{DriverQueue, F_WRITE};
use berth_vmm::vmm_config::VsockConfig;
use common::*;
use vm_memory::{Bytes, GuestAddress};

const GUEST_CID: u64 = 3;
const RXQ: u64 = 0x10_0000;
const TXQ: u64 = 0x11_0000;
const EVQ: u64 = 0x12_0000;
const RXBUF: u64 = 0x30_0000;
const TXBUF: u64 = 0x40_0000;
const QSIZE: u16 = 16;

/// The guest driver's side of the device.
struct Driver<'a> {
    hand: Hand<'a>,
    base: u64,
    rx: DriverQueue,
    tx: DriverQueue,
    rx_posted: u64,
}

impl Driver<'_> {
    /// Posts one 4 KiB rx buffer (single-descriptor chains cycle through the table in order).
    fn post_rx(&mut self) {
        let addr = RXBUF + (self.rx_posted % u64::from(QSIZE)) * 0x1000;
        let mem = self.hand.mem;
        self.rx.add_chain(mem, &[(addr, 4096, F_WRITE)]);
        self.rx_posted += 1;
    }

    fn notify(&mut self, queue: u32) {
        self.hand.write32(self.base + reg::QUEUE_NOTIFY, queue);
    }

    /// Waits for the next packet in the rx used ring, then reposts a buffer.
    fn recv(&mut self) -> (PacketHeader, Vec<u8>) {
        let mem = self.hand.mem;
        let (id, len) = wait_used(mem, &mut self.rx);
        let addr = RXBUF + u64::from(id) * 0x1000;
        let mut raw = [0u8; HDR_LEN];
        mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
        let hdr = PacketHeader::from_bytes(&raw);
        assert_eq!(
            len,
            HDR_LEN as u32 + hdr.len,
            "used length covers the packet"
        );
        let mut payload = vec![0u8; hdr.len as usize];
        mem.read_slice(&mut payload, GuestAddress(addr + HDR_LEN as u64))
            .unwrap();
        self.post_rx();
        self.notify(0);
        (hdr, payload)
    }

    /// Writes a packet from the guest into the tx queue, notifies and waits until it is used.
    fn send(&mut self, op: u16, src_port: u32, dst_port: u32, flags: u32, payload: &[u8]) {
        let hdr = PacketHeader {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: payload.len() as u32,
            type_: 1,
            op,
            flags,
            buf_alloc: 65536,
            fwd_cnt: 0,
        };
        let mem = self.hand.mem;
        mem.write_slice(&hdr.to_bytes(), GuestAddress(TXBUF))
            .unwrap();
        mem.write_slice(payload, GuestAddress(TXBUF + 0x1000))
            .unwrap();
        let chain: Vec<(u64, u32, u16)> = if payload.is_empty() {
            vec![(TXBUF, HDR_LEN as u32, 0)]
        } else {
            vec![
                (TXBUF, HDR_LEN as u32, 0),
                (TXBUF + 0x1000, payload.len() as u32, 0),
            ]
        };
        self.tx.add_chain(mem, &chain);
        self.notify(1);
        wait_used(mem, &mut self.tx);
    }
}

fn read_line(stream: &UnixStream) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

fn vsock_config(uds: &Path) -> berth_vmm::vmm_config::VmConfig {
    let mut cfg = config(vec![]);
    cfg.vsock = Some(VsockConfig {
        guest_cid: GUEST_CID,
        uds_path: uds.to_owned(),
    });
    cfg
}

#[test]
fn vsock_host_and_guest_connections_through_kvm() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mut vmm = build_vm(&vsock_config(&uds), None).unwrap();
    install_guest(&vmm);
    vmm.start().unwrap();
    let mem = vmm.guest_memory().clone();
    let mut hand = Hand::new(&mem);
    hand.wait_ready(Duration::from_secs(10));
    let dev = vmm.vsock().unwrap().clone();
    let base = dev.mmio_base;
    assert_eq!(hand.read32(base + reg::DEVICE_ID), 19);
    assert_eq!(hand.read32(base + reg::CONFIG), GUEST_CID as u32);
    assert_eq!(hand.read32(base + reg::CONFIG + 4), 0);

    let rx = DriverQueue::new(GuestAddress(RXQ), QSIZE);
    let tx = DriverQueue::new(GuestAddress(TXQ), QSIZE);
    let ev = DriverQueue::new(GuestAddress(EVQ), QSIZE);
    for q in [&rx, &tx, &ev] {
        q.init(&mem);
    }
    bring_up(&mut hand, base, &[&rx, &tx, &ev], 256, 0);
    let mut drv = Driver {
        hand,
        base,
        rx,
        tx,
        rx_posted: 0,
    };
    for _ in 0..8 {
        drv.post_rx();
    }
    drv.notify(0);

    // Host-initiated: CONNECT 1234 becomes an OP_REQUEST in the rx queue.
    let t = Instant::now();
    let mut client = UnixStream::connect(&uds).unwrap();
    client.write_all(b"CONNECT 1234\n").unwrap();
    let (req, _) = drv.recv();
    assert_eq!(req.op, op::REQUEST);
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port),
        (HOST_CID, GUEST_CID, 1234)
    );
    assert_eq!(req.type_, 1);
    let host_port = req.src_port;
    drv.send(op::RESPONSE, 1234, host_port, 0, b"");
    assert_eq!(read_line(&client), format!("OK {host_port}\n"));
    let connect_latency = t.elapsed();

    // Host bytes arrive as OP_RW.
    client.write_all(b"hello from the host").unwrap();
    let (rw, payload) = drv.recv();
    assert_eq!((rw.op, rw.src_port, rw.dst_port), (op::RW, host_port, 1234));
    assert_eq!(payload, b"hello from the host");

    // Guest OP_RW reaches the host client.
    drv.send(op::RW, 1234, host_port, 0, b"hello from the guest");
    let mut got = [0u8; 20];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello from the guest");

    // Host close: SHUTDOWN to the guest; the guest's full shutdown gets an RST.
    drop(client);
    let (sd, _) = drv.recv();
    assert_eq!(
        (sd.op, sd.flags & shutdown::SEND),
        (op::SHUTDOWN, shutdown::SEND)
    );
    drv.send(
        op::SHUTDOWN,
        1234,
        host_port,
        shutdown::RCV | shutdown::SEND,
        b"",
    );
    let (rst, _) = drv.recv();
    assert_eq!((rst.op, rst.dst_port), (op::RST, 1234));

    // Guest-initiated: host port 5000 is the Unix socket <uds>_5000.
    let listener = UnixListener::bind(format!("{}_5000", uds.display())).unwrap();
    drv.send(op::REQUEST, 40000, 5000, 0, b"");
    let (resp, _) = drv.recv();
    assert_eq!(
        (resp.op, resp.src_port, resp.dst_port),
        (op::RESPONSE, 5000, 40000)
    );
    let (mut server, _) = listener.accept().unwrap();
    drv.send(op::RW, 40000, 5000, 0, b"ping");
    let mut got = [0u8; 4];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    let t = Instant::now();
    server.write_all(b"pong").unwrap();
    let (rw, payload) = drv.recv();
    let host_to_guest = t.elapsed();
    assert_eq!((rw.op, payload.as_slice()), (op::RW, &b"pong"[..]));

    // Nobody listens on host port 5001: RST.
    drv.send(op::REQUEST, 40001, 5001, 0, b"");
    let (rst, _) = drv.recv();
    assert_eq!((rst.op, rst.dst_port), (op::RST, 40001));

    // Used buffers raised the interrupt through the irqfd; every notify went to the ioeventfd.
    assert_ne!(
        drv.hand.read32(base + reg::INTERRUPT_STATUS) & irq::VRING,
        0
    );
    let t = dev.transport.lock().unwrap();
    assert!(t.interrupt().raised_count() >= 1);
    assert_eq!(t.notify_exits(), 0);
    drop(t);
    assert_eq!(dev.metrics.malformed.load(Ordering::Relaxed), 0);
    assert_eq!(dev.metrics.connections.load(Ordering::Relaxed), 2);
    println!(
        "timing: vsock CONNECT-to-OK {connect_latency:?}, host-write-to-guest-rx {host_to_guest:?}"
    );

    let mut hand = drv.hand;
    end_with_i8042_reset(&mut vmm, &mut hand);
    drop((vmm, dev));
    assert!(!uds.exists(), "the VMM removes its socket");
}

#[test]
fn vsock_socket_path_in_use_fails_before_any_vcpu_runs() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("busy.sock");
    let _owner = UnixListener::bind(&uds).unwrap();
    let err = build_vm(&vsock_config(&uds), None).unwrap_err();
    let mut chain = err.to_string();
    let mut src = std::error::Error::source(&err);
    while let Some(e) = src {
        chain.push_str(": ");
        chain.push_str(&e.to_string());
        src = e.source();
    }
    assert_eq!(
        chain,
        format!(
            "invalid VM configuration: vsock uds_path cannot be used: \
             vsock Unix socket path {} is already in use",
            uds.display()
        )
    );
    let mut cfg = vsock_config(&dir.path().join("other.sock"));
    cfg.vsock.as_mut().unwrap().guest_cid = 2;
    let err = build_vm(&cfg, None).unwrap_err();
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "vsock guest_cid 2 is out of range 3..4294967295"
    );
}
