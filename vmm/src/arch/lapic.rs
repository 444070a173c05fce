//! Local APIC set-up at boot: LINT0 delivers ExtINT (the 8259 PIC) on the BSP, LINT1 delivers NMI
//! on every vCPU, as the MP table says and as Linux expects of a PC.

use kvm_bindings::kvm_lapic_state;

/// LVT LINT0 register offset.
pub const APIC_LVT0: usize = 0x350;
/// LVT LINT1 register offset.
pub const APIC_LVT1: usize = 0x360;
/// Delivery mode ExtINT.
pub const APIC_MODE_EXTINT: u32 = 0x7;
/// Delivery mode NMI.
pub const APIC_MODE_NMI: u32 = 0x4;
/// LVT mask bit.
pub const APIC_LVT_MASKED: u32 = 1 << 16;

/// Reads the 32-bit APIC register at `offset`.
pub fn get_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| lapic.regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

/// Writes the 32-bit APIC register at `offset`.
pub fn set_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as _;
    }
}

/// `reg` with delivery mode `mode` and unmasked.
pub fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !(0x700 | APIC_LVT_MASKED)) | (mode << 8)
}

/// Sets LINT0 (ExtINT on the BSP; left as it is, masked at reset, on the others) and LINT1
/// (NMI).
pub fn set_lint(lapic: &mut kvm_lapic_state, bsp: bool) {
    if bsp {
        let lvt0 = get_reg(lapic, APIC_LVT0);
        set_reg(lapic, APIC_LVT0, with_delivery_mode(lvt0, APIC_MODE_EXTINT));
    }
    let lvt1 = get_reg(lapic, APIC_LVT1);
    set_reg(lapic, APIC_LVT1, with_delivery_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint0_extint_on_the_bsp_and_lint1_nmi_everywhere() {
        let reset = || {
            let mut l = kvm_lapic_state::default();
            set_reg(&mut l, APIC_LVT0, APIC_LVT_MASKED);
            set_reg(&mut l, APIC_LVT1, APIC_LVT_MASKED);
            set_reg(&mut l, 0x370, 0xdead_beef);
            l
        };
        let mut bsp = reset();
        set_lint(&mut bsp, true);
        assert_eq!(get_reg(&bsp, APIC_LVT0), APIC_MODE_EXTINT << 8);
        assert_eq!(get_reg(&bsp, APIC_LVT1), APIC_MODE_NMI << 8);
        assert_eq!(get_reg(&bsp, 0x370), 0xdead_beef, "neighbours untouched");

        let mut ap = reset();
        set_lint(&mut ap, false);
        assert_eq!(get_reg(&ap, APIC_LVT0), APIC_LVT_MASKED);
        assert_eq!(get_reg(&ap, APIC_LVT1), APIC_MODE_NMI << 8);
        assert_eq!(with_delivery_mode(0x1_07ff, 0x4), 0x4ff);
    }
}
