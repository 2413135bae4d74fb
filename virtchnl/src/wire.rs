//! Little-endian field access with bounds checks, and list-length rules.
//!
//! Nothing here indexes a slice directly: every read goes through
//! [`Reader`], which returns [`Error::Truncated`] instead of panicking.

use crate::{Error, Result, VirtchnlOp};

/// A cursor over a payload that yields little-endian fields.
pub(crate) struct Reader<'a> {
    op: VirtchnlOp,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(op: VirtchnlOp, buf: &'a [u8]) -> Self {
        Reader { op, buf, pos: 0 }
    }

    pub(crate) fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.pos.checked_add(N).ok_or(self.truncated(usize::MAX))?;
        let slice = self.buf.get(self.pos..end).ok_or(self.truncated(end))?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<()> {
        let end = self.pos.checked_add(n).ok_or(self.truncated(usize::MAX))?;
        if end > self.buf.len() {
            return Err(self.truncated(end));
        }
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        self.bytes().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        self.bytes().map(u32::from_le_bytes)
    }

    pub(crate) fn i32(&mut self) -> Result<i32> {
        self.bytes().map(i32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        self.bytes().map(u64::from_le_bytes)
    }

    fn truncated(&self, need: usize) -> Error {
        Error::Truncated {
            op: self.op,
            len: self.buf.len(),
            need,
        }
    }
}

/// Appends little-endian fields to a payload.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_i32(&mut self, v: i32);
    fn put_u64(&mut self, v: u64);
    fn put_zeros(&mut self, n: usize);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i32(&mut self, v: i32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
}

/// Width of a list's count field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CountWidth {
    U16,
    U32,
}

/// How a variable-length message's size follows from its element count
/// (`virtchnl_struct_size` and the `*_LEGACY_SIZEOF` constants in virtchnl.h).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListLayout {
    /// Name of the count field in the C struct.
    pub(crate) field: &'static str,
    /// Offset and width of the count field.
    pub(crate) count_at: usize,
    pub(crate) width: CountWidth,
    /// The smallest acceptable message (`*_LEGACY_SIZEOF`).
    pub(crate) legacy: usize,
    /// Message length for a count of zero: `len = base + count * elem`.
    pub(crate) base: usize,
    /// Size of one element.
    pub(crate) elem: usize,
    /// Whether a count of zero is valid.
    pub(crate) zero_ok: bool,
}

impl ListLayout {
    /// Checks `payload` against this layout and returns the element count.
    pub(crate) fn check(&self, op: VirtchnlOp, payload: &[u8]) -> Result<usize> {
        let len = payload.len();
        if len < self.legacy {
            return Err(Error::Truncated {
                op,
                len,
                need: self.legacy,
            });
        }
        let mut r = Reader::new(op, payload);
        r.skip(self.count_at)?;
        let count = match self.width {
            CountWidth::U16 => u32::from(r.u16()?),
            CountWidth::U32 => r.u32()?,
        };
        if count == 0 && !self.zero_ok {
            return Err(Error::ZeroCount {
                op,
                field: self.field,
            });
        }
        let count_usize = usize::try_from(count).unwrap_or(usize::MAX);
        let expected = count_usize
            .checked_mul(self.elem)
            .and_then(|n| n.checked_add(self.base))
            .unwrap_or(usize::MAX);
        if len != expected {
            return Err(Error::CountMismatch {
                op,
                field: self.field,
                count,
                holds: len.saturating_sub(self.base) / self.elem.max(1),
                len,
                expected,
            });
        }
        Ok(count_usize)
    }
}

/// Checks that a fixed-size payload is exactly `expected` bytes long.
pub(crate) fn check_len(op: VirtchnlOp, payload: &[u8], expected: usize) -> Result<()> {
    if payload.len() == expected {
        Ok(())
    } else {
        Err(Error::WrongLength {
            op,
            len: payload.len(),
            expected,
        })
    }
}
