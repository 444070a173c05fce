//! The i8042 keyboard controller, reduced to what a Linux guest uses: the CPU reset command
//! (0xFE on port 0x64), which the VMM turns into an orderly shutdown (`reboot=k`).

use vm_superio::{I8042Device, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::BusDevice;

/// Base port of the i8042 (data at 0x60, command at 0x64).
pub const I8042_PORT: u64 = 0x60;
/// Length of the port range.
pub const I8042_PORT_LEN: u64 = 0x5;

/// Signals an eventfd when triggered.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The i8042 on the PIO bus; a CPU reset request signals `reset_evt`.
#[derive(Debug)]
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// A controller that signals `reset_evt` when the guest asks for a reset.
    pub fn new(reset_evt: EventFd) -> Self {
        Self {
            inner: I8042Device::new(EventFdTrigger(reset_evt)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.inner.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [value] = data {
            if let Err(e) = self.inner.write(offset as u8, *value) {
                tracing::warn!(error = %e, "i8042: could not signal the reset event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn reset_command_signals_the_event() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(evt.try_clone().unwrap());
        dev.write(4, &[0x00]);
        dev.write(0, &[0xfe]);
        assert!(evt.read().is_err(), "only 0xFE on the command port resets");
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
        let mut b = [0xff];
        dev.read(0, &mut b);
        assert_eq!(b, [0]);
    }
}
