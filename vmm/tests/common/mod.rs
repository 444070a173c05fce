//! Shared pieces of the harness-guest tests: the remote hand (tests/guest/remote_hand.S), its
//! CPL3 long-mode set-up, the mailbox driver and a generic virtio-mmio bring-up.
// Each test binary uses a different subset.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_vmm::devices::virtio::mmio::reg;
use berth_vmm::devices::virtio::status::*;
use berth_vmm::devices::virtio::VIRTIO_F_VERSION_1;
use berth_vmm::memory::GuestMemory;
use berth_vmm::testing::virtq::DriverQueue;
use berth_vmm::vmm_config::{DriveConfig, MachineConfig, SerialConfig, VmConfig};
use berth_vmm::{Vmm, VmmExit};
use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress};

/// tests/guest/remote_hand.S, assembled (as --64; objcopy -O binary -j .text).
pub const REMOTE_HAND: &[u8] = &[
    0xbb, 0x00, 0x80, 0x00, 0x00, 0xc7, 0x43, 0x24, 0x0d, 0xf0, 0x0d, 0x60, 0x45, 0x31, 0xe4, 0xf3,
    0x90, 0x8b, 0x03, 0x44, 0x39, 0xe0, 0x74, 0xf7, 0x41, 0x89, 0xc4, 0x8b, 0x4b, 0x04, 0x48, 0x8b,
    0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10, 0x31, 0xc0, 0x83, 0xf9, 0x01, 0x74, 0x25, 0x83, 0xf9, 0x02,
    0x74, 0x24, 0x83, 0xf9, 0x03, 0x74, 0x23, 0x83, 0xf9, 0x04, 0x74, 0x23, 0x83, 0xf9, 0x05, 0x74,
    0x23, 0x83, 0xf9, 0x06, 0x74, 0x25, 0x83, 0xf9, 0x07, 0x74, 0x28, 0x83, 0xf9, 0x08, 0x74, 0x28,
    0xeb, 0x29, 0x89, 0x37, 0xeb, 0x25, 0x8b, 0x07, 0xeb, 0x21, 0x40, 0x88, 0x37, 0xeb, 0x1c, 0x0f,
    0xb6, 0x07, 0xeb, 0x17, 0x89, 0xfa, 0x89, 0xf0, 0xee, 0xeb, 0x10, 0x89, 0xfa, 0xec, 0x0f, 0xb6,
    0xc0, 0xeb, 0x08, 0x66, 0x89, 0x37, 0xeb, 0x03, 0x0f, 0xb7, 0x07, 0x48, 0x89, 0x43, 0x18, 0x44,
    0x89, 0x63, 0x20, 0xeb, 0x8a,
];

pub const PML4: u64 = 0x1000;
pub const PDPT: u64 = 0x2000;
pub const PD: u64 = 0x3000; // four PDs: 0x3000..0x7000, identity map of 4 GiB
pub const MAILBOX: u64 = 0x8000;
pub const CODE: u64 = 0x1_0000;
pub const QUEUE: u64 = 0x10_0000;
pub const HDR: u64 = 0x20_0000;
pub const DATA: u64 = 0x20_1000;
pub const STATUS: u64 = 0x22_0000;
pub const READY_MAGIC: u32 = 0x600d_f00d;

pub const OP_WRITE32: u32 = 1;
pub const OP_READ32: u32 = 2;
pub const OP_OUTB: u32 = 5;
pub const OP_INB: u32 = 6;

/// Whether /dev/kvm can be used; also turns on seccomp for the vCPU threads (and the device
/// workers they start) of every VM the tests build.
pub fn kvm_usable() -> bool {
    berth_vmm::seccomp::set_enabled(true);
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) => {
            println!("SKIPPED: /dev/kvm cannot be opened ({e}); harness-guest tests need KVM");
            false
        }
    }
}

/// Loads the remote hand and puts vCPU 0 at CPL3 in 64-bit mode with IOPL 3.
pub fn install_guest(vmm: &Vmm) {
    let mem = vmm.guest_memory();
    mem.write_slice(REMOTE_HAND, GuestAddress(CODE)).unwrap();
    const P_RW_US: u64 = 0x7;
    const PS: u64 = 0x80;
    mem.write_obj(PDPT | P_RW_US, GuestAddress(PML4)).unwrap();
    for i in 0..4u64 {
        let pd = PD + i * 0x1000;
        mem.write_obj(pd | P_RW_US, GuestAddress(PDPT + i * 8))
            .unwrap();
        for j in 0..512u64 {
            let page = ((i * 512 + j) << 21) | P_RW_US | PS;
            mem.write_obj(page, GuestAddress(pd + j * 8)).unwrap();
        }
    }

    let vcpu = &vmm.vcpus()[0];
    let mut sregs = vcpu.sregs().unwrap();
    let seg = |selector: u16, type_: u8, l: u8, db: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = seg(0x33, 0xb, 1, 0);
    let data = seg(0x2b, 0x3, 0, 1);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr3 = PML4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8005_0033; // PG | AM | WP | NE | ET | MP | PE
    sregs.efer = (1 << 8) | (1 << 10); // LME | LMA
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.regs().unwrap();
    regs.rip = CODE;
    regs.rsp = 0xf000;
    regs.rflags = 0x3002; // IOPL 3, interrupts off
    vcpu.set_regs(&regs).unwrap();
}

/// Drives the remote hand through the mailbox.
pub struct Hand<'a> {
    pub mem: &'a GuestMemory,
    seq: u32,
}

impl<'a> Hand<'a> {
    pub fn new(mem: &'a GuestMemory) -> Self {
        Self { mem, seq: 0 }
    }

    pub fn wait_ready(&self, timeout: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let ready: u32 = self
                .mem
                .load(GuestAddress(MAILBOX + 36), Ordering::Acquire)
                .unwrap();
            if ready == READY_MAGIC {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < timeout,
                "guest never ran its first instruction"
            );
            std::hint::spin_loop();
        }
    }

    pub fn post(&mut self, op: u32, addr: u64, value: u64) -> u32 {
        self.mem.write_obj(op, GuestAddress(MAILBOX + 4)).unwrap();
        self.mem.write_obj(addr, GuestAddress(MAILBOX + 8)).unwrap();
        self.mem
            .write_obj(value, GuestAddress(MAILBOX + 16))
            .unwrap();
        self.seq += 1;
        self.mem
            .store(self.seq, GuestAddress(MAILBOX), Ordering::Release)
            .unwrap();
        self.seq
    }

    pub fn call(&mut self, op: u32, addr: u64, value: u64) -> u64 {
        let seq = self.post(op, addr, value);
        let t = Instant::now();
        loop {
            let done: u32 = self
                .mem
                .load(GuestAddress(MAILBOX + 32), Ordering::Acquire)
                .unwrap();
            if done == seq {
                return self.mem.read_obj(GuestAddress(MAILBOX + 24)).unwrap();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "guest did not complete op {op} at {addr:#x}"
            );
            std::hint::spin_loop();
        }
    }

    pub fn write32(&mut self, addr: u64, v: u32) {
        self.call(OP_WRITE32, addr, v.into());
    }

    pub fn read32(&mut self, addr: u64) -> u32 {
        self.call(OP_READ32, addr, 0) as u32
    }

    pub fn outb(&mut self, port: u16, v: u8) {
        self.call(OP_OUTB, port.into(), v.into());
    }

    pub fn inb(&mut self, port: u16) -> u8 {
        self.call(OP_INB, port.into(), 0) as u8
    }
}

pub fn config(drives: Vec<DriveConfig>) -> VmConfig {
    VmConfig {
        machine: MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 64,
        },
        boot_source: None,
        drives,
        serial: SerialConfig::Off,
        net: vec![],
        vsock: None,
        exit_on_port: None,
    }
}

pub fn pic_irr(vmm: &Vmm, irq: u32) -> bool {
    let mut chip = kvm_bindings::kvm_irqchip {
        chip_id: kvm_bindings::KVM_IRQCHIP_PIC_MASTER,
        ..Default::default()
    };
    vmm.vm().fd().get_irqchip(&mut chip).unwrap();
    // SAFETY: KVM_GET_IRQCHIP with chip_id PIC_MASTER filled the `pic` member of the union.
    let pic = unsafe { chip.chip.pic };
    pic.irr & (1 << irq) != 0
}

pub fn end_with_i8042_reset(vmm: &mut Vmm, hand: &mut Hand) {
    hand.post(OP_OUTB, 0x64, 0xfe);
    let exit = vmm.wait(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(exit, VmmExit::Reset);
}

/// Resets the device, negotiates VERSION_1 plus `extra_features`, sets up queue i from
/// `queues[i]` (checking QueueNumMax is `max`) and sets DRIVER_OK.
pub fn bring_up(
    hand: &mut Hand,
    base: u64,
    queues: &[&DriverQueue],
    max: u32,
    extra_features: u64,
) {
    hand.write32(base + reg::STATUS, 0);
    hand.write32(base + reg::STATUS, ACKNOWLEDGE.into());
    hand.write32(base + reg::STATUS, (ACKNOWLEDGE | DRIVER).into());
    hand.write32(base + reg::DEVICE_FEATURES_SEL, 1);
    let high = hand.read32(base + reg::DEVICE_FEATURES);
    assert_eq!(high & 1, 1, "VERSION_1 offered");
    let features = (1u64 << VIRTIO_F_VERSION_1) | extra_features;
    hand.write32(base + reg::DRIVER_FEATURES_SEL, 0);
    hand.write32(base + reg::DRIVER_FEATURES, features as u32);
    hand.write32(base + reg::DRIVER_FEATURES_SEL, 1);
    hand.write32(base + reg::DRIVER_FEATURES, (features >> 32) as u32);
    hand.write32(
        base + reg::STATUS,
        (ACKNOWLEDGE | DRIVER | FEATURES_OK).into(),
    );
    assert_eq!(
        hand.read32(base + reg::STATUS),
        u32::from(ACKNOWLEDGE | DRIVER | FEATURES_OK)
    );
    for (i, driver) in queues.iter().enumerate() {
        hand.write32(base + reg::QUEUE_SEL, i as u32);
        assert_eq!(hand.read32(base + reg::QUEUE_NUM_MAX), max);
        hand.write32(base + reg::QUEUE_NUM, driver.size().into());
        hand.write32(base + reg::QUEUE_DESC_LOW, driver.desc_table().0 as u32);
        hand.write32(base + reg::QUEUE_DESC_HIGH, 0);
        hand.write32(base + reg::QUEUE_DRIVER_LOW, driver.avail_ring().0 as u32);
        hand.write32(base + reg::QUEUE_DRIVER_HIGH, 0);
        hand.write32(base + reg::QUEUE_DEVICE_LOW, driver.used_ring().0 as u32);
        hand.write32(base + reg::QUEUE_DEVICE_HIGH, 0);
        hand.write32(base + reg::QUEUE_READY, 1);
    }
    hand.write32(
        base + reg::STATUS,
        (ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK).into(),
    );
    assert_eq!(
        hand.read32(base + reg::STATUS),
        u32::from(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
    );
}

/// Waits (up to 10 s) for the device to use a buffer of `driver`.
pub fn wait_used(mem: &GuestMemory, driver: &mut DriverQueue) -> (u32, u32) {
    let t = Instant::now();
    loop {
        if let Some(used) = driver.pop_used(mem) {
            return used;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no used entry");
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// A minimal ELF64 "kernel": one PT_LOAD of `code` at physical 2 MiB and a Xen PVH note
/// (XEN_ELFNOTE_PHYS32_ENTRY) pointing at the same place, so that QEMU accepts it too. The ELF
/// entry is the same address; the test code must not depend on the CPU mode.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x20_0000;
    let mut f = vec![0u8; 0x1000];
    let put16 = |f: &mut [u8], at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |f: &mut [u8], at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |f: &mut [u8], at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 62); // x86_64
    put32(&mut f, 20, 1);
    put64(&mut f, 24, BASE); // entry
    put64(&mut f, 32, 64); // phoff
    put16(&mut f, 52, 64); // ehsize
    put16(&mut f, 54, 56); // phentsize
    put16(&mut f, 56, 2); // phnum
                          // PT_LOAD
    put32(&mut f, 64, 1);
    put32(&mut f, 68, 5);
    put64(&mut f, 72, 0x1000);
    put64(&mut f, 80, BASE);
    put64(&mut f, 88, BASE);
    put64(&mut f, 96, code.len() as u64);
    put64(&mut f, 104, code.len() as u64);
    put64(&mut f, 112, 0x1000);
    // PT_NOTE at 0x100: namesz 4, descsz 4, type 18, "Xen\0", entry.
    put32(&mut f, 120, 4); // PT_NOTE
    put32(&mut f, 124, 4); // PF_R
    put64(&mut f, 128, 0x100); // offset
    put64(&mut f, 152, 20); // filesz
    put64(&mut f, 160, 20); // memsz
    put64(&mut f, 168, 4); // align
    put32(&mut f, 0x100, 4);
    put32(&mut f, 0x104, 4);
    put32(&mut f, 0x108, 18);
    f[0x10c..0x110].copy_from_slice(b"Xen\0");
    put32(&mut f, 0x110, BASE as u32);
    f.extend_from_slice(code);
    f
}
