//! Two vCPUs on real KVM: the AP runs the CPL3 guest tests/guest/smp_ids.S, which reads its APIC
//! ids through CPUID and writes them to its own mailbox; both vCPUs' CPUID, the boot MSRs, LINT0/LINT1 and the MP table
//! are checked from the host.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use berth_vmm::arch::{lapic, mptable, msr};
use berth_vmm::build_vm;
use berth_vmm::devices::legacy::SerialOutput;
use common::{config, install_guest, kvm_usable, CODE};
use kvm_bindings::{
    kvm_mp_state, kvm_msr_entry, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_HALTED,
    KVM_MP_STATE_RUNNABLE,
};
use vm_memory::{Bytes, GuestAddress};

/// tests/guest/smp_ids.S, assembled.
const SMP_IDS: &[u8] = &[
    0xb8, 0x0b, 0x00, 0x00, 0x00, 0x31, 0xc9, 0x0f, 0xa2, 0x89, 0xd6, 0xb8, 0x01, 0x00, 0x00, 0x00,
    0x0f, 0xa2, 0xc1, 0xeb, 0x18, 0x89, 0xdf, 0xc1, 0xe7, 0x04, 0x81, 0xc7, 0x00, 0x90, 0x00, 0x00,
    0x89, 0x77, 0x04, 0x81, 0xcb, 0x00, 0x00, 0xde, 0xc0, 0x89, 0x1f, 0xff, 0x47, 0x08, 0xf3, 0x90,
    0xeb, 0xf9,
];
const MAILBOXES: u64 = 0x9000;

#[test]
fn two_vcpus_have_mptable_cpuid_msrs_and_lint() {
    if !kvm_usable() {
        return;
    }
    let mut cfg = config(vec![]);
    cfg.machine.vcpu_count = 2;
    let vmm = build_vm(&cfg, Some(SerialOutput::Sink)).unwrap();
    let mem = vmm.guest_memory().clone();

    // The MP table describes both vCPUs.
    let mut fp = [0u8; 16];
    mem.read_slice(&mut fp, GuestAddress(mptable::MPTABLE_START))
        .unwrap();
    assert_eq!(&fp[..4], b"_MP_");
    let table = u64::from(u32::from_le_bytes(fp[4..8].try_into().unwrap()));
    let count: u16 = mem.read_obj(GuestAddress(table + 34)).unwrap();
    assert_eq!(count, 2 + 1 + 1 + 24 + 2);

    for vcpu in vmm.vcpus() {
        let l = vcpu.fd().get_lapic().unwrap();
        let lvt0 = lapic::get_reg(&l, lapic::APIC_LVT0);
        let lvt1 = lapic::get_reg(&l, lapic::APIC_LVT1);
        assert_eq!((lvt1 >> 8) & 7, lapic::APIC_MODE_NMI, "vCPU {}", vcpu.id());
        if vcpu.id() == 0 {
            assert_eq!((lvt0 >> 8) & 7, lapic::APIC_MODE_EXTINT);
            assert_eq!(lvt0 & lapic::APIC_LVT_MASKED, 0);
        }
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: msr::MSR_MTRR_DEF_TYPE,
            ..Default::default()
        }])
        .unwrap();
        assert_eq!(vcpu.fd().get_msrs(&mut msrs).unwrap(), 1);
        assert_eq!(msrs.as_slice()[0].data, msr::MTRR_ENABLE_WB);
    }

    for (vcpu, id) in vmm.vcpus().iter().zip(0u32..) {
        let cpuid = vcpu.fd().get_cpuid2(KVM_MAX_CPUID_ENTRIES).unwrap();
        let leaf = |f: u32, i: u32| {
            *cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == f && e.index == i)
                .unwrap()
        };
        assert_eq!(leaf(1, 0).ebx >> 24, id, "initial APIC id");
        assert_eq!((leaf(1, 0).ebx >> 16) & 0xff, 2, "logical processors");
        assert_ne!(leaf(1, 0).ecx & (1 << 31), 0, "hypervisor bit");
        if cpuid.as_slice().iter().any(|e| e.function == 0xb) {
            assert_eq!(leaf(0xb, 0).edx, id, "x2APIC id");
        }
    }
}

/// Ignored by default: on this nested (PVM) host the AP's KVM_RUN often never executes guest code
/// (the thread stays runnable in KVM_RUN), with or without the BSP running. Run with --ignored
/// where guest CPL0 is not emulated.
#[test]
#[ignore]
fn ap_runs_cpl3_code_and_reports_its_apic_ids() {
    if !kvm_usable() {
        return;
    }
    let mut cfg = config(vec![]);
    cfg.machine.vcpu_count = 2;
    let mut vmm = build_vm(&cfg, Some(SerialOutput::Sink)).unwrap();
    let mem = vmm.guest_memory().clone();
    // Both vCPUs at CPL3 on the same code and page tables; the AP made runnable without a SIPI.
    install_guest(&vmm);
    mem.write_slice(SMP_IDS, GuestAddress(CODE)).unwrap();
    let (bsp, ap) = (&vmm.vcpus()[0], &vmm.vcpus()[1]);
    // Everything but the APIC base (whose BSP flag is the BSP's own).
    let mut sregs = bsp.sregs().unwrap();
    sregs.apic_base = ap.sregs().unwrap().apic_base;
    ap.set_sregs(&sregs).unwrap();
    ap.set_regs(&bsp.regs().unwrap()).unwrap();
    ap.fd()
        .set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        })
        .unwrap();

    // The BSP is parked (halted with interrupts off) so that only the AP runs.
    bsp.fd()
        .set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_HALTED,
        })
        .unwrap();
    vmm.start().unwrap();
    let t = Instant::now();
    let read = |id: u64, off: u64| -> u32 {
        mem.read_obj(GuestAddress(MAILBOXES + 16 * id + off))
            .unwrap()
    };
    while read(1, 0) != 0xc0de_0001 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the AP never reported: mailbox {:#x}",
            read(1, 0)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(read(1, 4), 1, "x2APIC id seen by the AP");
    let before = read(1, 8);
    while read(1, 8) == before {
        assert!(t.elapsed() < Duration::from_secs(10), "the AP stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(read(0, 0), 0, "the parked BSP ran");
    println!("timing: the AP reported after {:?}", t.elapsed());
    vmm.stop_vcpus();
}
