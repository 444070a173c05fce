//! virtio-net on a real tap through real KVM. The test makes its own network namespace, so
//! the tap never touches the host's network; a packet socket on the tap plays the host's
//! network stack, the remote hand and the test play the guest driver.
//!
//! Skipped, with the reason printed, when not root, or /dev/net/tun or /dev/kvm cannot be used.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_vmm::build_vm;
use berth_vmm::devices::virtio::mmio::reg;
use berth_vmm::devices::virtio::net::VNET_HDR_LEN;
use berth_vmm::testing::virtq::{DriverQueue, F_WRITE};
use berth_vmm::vmm_config::NetConfig;
use common::*;
use vm_memory::{Bytes, GuestAddress};

const RXQ: u64 = 0x10_0000;
const TXQ: u64 = 0x11_0000;
const RXBUF: u64 = 0x30_0000;
const TXBUF: u64 = 0x40_0000;
const TAP: &str = "bvtap0";
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// IEEE 802 local experimental ethertype: nothing else in the namespace sends it.
const ETHERTYPE: u16 = 0x88b5;

/// Deletes the namespace when the test ends, however it ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?} failed");
}

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: not root; the virtio-net test creates a network namespace and a tap");
        return false;
    }
    if let Err(e) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        println!("SKIPPED: /dev/net/tun cannot be opened ({e})");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        println!("SKIPPED: iproute2 (ip) is not installed");
        return false;
    }
    kvm_usable()
}

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// An AF_PACKET socket bound to the tap (in the calling thread's namespace).
fn packet_socket(ifname: &str) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh socket we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: `name` is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0);
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and the length matches it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    fd
}

/// Receives frames on `fd` until one matches `pred` (10 s at most).
fn recv_matching(fd: &OwnedFd, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let t = Instant::now();
    let mut buf = vec![0u8; 65536];
    while t.elapsed() < Duration::from_secs(10) {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        if pfd.revents == 0 {
            continue;
        }
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 && pred(&buf[..n as usize]) {
            return buf[..n as usize].to_vec();
        }
    }
    panic!("no matching frame on the tap within 10 s");
}

#[test]
fn virtio_net_frames_through_a_tap_in_a_private_netns() {
    if !usable() {
        return;
    }
    let ns = Netns(format!("berth-vmm-net-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    let _ = Command::new("ip")
        .args(["netns", "exec", &ns.0, "sysctl", "-qw"])
        .arg("net.ipv6.conf.default.disable_ipv6=1")
        .status();
    let ns_name = ns.0.clone();
    // setns changes only the calling thread: everything namespace-bound happens in this one.
    std::thread::spawn(move || run_in_netns(&ns_name))
        .join()
        .unwrap();
    drop(ns);
}

fn run_in_netns(ns: &str) {
    let nsfile = File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a namespace file we hold open; affects this thread only.
    let rc = unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());

    let mut cfg = config(vec![]);
    cfg.net.push(NetConfig {
        iface_id: "eth0".into(),
        host_dev_name: TAP.into(),
        guest_mac: Some("02:00:00:00:00:01".into()),
    });
    let mut vmm = build_vm(&cfg, None).unwrap();
    ip(&["-n", ns, "link", "set", TAP, "up"]);
    let sock = packet_socket(TAP);
    install_guest(&vmm);
    vmm.start().unwrap();
    let mem = vmm.guest_memory().clone();
    let mut hand = Hand::new(&mem);
    hand.wait_ready(Duration::from_secs(10));
    let dev = vmm.nets()[0].clone();
    let base = dev.mmio_base;
    assert_eq!(hand.read32(base + reg::DEVICE_ID), 1);
    // MAC in config space; the MAC feature (bit 5) is offered.
    let lo = hand.read32(base + reg::CONFIG).to_le_bytes();
    let hi = hand.read32(base + reg::CONFIG + 4).to_le_bytes();
    assert_eq!([lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]], GUEST_MAC);
    hand.write32(base + reg::DEVICE_FEATURES_SEL, 0);
    assert_ne!(hand.read32(base + reg::DEVICE_FEATURES) & (1 << 5), 0);

    let mut rx = DriverQueue::new(GuestAddress(RXQ), 16);
    let mut tx = DriverQueue::new(GuestAddress(TXQ), 16);
    rx.init(&mem);
    tx.init(&mem);
    bring_up(&mut hand, base, &[&rx, &tx], 256, 1 << 5);

    // Guest to host: vnet header + frame in the tx queue, notify, read it from the tap.
    let out = frame(HOST_MAC, GUEST_MAC, b"frame from the guest");
    mem.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(TXBUF))
        .unwrap();
    mem.write_slice(&out, GuestAddress(TXBUF + 0x1000)).unwrap();
    tx.add_chain(
        &mem,
        &[
            (TXBUF, VNET_HDR_LEN as u32, 0),
            (TXBUF + 0x1000, out.len() as u32, 0),
        ],
    );
    hand.write32(base + reg::QUEUE_NOTIFY, 1);
    assert_eq!(wait_used(&mem, &mut tx).1, 0);
    let seen = recv_matching(&sock, |f| f == out.as_slice());
    assert_eq!(seen, out);

    // Host to guest: a frame sent on the tap lands in an rx buffer behind a vnet header.
    for i in 0..8u64 {
        rx.add_chain(&mem, &[(RXBUF + i * 0x1000, 2048, F_WRITE)]);
    }
    hand.write32(base + reg::QUEUE_NOTIFY, 0);
    let inbound = frame(GUEST_MAC, HOST_MAC, b"frame from the host");
    let t = Instant::now();
    // SAFETY: `inbound` is valid for its length; the socket is bound to the tap.
    let n = unsafe { libc::send(sock.as_raw_fd(), inbound.as_ptr().cast(), inbound.len(), 0) };
    assert_eq!(n, inbound.len() as isize);
    let got = loop {
        let (id, len) = wait_used(&mem, &mut rx);
        let mut buf = vec![0u8; len as usize];
        mem.read_slice(&mut buf, GuestAddress(RXBUF + u64::from(id) * 0x1000))
            .unwrap();
        // Skip anything else the namespace's stack might send out of the tap.
        if buf.len() > VNET_HDR_LEN + 14
            && buf[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == ETHERTYPE.to_be_bytes()
        {
            break buf;
        }
    };
    let latency = t.elapsed();
    assert_eq!(&got[10..12], &1u16.to_le_bytes(), "num_buffers");
    assert_eq!(&got[VNET_HDR_LEN..], inbound.as_slice());
    assert_ne!(hand.read32(base + reg::INTERRUPT_STATUS), 0);
    println!("timing: tap write to guest rx used entry {latency:?}");

    end_with_i8042_reset(&mut vmm, &mut hand);
}
