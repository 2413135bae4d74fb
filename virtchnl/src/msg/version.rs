//! VERSION: `struct virtchnl_version_info`.

use crate::wire::{check_len, Put, Reader};
use crate::{Result, VirtchnlOp};

/// `struct virtchnl_version_info` (8 bytes), request and reply of `VIRTCHNL_OP_VERSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionInfo {
    /// Major version; 1 for every AVF driver.
    pub major: u32,
    /// Minor version: 1 = the VF sends capabilities with GET_VF_RESOURCES.
    pub minor: u32,
}

impl VersionInfo {
    /// Size on the wire.
    pub const LEN: usize = 8;
    /// `VIRTCHNL_VERSION_MAJOR`.
    pub const MAJOR: u32 = 1;
    /// `VIRTCHNL_VERSION_MINOR`.
    pub const MINOR: u32 = 1;
    /// `VIRTCHNL_VERSION_MINOR_NO_VF_CAPS`.
    pub const MINOR_NO_VF_CAPS: u32 = 0;
    /// Version 1.1, what current drivers and PFs speak.
    pub const V1_1: VersionInfo = VersionInfo { major: 1, minor: 1 };
    /// Version 1.0: GET_VF_RESOURCES carries no capability word.
    pub const V1_0: VersionInfo = VersionInfo { major: 1, minor: 0 };

    /// Whether a VF of this version sends a capability word with GET_VF_RESOURCES
    /// (`VF_IS_V11` in virtchnl.h).
    pub fn sends_caps(self) -> bool {
        self.major > Self::MAJOR || (self.major == Self::MAJOR && self.minor >= Self::MINOR)
    }

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        check_len(op, payload, Self::LEN)?;
        let mut r = Reader::new(op, payload);
        Ok(VersionInfo {
            major: r.u32()?,
            minor: r.u32()?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.major);
        out.put_u32(self.minor);
    }
}
