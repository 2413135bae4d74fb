//! The driver side of a split virtqueue (virtio 1.x, 2.7) in shared memory.
//!
//! [`SplitQueue`] owns the descriptor table, the available ring and the used
//! ring of one queue, by offset into a [`SharedMemory`]. It hands out
//! descriptors from a free list, publishes chains, and takes back what the
//! device used. It keeps its own copy of every chain's links, so nothing the
//! device writes can make it free the wrong descriptors: a used id that is
//! not in flight, or a used index running ahead, is an error.
//!
//! No interrupts: the available ring says VIRTQ_AVAIL_F_NO_INTERRUPT and the
//! caller polls [`SplitQueue::poll_used`]. Notifications follow
//! VIRTQ_USED_F_NO_NOTIFY (EVENT_IDX is not negotiated).
//!
//! Ordering (virtio 1.x, 2.7.13): descriptors and ring entries are written
//! before the available index is stored with release ordering; a full fence
//! separates that store from reading the device's flags; the used index is
//! loaded with acquire ordering before the entries it covers are read.

use super::shared::{Region, SharedMemory};
use super::virtio::QueueAddrs;
use super::{Error, Result};

/// `VIRTQ_DESC_F_NEXT`: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver polls.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY`: the device does not need a notification.
pub const USED_F_NO_NOTIFY: u16 = 1;

/// Byte layout of a split ring with `size` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    size: u16,
}

impl RingLayout {
    /// Alignment of the descriptor table.
    pub const DESC_ALIGN: usize = 16;
    /// Alignment of the available ring.
    pub const AVAIL_ALIGN: usize = 2;
    /// Alignment of the used ring.
    pub const USED_ALIGN: usize = 4;

    /// A layout for `size` entries: a power of two up to 32768.
    pub fn new(size: u16) -> Result<RingLayout> {
        if !size.is_power_of_two() || size > 32768 {
            return Err(Error::BadQueueSize(size));
        }
        Ok(RingLayout { size })
    }

    /// Entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Bytes of the descriptor table (16 per entry).
    pub fn desc_bytes(&self) -> usize {
        16 * usize::from(self.size)
    }

    /// Bytes of the available ring: flags, idx, ring, used_event.
    pub fn avail_bytes(&self) -> usize {
        6 + 2 * usize::from(self.size)
    }

    /// Bytes of the used ring: flags, idx, ring of (id, len), avail_event.
    pub fn used_bytes(&self) -> usize {
        6 + 8 * usize::from(self.size)
    }

    /// The ring slot of free-running index `idx`.
    pub fn slot(&self, idx: u16) -> usize {
        usize::from(idx & (self.size - 1))
    }
}

/// Entries the device has used that the driver has not taken yet.
pub fn pending(used_idx: u16, last_used: u16) -> u16 {
    used_idx.wrapping_sub(last_used)
}

/// One buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the buffer in the shared memory.
    pub offset: usize,
    /// Its length.
    pub len: u32,
    /// Whether the device writes it (receive) or reads it (transmit).
    pub device_writes: bool,
}

/// A chain the device has finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// The token given to [`SplitQueue::add`].
    pub token: u32,
    /// Bytes the device wrote into the chain's writable buffers.
    pub len: u32,
}

/// A chain in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    token: u32,
    descriptors: u16,
}

/// The three regions of a split ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingRegions {
    /// Descriptor table.
    pub desc: Region,
    /// Available ring.
    pub avail: Region,
    /// Used ring.
    pub used: Region,
}

/// The driver side of one split virtqueue.
#[derive(Debug)]
pub struct SplitQueue {
    queue: u16,
    layout: RingLayout,
    regions: RingRegions,
    /// Free descriptor ids, popped from the end.
    free: Vec<u16>,
    /// The driver's copy of each descriptor's `next`.
    next: Vec<u16>,
    /// What each head descriptor of a chain in flight carries.
    heads: Vec<Option<InFlight>>,
    next_avail: u16,
    published: u16,
    last_used: u16,
    in_flight: u16,
}

impl SplitQueue {
    /// Initialises a ring for queue `queue` in `regions` (zeroed, interrupts
    /// off). Hand [`SplitQueue::addrs`] to the device afterwards.
    pub fn new(
        mem: &impl SharedMemory,
        queue: u16,
        layout: RingLayout,
        regions: RingRegions,
    ) -> Result<SplitQueue> {
        for (region, need) in [
            (regions.desc, layout.desc_bytes()),
            (regions.avail, layout.avail_bytes()),
            (regions.used, layout.used_bytes()),
        ] {
            let offset = region.at(0, need)?;
            mem.write_bytes(offset, &vec![0; need])?;
        }
        mem.store_release_u16(regions.avail.at(0, 2)?, AVAIL_F_NO_INTERRUPT)?;
        let size = usize::from(layout.size());
        Ok(SplitQueue {
            queue,
            layout,
            regions,
            free: (0..layout.size()).rev().collect(),
            next: vec![0; size],
            heads: vec![None; size],
            next_avail: 0,
            published: 0,
            last_used: 0,
            in_flight: 0,
        })
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Entries in the ring.
    pub fn size(&self) -> u16 {
        self.layout.size()
    }

    /// Chains the device holds.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Descriptors not in any chain.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Where the ring's parts are.
    pub fn regions(&self) -> RingRegions {
        self.regions
    }

    /// The device addresses to program into the queue.
    pub fn addrs(&self, mem: &impl SharedMemory) -> Result<QueueAddrs> {
        Ok(QueueAddrs {
            desc: mem.device_addr(self.regions.desc.offset)?,
            driver: mem.device_addr(self.regions.avail.offset)?,
            device: mem.device_addr(self.regions.used.offset)?,
        })
    }

    /// Makes `segments` one chain, available to the device once
    /// [`publish`](Self::publish)ed. `token` comes back with it in
    /// [`Used`]. Returns the head descriptor's id.
    pub fn add(
        &mut self,
        mem: &impl SharedMemory,
        segments: &[Segment],
        token: u32,
    ) -> Result<u16> {
        let n = segments.len();
        if n == 0 || n > self.free.len() {
            return Err(Error::QueueFull {
                queue: self.queue,
                size: self.size(),
            });
        }
        for seg in segments {
            let len = seg.len as usize;
            if seg
                .offset
                .checked_add(len)
                .is_none_or(|end| end > mem.size())
            {
                return Err(Error::OutOfBounds {
                    offset: seg.offset,
                    len,
                    size: mem.size(),
                });
            }
        }
        let start = self.free.len() - n;
        let ids = &self.free[start..];
        for (k, seg) in segments.iter().enumerate() {
            let id = ids[k];
            let next = ids.get(k + 1).copied();
            let mut flags = if seg.device_writes { DESC_F_WRITE } else { 0 };
            if next.is_some() {
                flags |= DESC_F_NEXT;
            }
            let mut desc = [0u8; 16];
            desc[0..8].copy_from_slice(&mem.device_addr(seg.offset)?.to_le_bytes());
            desc[8..12].copy_from_slice(&seg.len.to_le_bytes());
            desc[12..14].copy_from_slice(&flags.to_le_bytes());
            desc[14..16].copy_from_slice(&next.unwrap_or(0).to_le_bytes());
            mem.write_bytes(self.regions.desc.at(16 * usize::from(id), 16)?, &desc)?;
            self.next[usize::from(id)] = next.unwrap_or(0);
        }
        let head = ids[0];
        let slot = self.layout.slot(self.next_avail);
        mem.write_u16(self.regions.avail.at(4 + 2 * slot, 2)?, head)?;
        self.free.truncate(start);
        self.heads[usize::from(head)] = Some(InFlight {
            token,
            // At most `size` (checked against the free list above).
            descriptors: n as u16,
        });
        self.next_avail = self.next_avail.wrapping_add(1);
        self.in_flight += 1;
        Ok(head)
    }

    /// Makes every chain added since the last call visible to the device.
    /// Returns whether the device wants a notification for them.
    #[must_use = "notify the device when this returns true"]
    pub fn publish(&mut self, mem: &impl SharedMemory) -> Result<bool> {
        if self.next_avail == self.published {
            return Ok(false);
        }
        mem.store_release_u16(self.regions.avail.at(2, 2)?, self.next_avail)?;
        self.published = self.next_avail;
        mem.fence();
        let flags = mem.load_acquire_u16(self.regions.used.at(0, 2)?)?;
        Ok(flags & USED_F_NO_NOTIFY == 0)
    }

    /// Takes the next chain the device has used, if any, and frees its
    /// descriptors.
    pub fn poll_used(&mut self, mem: &impl SharedMemory) -> Result<Option<Used>> {
        let used_idx = mem.load_acquire_u16(self.regions.used.at(2, 2)?)?;
        let ready = pending(used_idx, self.last_used);
        if ready == 0 {
            return Ok(None);
        }
        if ready > self.in_flight {
            return Err(Error::UsedOverrun {
                queue: self.queue,
                pending: ready,
                in_flight: self.in_flight,
            });
        }
        let slot = self.layout.slot(self.last_used);
        let elem = self.regions.used.at(4 + 8 * slot, 8)?;
        let id = mem.read_u32(elem)?;
        let len = mem.read_u32(elem + 4)?;
        let chain = usize::try_from(id)
            .ok()
            .and_then(|i| self.heads.get_mut(i))
            .and_then(Option::take)
            .ok_or(Error::BadUsedId {
                queue: self.queue,
                id,
            })?;
        // `id` indexes `heads`, so it fits a u16.
        let mut desc = id as u16;
        for _ in 0..chain.descriptors {
            self.free.push(desc);
            desc = self.next[usize::from(desc)];
        }
        self.last_used = self.last_used.wrapping_add(1);
        self.in_flight -= 1;
        Ok(Some(Used {
            token: chain.token,
            len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::shared::{Bump, HeapMemory};
    use crate::transport::test_util::ring;

    #[test]
    fn layout_sizes_follow_the_spec() {
        let l = RingLayout::new(256).unwrap();
        assert_eq!(
            (l.desc_bytes(), l.avail_bytes(), l.used_bytes()),
            (4096, 518, 2054)
        );
        assert_eq!(l.slot(257), 1);
        assert_eq!(l.slot(u16::MAX), 255);
        for bad in [0, 3, 100, 65535] {
            assert!(
                matches!(RingLayout::new(bad), Err(Error::BadQueueSize(_))),
                "{bad}"
            );
        }
        assert!(RingLayout::new(32768).is_ok());
    }

    #[test]
    fn pending_counts_across_the_wrap() {
        assert_eq!(pending(5, 3), 2);
        assert_eq!(pending(2, 65534), 4);
        assert_eq!(pending(7, 7), 0);
    }

    #[test]
    fn a_chain_goes_round_trip_with_its_token_and_flags() {
        let mem = HeapMemory::new(1 << 16, 0x1_0000_0000);
        let mut bump = Bump::new(mem.size());
        let (mut q, mut dev) = ring(&mem, &mut bump, 8);
        assert_eq!(q.addrs(&mem).unwrap().desc, 0x1_0000_0000);
        let segs = [
            Segment {
                offset: 0x8000,
                len: 4,
                device_writes: false,
            },
            Segment {
                offset: 0x8040,
                len: 1,
                device_writes: true,
            },
        ];
        q.add(&mem, &segs, 77).unwrap();
        assert!(dev.pop(&mem).is_none(), "not visible before publish");
        assert!(q.publish(&mem).unwrap(), "device wants a notification");
        let (head, chain) = dev.pop(&mem).unwrap();
        assert_eq!(
            chain,
            [
                (0x1_0000_8000, 4, DESC_F_NEXT),
                (0x1_0000_8040, 1, DESC_F_WRITE)
            ]
        );
        assert_eq!(q.free_descriptors(), 6);
        assert_eq!(q.poll_used(&mem).unwrap(), None);
        dev.push(&mem, u32::from(head), 1);
        assert_eq!(q.poll_used(&mem).unwrap(), Some(Used { token: 77, len: 1 }));
        assert_eq!((q.free_descriptors(), q.in_flight()), (8, 0));
    }

    #[test]
    fn no_notify_is_respected_and_empty_publish_is_quiet() {
        let mem = HeapMemory::new(1 << 16, 0);
        let mut bump = Bump::new(mem.size());
        let (mut q, dev) = ring(&mem, &mut bump, 4);
        assert!(!q.publish(&mem).unwrap());
        dev.set_no_notify(&mem, true);
        q.add(
            &mem,
            &[Segment {
                offset: 0x8000,
                len: 8,
                device_writes: true,
            }],
            0,
        )
        .unwrap();
        assert!(!q.publish(&mem).unwrap());
    }

    #[test]
    fn indices_wrap_past_u16_max() {
        let mem = HeapMemory::new(1 << 16, 0);
        let mut bump = Bump::new(mem.size());
        let (mut q, mut dev) = ring(&mem, &mut bump, 4);
        for round in 0..70_000u32 {
            let seg = Segment {
                offset: 0x8000 + (round as usize % 4) * 16,
                len: 16,
                device_writes: true,
            };
            q.add(&mem, &[seg], round).unwrap();
            let _ = q.publish(&mem).unwrap();
            let (head, _) = dev.pop(&mem).expect("published");
            dev.push(&mem, u32::from(head), round % 17);
            let used = q.poll_used(&mem).unwrap().expect("used");
            assert_eq!(
                used,
                Used {
                    token: round,
                    len: round % 17
                }
            );
        }
    }

    #[test]
    fn a_full_ring_refuses_more_chains() {
        let mem = HeapMemory::new(1 << 16, 0);
        let mut bump = Bump::new(mem.size());
        let (mut q, _dev) = ring(&mem, &mut bump, 2);
        let seg = Segment {
            offset: 0x8000,
            len: 8,
            device_writes: false,
        };
        q.add(&mem, &[seg, seg], 0).unwrap();
        assert!(matches!(
            q.add(&mem, &[seg], 1),
            Err(Error::QueueFull { size: 2, .. })
        ));
        assert!(matches!(q.add(&mem, &[], 1), Err(Error::QueueFull { .. })));
    }

    #[test]
    fn buffers_outside_memory_are_refused() {
        let mem = HeapMemory::new(1 << 16, 0);
        let mut bump = Bump::new(mem.size());
        let (mut q, _dev) = ring(&mem, &mut bump, 2);
        let seg = Segment {
            offset: 0xfff8,
            len: 16,
            device_writes: false,
        };
        assert!(matches!(
            q.add(&mem, &[seg], 0),
            Err(Error::OutOfBounds { .. })
        ));
        assert_eq!(q.free_descriptors(), 2);
    }

    #[test]
    fn a_device_returning_an_unknown_id_or_too_many_is_an_error() {
        let mem = HeapMemory::new(1 << 16, 0);
        let mut bump = Bump::new(mem.size());
        let (mut q, mut dev) = ring(&mem, &mut bump, 4);
        let seg = Segment {
            offset: 0x8000,
            len: 8,
            device_writes: true,
        };
        q.add(&mem, &[seg], 0).unwrap();
        let _ = q.publish(&mem).unwrap();
        dev.push(&mem, 3, 0);
        assert!(matches!(
            q.poll_used(&mem),
            Err(Error::BadUsedId { id: 3, .. })
        ));

        let (mut q, mut dev) = ring(&mem, &mut bump, 4);
        q.add(&mem, &[seg], 0).unwrap();
        let _ = q.publish(&mem).unwrap();
        dev.push(&mem, 0, 0);
        dev.push(&mem, 0, 0);
        assert!(matches!(
            q.poll_used(&mem),
            Err(Error::UsedOverrun {
                pending: 2,
                in_flight: 1,
                ..
            })
        ));
    }
}
