//! Address-range buses: one for port I/O and one for MMIO.
//!
//! A vCPU exit carries an absolute address; the bus finds the device whose range contains it and
//! hands the device the offset inside that range.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that can sit on a [`Bus`].
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` inside the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` inside the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors of [`Bus::insert`].
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The new range has zero length or wraps around the address space.
    #[error("bus range at {base:#x} with length {len:#x} is empty or wraps around")]
    InvalidRange {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// The new range overlaps a device already on the bus.
    #[error("bus range at {base:#x} with length {len:#x} overlaps another device")]
    Overlap {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

#[derive(Clone)]
struct BusEntry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A map from disjoint address ranges to devices.
#[derive(Clone, Default)]
pub struct Bus {
    devices: BTreeMap<u64, BusEntry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.devices.iter().map(|(b, e)| (*b, e.len)))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` on the bus at `[base, base + len)`.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::InvalidRange { base, len });
        }
        let end = base + len;
        let overlaps_prev = self
            .devices
            .range(..end)
            .next_back()
            .is_some_and(|(b, e)| b + e.len > base);
        if overlaps_prev {
            return Err(BusError::Overlap { base, len });
        }
        self.devices.insert(base, BusEntry { len, device });
        Ok(())
    }

    fn resolve(&self, addr: u64) -> Option<(u64, &BusEntry)> {
        let (base, entry) = self.devices.range(..=addr).next_back()?;
        (addr - base < entry.len).then_some((addr - base, entry))
    }

    /// Dispatches a read; returns false (leaving `data` untouched) when no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((offset, entry)) => {
                // A poisoned lock means another vCPU panicked inside a device; the device state
                // is still the best we have, so keep serving it.
                let mut dev = entry
                    .device
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                dev.read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((offset, entry)) => {
                let mut dev = entry
                    .device
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                dev.write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlaps() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(a.clone(), 0x100, 0x10).unwrap();
        bus.insert(b.clone(), 0x200, 0x10).unwrap();
        assert!(matches!(
            bus.insert(a.clone(), 0x10f, 2),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(a.clone(), 0xf0, 0x11),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(a.clone(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
        bus.insert(a.clone(), 0x110, 0x10).unwrap();

        let mut buf = [0u8; 2];
        assert!(bus.read(0x203, &mut buf));
        assert_eq!(buf, [3, 3]);
        assert!(!bus.read(0x210, &mut buf));
        assert!(!bus.read(0xff, &mut buf));
        assert!(bus.write(0x10f, &[7]));
        assert!(!bus.write(0x300, &[7]));
        assert_eq!(a.lock().unwrap().writes, vec![(0xf, vec![7])]);
    }
}
