//! Test doubles: a device-side view of a split ring over
//! [`HeapMemory`](super::shared::HeapMemory).

use super::ring::{RingLayout, RingRegions, SplitQueue, DESC_F_NEXT, USED_F_NO_NOTIFY};
use super::shared::{Bump, SharedMemory};

/// A ring of `size` entries in `mem`, with the device side that watches it.
pub fn ring(mem: &impl SharedMemory, bump: &mut Bump, size: u16) -> (SplitQueue, FakeDevice) {
    let layout = RingLayout::new(size).unwrap();
    let regions = RingRegions {
        desc: bump
            .alloc(layout.desc_bytes(), RingLayout::DESC_ALIGN)
            .unwrap(),
        avail: bump
            .alloc(layout.avail_bytes(), RingLayout::AVAIL_ALIGN)
            .unwrap(),
        used: bump
            .alloc(layout.used_bytes(), RingLayout::USED_ALIGN)
            .unwrap(),
    };
    let queue = SplitQueue::new(mem, 0, layout, regions).unwrap();
    let base = mem.device_addr(0).unwrap();
    let device = FakeDevice {
        regions,
        layout,
        base,
        last_avail: 0,
        used_idx: 0,
    };
    (queue, device)
}

/// The device's side of one ring: takes published chains and returns them.
#[derive(Debug)]
pub struct FakeDevice {
    regions: RingRegions,
    layout: RingLayout,
    base: u64,
    last_avail: u16,
    used_idx: u16,
}

/// A descriptor as the device sees it: address, length, flags.
pub type Desc = (u64, u32, u16);

impl FakeDevice {
    /// The next published chain: its head id and descriptors.
    pub fn pop(&mut self, mem: &impl SharedMemory) -> Option<(u16, Vec<Desc>)> {
        let avail_idx = mem.read_u16(self.regions.avail.offset + 2).unwrap();
        if avail_idx == self.last_avail {
            return None;
        }
        let slot = self.layout.slot(self.last_avail);
        let head = mem
            .read_u16(self.regions.avail.offset + 4 + 2 * slot)
            .unwrap();
        self.last_avail = self.last_avail.wrapping_add(1);
        let mut chain = Vec::new();
        let mut id = head;
        loop {
            let at = self.regions.desc.offset + 16 * usize::from(id);
            let mut d = [0u8; 16];
            mem.read_bytes(at, &mut d).unwrap();
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
            let len = u32::from_le_bytes(d[8..12].try_into().unwrap());
            let flags = u16::from_le_bytes([d[12], d[13]]);
            let next = u16::from_le_bytes([d[14], d[15]]);
            chain.push((addr, len, flags));
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            id = next;
        }
        Some((head, chain))
    }

    /// The offset in `mem` of a device address.
    pub fn offset(&self, addr: u64) -> usize {
        (addr - self.base) as usize
    }

    /// Writes `data` where a descriptor points.
    pub fn write(&self, mem: &impl SharedMemory, desc: Desc, data: &[u8]) {
        assert!(data.len() <= desc.1 as usize, "buffer too small");
        mem.write_bytes(self.offset(desc.0), data).unwrap();
    }

    /// Reads what a descriptor points at.
    pub fn read(&self, mem: &impl SharedMemory, desc: Desc) -> Vec<u8> {
        let mut out = vec![0; desc.1 as usize];
        mem.read_bytes(self.offset(desc.0), &mut out).unwrap();
        out
    }

    /// Returns chain `id` with `len` bytes written.
    pub fn push(&mut self, mem: &impl SharedMemory, id: u32, len: u32) {
        let slot = self.layout.slot(self.used_idx);
        let at = self.regions.used.offset + 4 + 8 * slot;
        mem.write_u32(at, id).unwrap();
        mem.write_u32(at + 4, len).unwrap();
        self.used_idx = self.used_idx.wrapping_add(1);
        mem.write_u16(self.regions.used.offset + 2, self.used_idx)
            .unwrap();
    }

    /// Sets or clears VIRTQ_USED_F_NO_NOTIFY.
    pub fn set_no_notify(&self, mem: &impl SharedMemory, on: bool) {
        let flags = if on { USED_F_NO_NOTIFY } else { 0 };
        mem.write_u16(self.regions.used.offset, flags).unwrap();
    }
}
