//! Driver side of a split virtqueue (virtio 1.2, 2.7), for tests.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemory;

/// Descriptor continues via `next`.
pub const F_NEXT: u16 = 1;
/// Descriptor is device-writable.
pub const F_WRITE: u16 = 2;

/// A split virtqueue laid out at `base`: descriptor table, then the available ring, then the
/// used ring on the next 4 KiB boundary.
#[derive(Debug, Clone)]
pub struct DriverQueue {
    base: GuestAddress,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl DriverQueue {
    /// A queue of `size` entries at `base` (16-byte aligned).
    pub fn new(base: GuestAddress, size: u16) -> Self {
        Self {
            base,
            size,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Address of the descriptor table (QueueDesc).
    pub fn desc_table(&self) -> GuestAddress {
        self.base
    }

    /// Address of the available ring (QueueDriver).
    pub fn avail_ring(&self) -> GuestAddress {
        GuestAddress(self.base.0 + 16 * u64::from(self.size))
    }

    /// Address of the used ring (QueueDevice).
    pub fn used_ring(&self) -> GuestAddress {
        let avail_end = self.avail_ring().0 + 6 + 2 * u64::from(self.size);
        GuestAddress(avail_end.next_multiple_of(4096))
    }

    /// Bytes spanned by the whole queue.
    pub fn total_len(&self) -> u64 {
        self.used_ring().0 + 6 + 8 * u64::from(self.size) - self.base.0
    }

    /// Zeroes the queue's memory.
    pub fn init(&self, mem: &GuestMemory) {
        let zeros = vec![0u8; self.total_len() as usize];
        // Tests place queues inside guest memory; a failure is a test bug.
        #[allow(clippy::unwrap_used)]
        mem.write_slice(&zeros, self.base).unwrap();
    }

    fn write_desc(&self, mem: &GuestMemory, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        let at = GuestAddress(self.base.0 + 16 * u64::from(idx));
        #[allow(clippy::unwrap_used)]
        mem.write_slice(&d, at).unwrap();
    }

    fn publish(&mut self, mem: &GuestMemory, head: u16) {
        let slot = self.avail_ring().0 + 4 + 2 * u64::from(self.avail_idx % self.size);
        #[allow(clippy::unwrap_used)]
        {
            mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            mem.store(
                self.avail_idx.to_le(),
                GuestAddress(self.avail_ring().0 + 2),
                Ordering::Release,
            )
            .unwrap();
        }
    }

    /// Makes a chain of `(addr, len, flags)` available; NEXT links are added. Returns the head.
    pub fn add_chain(&mut self, mem: &GuestMemory, chain: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in chain.iter().enumerate() {
            let idx = (head + i as u16) % self.size;
            let last = i + 1 == chain.len();
            let flags = if last { flags } else { flags | F_NEXT };
            self.write_desc(mem, idx, addr, len, flags, (idx + 1) % self.size);
        }
        self.next_desc = (head + chain.len() as u16) % self.size;
        self.publish(mem, head);
        head
    }

    /// Makes descriptors `(addr, len, flags, next)` available as given, head first, at
    /// consecutive indices from the cursor; `next` values are absolute indices.
    pub fn add_raw(&mut self, mem: &GuestMemory, descs: &[(u64, u32, u16, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let idx = (head + i as u16) % self.size;
            self.write_desc(mem, idx, addr, len, flags, next);
        }
        self.next_desc = (head + descs.len() as u16) % self.size;
        self.publish(mem, head);
        head
    }

    /// The next used element `(id, len)`, if the device has added one.
    pub fn pop_used(&mut self, mem: &GuestMemory) -> Option<(u32, u32)> {
        #[allow(clippy::unwrap_used)]
        let used_idx: u16 = mem
            .load(GuestAddress(self.used_ring().0 + 2), Ordering::Acquire)
            .unwrap();
        if used_idx == self.used_seen {
            return None;
        }
        let at = self.used_ring().0 + 4 + 8 * u64::from(self.used_seen % self.size);
        #[allow(clippy::unwrap_used)]
        let elem: [u8; 8] = mem.read_obj(GuestAddress(at)).unwrap();
        self.used_seen = self.used_seen.wrapping_add(1);
        let [a, b, c, d, e, f, g, h] = elem;
        Some((
            u32::from_le_bytes([a, b, c, d]),
            u32::from_le_bytes([e, f, g, h]),
        ))
    }
}
