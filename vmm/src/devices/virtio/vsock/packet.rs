//! The virtio-vsock packet header and moving packets between descriptor chains and host memory.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes};

use super::{HDR_LEN, MAX_PKT_PAYLOAD};
use crate::memory::GuestMemory;

/// Why a descriptor chain does not hold a usable packet (or cannot take one).
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The chain loops, names a descriptor beyond the table or could not be read.
    #[error("descriptor chain is looped, truncated or unreadable")]
    BadChain,
    /// A tx descriptor is device-writable or an rx descriptor is device-readable.
    #[error("descriptor has the wrong direction for this queue")]
    WrongDirection,
    /// The chain holds fewer bytes than a header.
    #[error("packet header needs {HDR_LEN} bytes, the chain has {0}")]
    ShortHeader(u64),
    /// The header announces a payload above the maximum.
    #[error("packet payload of {0} bytes exceeds the maximum of {MAX_PKT_PAYLOAD}")]
    Oversized(u32),
    /// The header announces more payload than the chain holds.
    #[error("packet announces {declared} payload bytes, the chain has {available}")]
    ShortPayload {
        /// The header's `len`.
        declared: u32,
        /// Bytes after the header.
        available: u64,
    },
    /// A buffer lies outside guest memory.
    #[error("packet buffer lies outside guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// `struct virtio_vsock_hdr` (virtio 1.2, 5.10.6), little-endian on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketHeader {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (1 = stream).
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags (shutdown bits).
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

impl PacketHeader {
    /// Decodes a header.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |i: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[i..i + 4]);
            u32::from_le_bytes(a)
        };
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A packet held in host memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The header (`len` equals `payload.len()`).
    pub hdr: PacketHeader,
    /// The payload.
    pub payload: Vec<u8>,
}

fn descriptors(chain: DescriptorChain<&GuestMemory>) -> Result<Vec<Descriptor>, PacketError> {
    let descs: Vec<Descriptor> = chain.collect();
    // The iterator stops early, leaving a descriptor that still has NEXT, on a loop, an index
    // beyond the table or an unreadable descriptor.
    if descs.last().is_none_or(|d| d.has_next()) {
        return Err(PacketError::BadChain);
    }
    Ok(descs)
}

/// Copies up to `out.len()` bytes from the descriptors, starting `skip` bytes in.
fn gather(
    mem: &GuestMemory,
    descs: &[Descriptor],
    mut skip: u64,
    out: &mut [u8],
) -> Result<(), PacketError> {
    let mut done = 0usize;
    for d in descs {
        if done == out.len() {
            break;
        }
        let len = u64::from(d.len());
        if skip >= len {
            skip -= len;
            continue;
        }
        // skip < len <= u32::MAX.
        let n = ((len - skip) as usize).min(out.len() - done);
        let addr = d.addr().checked_add(skip).ok_or(PacketError::Memory(
            vm_memory::GuestMemoryError::InvalidGuestAddress(d.addr()),
        ))?;
        mem.read_slice(&mut out[done..done + n], addr)
            .map_err(PacketError::Memory)?;
        done += n;
        skip = 0;
    }
    Ok(())
}

/// Reads a guest-to-host packet from a tx chain: every descriptor device-readable, the header
/// first, then `len` payload bytes (header and payload may share or span descriptors).
pub fn read_tx_packet(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
) -> Result<Packet, PacketError> {
    let descs = descriptors(chain)?;
    if descs.iter().any(Descriptor::is_write_only) {
        return Err(PacketError::WrongDirection);
    }
    let total: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    if total < HDR_LEN as u64 {
        return Err(PacketError::ShortHeader(total));
    }
    let mut raw = [0u8; HDR_LEN];
    gather(mem, &descs, 0, &mut raw)?;
    let hdr = PacketHeader::from_bytes(&raw);
    if hdr.len > MAX_PKT_PAYLOAD {
        return Err(PacketError::Oversized(hdr.len));
    }
    let available = total - HDR_LEN as u64;
    if u64::from(hdr.len) > available {
        return Err(PacketError::ShortPayload {
            declared: hdr.len,
            available,
        });
    }
    let mut payload = vec![0u8; hdr.len as usize];
    gather(mem, &descs, HDR_LEN as u64, &mut payload)?;
    Ok(Packet { hdr, payload })
}

/// The writable room of an rx chain, after checking it is well formed and device-writable.
pub struct RxBuffer {
    descs: Vec<Descriptor>,
    capacity: u64,
}

impl RxBuffer {
    /// Checks an rx chain.
    pub fn new(chain: DescriptorChain<&GuestMemory>) -> Result<Self, PacketError> {
        let descs = descriptors(chain)?;
        if descs.iter().any(|d| !d.is_write_only()) {
            return Err(PacketError::WrongDirection);
        }
        let capacity = descs.iter().map(|d| u64::from(d.len())).sum();
        if capacity < HDR_LEN as u64 {
            return Err(PacketError::ShortHeader(capacity));
        }
        Ok(Self { descs, capacity })
    }

    /// The largest payload the buffer can take.
    pub fn max_payload(&self) -> usize {
        let room = self.capacity - HDR_LEN as u64;
        room.min(u64::from(MAX_PKT_PAYLOAD)) as usize
    }

    /// Writes `pkt` (header, then payload); returns the bytes written.
    pub fn write(&self, mem: &GuestMemory, pkt: &Packet) -> Result<u32, PacketError> {
        let mut bytes = Vec::with_capacity(HDR_LEN + pkt.payload.len());
        bytes.extend_from_slice(&pkt.hdr.to_bytes());
        bytes.extend_from_slice(&pkt.payload);
        if bytes.len() as u64 > self.capacity {
            return Err(PacketError::ShortPayload {
                declared: pkt.hdr.len,
                available: self.capacity - HDR_LEN as u64,
            });
        }
        let mut done = 0usize;
        for d in &self.descs {
            if done == bytes.len() {
                break;
            }
            let n = (d.len() as usize).min(bytes.len() - done);
            mem.write_slice(&bytes[done..done + n], d.addr())
                .map_err(PacketError::Memory)?;
            done += n;
        }
        // At most HDR_LEN + MAX_PKT_PAYLOAD bytes.
        Ok(done as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = PacketHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234_5678,
            dst_port: 1234,
            len: 77,
            type_: 1,
            op: 5,
            flags: 3,
            buf_alloc: 65536,
            fwd_cnt: 0xdead_beef,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..8], &3u64.to_le_bytes());
        assert_eq!(&b[30..32], &5u16.to_le_bytes());
        assert_eq!(PacketHeader::from_bytes(&b), h);
    }
}
