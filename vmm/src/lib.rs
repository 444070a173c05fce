//! berth's built-in virtual machine monitor.
//!
//! The crate is laid out like Firecracker's `src/vmm`:
//!
//! - [`vmm_config`]: typed, serde-loadable configuration (machine, boot source, drives, serial),
//!   kept apart from the live objects it describes.
//! - [`builder`]: the one recipe that assembles a VM, always in the same order: guest memory, VM
//!   with irqchip and PIT, devices on the buses, kernel, vCPUs.
//! - [`memory`]: memfd-backed guest memory with the x86_64 MMIO gap below 4 GiB.
//! - [`vstate`]: the KVM VM and the vCPU threads, whose exits are dispatched to [`devices::Bus`]es.
//! - [`devices`]: legacy devices (serial, i8042) and virtio devices over the virtio-mmio
//!   transport (block).
//! - [`loader`]: ELF kernel loading, `boot_params`, e820 and command line.
//! - [`arch`]: MP table, per-vCPU CPUID, boot MSRs and local APIC set-up.
//! - [`privileges`]: dropping capabilities once set-up is done; [`seccomp`]: per-thread
//!   system-call allow-lists.

#![deny(missing_docs)]

pub mod arch;
pub mod builder;
pub mod devices;
pub mod loader;
pub mod memory;
pub mod privileges;
pub mod seccomp;
#[doc(hidden)]
pub mod testing;
pub mod vmm_config;
pub mod vstate;

pub use builder::{build_vm, Vmm, VmmExit};
