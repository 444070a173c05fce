//! Live KVM state: the VM file descriptor and the vCPUs.

pub mod vcpu;
pub mod vm;

pub use vcpu::{Vcpu, VcpuError, VcpuExitReason};
pub use vm::{Vm, VmError};
