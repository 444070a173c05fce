//! Per-vCPU CPUID: the leaves KVM supports on this host, adjusted to say which vCPU reads them
//! and how many there are (one core per vCPU, one thread per core, one package).

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 1 ECX: running under a hypervisor.
pub const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: more than one logical processor per package.
pub const EDX_HTT: u32 = 1 << 28;
/// Topology level types of leaves 0xB and 0x1F (ECX[15:8]).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// The CPU vendor, from leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel.
    Intel,
    /// AuthenticAMD.
    Amd,
    /// Anything else.
    Other,
}

/// The vendor named by leaf 0 of `entries`.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(e) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&e.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&e.edx.to_le_bytes());
    id[8..].copy_from_slice(&e.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Bits needed to number `count` things: ceil(log2(count)).
pub fn id_bits(count: u8) -> u32 {
    match count {
        0 | 1 => 0,
        n => u32::BITS - u32::from(n - 1).leading_zeros(),
    }
}

/// Adjusts `entries` (from KVM_GET_SUPPORTED_CPUID) for vCPU `id` of `count`: APIC ids in leaf 1
/// EBX[31:24], 0xB/0x1F EDX and 0x8000001E EAX; logical processor and core counts in leaves 1, 4,
/// 0xB/0x1F, 0x80000008 and 0x8000001D; the hypervisor bit.
pub fn normalize(entries: &mut [kvm_cpuid_entry2], id: u8, count: u8) {
    let vendor = vendor(entries);
    let id32 = u32::from(id);
    let n = u32::from(count.max(1));
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                // APIC id, logical processors per package, CLFLUSH line size (8 * 8 bytes).
                e.ebx = (id32 << 24) | ((n & 0xff) << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= ECX_HYPERVISOR;
                if n > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            // Deterministic cache parameters (a cache type of 0 ends the list).
            4 if vendor != Vendor::Amd && e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { n - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((n - 1) & 0x3f) << 26);
            }
            0xb | 0x1f => {
                let (eax, ebx, level) = match e.index {
                    0 => (0, 1, LEVEL_SMT),
                    1 => (id_bits(count), n, LEVEL_CORE),
                    _ => (0, 0, 0),
                };
                e.eax = eax;
                e.ebx = ebx;
                e.ecx = (level << 8) | (e.index & 0xff);
                e.edx = id32;
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                // NC (cores - 1) and ApicIdCoreIdSize.
                e.ecx = (e.ecx & !0xf0ff) | (id_bits(count) << 12) | ((n - 1) & 0xff);
            }
            0x8000_001d if vendor == Vendor::Amd && e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { n - 1 } else { 0 };
                e.eax = (e.eax & !(0xfff << 14)) | ((sharing & 0xfff) << 14);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                // Extended APIC id; core id = vCPU id, one thread per core; node 0.
                e.eax = id32;
                e.ebx = (e.ebx & !0xffff) | (id32 & 0xff);
                e.ecx &= !0x7ff;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    fn vendor_leaf(name: &[u8; 12]) -> kvm_cpuid_entry2 {
        let w = |i: usize| u32::from_le_bytes(name[i..i + 4].try_into().unwrap());
        leaf(0, 0, 0x1f, w(0), w(8), w(4))
    }

    fn find(e: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *e.iter().find(|x| x.function == f && x.index == i).unwrap()
    }

    fn intel() -> Vec<kvm_cpuid_entry2> {
        vec![
            vendor_leaf(b"GenuineIntel"),
            leaf(1, 0, 0x806f8, 0xffff_0800, 0x0, EDX_HTT),
            // L1d (type 1, level 1), L2 (type 3, level 2), L3 (type 3, level 3), end.
            leaf(4, 0, 0xfc00_4121, 0, 0, 0),
            leaf(4, 1, 0xfc00_4143, 0, 0, 0),
            leaf(4, 2, 0xfc1f_c163, 0, 0, 0),
            leaf(4, 3, 0, 0, 0, 0),
            leaf(0xb, 0, 1, 2, 0x100, 77),
            leaf(0xb, 1, 7, 112, 0x201, 77),
            leaf(0xb, 2, 0, 0, 2, 77),
        ]
    }

    #[test]
    fn vendor_and_id_bits() {
        assert_eq!(vendor(&intel()), Vendor::Intel);
        assert_eq!(vendor(&[vendor_leaf(b"AuthenticAMD")]), Vendor::Amd);
        assert_eq!(vendor(&[]), Vendor::Other);
        let bits: Vec<u32> = [1u8, 2, 3, 4, 5, 8, 9, 32]
            .iter()
            .map(|&n| id_bits(n))
            .collect();
        assert_eq!(bits, [0, 1, 2, 2, 3, 3, 4, 5]);
    }

    #[test]
    fn each_vcpu_sees_its_apic_id_and_the_vcpu_count() {
        for (id, count) in [(0u8, 1u8), (0, 2), (1, 2), (3, 4)] {
            let mut e = intel();
            normalize(&mut e, id, count);
            let l1 = find(&e, 1, 0);
            assert_eq!(l1.ebx >> 24, u32::from(id), "initial APIC id");
            assert_eq!((l1.ebx >> 16) & 0xff, u32::from(count));
            assert_eq!((l1.ebx >> 8) & 0xff, 8);
            assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
            assert_eq!(l1.edx & EDX_HTT != 0, count > 1);

            for sub in 0..3 {
                assert_eq!(find(&e, 0xb, sub).edx, u32::from(id), "x2APIC id");
            }
            let smt = find(&e, 0xb, 0);
            assert_eq!((smt.eax, smt.ebx, smt.ecx), (0, 1, 0x100));
            let core = find(&e, 0xb, 1);
            assert_eq!(
                (core.eax, core.ebx, core.ecx),
                (id_bits(count), u32::from(count), 0x201)
            );
            let end = find(&e, 0xb, 2);
            assert_eq!((end.eax, end.ebx, end.ecx), (0, 0, 2));

            for (sub, level) in [(0, 1), (1, 2), (2, 3)] {
                let c = find(&e, 4, sub);
                assert_eq!((c.eax >> 5) & 7, level, "cache level kept");
                assert_eq!(c.eax >> 26, u32::from(count) - 1, "cores per package - 1");
                let sharing = if level == 3 { u32::from(count) - 1 } else { 0 };
                assert_eq!(
                    (c.eax >> 14) & 0xfff,
                    sharing,
                    "threads sharing the cache - 1"
                );
            }
            assert_eq!(find(&e, 4, 3).eax, 0, "the list end stays");
        }
    }

    #[test]
    fn amd_extended_topology_leaves() {
        let mut e = vec![
            vendor_leaf(b"AuthenticAMD"),
            leaf(1, 0, 0xa00f11, 0, 0, 0),
            leaf(0x8000_0008, 0, 0x3030, 0, 0x7003, 0),
            leaf(0x8000_001d, 0, 0x121, 0, 0, 0),
            leaf(0x8000_001d, 3, 0x163, 0, 0, 0),
            leaf(0x8000_001e, 0, 9, 0x0105, 0x0301, 0),
        ];
        normalize(&mut e, 2, 4);
        assert_eq!(find(&e, 1, 0).ebx >> 24, 2);
        assert_eq!(find(&e, 0x8000_0008, 0).ecx & 0xf0ff, (2 << 12) | 3);
        assert_eq!((find(&e, 0x8000_001d, 0).eax >> 14) & 0xfff, 0);
        assert_eq!((find(&e, 0x8000_001d, 3).eax >> 14) & 0xfff, 3);
        let ext = find(&e, 0x8000_001e, 0);
        assert_eq!((ext.eax, ext.ebx & 0xffff, ext.ecx & 0x7ff), (2, 2, 0));
    }
}
