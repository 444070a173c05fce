//! COM1: a vm-superio 16550A UART on port 0x3f8, as a thin bus wrapper.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::i8042::EventFdTrigger;
use crate::devices::BusDevice;

/// COM1 base port.
pub const COM1_PORT: u64 = 0x3f8;
/// Length of the UART's port range.
pub const COM1_PORT_LEN: u64 = 0x8;
/// COM1's legacy IRQ.
pub const COM1_IRQ: u32 = 4;

/// Where the UART's transmitted bytes go.
#[derive(Debug, Clone)]
pub enum SerialOutput {
    /// The VMM's stdout.
    Stdout,
    /// A file.
    File(Arc<Mutex<File>>),
    /// An in-memory buffer (tests, captured consoles).
    Buffer(Arc<Mutex<Vec<u8>>>),
    /// Nowhere.
    Sink,
}

impl Write for SerialOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            SerialOutput::Stdout => std::io::stdout().write(buf),
            SerialOutput::File(f) => f
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .write(buf),
            SerialOutput::Buffer(b) => {
                b.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            SerialOutput::Sink => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            SerialOutput::Stdout => std::io::stdout().flush(),
            SerialOutput::File(f) => f
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .flush(),
            _ => Ok(()),
        }
    }
}

/// The UART on the PIO bus; its interrupt signals an eventfd (a KVM irqfd on IRQ 4).
pub struct SerialDevice {
    inner: Serial<EventFdTrigger, vm_superio::serial::NoEvents, SerialOutput>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART writing to `out` and raising `irq_evt`.
    pub fn new(irq_evt: EventFd, out: SerialOutput) -> Self {
        Self {
            inner: Serial::new(EventFdTrigger(irq_evt), out),
        }
    }

    /// Queues bytes for the guest to read (console input).
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        self.inner.enqueue_raw_bytes(input).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.inner.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [value] = data {
            if let Err(e) = self.inner.write(offset as u8, *value) {
                tracing::warn!(error = ?e, "serial: write failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn transmitted_bytes_reach_the_output() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(evt, SerialOutput::Buffer(buf.clone()));
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*buf.lock().unwrap(), b"hi\n");
        // Line status register: transmitter empty.
        let mut lsr = [0];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
