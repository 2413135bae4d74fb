//! The one error type of this crate.

use crate::VirtchnlOp;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a frame or message could not be decoded.
///
/// Every variant names the opcode (when one is known) and carries the sizes it
/// saw, so a PF can log exactly what a VF got wrong and answer with an error
/// status instead of failing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the mailbox frame header.
    #[error("frame of {len} bytes is shorter than the {need}-byte frame header")]
    FrameTooShort {
        /// Bytes available.
        len: usize,
        /// Header size.
        need: usize,
    },
    /// The frame header's payload length disagrees with the bytes that follow it.
    #[error("{op}: frame header declares {declared} payload bytes but {actual} follow")]
    FrameLengthMismatch {
        /// Opcode from the header.
        op: VirtchnlOp,
        /// Payload length in the header.
        declared: u32,
        /// Bytes after the header.
        actual: usize,
    },
    /// The payload is larger than a mailbox buffer.
    #[error("{op}: payload of {len} bytes exceeds the {max}-byte mailbox buffer")]
    PayloadTooLarge {
        /// Opcode of the message.
        op: VirtchnlOp,
        /// Payload length.
        len: usize,
        /// Largest payload allowed.
        max: usize,
    },
    /// A fixed-size payload has the wrong length.
    #[error("{op}: payload is {len} bytes, expected {expected}")]
    WrongLength {
        /// Opcode of the message.
        op: VirtchnlOp,
        /// Payload length.
        len: usize,
        /// The length the opcode requires.
        expected: usize,
    },
    /// The payload ends before a field the message needs.
    #[error("{op}: payload is {len} bytes, too short for the {need} bytes its header needs")]
    Truncated {
        /// Opcode of the message.
        op: VirtchnlOp,
        /// Payload length.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A list's element count disagrees with the payload length.
    #[error("{op}: {field}={count} but payload holds {holds} ({len} bytes, expected {expected})")]
    CountMismatch {
        /// Opcode of the message.
        op: VirtchnlOp,
        /// Name of the count field, as in the C struct.
        field: &'static str,
        /// Value of the count field.
        count: u32,
        /// Whole elements the payload actually has room for.
        holds: usize,
        /// Payload length.
        len: usize,
        /// Payload length `count` requires.
        expected: usize,
    },
    /// A list count that must be at least one is zero.
    #[error("{op}: {field}=0, at least one element is required")]
    ZeroCount {
        /// Opcode of the message.
        op: VirtchnlOp,
        /// Name of the count field, as in the C struct.
        field: &'static str,
    },
    /// The opcode is not one a VF may send (EVENT, UNKNOWN, or an unassigned value).
    #[error("{op} is not a request a VF may send")]
    NotARequest {
        /// The opcode.
        op: VirtchnlOp,
    },
    /// A valid VF request that this crate has no typed message for.
    #[error("{op} is a valid request but has no typed message in this crate")]
    Unsupported {
        /// The opcode.
        op: VirtchnlOp,
    },
    /// A reply carries a payload although its opcode defines none.
    #[error("{op}: reply carries {len} payload bytes but this opcode's reply has none")]
    UnexpectedPayload {
        /// Opcode of the reply.
        op: VirtchnlOp,
        /// Payload length.
        len: usize,
    },
    /// A name given for a code (`"DEL_VLAN"`) is not known.
    #[error("unknown {kind} {name:?}; use the kernel name (for example DEL_VLAN) or a number")]
    UnknownName {
        /// Which code type was being parsed.
        kind: &'static str,
        /// The text that did not match.
        name: String,
    },
}
