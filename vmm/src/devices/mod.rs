//! Emulated devices and the buses that route guest port I/O and MMIO to them.

pub mod bus;
pub mod legacy;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};
