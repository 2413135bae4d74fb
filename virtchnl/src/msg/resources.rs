//! GET_VF_RESOURCES: the capability word a VF asks with, and
//! `struct virtchnl_vf_resource` the PF answers with.

use crate::msg::mac::{count_u16, MacAddr};
use crate::wire::{Put, Reader};
use crate::{Error, Result, VirtchnlOp};

bit_flags! {
    /// `VIRTCHNL_VF_OFFLOAD_*` / `VIRTCHNL_VF_CAP_*` capability bits.
    pub struct VfCapFlags(u32) {
        /// `VIRTCHNL_VF_OFFLOAD_L2`.
        const L2 = 1 << 0;
        /// `VIRTCHNL_VF_OFFLOAD_RDMA`.
        const RDMA = 1 << 1;
        /// `VIRTCHNL_VF_OFFLOAD_RSS_AQ`.
        const RSS_AQ = 1 << 3;
        /// `VIRTCHNL_VF_OFFLOAD_RSS_REG`.
        const RSS_REG = 1 << 4;
        /// `VIRTCHNL_VF_OFFLOAD_WB_ON_ITR`.
        const WB_ON_ITR = 1 << 5;
        /// `VIRTCHNL_VF_OFFLOAD_REQ_QUEUES`.
        const REQ_QUEUES = 1 << 6;
        /// `VIRTCHNL_VF_CAP_ADV_LINK_SPEED`: link events carry Mbps.
        const ADV_LINK_SPEED = 1 << 7;
        /// `VIRTCHNL_VF_OFFLOAD_CRC`.
        const CRC = 1 << 10;
        /// `VIRTCHNL_VF_OFFLOAD_TC_U32`.
        const TC_U32 = 1 << 11;
        /// `VIRTCHNL_VF_OFFLOAD_VLAN_V2`.
        const VLAN_V2 = 1 << 15;
        /// `VIRTCHNL_VF_OFFLOAD_VLAN`.
        const VLAN = 1 << 16;
        /// `VIRTCHNL_VF_OFFLOAD_RX_POLLING`.
        const RX_POLLING = 1 << 17;
        /// `VIRTCHNL_VF_OFFLOAD_RSS_PCTYPE_V2`.
        const RSS_PCTYPE_V2 = 1 << 18;
        /// `VIRTCHNL_VF_OFFLOAD_RSS_PF`.
        const RSS_PF = 1 << 19;
        /// `VIRTCHNL_VF_OFFLOAD_ENCAP`.
        const ENCAP = 1 << 20;
        /// `VIRTCHNL_VF_OFFLOAD_ENCAP_CSUM`.
        const ENCAP_CSUM = 1 << 21;
        /// `VIRTCHNL_VF_OFFLOAD_RX_ENCAP_CSUM`.
        const RX_ENCAP_CSUM = 1 << 22;
        /// `VIRTCHNL_VF_OFFLOAD_ADQ`.
        const ADQ = 1 << 23;
        /// `VIRTCHNL_VF_OFFLOAD_USO`.
        const USO = 1 << 25;
        /// `VIRTCHNL_VF_OFFLOAD_RX_FLEX_DESC`.
        const RX_FLEX_DESC = 1 << 26;
        /// `VIRTCHNL_VF_OFFLOAD_ADV_RSS_PF`.
        const ADV_RSS_PF = 1 << 27;
        /// `VIRTCHNL_VF_OFFLOAD_FDIR_PF`.
        const FDIR_PF = 1 << 28;
        /// `VIRTCHNL_VF_OFFLOAD_QOS`.
        const QOS = 1 << 29;
        /// `VIRTCHNL_VF_CAP_PTP`.
        const PTP = 1 << 31;
    }
}

impl VfCapFlags {
    /// `VF_BASE_MODE_OFFLOADS`: what a 1.0 VF is assumed to ask for.
    pub const BASE_MODE: VfCapFlags = VfCapFlags(Self::L2.0 | Self::VLAN.0 | Self::RSS_PF.0);
}

enum_with_unknown! {
    /// `enum virtchnl_vsi_type`.
    pub enum VsiType(i32) {
        /// `VIRTCHNL_VSI_TYPE_INVALID`.
        Invalid = 0 => "INVALID",
        /// `VIRTCHNL_VSI_SRIOV`.
        Sriov = 6 => "SRIOV",
    }
}

/// `struct virtchnl_vsi_resource` (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VsiResource {
    /// The VSI id the VF must use in later requests.
    pub vsi_id: u16,
    /// Queue pairs of this VSI.
    pub num_queue_pairs: u16,
    /// VSI type; [`VsiType::Sriov`] for a VF.
    pub vsi_type: VsiType,
    /// Queue set handle.
    pub qset_handle: u16,
    /// The MAC the PF assigns (zero: the VF picks one).
    pub default_mac_addr: MacAddr,
}

/// `struct virtchnl_vf_resource`, the reply to GET_VF_RESOURCES.
///
/// On the wire: a 20-byte header, then `num_vsis` [`VsiResource`]s; a reply
/// is at least 36 bytes (`VIRTCHNL_VF_RESOURCE_LEGACY_SIZEOF`), so with no
/// VSIs one zero-filled slot follows. `num_vsis` is `vsi_res.len()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VfResource {
    /// Queue pairs granted to the VF.
    pub num_queue_pairs: u16,
    /// MSI-X vectors granted.
    pub max_vectors: u16,
    /// Largest frame the VF may send (iavf subtracts L2 overhead).
    pub max_mtu: u16,
    /// Capabilities granted: the PF's answer to the VF's request.
    pub vf_cap_flags: VfCapFlags,
    /// RSS key size in bytes.
    pub rss_key_size: u32,
    /// RSS lookup table size.
    pub rss_lut_size: u32,
    /// The VSIs; ice sends exactly one.
    pub vsi_res: Vec<VsiResource>,
}

impl VfResource {
    const HEADER: usize = 20;
    const VSI: usize = 16;
    /// Smallest reply (`VIRTCHNL_VF_RESOURCE_LEGACY_SIZEOF`).
    pub const LEGACY_LEN: usize = 36;

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        let len = payload.len();
        if len < Self::LEGACY_LEN {
            return Err(Error::Truncated {
                op,
                len,
                need: Self::LEGACY_LEN,
            });
        }
        let mut r = Reader::new(op, payload);
        let num_vsis = r.u16()?;
        let slots = usize::from(num_vsis).max(1);
        let expected = Self::HEADER + slots * Self::VSI;
        if len != expected {
            return Err(Error::CountMismatch {
                op,
                field: "num_vsis",
                count: u32::from(num_vsis),
                holds: (len - Self::HEADER) / Self::VSI,
                len,
                expected,
            });
        }
        let num_queue_pairs = r.u16()?;
        let max_vectors = r.u16()?;
        let max_mtu = r.u16()?;
        let vf_cap_flags = VfCapFlags(r.u32()?);
        let rss_key_size = r.u32()?;
        let rss_lut_size = r.u32()?;
        let mut vsi_res = Vec::with_capacity(usize::from(num_vsis));
        for _ in 0..num_vsis {
            let vsi_id = r.u16()?;
            let num_queue_pairs = r.u16()?;
            let vsi_type = VsiType::from(r.i32()?);
            let qset_handle = r.u16()?;
            let default_mac_addr = MacAddr(r.bytes()?);
            vsi_res.push(VsiResource {
                vsi_id,
                num_queue_pairs,
                vsi_type,
                qset_handle,
                default_mac_addr,
            });
        }
        Ok(VfResource {
            num_queue_pairs,
            max_vectors,
            max_mtu,
            vf_cap_flags,
            rss_key_size,
            rss_lut_size,
            vsi_res,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(count_u16(self.vsi_res.len()));
        out.put_u16(self.num_queue_pairs);
        out.put_u16(self.max_vectors);
        out.put_u16(self.max_mtu);
        out.put_u32(self.vf_cap_flags.0);
        out.put_u32(self.rss_key_size);
        out.put_u32(self.rss_lut_size);
        for v in &self.vsi_res {
            out.put_u16(v.vsi_id);
            out.put_u16(v.num_queue_pairs);
            out.put_i32(v.vsi_type.to_raw());
            out.put_u16(v.qset_handle);
            out.extend_from_slice(&v.default_mac_addr.0);
        }
        if self.vsi_res.is_empty() {
            out.put_zeros(Self::VSI);
        }
    }
}
