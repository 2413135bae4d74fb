//! Memory shared with the device: the seam between the rings and the DMA
//! arena.
//!
//! Rings and buffers are addressed by byte offsets into a [`SharedMemory`];
//! they never hold pointers. [`DmaArena`](super::dma::DmaArena) is the real
//! one; tests use an in-process stand-in, so ring and queue logic runs on the
//! host without hardware.
//!
//! Multi-byte values are little-endian (virtio 1.x). The device may read or
//! write any byte at any time; the ordering rules of the split ring are
//! expressed with [`SharedMemory::load_acquire_u16`],
//! [`SharedMemory::store_release_u16`] and [`SharedMemory::fence`].

use super::{Error, Result};

/// Memory a device reads and writes by DMA.
pub trait SharedMemory {
    /// Size in bytes.
    fn size(&self) -> usize;

    /// The address the device uses for byte `offset`.
    fn device_addr(&self, offset: usize) -> Result<u64>;

    /// Copies `out.len()` bytes from `offset`.
    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()>;

    /// Copies `data` to `offset`.
    fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()>;

    /// Reads a `u16` the device may be writing, then orders every later
    /// read after it (acquire).
    fn load_acquire_u16(&self, offset: usize) -> Result<u16>;

    /// Orders every earlier write before it (release), then writes a `u16`
    /// the device may be reading.
    fn store_release_u16(&self, offset: usize, value: u16) -> Result<()>;

    /// A full fence: earlier writes become visible before later reads.
    fn fence(&self);

    /// Reads a little-endian `u16`.
    fn read_u16(&self, offset: usize) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_bytes(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, offset: usize) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_bytes(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian `u16`.
    fn write_u16(&self, offset: usize, value: u16) -> Result<()> {
        self.write_bytes(offset, &value.to_le_bytes())
    }

    /// Writes a little-endian `u32`.
    fn write_u32(&self, offset: usize, value: u32) -> Result<()> {
        self.write_bytes(offset, &value.to_le_bytes())
    }

    /// Writes a little-endian `u64`.
    fn write_u64(&self, offset: usize, value: u64) -> Result<()> {
        self.write_bytes(offset, &value.to_le_bytes())
    }
}

/// A range of shared memory handed out by an allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Offset in the memory.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Region {
    /// The memory offset of `len` bytes at `offset` inside the region.
    pub fn at(&self, offset: usize, len: usize) -> Result<usize> {
        let out = || Error::OutOfBounds {
            offset,
            len,
            size: self.len,
        };
        let end = offset.checked_add(len).ok_or_else(out)?;
        if end > self.len {
            return Err(out());
        }
        self.offset.checked_add(offset).ok_or_else(out)
    }

    /// The `index`-th of equal `slot`-byte pieces of the region.
    pub fn slot(&self, index: usize, slot: usize) -> Result<Region> {
        let start = index.checked_mul(slot).ok_or(Error::OutOfBounds {
            offset: usize::MAX,
            len: slot,
            size: self.len,
        })?;
        Ok(Region {
            offset: self.at(start, slot)?,
            len: slot,
        })
    }
}

/// A bump allocator over `size` bytes: regions are never freed, which suits
/// rings and buffers set up once per device.
#[derive(Debug, Clone)]
pub struct Bump {
    size: usize,
    next: usize,
}

impl Bump {
    /// An allocator over `0..size`.
    pub fn new(size: usize) -> Self {
        Bump { size, next: 0 }
    }

    /// `len` bytes aligned to `align` (a power of two).
    pub fn alloc(&mut self, len: usize, align: usize) -> Result<Region> {
        let full = || Error::ArenaFull {
            need: len,
            align,
            free: self.size - self.next,
        };
        if !align.is_power_of_two() {
            return Err(full());
        }
        let start = self.next.checked_next_multiple_of(align).ok_or_else(full)?;
        let end = start.checked_add(len).ok_or_else(full)?;
        if end > self.size {
            return Err(full());
        }
        self.next = end;
        Ok(Region { offset: start, len })
    }

    /// Bytes handed out so far, alignment padding included.
    pub fn used(&self) -> usize {
        self.next
    }
}

/// Plain process memory standing in for DMA memory in tests: device
/// addresses are offsets plus a fixed base.
#[cfg(test)]
#[derive(Debug)]
pub struct HeapMemory {
    bytes: std::cell::RefCell<Vec<u8>>,
    base: u64,
}

#[cfg(test)]
impl HeapMemory {
    /// `size` zeroed bytes whose device addresses start at `base`.
    pub fn new(size: usize, base: u64) -> Self {
        HeapMemory {
            bytes: std::cell::RefCell::new(vec![0; size]),
            base,
        }
    }

    fn range(&self, offset: usize, len: usize) -> Result<std::ops::Range<usize>> {
        let size = self.size();
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= size)
            .ok_or(Error::OutOfBounds { offset, len, size })?;
        Ok(offset..end)
    }
}

#[cfg(test)]
impl SharedMemory for HeapMemory {
    fn size(&self) -> usize {
        self.bytes.borrow().len()
    }

    fn device_addr(&self, offset: usize) -> Result<u64> {
        self.range(offset, 0)?;
        Ok(self.base + offset as u64)
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let r = self.range(offset, out.len())?;
        out.copy_from_slice(&self.bytes.borrow()[r]);
        Ok(())
    }

    fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        let r = self.range(offset, data.len())?;
        self.bytes.borrow_mut()[r].copy_from_slice(data);
        Ok(())
    }

    fn load_acquire_u16(&self, offset: usize) -> Result<u16> {
        self.read_u16(offset)
    }

    fn store_release_u16(&self, offset: usize, value: u16) -> Result<()> {
        self.write_u16(offset, value)
    }

    fn fence(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_aligns_and_refuses_what_does_not_fit() {
        let mut bump = Bump::new(100);
        assert_eq!(bump.alloc(3, 1).unwrap(), Region { offset: 0, len: 3 });
        assert_eq!(bump.alloc(8, 16).unwrap(), Region { offset: 16, len: 8 });
        assert!(matches!(
            bump.alloc(80, 4),
            Err(Error::ArenaFull {
                need: 80,
                align: 4,
                free: 76
            })
        ));
        assert!(
            bump.alloc(1, 3).is_err(),
            "alignment must be a power of two"
        );
        assert_eq!(
            bump.alloc(76, 1).unwrap(),
            Region {
                offset: 24,
                len: 76
            }
        );
        assert_eq!(bump.used(), 100);
    }

    #[test]
    fn region_offsets_stay_inside() {
        let r = Region {
            offset: 1000,
            len: 64,
        };
        assert_eq!(r.at(60, 4).unwrap(), 1060);
        assert!(r.at(61, 4).is_err());
        assert!(r.at(usize::MAX, 1).is_err());
        assert_eq!(
            r.slot(3, 16).unwrap(),
            Region {
                offset: 1048,
                len: 16
            }
        );
        assert!(r.slot(4, 16).is_err());
        assert!(r.slot(usize::MAX, 16).is_err());
    }
}
