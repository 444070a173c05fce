//! virtio-vsock in user space, with Firecracker's "hybrid vsock" host side.
//!
//! - [`packet`]: the 44-byte header and copying packets out of tx chains / into rx chains.
//! - [`muxer`]: the connection state machine (REQUEST/RESPONSE/RW/SHUTDOWN/RST, credit-based
//!   flow control with `buf_alloc`/`fwd_cnt`) and the host side: a Unix socket listener at
//!   `uds_path` where a host client writes `CONNECT <port>\n` and gets `OK <hostport>\n`, and
//!   guest-initiated connections to host port P going to the Unix socket `<uds_path>_P`. Pure
//!   logic over Unix sockets and `poll(2)` readiness: no threads, no KVM.
//! - [`device`]: the virtio device (rx, tx and event queues) and its worker thread.

pub mod device;
pub mod muxer;
pub mod packet;

pub use device::{Vsock, VsockError, VsockMetrics};
pub use muxer::VsockMuxer;
pub use packet::{Packet, PacketError, PacketHeader};

/// Device type of virtio-vsock.
pub const TYPE_VSOCK: u32 = 19;
/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indices.
pub const RX_QUEUE: usize = 0;
/// Guest-to-host packets.
pub const TX_QUEUE: usize = 1;
/// Transport events (unused: no migration).
pub const EVENT_QUEUE: usize = 2;
/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// Largest payload accepted or produced in one packet (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PKT_PAYLOAD: u32 = 64 << 10;
/// Receive buffer the host advertises per connection (`buf_alloc`).
pub const CONN_BUF_ALLOC: u32 = 256 << 10;

/// The only socket type (VIRTIO_VSOCK_TYPE_STREAM).
pub const TYPE_STREAM: u16 = 1;

/// Operations.
#[allow(missing_docs)]
pub mod op {
    pub const INVALID: u16 = 0;
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flags.
pub mod shutdown {
    /// The sender will receive no more data.
    pub const RCV: u32 = 1;
    /// The sender will send no more data.
    pub const SEND: u32 = 2;
}
