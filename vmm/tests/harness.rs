//! Harness-guest integration tests: real KVM, the VMM's own builder, and a few bytes of CPL3
//! machine code (tests/guest/remote_hand.S) standing in for a kernel. The host plays the virtio
//! driver in guest memory and asks the guest for the register accesses that must trap.
//!
//! Skipped, with the reason printed, when /dev/kvm cannot be opened.
// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_vmm::devices::legacy::SerialOutput;
use berth_vmm::devices::virtio::block::{blk_status, req};
use berth_vmm::devices::virtio::irq;
use berth_vmm::devices::virtio::mmio::reg;
use berth_vmm::devices::virtio::status::*;
use berth_vmm::memory::GuestMemory;
use berth_vmm::testing::virtq::{DriverQueue, F_WRITE};
use berth_vmm::vmm_config::DriveConfig;
use berth_vmm::{build_vm, VmmExit};
use vm_memory::{Bytes, GuestAddress};

mod common;
use common::*;

fn disk(dir: &tempfile::TempDir, sectors: usize) -> std::path::PathBuf {
    let path = dir.path().join("disk.img");
    let content: Vec<u8> = (0..sectors * 512).map(|i| (i / 512) as u8).collect();
    std::fs::write(&path, content).unwrap();
    path
}

/// Negotiates, sets up queue 0 from `driver` and sets DRIVER_OK.
fn bring_up_block(hand: &mut Hand, base: u64, driver: &DriverQueue, extra_features: u64) {
    bring_up(hand, base, &[driver], 256, extra_features);
}

fn header(mem: &GuestMemory, rtype: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&rtype.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(HDR)).unwrap();
}

/// Submits a chain, notifies through the guest (an MMIO write KVM turns into an ioeventfd
/// signal), waits for the used entry and returns (used len, status byte).
fn submit(
    hand: &mut Hand,
    base: u64,
    driver: &mut DriverQueue,
    chain: &[(u64, u32, u16)],
) -> (u32, u8) {
    let mem = hand.mem;
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    let head = driver.add_chain(mem, chain);
    hand.write32(base + reg::QUEUE_NOTIFY, 0);
    let t = Instant::now();
    let (id, len) = loop {
        if let Some(used) = driver.pop_used(mem) {
            break used;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no used entry");
        std::thread::sleep(Duration::from_micros(50));
    };
    assert_eq!(id, u32::from(head));
    (len, mem.read_obj(GuestAddress(STATUS)).unwrap())
}

/// Bit `irq` of the in-kernel master PIC's IRR (latched on an edge from the irqfd).
#[test]
fn virtio_blk_write_then_read_back_through_kvm() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk_path = disk(&dir, 256);
    let t0 = Instant::now();
    let cfg = config(vec![DriveConfig {
        drive_id: "rootfs".into(),
        path_on_host: disk_path.clone(),
        is_read_only: false,
    }]);
    let mut vmm = build_vm(&cfg, Some(SerialOutput::Sink)).unwrap();
    let built = t0.elapsed();
    install_guest(&vmm);
    vmm.start().unwrap();
    let mem = vmm.guest_memory().clone();
    let mut hand = Hand::new(&mem);
    hand.wait_ready(Duration::from_secs(10));
    let first_insn = t0.elapsed();
    println!(
        "timing: build_vm {:?}, config-to-first-guest-instruction {:?}",
        built, first_insn
    );

    let blk = vmm.blocks()[0].clone();
    let base = blk.mmio_base;
    assert_eq!(hand.read32(base + reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(hand.read32(base + reg::VERSION), 2);
    assert_eq!(hand.read32(base + reg::DEVICE_ID), 2);
    let mut cap = hand.read32(base + reg::CONFIG) as u64;
    cap |= (hand.read32(base + reg::CONFIG + 4) as u64) << 32;
    assert_eq!(cap, 256);

    let mut driver = DriverQueue::new(GuestAddress(QUEUE), 16);
    driver.init(&mem);
    bring_up_block(&mut hand, base, &driver, 1 << 9 /* FLUSH */);

    // Write 8 sectors at sector 32.
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    header(&mem, req::OUT, 32);
    let t = Instant::now();
    let (len, st) = submit(
        &mut hand,
        base,
        &mut driver,
        &[(HDR, 16, 0), (DATA, 4096, 0), (STATUS, 1, F_WRITE)],
    );
    let write_latency = t.elapsed();
    assert_eq!((len, st), (1, blk_status::OK));

    // Used-buffer interrupt: status register, irqfd edge latched in the PIC, ack.
    assert_eq!(
        hand.read32(base + reg::INTERRUPT_STATUS) & irq::VRING,
        irq::VRING
    );
    assert!(blk.transport.lock().unwrap().interrupt().raised_count() >= 1);
    // KVM injects irqfd interrupts from a kernel worker, so the latch may lag a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !pic_irr(&vmm, blk.gsi) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        pic_irr(&vmm, blk.gsi),
        "irqfd did not reach the PIC within 2 s"
    );
    hand.write32(base + reg::INTERRUPT_ACK, irq::VRING);
    assert_eq!(hand.read32(base + reg::INTERRUPT_STATUS), 0);

    // Flush.
    header(&mem, req::FLUSH, 0);
    let (_, st) = submit(
        &mut hand,
        base,
        &mut driver,
        &[(HDR, 16, 0), (STATUS, 1, F_WRITE)],
    );
    assert_eq!(st, blk_status::OK);

    // The host file holds the data.
    let mut on_disk = vec![0u8; 4096];
    std::fs::File::open(&disk_path)
        .unwrap()
        .read_exact_at(&mut on_disk, 32 * 512)
        .unwrap();
    assert_eq!(on_disk, pattern);

    // Read it back through the device, into two buffers, plus one untouched sector after.
    mem.write_slice(&[0u8; 8192], GuestAddress(DATA)).unwrap();
    header(&mem, req::IN, 32);
    let t = Instant::now();
    let (len, st) = submit(
        &mut hand,
        base,
        &mut driver,
        &[
            (HDR, 16, 0),
            (DATA, 2048, F_WRITE),
            (DATA + 0x1000, 2560, F_WRITE),
            (STATUS, 1, F_WRITE),
        ],
    );
    let read_latency = t.elapsed();
    assert_eq!((len, st), (4609, blk_status::OK));
    let mut back = vec![0u8; 4608];
    mem.read_slice(&mut back[..2048], GuestAddress(DATA))
        .unwrap();
    mem.read_slice(&mut back[2048..], GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(&back[..4096], &pattern[..]);
    assert!(
        back[4096..].iter().all(|&b| b == 40),
        "sector 40 is untouched"
    );

    // GET_ID.
    header(&mem, req::GET_ID, 0);
    let (len, st) = submit(
        &mut hand,
        base,
        &mut driver,
        &[(HDR, 16, 0), (DATA, 20, F_WRITE), (STATUS, 1, F_WRITE)],
    );
    assert_eq!((len, st), (21, blk_status::OK));
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..6], b"rootfs");
    assert!(id[6..].iter().all(|&b| b == 0));

    // Past the end of the disk.
    header(&mem, req::IN, 255);
    let (_, st) = submit(
        &mut hand,
        base,
        &mut driver,
        &[(HDR, 16, 0), (DATA, 1024, F_WRITE), (STATUS, 1, F_WRITE)],
    );
    assert_eq!(st, blk_status::IOERR);

    // Every QueueNotify went to the ioeventfd: none trapped to the transport.
    assert_eq!(blk.transport.lock().unwrap().notify_exits(), 0);

    let m = &blk.metrics;
    assert_eq!(m.write_bytes.load(Ordering::Relaxed), 4096);
    assert_eq!(m.read_bytes.load(Ordering::Relaxed), 4608);
    println!("timing: 4 KiB write round trip {write_latency:?}, 4.5 KiB read round trip {read_latency:?}");

    // Device reset by the driver: status back to 0, queue no longer ready.
    hand.write32(base + reg::STATUS, 0);
    assert_eq!(hand.read32(base + reg::STATUS), 0);
    assert_eq!(hand.read32(base + reg::QUEUE_READY), 0);

    end_with_i8042_reset(&mut vmm, &mut hand);
}

#[test]
fn read_only_drive_refuses_guest_writes_through_kvm() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk_path = disk(&dir, 16);
    let cfg = config(vec![DriveConfig {
        drive_id: "ro".into(),
        path_on_host: disk_path.clone(),
        is_read_only: true,
    }]);
    let mut vmm = build_vm(&cfg, None).unwrap();
    install_guest(&vmm);
    vmm.start().unwrap();
    let mem = vmm.guest_memory().clone();
    let mut hand = Hand::new(&mem);
    hand.wait_ready(Duration::from_secs(10));
    let base = vmm.blocks()[0].mmio_base;

    // The RO feature (bit 5) is offered; accepting it is fine.
    hand.write32(base + reg::DEVICE_FEATURES_SEL, 0);
    assert_ne!(hand.read32(base + reg::DEVICE_FEATURES) & (1 << 5), 0);
    let mut driver = DriverQueue::new(GuestAddress(QUEUE), 8);
    driver.init(&mem);
    bring_up_block(&mut hand, base, &driver, 1 << 5);

    mem.write_slice(&[0xee; 512], GuestAddress(DATA)).unwrap();
    header(&mem, req::OUT, 1);
    let (len, st) = submit(
        &mut hand,
        base,
        &mut driver,
        &[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, F_WRITE)],
    );
    assert_eq!((len, st), (1, blk_status::IOERR));
    let on_disk = std::fs::read(&disk_path).unwrap();
    assert!(on_disk[512..1024].iter().all(|&b| b == 1), "file unchanged");

    header(&mem, req::IN, 1);
    let (_, st) = submit(
        &mut hand,
        base,
        &mut driver,
        &[(HDR, 16, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)],
    );
    assert_eq!(st, blk_status::OK);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(DATA)).unwrap(), 1);

    end_with_i8042_reset(&mut vmm, &mut hand);
}

#[test]
fn serial_output_unclaimed_io_and_feature_refusal_through_kvm() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(vec![DriveConfig {
        drive_id: "d".into(),
        path_on_host: disk(&dir, 8),
        is_read_only: false,
    }]);
    let console = Arc::new(Mutex::new(Vec::new()));
    let mut vmm = build_vm(&cfg, Some(SerialOutput::Buffer(console.clone()))).unwrap();
    install_guest(&vmm);
    vmm.start().unwrap();
    let mem = vmm.guest_memory().clone();
    let mut hand = Hand::new(&mem);
    hand.wait_ready(Duration::from_secs(10));

    for b in b"hello from CPL3\n" {
        hand.outb(0x3f8, *b);
    }
    assert_eq!(&*console.lock().unwrap(), b"hello from CPL3\n");
    // Line status: transmitter holding register empty.
    assert_ne!(hand.inb(0x3f8 + 5) & 0x20, 0);
    // Unclaimed port reads as 0xff, unclaimed MMIO as 0; neither stops the VM.
    assert_eq!(hand.inb(0x2e8), 0xff);
    assert_eq!(hand.read32(0xd010_0000), 0);

    // A driver that does not accept VERSION_1 is refused FEATURES_OK.
    let base = vmm.blocks()[0].mmio_base;
    hand.write32(base + reg::STATUS, ACKNOWLEDGE.into());
    hand.write32(base + reg::STATUS, (ACKNOWLEDGE | DRIVER).into());
    hand.write32(base + reg::DRIVER_FEATURES_SEL, 0);
    hand.write32(base + reg::DRIVER_FEATURES, 1 << 9);
    hand.write32(
        base + reg::STATUS,
        (ACKNOWLEDGE | DRIVER | FEATURES_OK).into(),
    );
    assert_eq!(
        hand.read32(base + reg::STATUS),
        u32::from(ACKNOWLEDGE | DRIVER)
    );

    end_with_i8042_reset(&mut vmm, &mut hand);
}

#[test]
fn stopping_a_spinning_guest_with_a_timeout() {
    if !kvm_usable() {
        return;
    }
    let mut vmm = build_vm(&config(vec![]), None).unwrap();
    install_guest(&vmm);
    vmm.start().unwrap();
    let mem = vmm.guest_memory().clone();
    Hand::new(&mem).wait_ready(Duration::from_secs(10));
    // The guest spins natively without exiting; the VMM must still be able to stop it.
    let t = Instant::now();
    assert_eq!(
        vmm.wait(Some(Duration::from_millis(100))).unwrap(),
        VmmExit::Timeout
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_config_fails_before_any_vcpu_runs() {
    let mut cfg = config(vec![DriveConfig {
        drive_id: "ro".into(),
        path_on_host: "/nonexistent/ro.img".into(),
        is_read_only: true,
    }]);
    let err = build_vm(&cfg, None).unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert_eq!(
        chain,
        "invalid VM configuration: drive /nonexistent/ro.img cannot be opened"
    );
    cfg.drives.clear();
    cfg.machine.mem_size_mib = 8;
    assert!(build_vm(&cfg, None).is_err());
}

/// tests/guest/boot_probe.S, assembled.
const BOOT_PROBE: &[u8] = &[
    0x8b, 0x86, 0x02, 0x02, 0x00, 0x00, 0x3d, 0x48, 0x64, 0x72, 0x53, 0x75, 0x04, 0xb0, 0x4b, 0xeb,
    0x02, 0xb0, 0x58, 0x66, 0xba, 0xf8, 0x03, 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xf4,
];

/// An ELF64 vmlinux-shaped image: one PT_LOAD at physical 2 MiB, entry at its start.
fn elf_image(code: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 62); // x86_64
    put32(&mut f, 20, 1);
    put64(&mut f, 24, 0x20_0000); // entry
    put64(&mut f, 32, 64); // phoff
    put16(&mut f, 52, 64);
    put16(&mut f, 54, 56);
    put16(&mut f, 56, 1);
    put16(&mut f, 58, 64);
    put32(&mut f, 64, 1); // PT_LOAD
    put32(&mut f, 68, 5);
    put64(&mut f, 72, 0x1000); // offset
    put64(&mut f, 80, 0xffff_ffff_8100_0000); // vaddr
    put64(&mut f, 88, 0x20_0000); // paddr
    put64(&mut f, 96, code.len() as u64);
    put64(&mut f, 104, code.len() as u64);
    put64(&mut f, 112, 0x1000);
    f.extend_from_slice(code);
    f
}

/// The kernel path end to end: linux-loader places an ELF, the builder writes boot_params and
/// puts vCPU 0 in long mode at the entry with rsi = zero page. Guest kernel mode is emulated
/// here, which is enough for the probe's few instructions (not for Linux).
#[test]
fn elf_kernel_entry_runs_with_boot_params() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, elf_image(BOOT_PROBE)).unwrap();
    let mut cfg = config(vec![]);
    cfg.boot_source = Some(berth_vmm::vmm_config::BootSourceConfig {
        kernel_image_path: kernel,
        initrd_path: None,
        boot_args: None,
    });
    let console = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let mut vmm = build_vm(&cfg, Some(SerialOutput::Buffer(console.clone()))).unwrap();
    assert_eq!(vmm.boot_info().unwrap().entry, GuestAddress(0x20_0000));
    vmm.start().unwrap();
    let exit = vmm.wait(Some(Duration::from_secs(10))).unwrap();
    let elapsed = t0.elapsed();
    assert_eq!(exit, VmmExit::Reset);
    assert_eq!(&*console.lock().unwrap(), b"K");
    println!("timing: config-to-guest-reset through the kernel entry path {elapsed:?}");
}
