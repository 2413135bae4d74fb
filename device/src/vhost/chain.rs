//! Reading transmit chains and filling receive chains in guest memory.
//!
//! Every address, length and flag here comes from the guest. Each descriptor
//! is checked against guest memory before any byte moves, lengths are summed
//! with `checked_add` and capped before anything is allocated, and every
//! access goes through vm-memory. A chain that breaks a rule is reported as a
//! [`ChainError`], never a panic; the caller returns it to the used ring
//! with length 0.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::virtio_net::{NET_HDR_LEN, RX_NET_HDR};

/// Why a descriptor chain was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A device-writable descriptor where the device must read.
    #[error("descriptor {position} of the chain is device-writable on a transmit queue")]
    WriteOnly {
        /// Position in the chain, from 0.
        position: usize,
    },
    /// A device-readable descriptor where the device must write.
    #[error("descriptor {position} of the chain is device-readable on a receive queue")]
    ReadOnly {
        /// Position in the chain, from 0.
        position: usize,
    },
    /// A descriptor that points outside guest memory.
    #[error("descriptor {position} ({addr:#x}, {len} bytes) is outside guest memory")]
    OutsideMemory {
        /// Position in the chain, from 0.
        position: usize,
        /// Guest-physical address.
        addr: u64,
        /// Length in bytes.
        len: u32,
    },
    /// More bytes than a header and the largest frame of the pair.
    #[error("chain holds more than {max} bytes (at least {len})")]
    TooLong {
        /// Bytes counted when the limit was passed.
        len: u64,
        /// Header plus the largest frame of the pair.
        max: usize,
    },
    /// Not even room for the `virtio_net_hdr`.
    #[error("chain holds {len} bytes, fewer than the {NET_HDR_LEN}-byte virtio_net_hdr")]
    TooShort {
        /// Bytes in the chain.
        len: u64,
    },
}

/// One checked piece of a chain.
#[derive(Debug, Clone, Copy)]
struct Segment {
    addr: GuestAddress,
    len: usize,
}

/// Walks `chain`, checking that every descriptor is readable (`writable ==
/// false`) or writable by the device, lies inside `mem`, and that the chain
/// holds at most `max` bytes.
fn segments<M>(
    mem: &M,
    chain: DescriptorChain<&M>,
    writable: bool,
    max: usize,
) -> Result<(Vec<Segment>, usize), ChainError>
where
    M: GuestMemoryBackend,
{
    let mut segments = Vec::new();
    let mut total: u64 = 0;
    for (position, desc) in chain.enumerate() {
        check_direction(&desc, position, writable)?;
        let len = desc.len();
        total = total.saturating_add(u64::from(len));
        if total > max as u64 {
            return Err(ChainError::TooLong { len: total, max });
        }
        if len == 0 {
            continue;
        }
        // `len` fits: `total` is at most `max`, a `usize`.
        let seg_len = len as usize;
        if !GuestMemoryBackend::check_range(mem, desc.addr(), seg_len) {
            return Err(ChainError::OutsideMemory {
                position,
                addr: desc.addr().0,
                len,
            });
        }
        segments.push(Segment {
            addr: desc.addr(),
            len: seg_len,
        });
    }
    if total < NET_HDR_LEN as u64 {
        return Err(ChainError::TooShort { len: total });
    }
    // At most `max`, checked in the loop.
    Ok((segments, total as usize))
}

fn check_direction(desc: &Descriptor, position: usize, writable: bool) -> Result<(), ChainError> {
    match (desc.is_write_only(), writable) {
        (true, false) => Err(ChainError::WriteOnly { position }),
        (false, true) => Err(ChainError::ReadOnly { position }),
        _ => Ok(()),
    }
}

/// Reads the frame a transmit chain carries: its readable bytes after the
/// `virtio_net_hdr`, at most `max_frame` of them.
pub fn read_tx_frame<M>(
    mem: &M,
    chain: DescriptorChain<&M>,
    max_frame: usize,
) -> Result<Vec<u8>, ChainError>
where
    M: GuestMemoryBackend,
{
    let max = NET_HDR_LEN.saturating_add(max_frame);
    let (segments, total) = segments(mem, chain, false, max)?;
    let mut bytes = vec![0u8; total];
    let mut at = 0;
    for (position, seg) in segments.iter().enumerate() {
        let end = at + seg.len;
        // In range: the segment lengths sum to `total`.
        let dst = &mut bytes[at..end];
        mem.read_slice(dst, seg.addr)
            .map_err(|_| ChainError::OutsideMemory {
                position,
                addr: seg.addr.0,
                len: seg.len as u32,
            })?;
        at = end;
    }
    bytes.drain(..NET_HDR_LEN);
    Ok(bytes)
}

/// A checked receive chain, ready to take a frame of up to `capacity` bytes.
#[derive(Debug)]
pub struct RxBuffer {
    segments: Vec<Segment>,
    capacity: usize,
}

impl RxBuffer {
    /// Checks a receive chain: device-writable descriptors only, inside guest
    /// memory, room for at least the header. `capacity` counts the writable
    /// bytes after the header, capped at `max_frame`.
    pub fn new<M>(mem: &M, chain: DescriptorChain<&M>, max_frame: usize) -> Result<Self, ChainError>
    where
        M: GuestMemoryBackend,
    {
        // A chain may be larger than any frame; only the first header plus
        // `max_frame` bytes are ever written, so the cap is on the sum, not an
        // error.
        let (segments, total) = segments(mem, chain, true, usize::MAX)?;
        let capacity = (total - NET_HDR_LEN).min(max_frame);
        Ok(RxBuffer { segments, capacity })
    }

    /// Frame bytes this buffer takes after the header.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Writes the header and `frame` (at most [`capacity`](Self::capacity)
    /// bytes); returns the bytes written, the used-ring length.
    pub fn write<M: GuestMemoryBackend>(&self, mem: &M, frame: &[u8]) -> Result<u32, ChainError> {
        let len = NET_HDR_LEN + frame.len().min(self.capacity);
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(&RX_NET_HDR);
        bytes.extend_from_slice(&frame[..len - NET_HDR_LEN]);
        let mut rest = bytes.as_slice();
        for (position, seg) in self.segments.iter().enumerate() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(seg.len.min(rest.len()));
            mem.write_slice(now, seg.addr)
                .map_err(|_| ChainError::OutsideMemory {
                    position,
                    addr: seg.addr.0,
                    len: seg.len as u32,
                })?;
            rest = later;
        }
        // `len` is at most NET_HDR_LEN + max_frame, well below u32::MAX.
        Ok(u32::try_from(len).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::{Queue, QueueT};
    use vm_memory::GuestMemoryMmap;

    use super::*;

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    /// Guest memory is [0, 0x10000).
    const END: u64 = 0x1_0000;

    /// One descriptor: address, length, device-writable.
    type D = (u64, u32, bool);

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), END as usize)]).unwrap()
    }

    /// A queue with `descs` available as one chain.
    fn queue_with(mem: &GuestMemoryMmap, descs: &[D]) -> Queue {
        for (i, &(addr, len, writable)) in descs.iter().enumerate() {
            let mut flags = 0;
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            if writable {
                flags |= VRING_DESC_F_WRITE as u16;
            }
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..].copy_from_slice(&(i as u16 + 1).to_le_bytes());
            mem.write_slice(&raw, GuestAddress(DESC + 16 * i as u64))
                .unwrap();
        }
        // flags 0, idx 1, ring[0] = head 0
        mem.write_slice(&[0, 0, 1, 0, 0, 0], GuestAddress(AVAIL))
            .unwrap();
        let mut queue = Queue::new(16).unwrap();
        queue
            .try_set_desc_table_address(GuestAddress(DESC))
            .unwrap();
        queue
            .try_set_avail_ring_address(GuestAddress(AVAIL))
            .unwrap();
        queue.try_set_used_ring_address(GuestAddress(USED)).unwrap();
        queue.set_ready(true);
        queue
    }

    fn tx(mem: &GuestMemoryMmap, descs: &[D], max_frame: usize) -> Result<Vec<u8>, ChainError> {
        let mut queue = queue_with(mem, descs);
        let chain = queue.pop_descriptor_chain(mem).unwrap();
        read_tx_frame(mem, chain, max_frame)
    }

    fn rx(mem: &GuestMemoryMmap, descs: &[D], max_frame: usize) -> Result<RxBuffer, ChainError> {
        let mut queue = queue_with(mem, descs);
        let chain = queue.pop_descriptor_chain(mem).unwrap();
        RxBuffer::new(mem, chain, max_frame)
    }

    #[test]
    fn tx_frame_is_what_follows_the_header_across_descriptors() {
        let m = mem();
        m.write_slice(&[9; 12], GuestAddress(0x4000)).unwrap();
        m.write_slice(b"\x09\x09abc", GuestAddress(0x5000)).unwrap();
        m.write_slice(b"defg", GuestAddress(0x6000)).unwrap();
        // The header ends inside the second descriptor.
        let descs = [(0x4000, 10, false), (0x5000, 5, false), (0x6000, 4, false)];
        assert_eq!(tx(&m, &descs, 100).unwrap(), b"abcdefg");
    }

    #[test]
    fn tx_frame_of_exactly_the_limit_passes_and_one_more_byte_does_not() {
        let m = mem();
        assert_eq!(
            tx(&m, &[(0x4000, 12 + 100, false)], 100).unwrap().len(),
            100
        );
        assert_eq!(
            tx(&m, &[(0x4000, 12 + 101, false)], 100),
            Err(ChainError::TooLong { len: 113, max: 112 })
        );
    }

    #[test]
    fn tx_rejects_bad_chains() {
        let m = mem();
        assert_eq!(
            tx(&m, &[(0x4000, 11, false)], 100),
            Err(ChainError::TooShort { len: 11 })
        );
        assert_eq!(
            tx(&m, &[(0x4000, 12, false), (0x5000, 4, true)], 100),
            Err(ChainError::WriteOnly { position: 1 })
        );
        assert_eq!(
            tx(&m, &[(END - 4, 12, false)], 100),
            Err(ChainError::OutsideMemory {
                position: 0,
                addr: END - 4,
                len: 12
            })
        );
        assert!(matches!(
            tx(&m, &[(u64::MAX - 2, 12, false)], 100),
            Err(ChainError::OutsideMemory { .. })
        ));
    }

    #[test]
    fn tx_ignores_an_empty_descriptor_wherever_it_points() {
        let m = mem();
        let descs = [
            (0x4000, 12, false),
            (u64::MAX, 0, false),
            (0x5000, 3, false),
        ];
        assert_eq!(tx(&m, &descs, 100).unwrap().len(), 3);
    }

    #[test]
    fn rx_capacity_is_what_follows_the_header_capped_at_the_pair_limit() {
        let m = mem();
        assert_eq!(rx(&m, &[(0x4000, 100, true)], 1000).unwrap().capacity(), 88);
        assert_eq!(rx(&m, &[(0x4000, 100, true)], 50).unwrap().capacity(), 50);
        assert_eq!(rx(&m, &[(0x4000, 12, true)], 50).unwrap().capacity(), 0);
    }

    #[test]
    fn rx_rejects_bad_chains() {
        let m = mem();
        assert!(matches!(
            rx(&m, &[(0x4000, 11, true)], 100),
            Err(ChainError::TooShort { len: 11 })
        ));
        assert!(matches!(
            rx(&m, &[(0x4000, 64, false)], 100),
            Err(ChainError::ReadOnly { position: 0 })
        ));
        assert!(matches!(
            rx(&m, &[(0x4000, 64, true), (END, 64, true)], 100),
            Err(ChainError::OutsideMemory { position: 1, .. })
        ));
    }

    #[test]
    fn rx_write_puts_header_and_frame_across_descriptors() {
        let m = mem();
        let buffer = rx(&m, &[(0x4000, 5, true), (0x5000, 64, true)], 100).unwrap();

        assert_eq!(buffer.write(&m, b"hello").unwrap(), 17);

        let mut first = [0u8; 5];
        let mut second = [0u8; 12];
        m.read_slice(&mut first, GuestAddress(0x4000)).unwrap();
        m.read_slice(&mut second, GuestAddress(0x5000)).unwrap();
        let written: Vec<u8> = first.iter().chain(&second).copied().collect();
        assert_eq!(&written[..NET_HDR_LEN], &RX_NET_HDR);
        assert_eq!(&written[NET_HDR_LEN..], b"hello");
    }
}
