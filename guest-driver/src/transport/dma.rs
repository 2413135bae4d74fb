//! DMA memory: one pinned 2 MiB hugepage and its guest-physical address.
//!
//! **Invariant:** a [`DmaArena`] owns one anonymous `MAP_SHARED |
//! MAP_HUGETLB` mapping of [`HUGEPAGE_SIZE`] bytes from `ptr`, populated and
//! locked, from [`DmaArena::new`] until `Drop` unmaps it. A hugetlb page is
//! physically contiguous and is never swapped; `MAP_SHARED` keeps it from
//! being copied on write after a `fork`. So `iova + offset` is the device
//! address of byte `offset` for the arena's whole life (no vIOMMU: guest
//! physical is the DMA address), and [`DmaArena::new`] checks this against
//! `/proc/self/pagemap` for every 4 KiB page.
//!
//! The device reads and writes the arena behind the compiler's back, so the
//! rules of vm-memory apply: no `&`/`&mut` into the mapping is ever created;
//! bytes move with volatile loads and stores at offsets checked against the
//! arena's length; the ring indices the device polls are accessed as atomics
//! (acquire/release), and [`SharedMemory::fence`] is a sequentially
//! consistent fence (the `mb()` virtio needs between publishing an index and
//! reading the device's notification flags). Nothing else in the crate
//! builds a pointer into the arena.
//!
//! The owner must stop the device (reset it) before dropping the arena:
//! unmapping returns the page to the kernel while a running device could
//! still write to it. [`VfDevice`](super::VfDevice) does this in its field
//! order. A process killed outright cannot; the next open resets the device
//! first.

#![allow(unsafe_code)]

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU16, Ordering};

use nix::sys::mman::{mlock, mmap_anonymous, munmap, MapFlags, ProtFlags};

use super::shared::{Bump, Region, SharedMemory};
use super::{Error, Result};

/// Size of the arena: one x86-64 hugepage.
pub const HUGEPAGE_SIZE: usize = 2 << 20;

/// The base page size `/proc/self/pagemap` is indexed by.
const PAGE_SIZE: usize = 4096;

/// Where `/proc/self/pagemap` lives.
const PAGEMAP: &str = "/proc/self/pagemap";

/// Pinned, physically contiguous memory the device can reach.
#[derive(Debug)]
pub struct DmaArena {
    ptr: NonNull<u8>,
    len: usize,
    iova: u64,
    bump: Bump,
}

// SAFETY: the mapping belongs to the process, not to a thread; moving the
// owner moves all access with it (`DmaArena` is not `Sync`).
unsafe impl Send for DmaArena {}

impl DmaArena {
    /// Maps, populates and locks one hugepage and finds its physical address.
    ///
    /// Needs a free hugepage (`hugepages=N` on the kernel command line) and
    /// root (page frame numbers in `/proc/self/pagemap`).
    pub fn new() -> Result<DmaArena> {
        let len = HUGEPAGE_SIZE;
        let size = NonZeroUsize::new(len).expect("HUGEPAGE_SIZE is not zero");
        // SAFETY: an anonymous mapping with no address hint cannot alias
        // anything in this process; the result is checked, and the returned
        // arena owns and eventually unmaps exactly this range.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_HUGETLB | MapFlags::MAP_POPULATE,
            )
        }
        .map_err(|e| Error::Hugepage(e.into()))?;
        // From here on `Drop` unmaps, whatever fails below.
        let mut arena = DmaArena {
            ptr: ptr.cast(),
            len,
            iova: 0,
            bump: Bump::new(len),
        };
        // SAFETY: the range is exactly the live mapping made above.
        unsafe { mlock(ptr, len) }.map_err(|e| Error::Mlock(e.into()))?;
        arena.iova = arena.physical_base()?;
        tracing::debug!(
            iova = format_args!("{:#x}", arena.iova),
            len,
            "DMA arena mapped"
        );
        Ok(arena)
    }

    /// The device address of the arena's first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Reserves `len` bytes aligned to `align` (a power of two). Regions are
    /// never freed; they live as long as the arena.
    pub fn alloc(&mut self, len: usize, align: usize) -> Result<Region> {
        self.bump.alloc(len, align)
    }

    /// Bytes reserved so far.
    pub fn used(&self) -> usize {
        self.bump.used()
    }

    /// Reads the physical address of every 4 KiB page of the mapping and
    /// checks they are contiguous; returns the first.
    fn physical_base(&self) -> Result<u64> {
        let pagemap_err = |source| Error::Sysfs {
            what: "read",
            path: PAGEMAP.into(),
            source,
        };
        let file = File::open(PAGEMAP).map_err(pagemap_err)?;
        let pages = self.len / PAGE_SIZE;
        let mut entries = vec![0u8; pages * 8];
        let vaddr = self.ptr.as_ptr() as usize;
        let at = (vaddr / PAGE_SIZE * 8) as u64;
        file.read_exact_at(&mut entries, at).map_err(pagemap_err)?;
        let entries: Vec<u64> = entries
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect();
        contiguous_base(&entries)
    }

    /// The address of `len` bytes at `offset`, if they lie in the arena.
    fn at(&self, offset: usize, len: usize) -> Result<*mut u8> {
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !fits {
            return Err(Error::OutOfBounds {
                offset,
                len,
                size: self.len,
            });
        }
        Ok(self.ptr.as_ptr().wrapping_add(offset))
    }

    /// The atomic at `offset`, which must be in bounds and 2-aligned.
    fn atomic_u16(&self, offset: usize) -> Result<&AtomicU16> {
        let ptr = self.at(offset, 2)?;
        if offset % 2 != 0 {
            return Err(Error::OutOfBounds {
                offset,
                len: 2,
                size: self.len,
            });
        }
        // SAFETY: `at` checked the two bytes lie in the mapping, which lives
        // as long as `&self` (the lifetime of the returned reference); the
        // mapping is page aligned and `offset` even, so the pointer is
        // aligned for `AtomicU16`. The ring code accesses its flag and index
        // fields only through these atomics once the device may see them
        // (zeroing them earlier with `write_bytes` happens-before, on the
        // same thread); the device's accesses are outside the program.
        Ok(unsafe { AtomicU16::from_ptr(ptr.cast::<u16>()) })
    }
}

impl SharedMemory for DmaArena {
    fn size(&self) -> usize {
        self.len
    }

    fn device_addr(&self, offset: usize) -> Result<u64> {
        self.at(offset, 0)?;
        // `offset <= len` (2 MiB), so this cannot overflow a u64 iova that
        // pagemap gave as a 55-bit frame number times 4096.
        Ok(self.iova + offset as u64)
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let base = self.at(offset, out.len())?;
        for (i, byte) in out.iter_mut().enumerate() {
            let src = base.wrapping_add(i);
            // SAFETY: `at` checked `offset..offset + out.len()` lies in the
            // live mapping, and `i < out.len()`.
            *byte = unsafe { src.read_volatile() };
        }
        Ok(())
    }

    fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        let base = self.at(offset, data.len())?;
        for (i, &byte) in data.iter().enumerate() {
            let dst = base.wrapping_add(i);
            // SAFETY: `at` checked `offset..offset + data.len()` lies in the
            // live mapping, and `i < data.len()`.
            unsafe { dst.write_volatile(byte) };
        }
        Ok(())
    }

    fn load_acquire_u16(&self, offset: usize) -> Result<u16> {
        Ok(u16::from_le(
            self.atomic_u16(offset)?.load(Ordering::Acquire),
        ))
    }

    fn store_release_u16(&self, offset: usize, value: u16) -> Result<()> {
        self.atomic_u16(offset)?
            .store(value.to_le(), Ordering::Release);
        Ok(())
    }

    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

impl Drop for DmaArena {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the range `new` got from mmap, and
        // no pointer or reference into it outlives `self`.
        if let Err(err) = unsafe { munmap(self.ptr.cast(), self.len) } {
            tracing::warn!(%err, "cannot unmap the DMA arena");
        }
    }
}

/// The page frame number in a `/proc/self/pagemap` entry: bits 0-54 when
/// bit 63 (present) is set. Zero (no `CAP_SYS_ADMIN`) counts as absent.
pub fn pagemap_pfn(entry: u64) -> Option<u64> {
    const PRESENT: u64 = 1 << 63;
    const PFN_MASK: u64 = (1 << 55) - 1;
    let pfn = entry & PFN_MASK;
    (entry & PRESENT != 0 && pfn != 0).then_some(pfn)
}

/// The physical address of the first page, if every page follows the one
/// before it.
pub fn contiguous_base(entries: &[u64]) -> Result<u64> {
    let first = entries.first().copied().unwrap_or(0);
    let base = pagemap_pfn(first).ok_or(Error::NoPhysicalAddress { entry: first })?;
    for (page, &entry) in entries.iter().enumerate() {
        let pfn = pagemap_pfn(entry).ok_or(Error::NoPhysicalAddress { entry })?;
        let expected = base + page as u64;
        if pfn != expected {
            return Err(Error::NotContiguous {
                page,
                pfn,
                expected,
            });
        }
    }
    Ok(base * PAGE_SIZE as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESENT: u64 = 1 << 63;

    #[test]
    fn pagemap_entries_give_frame_numbers_only_when_present() {
        assert_eq!(pagemap_pfn(PRESENT | 0x1234), Some(0x1234));
        // Soft-dirty (55) and exclusive (56) bits are not part of the pfn.
        assert_eq!(pagemap_pfn(PRESENT | 3 << 55 | 0x1234), Some(0x1234));
        assert_eq!(pagemap_pfn(0x1234), None, "not present");
        assert_eq!(
            pagemap_pfn(PRESENT),
            None,
            "pfn hidden without CAP_SYS_ADMIN"
        );
    }

    #[test]
    fn contiguous_pages_give_the_base_address() {
        let entries: Vec<u64> = (0..512).map(|i| PRESENT | (0x4_0000 + i)).collect();
        assert_eq!(contiguous_base(&entries).unwrap(), 0x4000_0000);
    }

    #[test]
    fn a_gap_or_a_hidden_pfn_is_an_error() {
        let mut entries: Vec<u64> = (0..4).map(|i| PRESENT | (0x200 + i)).collect();
        entries[2] = PRESENT | 0x999;
        assert!(matches!(
            contiguous_base(&entries),
            Err(Error::NotContiguous {
                page: 2,
                pfn: 0x999,
                expected: 0x202
            })
        ));
        assert!(matches!(
            contiguous_base(&[PRESENT]),
            Err(Error::NoPhysicalAddress { .. })
        ));
        assert!(contiguous_base(&[]).is_err());
    }
}
