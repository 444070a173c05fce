//! virtio-net on a host tap device.
//!
//! - [`tap`]: opens `/dev/net/tun` as a tap with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, so each
//!   frame carries the same 12-byte `virtio_net_hdr_v1` the guest uses: frames pass between the
//!   queues and the tap without translation.
//! - [`device`]: the device model (MAC in config space), the frame engine over the rx/tx queues
//!   (a state machine over any [`FrameIo`], testable without a tap or KVM) and its worker thread.

pub mod device;
pub mod tap;

pub use device::{FrameIo, Net, NetEngine, NetError, NetMetrics};
pub use tap::{Tap, TapError};

/// Device type of virtio-net.
pub const TYPE_NET: u32 = 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// `struct virtio_net_hdr_v1` (with `num_buffers`), as the tap is told to use.
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame plus header accepted from either side (64 KiB frame, as with TSO).
pub const MAX_FRAME_LEN: usize = VNET_HDR_LEN + 65550;

/// Feature bits.
#[allow(missing_docs)]
pub mod features {
    pub const MAC: u32 = 5;
}
