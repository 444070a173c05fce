//! A debug-exit port (like QEMU's isa-debug-exit): any write ends the VM with the value written.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tracing::warn;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::BusDevice;

/// The port device: records the value and signals `exit_evt`.
#[derive(Debug)]
pub struct ExitPort {
    exit_evt: EventFd,
    value: Arc<AtomicU32>,
}

impl ExitPort {
    /// A port that stores written values in `value` and signals `exit_evt`.
    pub fn new(exit_evt: EventFd, value: Arc<AtomicU32>) -> Self {
        Self { exit_evt, value }
    }
}

impl BusDevice for ExitPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        self.value.store(u32::from_le_bytes(v), Ordering::SeqCst);
        if let Err(e) = self.exit_evt.write(1) {
            warn!(error = %e, "exit port: could not signal the VMM");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn write_records_the_value_and_signals() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let value = Arc::new(AtomicU32::new(0));
        let mut port = ExitPort::new(evt.try_clone().unwrap(), value.clone());
        let mut b = [0u8; 1];
        port.read(0, &mut b);
        assert_eq!(b, [0xff]);
        assert!(evt.read().is_err(), "reads do not end the VM");
        port.write(0, &[0x31]);
        assert_eq!(evt.read().unwrap(), 1);
        assert_eq!(value.load(Ordering::SeqCst), 0x31);
    }
}
