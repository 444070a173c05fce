//! The Intel MultiProcessor table (MP spec 1.4): a floating pointer structure and a
//! configuration table with one processor entry per vCPU, the ISA bus, the IOAPIC, one I/O
//! interrupt assignment per IOAPIC pin and the two local interrupt assignments (LINT0 ExtINT,
//! LINT1 NMI). Linux finds it by scanning the last KiB of base memory, where it is written.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemory;

/// Where the table is written: the last KiB below 640 KiB (the EBDA, outside e820 RAM).
pub const MPTABLE_START: u64 = 0x9fc00;
/// The space it may use.
pub const MPTABLE_MAX_SIZE: usize = 0x400;
/// Local APIC base address.
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// IOAPIC base address.
pub const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
/// Local APIC version (integrated APIC).
pub const APIC_VERSION: u8 = 0x14;
/// IOAPIC version.
pub const IOAPIC_VERSION: u8 = 0x11;
/// Pins of the IOAPIC (GSIs 0..=23), each given an I/O interrupt assignment entry.
pub const IOAPIC_PINS: u8 = 24;

/// Entry types of the configuration table.
pub mod entry {
    /// Processor.
    pub const PROCESSOR: u8 = 0;
    /// Bus.
    pub const BUS: u8 = 1;
    /// I/O APIC.
    pub const IOAPIC: u8 = 2;
    /// I/O interrupt assignment.
    pub const IO_INTERRUPT: u8 = 3;
    /// Local interrupt assignment.
    pub const LOCAL_INTERRUPT: u8 = 4;
}

/// Interrupt types of interrupt assignment entries.
pub mod int_type {
    /// Vectored interrupt.
    pub const INT: u8 = 0;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 1;
    /// 8259A-compatible external interrupt.
    pub const EXTINT: u8 = 3;
}

/// Processor entry flag: enabled.
pub const CPU_ENABLED: u8 = 1;
/// Processor entry flag: the bootstrap processor.
pub const CPU_BOOTSTRAP: u8 = 2;
/// CPU signature in processor entries (family 6).
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags in processor entries: FPU and on-chip APIC.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// Errors of [`setup_mptable`].
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// The vCPU count is zero or the table would not fit its KiB.
    #[error("an MP table cannot describe {0} vCPUs")]
    CpuCount(u8),
    /// Guest memory could not be written.
    #[error("could not write the MP table to guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, &b| a.wrapping_add(b))
        .wrapping_neg()
}

/// The IOAPIC's id: after every local APIC id.
pub fn ioapic_id(num_cpus: u8) -> u8 {
    num_cpus.saturating_add(1)
}

/// The floating pointer followed by the configuration table, for `num_cpus` vCPUs with local
/// APIC ids 0..num_cpus, as placed at `base`.
pub fn mptable_bytes(base: u64, num_cpus: u8) -> Result<Vec<u8>, MpTableError> {
    // 16 floating pointer + 44 header + 20 per CPU + bus, IOAPIC, pins and two local entries.
    let size = 16 + 44 + 20 * usize::from(num_cpus) + 8 + 8 + 8 * usize::from(IOAPIC_PINS) + 16;
    if num_cpus == 0 || size > MPTABLE_MAX_SIZE {
        return Err(MpTableError::CpuCount(num_cpus));
    }
    let table_addr = u32::try_from(base + 16).map_err(|_| MpTableError::CpuCount(num_cpus))?;
    let ioapic = ioapic_id(num_cpus);

    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..num_cpus {
        entries.extend_from_slice(&[entry::PROCESSOR, id, APIC_VERSION]);
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.push(flags);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[entry::BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[entry::IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS {
        // Polarity and trigger "conform to the bus" (flags 0); ISA IRQ n on pin n.
        entries.extend_from_slice(&[
            entry::IO_INTERRUPT,
            int_type::INT,
            0,
            0,
            0,
            pin,
            ioapic,
            pin,
        ]);
        count += 1;
    }
    // LINT0: ExtINT to the BSP; LINT1: NMI to every local APIC.
    entries.extend_from_slice(&[entry::LOCAL_INTERRUPT, int_type::EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[entry::LOCAL_INTERRUPT, int_type::NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len =
        u16::try_from(44 + entries.len()).map_err(|_| MpTableError::CpuCount(num_cpus))?;
    let mut table = Vec::with_capacity(usize::from(table_len));
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&table_len.to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"BERTH   ");
    table.extend_from_slice(b"BERTH-VMM   ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&table_addr.to_le_bytes());
    out.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length 1 (16 bytes), spec 1.4, checksum
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    debug_assert_eq!(out.len(), size);
    Ok(out)
}

/// Writes the MP table for `num_cpus` vCPUs at [`MPTABLE_START`].
pub fn setup_mptable(mem: &GuestMemory, num_cpus: u8) -> Result<(), MpTableError> {
    let bytes = mptable_bytes(MPTABLE_START, num_cpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MpTableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    /// Parses the table back from guest memory: (entry type, entry bytes) in order.
    fn parse(mem: &GuestMemory) -> Vec<(u8, Vec<u8>)> {
        let mut fp = [0u8; 16];
        mem.read_slice(&mut fp, GuestAddress(MPTABLE_START))
            .unwrap();
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(sum(&fp), 0, "floating pointer checksum");
        assert_eq!((fp[8], fp[9], fp[11]), (1, 4, 0));
        let table = u64::from(u32::from_le_bytes(fp[4..8].try_into().unwrap()));
        assert_eq!(table, MPTABLE_START + 16);

        let mut hdr = [0u8; 44];
        mem.read_slice(&mut hdr, GuestAddress(table)).unwrap();
        assert_eq!(&hdr[..4], b"PCMP");
        let len = usize::from(u16::from_le_bytes([hdr[4], hdr[5]]));
        assert_eq!(hdr[6], 4);
        let count = u16::from_le_bytes([hdr[34], hdr[35]]);
        assert_eq!(
            u32::from_le_bytes(hdr[36..40].try_into().unwrap()),
            APIC_DEFAULT_PHYS_BASE
        );
        let mut all = vec![0u8; len];
        mem.read_slice(&mut all, GuestAddress(table)).unwrap();
        assert_eq!(sum(&all), 0, "configuration table checksum");
        assert!(table + len as u64 <= MPTABLE_START + MPTABLE_MAX_SIZE as u64);

        let mut out = Vec::new();
        let mut off = 44;
        while off < len {
            let size = if all[off] == entry::PROCESSOR { 20 } else { 8 };
            out.push((all[off], all[off..off + size].to_vec()));
            off += size;
        }
        assert_eq!(off, len);
        assert_eq!(out.len(), usize::from(count));
        out
    }

    #[test]
    fn mptable_parses_back_for_1_2_and_4_vcpus() {
        for n in [1u8, 2, 4] {
            let mem = crate::memory::create_guest_memory(16).unwrap();
            setup_mptable(&mem, n).unwrap();
            let entries = parse(&mem);
            let of = |t| entries.iter().filter(|e| e.0 == t).collect::<Vec<_>>();

            let cpus = of(entry::PROCESSOR);
            assert_eq!(cpus.len(), usize::from(n));
            for (i, (_, e)) in cpus.iter().enumerate() {
                assert_eq!(e[1], i as u8, "local APIC id");
                assert_eq!(e[2], APIC_VERSION);
                let bsp = if i == 0 { CPU_BOOTSTRAP } else { 0 };
                assert_eq!(e[3], CPU_ENABLED | bsp);
            }
            let bus = of(entry::BUS);
            assert_eq!(bus.len(), 1);
            assert_eq!(&bus[0].1[2..8], b"ISA   ");
            let ioapic = of(entry::IOAPIC);
            assert_eq!(ioapic.len(), 1);
            assert_eq!(ioapic[0].1[1], n + 1);
            assert_eq!(
                u32::from_le_bytes(ioapic[0].1[4..8].try_into().unwrap()),
                IO_APIC_DEFAULT_PHYS_BASE
            );
            let pins = of(entry::IO_INTERRUPT);
            assert_eq!(pins.len(), usize::from(IOAPIC_PINS));
            for (i, (_, e)) in pins.iter().enumerate() {
                assert_eq!(
                    (e[1], e[5], e[6], e[7]),
                    (int_type::INT, i as u8, n + 1, i as u8)
                );
            }
            let lints = of(entry::LOCAL_INTERRUPT);
            assert_eq!(lints.len(), 2);
            assert_eq!((lints[0].1[1], lints[0].1[7]), (int_type::EXTINT, 0));
            assert_eq!(
                (lints[1].1[1], lints[1].1[6], lints[1].1[7]),
                (int_type::NMI, 0xff, 1)
            );
        }
    }

    #[test]
    fn mptable_refuses_counts_it_cannot_hold() {
        assert!(matches!(
            mptable_bytes(MPTABLE_START, 0),
            Err(MpTableError::CpuCount(0))
        ));
        assert!(mptable_bytes(MPTABLE_START, crate::vmm_config::MAX_VCPUS).is_ok());
        assert!(matches!(
            mptable_bytes(MPTABLE_START, 40),
            Err(MpTableError::CpuCount(40))
        ));
    }
}
