//! x86_64 machine description handed to the guest: the Intel MP table, per-vCPU CPUID, the
//! MSRs and local APIC state a vCPU boots with.

pub mod cpuid;
pub mod lapic;
pub mod mptable;
pub mod msr;
