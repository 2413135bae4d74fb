//! The mailbox frame: the unit that travels in one virtqueue buffer.
//!
//! Real AVF hardware carries a virtchnl message in a 32-byte admin-queue
//! descriptor plus an indirect buffer, with the opcode and status in the
//! descriptor's cookie fields. vfrig replaces that with a 16-byte header in
//! front of the payload, all fields little-endian:
//!
//! | Offset | Size | Field     | Meaning                                                    |
//! |--------|------|-----------|------------------------------------------------------------|
//! | 0      | 4    | `opcode`  | [`VirtchnlOp`] (`enum virtchnl_ops`)                        |
//! | 4      | 4    | `retval`  | [`VirtchnlStatus`] as `i32`; 0 in requests and events       |
//! | 8      | 4    | `datalen` | payload length in bytes, at most [`MAX_PAYLOAD`]            |
//! | 12     | 4    | `cookie`  | chosen by the VF, echoed unchanged in the reply             |
//! | 16     | n    | payload   | the C struct for the opcode, exactly `datalen` bytes        |
//!
//! A frame is exactly `16 + datalen` bytes; trailing bytes are an error. The
//! cookie is not in virtchnl: it lets a transcript pair each reply with its
//! request even when completions are reordered. PF events use opcode
//! [`VirtchnlOp::Event`] and cookie 0.

use crate::{Error, Result, VirtchnlOp, VirtchnlStatus};

/// Size of the frame header.
pub const HEADER_LEN: usize = 16;

/// Largest payload: one AVF mailbox buffer (`IAVF_MAX_AQ_BUF_SIZE`).
pub const MAX_PAYLOAD: usize = 4096;

/// Largest frame: header plus [`MAX_PAYLOAD`].
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD;

/// The decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message's opcode.
    pub op: VirtchnlOp,
    /// The reply status; [`VirtchnlStatus::Success`] in requests and events.
    pub status: VirtchnlStatus,
    /// Payload length in bytes.
    pub len: u32,
    /// Request identifier chosen by the VF and echoed in the reply.
    pub cookie: u32,
}

/// A frame split into its header and payload, borrowed from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: FrameHeader,
    /// Exactly `header.len` bytes.
    pub payload: &'a [u8],
}

impl FrameHeader {
    /// Reads the header from the start of `bytes` without looking at the payload.
    ///
    /// Useful to answer a malformed frame with the opcode the VF used.
    pub fn parse(bytes: &[u8]) -> Result<FrameHeader> {
        let head: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::FrameTooShort {
                len: bytes.len(),
                need: HEADER_LEN,
            })?;
        let field = |at: usize| [head[at], head[at + 1], head[at + 2], head[at + 3]];
        Ok(FrameHeader {
            op: VirtchnlOp::from(u32::from_le_bytes(field(0))),
            status: VirtchnlStatus::from(i32::from_le_bytes(field(4))),
            len: u32::from_le_bytes(field(8)),
            cookie: u32::from_le_bytes(field(12)),
        })
    }

    /// Writes the header in wire format.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.op.to_raw().to_le_bytes());
        out[4..8].copy_from_slice(&self.status.to_raw().to_le_bytes());
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
        out[12..16].copy_from_slice(&self.cookie.to_le_bytes());
        out
    }
}

impl<'a> Frame<'a> {
    /// Splits `bytes` into header and payload, checking the declared length.
    pub fn parse(bytes: &'a [u8]) -> Result<Frame<'a>> {
        let header = FrameHeader::parse(bytes)?;
        let payload = bytes.get(HEADER_LEN..).unwrap_or_default();
        let declared = usize::try_from(header.len).unwrap_or(usize::MAX);
        if declared > MAX_PAYLOAD {
            return Err(Error::PayloadTooLarge {
                op: header.op,
                len: declared,
                max: MAX_PAYLOAD,
            });
        }
        if payload.len() != declared {
            return Err(Error::FrameLengthMismatch {
                op: header.op,
                declared: header.len,
                actual: payload.len(),
            });
        }
        Ok(Frame { header, payload })
    }
}

/// Builds a frame from its parts; `datalen` is taken from `payload`.
///
/// The caller keeps payloads within [`MAX_PAYLOAD`] (iavf splits long filter
/// lists for the same reason); a longer payload is written but will not parse.
pub fn encode_frame(
    op: VirtchnlOp,
    status: VirtchnlStatus,
    cookie: u32,
    payload: &[u8],
) -> Vec<u8> {
    let header = FrameHeader {
        op,
        status,
        len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        cookie,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    out
}
