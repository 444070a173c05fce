//! virtio-blk: a block device backed by a host file.
//!
//! [`device`] holds the device model and the request engine (a state machine over
//! virtio-queue descriptor chains); [`event_handler`] runs the engine on a worker thread woken by
//! the queue's notification eventfd.

pub mod device;
pub mod event_handler;

pub use device::{Block, BlockError, BlockMetrics, DiskEngine};

/// Sector size used by the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the one queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest data payload accepted in one request; larger requests fail with IOERR.
pub const MAX_REQUEST_BYTES: u64 = 64 << 20;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = 20;

/// Request types.
#[allow(missing_docs)]
pub mod req {
    pub const IN: u32 = 0;
    pub const OUT: u32 = 1;
    pub const FLUSH: u32 = 4;
    pub const GET_ID: u32 = 8;
}

/// Request status bytes.
#[allow(missing_docs)]
pub mod blk_status {
    pub const OK: u8 = 0;
    pub const IOERR: u8 = 1;
    pub const UNSUPP: u8 = 2;
}

/// Feature bits.
#[allow(missing_docs)]
pub mod features {
    pub const SEG_MAX: u32 = 2;
    pub const RO: u32 = 5;
    pub const FLUSH: u32 = 9;
}
