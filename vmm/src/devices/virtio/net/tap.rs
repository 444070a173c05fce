//! A tap device opened through `/dev/net/tun`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::VNET_HDR_LEN;

/// Errors of [`Tap::open`].
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name is empty or longer than 15 bytes.
    #[error("tap name {0:?} must be 1 to 15 bytes")]
    Name(String),
    /// `/dev/net/tun` could not be opened.
    #[error("could not open /dev/net/tun")]
    OpenTun(#[source] std::io::Error),
    /// An ioctl on the tap failed.
    #[error("could not {what} on tap {name}")]
    Ioctl {
        /// What was being done.
        what: &'static str,
        /// The interface.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// `struct ifreq` as TUNSETIFF uses it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A non-blocking tap whose frames carry a 12-byte virtio-net header.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (creating it when missing) the tap `name` in the calling thread's network namespace.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(TapError::Name(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let err = |what, source| TapError::Ioctl {
            what,
            name: name.to_owned(),
            source,
        };
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` matches in layout and
        // size (40 bytes); the fd is a freshly opened tun device.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            return Err(err("attach (TUNSETIFF)", std::io::Error::last_os_error()));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, which points at `hdr_len`.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        if rc < 0 {
            return Err(err(
                "set the vnet header size",
                std::io::Error::last_os_error(),
            ));
        }
        // No offloads: the guest is offered none (checksum and GSO fields stay zero).
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETOFFLOAD, 0 as libc::c_ulong) };
        if rc < 0 {
            return Err(err("set offloads", std::io::Error::last_os_error()));
        }
        Ok(Self {
            file,
            name: name.to_owned(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl super::FrameIo for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }
}
