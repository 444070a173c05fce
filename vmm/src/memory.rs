//! Guest memory: one memfd, mapped as one or two regions around the x86_64 MMIO gap.
//!
//! The layout follows Firecracker: RAM starts at guest-physical 0; the 768 MiB below 4 GiB are
//! kept free for device MMIO ([`MMIO_MEM_START`]..4 GiB); RAM that does not fit below the gap
//! continues at 4 GiB. Both regions are windows onto the same memfd, so the whole of guest memory
//! is one file descriptor that can later be shared (vhost-user, snapshots).

use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

/// First address past 32 bits.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Size of the MMIO gap below 4 GiB.
pub const MMIO_MEM_SIZE: u64 = 768 << 20;
/// Start of the MMIO gap; virtio-mmio devices are placed from here.
pub const MMIO_MEM_START: u64 = FIRST_ADDR_PAST_32BITS - MMIO_MEM_SIZE;
/// The smallest guest memory the builder accepts.
pub const MIN_MEM_MIB: usize = 16;

/// Guest memory as used throughout the VMM.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Errors of [`create_guest_memory`].
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested size is below [`MIN_MEM_MIB`] or does not fit the address space.
    #[error("guest memory of {0} MiB is invalid (minimum {MIN_MEM_MIB} MiB)")]
    InvalidSize(usize),
    /// memfd_create failed.
    #[error("could not create the memfd backing guest memory")]
    Memfd(#[source] std::io::Error),
    /// Sizing or sealing the memfd failed.
    #[error("could not size or seal the guest memory memfd")]
    Truncate(#[source] std::io::Error),
    /// Mapping the regions failed.
    #[error("could not map guest memory")]
    Map(#[source] vm_memory::mmap::FromRangesError),
}

/// The guest-physical RAM regions for `mem_size` bytes of RAM.
pub fn arch_memory_regions(mem_size: u64) -> Vec<(GuestAddress, u64)> {
    if mem_size <= MMIO_MEM_START {
        vec![(GuestAddress(0), mem_size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_MEM_START),
            (
                GuestAddress(FIRST_ADDR_PAST_32BITS),
                mem_size - MMIO_MEM_START,
            ),
        ]
    }
}

/// Creates guest memory of `mem_mib` MiB, backed by a sealed memfd.
pub fn create_guest_memory(mem_mib: usize) -> Result<GuestMemory, MemoryError> {
    if mem_mib < MIN_MEM_MIB {
        return Err(MemoryError::InvalidSize(mem_mib));
    }
    let mem_size = (mem_mib as u64)
        .checked_mul(1 << 20)
        .filter(|s| s.checked_add(MMIO_MEM_SIZE).is_some())
        .ok_or(MemoryError::InvalidSize(mem_mib))?;

    // SAFETY: the name is a valid NUL-terminated string and the flags are valid; the result is
    // checked below.
    let fd = unsafe {
        libc::memfd_create(
            c"berth-guest-mem".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(mem_size).map_err(MemoryError::Truncate)?;
    // SAFETY: fcntl on a valid fd with an integer argument.
    let ret = unsafe {
        libc::fcntl(
            fd,
            libc::F_ADD_SEALS,
            libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
        )
    };
    if ret < 0 {
        return Err(MemoryError::Truncate(std::io::Error::last_os_error()));
    }

    let file = std::sync::Arc::new(file);
    let mut offset = 0u64;
    let ranges: Vec<_> = arch_memory_regions(mem_size)
        .into_iter()
        .map(|(addr, len)| {
            let r = (
                addr,
                len as usize,
                Some(FileOffset::from_arc(file.clone(), offset)),
            );
            offset += len;
            r
        })
        .collect();
    GuestMemoryMmap::from_ranges_with_files(ranges).map_err(MemoryError::Map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn small_memory_is_one_region_below_the_gap() {
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
        mem.write_obj(0xdead_beefu32, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert!(mem.write_obj(0u8, GuestAddress(64 << 20)).is_err());
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        let regions = arch_memory_regions(4 << 30);
        assert_eq!(
            regions,
            vec![
                (GuestAddress(0), MMIO_MEM_START),
                (GuestAddress(1 << 32), (4 << 30) - MMIO_MEM_START)
            ]
        );
        // Mapping is lazy, so 4 GiB of address space costs nothing here.
        let mem = create_guest_memory(4096).unwrap();
        assert_eq!(mem.num_regions(), 2);
        let high = mem.iter().nth(1).unwrap();
        assert_eq!(high.start_addr(), GuestAddress(1 << 32));
        assert!(mem.write_obj(1u8, GuestAddress(MMIO_MEM_START)).is_err());
        mem.write_obj(1u8, GuestAddress(1 << 32)).unwrap();
    }

    #[test]
    fn too_small_is_refused() {
        assert!(matches!(
            create_guest_memory(1),
            Err(MemoryError::InvalidSize(1))
        ));
    }
}
