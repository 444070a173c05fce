//! Linux kernel loading for x86_64: ELF vmlinux via linux-loader, the 64-bit boot protocol
//! (`boot_params` zero page with e820 map and command line), the initramfs, and the vCPU state
//! a 64-bit entry point expects (identity-mapped page tables, flat GDT, long mode).

use std::fs::File;
use std::path::PathBuf;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, Cmdline, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::{GuestMemory, FIRST_ADDR_PAST_32BITS, MMIO_MEM_START};
use crate::vmm_config::BootSourceConfig;
use crate::vstate::Vcpu;

/// GDT location.
pub const BOOT_GDT_START: u64 = 0x500;
/// IDT location (an empty IDT right after the GDT).
pub const BOOT_IDT_START: u64 = 0x520;
/// Top of the boot stack.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// PML4 of the boot page tables.
pub const PML4_START: u64 = 0x9000;
/// PDPT of the boot page tables.
pub const PDPTE_START: u64 = 0xa000;
/// PD of the boot page tables (1 GiB identity map with 2 MiB pages).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line accepted.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Where high memory (and the kernel) starts.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the EBDA; RAM below it is reported as usable.
pub const EBDA_START: u64 = 0x9fc00;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;

/// The PVH `hvm_start_info` (56 bytes), for ELFs with XEN_ELFNOTE_PHYS32_ENTRY.
pub const PVH_INFO_START: u64 = 0x6000;
/// The PVH module list (one `hvm_modlist_entry`, 32 bytes: the initramfs).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// The PVH memory map (`hvm_memmap_table_entry`s, 24 bytes each).
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// A virtio-mmio device to announce on the kernel command line.
#[derive(Debug, Clone, Copy)]
pub struct MmioDeviceInfo {
    /// Base address.
    pub base: u64,
    /// Window size.
    pub size: u64,
    /// GSI.
    pub irq: u32,
}

/// Where the kernel was placed and how to enter it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfo {
    /// 64-bit entry point.
    pub entry: GuestAddress,
    /// The PVH entry point, when the ELF notes advertise one.
    pub pvh_entry: Option<GuestAddress>,
    /// Address of `boot_params`.
    pub zero_page: GuestAddress,
    /// The initramfs, when there is one: (address, size).
    pub initrd: Option<(GuestAddress, u64)>,
    /// The final command line.
    pub cmdline: String,
}

/// Errors of kernel loading and vCPU boot setup.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel or initramfs file could not be read.
    #[error("could not read {0}")]
    Open(PathBuf, #[source] std::io::Error),
    /// The kernel is not a loadable ELF vmlinux.
    #[error("could not load the kernel ELF image")]
    Elf(#[source] linux_loader::loader::Error),
    /// The command line is too long or malformed.
    #[error("invalid kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// The command line could not be written to guest memory.
    #[error("could not write the kernel command line to guest memory")]
    CmdlineLoad(#[source] linux_loader::loader::Error),
    /// The initramfs does not fit between the kernel and the top of low memory.
    #[error("the initramfs ({0} bytes) does not fit in guest memory")]
    InitrdTooBig(u64),
    /// Guest memory could not be written.
    #[error("could not write boot data to guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
    /// The zero page could not be written.
    #[error("could not write boot_params")]
    BootParams(#[source] linux_loader::configurator::Error),
    /// vCPU registers could not be set.
    #[error("could not set up boot registers")]
    Vcpu(#[source] crate::vstate::VcpuError),
}

/// Loads kernel, initramfs and command line into `mem` and writes `boot_params`.
pub fn load_linux(
    mem: &GuestMemory,
    cfg: &BootSourceConfig,
    devices: &[MmioDeviceInfo],
) -> Result<BootInfo, LoaderError> {
    let mut kernel = File::open(&cfg.kernel_image_path)
        .map_err(|e| LoaderError::Open(cfg.kernel_image_path.clone(), e))?;
    let loaded = Elf::load(mem, None, &mut kernel, Some(GuestAddress(HIMEM_START)))
        .map_err(LoaderError::Elf)?;
    let pvh_entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => Some(addr),
        _ => None,
    };

    let mut cmdline =
        Cmdline::try_from(cfg.cmdline(), CMDLINE_MAX_SIZE).map_err(LoaderError::Cmdline)?;
    for d in devices {
        cmdline
            .add_virtio_mmio_device(d.size, GuestAddress(d.base), d.irq, None)
            .map_err(LoaderError::Cmdline)?;
    }
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cmdline).map_err(LoaderError::CmdlineLoad)?;
    let cmdline_str = cmdline
        .as_cstring()
        .map_err(LoaderError::Cmdline)?
        .to_string_lossy()
        .into_owned();

    let initrd = match &cfg.initrd_path {
        Some(path) => Some(load_initrd(mem, path, loaded.kernel_end)?),
        None => None,
    };

    let mut params = boot_params::default();
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_str.len() as u32 + 1;
    params.hdr.kernel_alignment = 0x0100_0000;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr.raw_value() as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let e820 = ram_map(mem);
    if pvh_entry.is_some() {
        write_pvh_start_info(mem, &e820, initrd)?;
    }
    for (i, (addr, size)) in e820.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = e820.len() as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(LoaderError::BootParams)?;

    Ok(BootInfo {
        entry: loaded.kernel_load,
        pvh_entry,
        zero_page: GuestAddress(ZERO_PAGE_START),
        initrd,
        cmdline: cmdline_str,
    })
}

/// The usable RAM ranges (address, size) reported to the guest.
fn ram_map(mem: &GuestMemory) -> Vec<(u64, u64)> {
    let mut e820 = vec![(0, EBDA_START)];
    let last = mem.last_addr().raw_value() + 1;
    if last <= MMIO_MEM_START {
        e820.push((HIMEM_START, last - HIMEM_START));
    } else {
        e820.push((HIMEM_START, MMIO_MEM_START - HIMEM_START));
        e820.push((FIRST_ADDR_PAST_32BITS, last - FIRST_ADDR_PAST_32BITS));
    }
    e820
}

/// Writes `hvm_start_info` at [`PVH_INFO_START`], the initramfs module entry and the memory map
/// (RAM ranges plus the MMIO gap as reserved) for the PVH entry point.
fn write_pvh_start_info(
    mem: &GuestMemory,
    ram: &[(u64, u64)],
    initrd: Option<(GuestAddress, u64)>,
) -> Result<(), LoaderError> {
    let mut memmap = Vec::new();
    let mut entry = |addr: u64, size: u64, kind: u32| {
        memmap.extend_from_slice(&addr.to_le_bytes());
        memmap.extend_from_slice(&size.to_le_bytes());
        memmap.extend_from_slice(&kind.to_le_bytes());
        memmap.extend_from_slice(&0u32.to_le_bytes());
    };
    for &(addr, size) in ram {
        entry(addr, size, E820_RAM);
    }
    entry(
        MMIO_MEM_START,
        FIRST_ADDR_PAST_32BITS - MMIO_MEM_START,
        E820_RESERVED,
    );
    let entries = (memmap.len() / 24) as u32;
    mem.write_slice(&memmap, GuestAddress(PVH_MEMMAP_START))
        .map_err(LoaderError::Memory)?;

    let nr_modules = match initrd {
        Some((addr, size)) => {
            let mut m = Vec::with_capacity(32);
            m.extend_from_slice(&addr.raw_value().to_le_bytes());
            m.extend_from_slice(&size.to_le_bytes());
            m.extend_from_slice(&[0; 16]); // no module command line, reserved
            mem.write_slice(&m, GuestAddress(PVH_MODLIST_START))
                .map_err(LoaderError::Memory)?;
            1u32
        }
        None => 0,
    };
    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&XEN_HVM_START_MAGIC_VALUE.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&nr_modules.to_le_bytes());
    let modlist = if nr_modules > 0 { PVH_MODLIST_START } else { 0 };
    info.extend_from_slice(&modlist.to_le_bytes());
    info.extend_from_slice(&CMDLINE_START.to_le_bytes());
    info.extend_from_slice(&0u64.to_le_bytes()); // rsdp_paddr: no ACPI
    info.extend_from_slice(&PVH_MEMMAP_START.to_le_bytes());
    info.extend_from_slice(&entries.to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    mem.write_slice(&info, GuestAddress(PVH_INFO_START))
        .map_err(LoaderError::Memory)
}

fn load_initrd(
    mem: &GuestMemory,
    path: &PathBuf,
    kernel_end: u64,
) -> Result<(GuestAddress, u64), LoaderError> {
    let data = std::fs::read(path).map_err(|e| LoaderError::Open(path.clone(), e))?;
    let size = data.len() as u64;
    // Highest page-aligned spot in the first region, above the kernel.
    let low_end = mem
        .iter()
        .next()
        .map_or(0, |r| r.start_addr().raw_value() + r.len());
    let addr = low_end
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end)
        .ok_or(LoaderError::InitrdTooBig(size))?;
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(LoaderError::Memory)?;
    Ok((GuestAddress(addr), size))
}

fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << 32)
        | ((u64::from(flags) & 0x0000_f0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << 32)
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

fn segment(entry: u64, index: u16) -> kvm_segment {
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        // KVM takes the limit in bytes: scale a page-granular one.
        limit: {
            let raw = ((((entry >> 48) & 0xf) << 16) | (entry & 0xffff)) as u32;
            if (entry >> 55) & 1 == 1 {
                (raw << 12) | 0xfff
            } else {
                raw
            }
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Puts a vCPU at the kernel's entry: the PVH entry when the ELF has one (32-bit protected
/// mode, paging off, flat CS/DS, EBX = `hvm_start_info`), else the 64-bit entry of the Linux
/// boot protocol.
pub fn configure_vcpu(vcpu: &Vcpu, mem: &GuestMemory, boot: &BootInfo) -> Result<(), LoaderError> {
    match boot.pvh_entry {
        Some(entry) => configure_vcpu_pvh(vcpu, mem, entry),
        None => configure_vcpu_64(vcpu, mem, boot),
    }
}

/// The flat 32-bit GDT of the PVH entry: null, code32, data, TSS.
pub const PVH_GDT: [u64; 4] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x0000_8b00_0000_0067,
];

/// The special registers of the PVH entry, from `sregs` (the vCPU's reset state).
pub fn pvh_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&PVH_GDT) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = segment(PVH_GDT[1], 1);
    let data = segment(PVH_GDT[2], 2);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(PVH_GDT[3], 3);
    sregs.cr0 = 0x11; // PE | ET, paging off
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

fn configure_vcpu_pvh(
    vcpu: &Vcpu,
    mem: &GuestMemory,
    entry: GuestAddress,
) -> Result<(), LoaderError> {
    for (i, e) in PVH_GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(LoaderError::Memory)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(LoaderError::Memory)?;
    let sregs = pvh_sregs(vcpu.sregs().map_err(LoaderError::Vcpu)?);
    vcpu.set_sregs(&sregs).map_err(LoaderError::Vcpu)?;
    let regs = kvm_regs {
        rflags: 2,
        rip: entry.raw_value(),
        rbx: PVH_INFO_START,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(LoaderError::Vcpu)
}

fn configure_vcpu_64(vcpu: &Vcpu, mem: &GuestMemory, boot: &BootInfo) -> Result<(), LoaderError> {
    // Flat GDT: null, code64, data, TSS.
    let gdt = [
        gdt_entry(0, 0, 0),
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ];
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(LoaderError::Memory)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(LoaderError::Memory)?;
    // Identity map of the first GiB with 2 MiB pages.
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))
        .map_err(LoaderError::Memory)?;
    mem.write_obj(PDE_START | 0x03, GuestAddress(PDPTE_START))
        .map_err(LoaderError::Memory)?;
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_START + i * 8))
            .map_err(LoaderError::Memory)?;
    }

    let mut sregs = vcpu.sregs().map_err(LoaderError::Vcpu)?;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt[3], 3);
    sregs.cr3 = PML4_START;
    sregs.cr4 |= 1 << 5; // PAE
    sregs.cr0 |= 1 | (1 << 31); // PE | PG
    sregs.efer |= (1 << 8) | (1 << 10); // LME | LMA
    vcpu.set_sregs(&sregs).map_err(LoaderError::Vcpu)?;

    let regs = kvm_regs {
        rflags: 2,
        rip: boot.entry.raw_value(),
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: boot.zero_page.raw_value(),
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(LoaderError::Vcpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linux_loader::loader::bootparam::boot_params;

    /// A minimal ELF64 x86_64 executable: one PT_LOAD of `code` at paddr 0x200000 (vaddr
    /// 0xffffffff81000000, as a vmlinux has), entry at its start.
    fn tiny_vmlinux(code: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x1000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // 64-bit
        f[5] = 1; // little endian
        f[6] = 1; // version
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes()); // e_entry (physical)
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        f[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        f[ph + 8..ph + 16].copy_from_slice(&0x1000u64.to_le_bytes()); // p_offset
        f[ph + 16..ph + 24].copy_from_slice(&0xffff_ffff_8100_0000u64.to_le_bytes());
        f[ph + 24..ph + 32].copy_from_slice(&0x20_0000u64.to_le_bytes()); // p_paddr
        f[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        f[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64 + 0x100).to_le_bytes());
        f[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        f.extend_from_slice(code);
        f
    }

    #[test]
    fn loads_an_elf_kernel_with_boot_params_cmdline_and_initrd() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, tiny_vmlinux(&[0xf4, 0x90, 0x90, 0xcc])).unwrap();
        let initrd = dir.path().join("initrd");
        std::fs::write(&initrd, vec![0x5a; 10_000]).unwrap();
        let mem = crate::memory::create_guest_memory(64).unwrap();
        let cfg = BootSourceConfig {
            kernel_image_path: kernel,
            initrd_path: Some(initrd),
            boot_args: Some("console=ttyS0 reboot=k".into()),
        };
        let devs = [MmioDeviceInfo {
            base: MMIO_MEM_START,
            size: 0x1000,
            irq: 5,
        }];
        let boot = load_linux(&mem, &cfg, &devs).unwrap();

        assert_eq!(boot.entry, GuestAddress(0x20_0000));
        assert_eq!(boot.pvh_entry, None);
        let mut code = [0u8; 4];
        mem.read_slice(&mut code, boot.entry).unwrap();
        assert_eq!(code, [0xf4, 0x90, 0x90, 0xcc]);
        // The bss part of the segment is zeroed.
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x20_0004)).unwrap(), 0);

        assert_eq!(
            boot.cmdline,
            "console=ttyS0 reboot=k virtio_mmio.device=4K@0xd0000000:5"
        );
        let mut cl = vec![0u8; boot.cmdline.len() + 1];
        mem.read_slice(&mut cl, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&cl[..cl.len() - 1], boot.cmdline.as_bytes());
        assert_eq!(cl[cl.len() - 1], 0);

        let (initrd_addr, initrd_size) = boot.initrd.unwrap();
        assert_eq!(initrd_size, 10_000);
        assert_eq!(initrd_addr.raw_value() % 4096, 0);
        assert!(initrd_addr.raw_value() + initrd_size <= 64 << 20);
        assert_eq!(mem.read_obj::<u8>(initrd_addr).unwrap(), 0x5a);

        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ params.hdr.boot_flag }, 0xaa55);
        assert_eq!({ params.hdr.header }, 0x5372_6448);
        assert_eq!({ params.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ params.hdr.ramdisk_image }, initrd_addr.raw_value() as u32);
        assert_eq!(params.e820_entries, 2);
        let e1 = params.e820_table[1];
        assert_eq!(
            ({ e1.addr }, { e1.size }),
            (HIMEM_START, (64 << 20) - HIMEM_START)
        );
    }

    #[test]
    fn e820_skips_the_mmio_gap_for_large_memory() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, tiny_vmlinux(&[0xf4])).unwrap();
        let mem = crate::memory::create_guest_memory(4096).unwrap();
        let cfg = BootSourceConfig {
            kernel_image_path: kernel,
            initrd_path: None,
            boot_args: None,
        };
        load_linux(&mem, &cfg, &[]).unwrap();
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!(params.e820_entries, 3);
        let e2 = params.e820_table[2];
        assert_eq!(
            ({ e2.addr }, { e2.size }),
            (1 << 32, (4 << 30) - MMIO_MEM_START)
        );
    }

    /// `tiny_vmlinux` plus a PT_NOTE with XEN_ELFNOTE_PHYS32_ENTRY = 0x200000.
    fn tiny_pvh_elf(code: &[u8]) -> Vec<u8> {
        let mut f = tiny_vmlinux(code);
        f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
        let ph = 64 + 56;
        f[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        f[ph + 4..ph + 8].copy_from_slice(&4u32.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&0x200u64.to_le_bytes()); // p_offset
        f[ph + 32..ph + 40].copy_from_slice(&20u64.to_le_bytes()); // p_filesz
        f[ph + 40..ph + 48].copy_from_slice(&20u64.to_le_bytes());
        f[ph + 48..ph + 56].copy_from_slice(&4u64.to_le_bytes());
        let note = [4u32.to_le_bytes(), 4u32.to_le_bytes(), 18u32.to_le_bytes()].concat();
        f[0x200..0x20c].copy_from_slice(&note);
        f[0x20c..0x210].copy_from_slice(b"Xen\0");
        f[0x210..0x214].copy_from_slice(&0x20_0000u32.to_le_bytes());
        f
    }

    #[test]
    fn pvh_note_gets_hvm_start_info_memmap_and_initrd_module() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, tiny_pvh_elf(&[0xf4])).unwrap();
        let initrd = dir.path().join("initrd");
        std::fs::write(&initrd, vec![0xa5; 5000]).unwrap();
        let mem = crate::memory::create_guest_memory(64).unwrap();
        let cfg = BootSourceConfig {
            kernel_image_path: kernel,
            initrd_path: Some(initrd),
            boot_args: Some("console=ttyS0".into()),
        };
        let boot = load_linux(&mem, &cfg, &[]).unwrap();
        assert_eq!(boot.pvh_entry, Some(GuestAddress(0x20_0000)));

        let u32_at = |a: u64| mem.read_obj::<u32>(GuestAddress(a)).unwrap();
        let u64_at = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        let i = PVH_INFO_START;
        assert_eq!(u32_at(i), XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(u32_at(i + 4), 1, "version");
        assert_eq!(u32_at(i + 12), 1, "nr_modules");
        assert_eq!(u64_at(i + 16), PVH_MODLIST_START);
        assert_eq!(u64_at(i + 24), CMDLINE_START);
        assert_eq!(u64_at(i + 32), 0, "no RSDP");
        assert_eq!(u64_at(i + 40), PVH_MEMMAP_START);
        assert_eq!(u32_at(i + 48), 3, "memmap entries");
        let (initrd_addr, initrd_size) = boot.initrd.unwrap();
        assert_eq!(u64_at(PVH_MODLIST_START), initrd_addr.raw_value());
        assert_eq!(u64_at(PVH_MODLIST_START + 8), initrd_size);
        let e = |n: u64| {
            let a = PVH_MEMMAP_START + 24 * n;
            (u64_at(a), u64_at(a + 8), u32_at(a + 16))
        };
        assert_eq!(e(0), (0, EBDA_START, E820_RAM));
        assert_eq!(e(1), (HIMEM_START, (64 << 20) - HIMEM_START, E820_RAM));
        assert_eq!(
            e(2),
            (
                MMIO_MEM_START,
                FIRST_ADDR_PAST_32BITS - MMIO_MEM_START,
                E820_RESERVED
            )
        );
        let mut cl = vec![0u8; 13];
        mem.read_slice(&mut cl, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&cl, b"console=ttyS0");
    }

    #[test]
    fn pvh_entry_state_is_flat_32_bit_protected_mode_without_paging() {
        let s = pvh_sregs(kvm_sregs {
            cr0: 0x6000_0010,
            cr4: 0x20,
            efer: 0x500,
            ..Default::default()
        });
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x11, 0, 0, 0));
        assert_eq!(
            (
                s.cs.base,
                s.cs.limit,
                s.cs.db,
                s.cs.l,
                s.cs.g,
                s.cs.type_,
                s.cs.selector
            ),
            (0, 0xffff_ffff, 1, 0, 1, 0xb, 8)
        );
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!((seg.base, seg.db, seg.type_, seg.selector), (0, 1, 3, 0x10));
        }
        assert_eq!((s.tr.type_, s.tr.present), (0xb, 1));
        assert_eq!(s.gdt.base, BOOT_GDT_START);
    }

    #[test]
    fn not_an_elf_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bzImage");
        std::fs::write(&kernel, vec![0x4d; 8192]).unwrap();
        let mem = crate::memory::create_guest_memory(32).unwrap();
        let cfg = BootSourceConfig {
            kernel_image_path: kernel,
            initrd_path: None,
            boot_args: None,
        };
        assert!(matches!(
            load_linux(&mem, &cfg, &[]),
            Err(LoaderError::Elf(_))
        ));
    }

    #[test]
    fn gdt_entries_decode_to_long_mode_segments() {
        let cs = segment(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(
            (cs.l, cs.db, cs.present, cs.type_, cs.selector),
            (1, 0, 1, 0xb, 8)
        );
        let ds = segment(gdt_entry(0xc093, 0, 0xfffff), 2);
        assert_eq!(
            (ds.l, ds.db, ds.g, ds.type_, ds.limit),
            (0, 1, 1, 3, 0xffff_ffff)
        );
    }
}
