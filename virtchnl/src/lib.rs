//! The AVF virtchnl mailbox protocol, as spoken between vfrig's emulated PF
//! and a VF driver.
//!
//! This crate is the API boundary shared by the device (PF) and the guest
//! driver (VF). It follows Linux's `include/linux/avf/virtchnl.h` for opcode
//! numbers, status codes and payload layouts (little-endian, laid out as the C
//! structs are) and adds one thing of its own: a 16-byte [frame](frame) header
//! so a message fits in one virtqueue buffer.
//!
//! What it is not: it knows nothing about queues, sockets, time or PF policy.
//! It turns bytes into typed messages and back, and says precisely what is
//! wrong with bytes that do not fit.
//!
//! - [`VirtchnlOp`], [`VirtchnlStatus`]: integer codes as enums; values
//!   without a name decode to `Unknown(n)`, never to an error.
//! - [`Request`]: every VF-to-PF message vfrig models. [`PfMessage`]: a
//!   [`Reply`] or a [`PfEvent`].
//! - [`Frame`], [`FrameHeader`]: the framing, with the layout documented in
//!   [`frame`].
//! - [`validate_request_len`]: the kernel's length rules for every opcode,
//!   including those without a typed message here.
//!
//! Decoding never panics and allocates at most in proportion to its input
//! (payloads are capped at [`MAX_PAYLOAD`]); every failure is an [`Error`]
//! that names the opcode and the sizes involved.
//!
//! ```
//! use virtchnl::{Request, VlanFilterList, VirtchnlOp};
//!
//! let req = Request::AddVlan(VlanFilterList { vsi_id: 1, vids: vec![100] });
//! let frame = req.to_frame(7);
//! assert_eq!(frame.len(), 16 + 8); // header + (6 + 2 * 1), as virtchnl.h sizes it
//! let (header, decoded) = Request::from_frame(&frame)?;
//! assert_eq!((header.op, header.cookie), (VirtchnlOp::AddVlan, 7));
//! assert_eq!(decoded, req);
//!
//! let mut bad = frame.clone();
//! bad[16 + 2] = 3; // num_elements = 3
//! let err = Request::from_frame(&bad).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "ADD_VLAN: num_elements=3 but payload holds 1 (8 bytes, expected 12)"
//! );
//! # Ok::<(), virtchnl::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[macro_use]
mod macros;

mod error;
pub mod frame;
mod msg;
mod op;
mod status;
mod validate;
mod wire;

pub use error::{Error, Result};
pub use frame::{encode_frame, Frame, FrameHeader, HEADER_LEN, MAX_FRAME_LEN, MAX_PAYLOAD};
pub use msg::event::{EventKind, EventSeverity, LinkSpeed, PfEvent};
pub use msg::mac::{EtherAddr, EtherAddrList, EtherAddrType, MacAddr, ParseMacError};
pub use msg::promisc::{PromiscFlags, PromiscInfo};
pub use msg::queues::{EthStats, QueueSelect};
pub use msg::resources::{VfCapFlags, VfResource, VsiResource, VsiType};
pub use msg::version::VersionInfo;
pub use msg::vlan::VlanFilterList;
pub use msg::vlan_v2::{
    SupportedCaps, VirtchnlVlan, VlanCaps, VlanFilterListV2, VlanFilterV2, VlanFilteringCaps,
    VlanOffloadCaps, VlanSupport,
};
pub use msg::{PfMessage, Reply, ReplyBody, Request};
pub use op::VirtchnlOp;
pub use status::VirtchnlStatus;
pub use validate::validate_request_len;
