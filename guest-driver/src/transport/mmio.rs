//! A bounds-checked window of volatile registers over a mapped PCI BAR.
//!
//! **Invariant:** a [`Bar`] owns one `MAP_SHARED` mapping of a PCI memory BAR
//! (a sysfs `resourceN` file), `len` bytes from `ptr`, from [`Bar::map`]
//! until `Drop` unmaps it. Every access is one volatile load or store of a
//! naturally aligned `u8`, `u16` or `u32` at an offset checked to lie inside
//! the mapping. No reference into the mapping is ever created, so the device
//! behind it may answer each read differently. Nothing else in the crate
//! builds a pointer into a BAR.
//!
//! A `Bar` is `Send` (a mapping is not tied to a thread) but not `Sync`: one
//! owner at a time issues register accesses.

#![allow(unsafe_code)]

use std::fs::File;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::{Error, Result};

/// A register width: `u8`, `u16` or `u32`. Sealed.
pub trait Register: Copy + sealed::Sealed {
    /// Converts between little-endian (the device's byte order) and native.
    fn swap_le(self) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
}

impl Register for u8 {
    fn swap_le(self) -> Self {
        self
    }
}

impl Register for u16 {
    fn swap_le(self) -> Self {
        u16::from_le(self)
    }
}

impl Register for u32 {
    fn swap_le(self) -> Self {
        u32::from_le(self)
    }
}

/// One mapped memory BAR.
#[derive(Debug)]
pub struct Bar {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping belongs to the process, not to a thread; moving the
// owner to another thread moves all access with it (`Bar` is not `Sync`).
unsafe impl Send for Bar {}

impl Bar {
    /// Maps `len` bytes of `file` (an open `resourceN`, O_RDWR) shared,
    /// readable and writable.
    pub fn map(file: &File, len: usize) -> std::io::Result<Bar> {
        let size = NonZeroUsize::new(len).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "the BAR has size 0")
        })?;
        // SAFETY: no address hint, so the kernel picks a fresh range that
        // aliases nothing in this process; the result is checked and owned by
        // the returned `Bar`, which unmaps exactly this range on drop.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                file,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(Bar {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: [`Bar::map`] refuses size 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of a `T` at `offset`, if it lies inside the mapping and is
    /// aligned.
    fn at<T: Register>(&self, offset: usize) -> Result<*mut T> {
        let width = std::mem::size_of::<T>();
        let fits = offset.checked_add(width).is_some_and(|end| end <= self.len);
        if !fits || offset % width != 0 {
            return Err(Error::Register {
                offset,
                width,
                len: self.len,
            });
        }
        // In bounds (checked above), so no wrapping happens; the mapping is
        // page aligned, so `offset % width == 0` makes the address aligned.
        Ok(self.ptr.as_ptr().wrapping_add(offset).cast::<T>())
    }

    /// Reads the register at `offset`.
    pub fn read<T: Register>(&self, offset: usize) -> Result<T> {
        let ptr = self.at::<T>(offset)?;
        // SAFETY: `at` checked that `offset..offset + size_of::<T>()` lies in
        // the mapping this `Bar` owns (alive as long as `self`) and that the
        // address is aligned for `T`.
        let value = unsafe { ptr.read_volatile() };
        Ok(value.swap_le())
    }

    /// Writes the register at `offset`.
    pub fn write<T: Register>(&self, offset: usize, value: T) -> Result<()> {
        let ptr = self.at::<T>(offset)?;
        // SAFETY: as in `read`: in bounds of the live mapping and aligned.
        unsafe { ptr.write_volatile(value.swap_le()) };
        Ok(())
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the range `map` got from mmap, and
        // no pointer into it survives `self` (none is ever handed out).
        if let Err(err) = unsafe { munmap(self.ptr.cast(), self.len) } {
            tracing::warn!(%err, len = self.len, "cannot unmap a BAR");
        }
    }
}

/// A window of registers inside a [`Bar`]: a virtio capability's structure.
///
/// Offsets are relative to the window and checked against its length before
/// the BAR checks them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Offset of the window in the BAR.
    pub offset: usize,
    /// Its length.
    pub len: usize,
}

impl Window {
    /// The BAR offset of a `width`-byte access at `offset` in the window.
    pub fn locate(&self, offset: usize, width: usize) -> Result<usize> {
        let fits = offset.checked_add(width).is_some_and(|end| end <= self.len);
        if !fits {
            return Err(Error::Register {
                offset,
                width,
                len: self.len,
            });
        }
        self.offset.checked_add(offset).ok_or(Error::Register {
            offset,
            width,
            len: self.len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_checks_the_end_of_each_access() {
        let w = Window {
            offset: 0x1000,
            len: 0x38,
        };
        assert_eq!(w.locate(0x34, 4).unwrap(), 0x1034);
        assert!(matches!(
            w.locate(0x36, 4),
            Err(Error::Register {
                offset: 0x36,
                width: 4,
                len: 0x38
            })
        ));
        assert!(w.locate(usize::MAX, 2).is_err());
    }

    #[test]
    fn a_mapped_file_reads_and_writes_little_endian_registers() {
        // A plain file stands in for a BAR: same mmap path, no device.
        let path = std::env::temp_dir().join(format!("vfrig-mmio-test-{}", std::process::id()));
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let bar = Bar::map(&file, 4096).unwrap();
        bar.write::<u32>(8, 0x1122_3344).unwrap();
        assert_eq!(bar.read::<u8>(8).unwrap(), 0x44);
        assert_eq!(bar.read::<u16>(10).unwrap(), 0x1122);
        assert!(bar.read::<u32>(4094).is_err(), "past the end");
        assert!(bar.read::<u16>(3).is_err(), "misaligned");
        drop(bar);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[8..12], &[0x44, 0x33, 0x22, 0x11]);
        std::fs::remove_file(&path).unwrap();
    }
}
