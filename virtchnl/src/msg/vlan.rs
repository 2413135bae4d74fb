//! ADD_VLAN / DEL_VLAN (V1): `struct virtchnl_vlan_filter_list`.

use crate::msg::mac::count_u16;
use crate::validate::VLAN_FILTER_LIST;
use crate::wire::{Put, Reader};
use crate::{frame::MAX_PAYLOAD, Result, VirtchnlOp};

/// `struct virtchnl_vlan_filter_list`, payload of ADD_VLAN and DEL_VLAN.
///
/// On the wire: `vsi_id u16, num_elements u16, vlan_id[] u16`, followed by one
/// unused 2-byte slot (length `6 + 2 * n`). VIDs are not range-checked here:
/// the PF rejects VIDs of 4096 and above.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VlanFilterList {
    /// VSI the filters are for.
    pub vsi_id: u16,
    /// VLAN ids (TPID 0x8100); never empty on the wire.
    pub vids: Vec<u16>,
}

impl VlanFilterList {
    /// Most VIDs one message can carry within [`MAX_PAYLOAD`].
    pub const MAX_PER_MESSAGE: usize = (MAX_PAYLOAD - 6) / 2;

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        let count = VLAN_FILTER_LIST.check(op, payload)?;
        let mut r = Reader::new(op, payload);
        let vsi_id = r.u16()?;
        r.skip(2)?;
        let vids = (0..count).map(|_| r.u16()).collect::<Result<Vec<_>>>()?;
        Ok(VlanFilterList { vsi_id, vids })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.vsi_id);
        out.put_u16(count_u16(self.vids.len()));
        for v in &self.vids {
            out.put_u16(*v);
        }
        out.put_zeros(2);
    }
}
