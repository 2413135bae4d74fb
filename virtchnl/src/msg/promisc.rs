//! CONFIG_PROMISCUOUS_MODE: `struct virtchnl_promisc_info`.

use crate::wire::{check_len, Put, Reader};
use crate::{Result, VirtchnlOp};

bit_flags! {
    /// `FLAG_VF_*_PROMISC`. Broadcast is always accepted and has no flag.
    pub struct PromiscFlags(u16) {
        /// `FLAG_VF_UNICAST_PROMISC`.
        const UNICAST = 0x1;
        /// `FLAG_VF_MULTICAST_PROMISC`.
        const MULTICAST = 0x2;
    }
}

/// `struct virtchnl_promisc_info` (4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PromiscInfo {
    /// VSI to configure.
    pub vsi_id: u16,
    /// Requested modes; iavf sends 0x2 for allmulti and 0x3 for promisc.
    pub flags: PromiscFlags,
}

impl PromiscInfo {
    /// Size on the wire.
    pub const LEN: usize = 4;

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        check_len(op, payload, Self::LEN)?;
        let mut r = Reader::new(op, payload);
        Ok(PromiscInfo {
            vsi_id: r.u16()?,
            flags: PromiscFlags(r.u16()?),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.vsi_id);
        out.put_u16(self.flags.0);
    }
}
