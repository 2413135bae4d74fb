//! VLAN V2: GET_OFFLOAD_VLAN_V2_CAPS (`struct virtchnl_vlan_caps`) and
//! ADD_VLAN_V2 / DEL_VLAN_V2 (`struct virtchnl_vlan_filter_list_v2`).

use crate::msg::mac::count_u16;
use crate::validate::VLAN_FILTER_LIST_V2;
use crate::wire::{check_len, Put, Reader};
use crate::{frame::MAX_PAYLOAD, Result, VirtchnlOp};

bit_flags! {
    /// `enum virtchnl_vlan_support`: what one side (outer or inner) of a VLAN feature supports.
    pub struct VlanSupport(u32) {
        /// `VIRTCHNL_VLAN_ETHERTYPE_8100`.
        const ETHERTYPE_8100 = 0x0000_0001;
        /// `VIRTCHNL_VLAN_ETHERTYPE_88A8`.
        const ETHERTYPE_88A8 = 0x0000_0002;
        /// `VIRTCHNL_VLAN_ETHERTYPE_9100`.
        const ETHERTYPE_9100 = 0x0000_0004;
        /// `VIRTCHNL_VLAN_TAG_LOCATION_L2TAG1`.
        const TAG_LOCATION_L2TAG1 = 0x0000_0100;
        /// `VIRTCHNL_VLAN_TAG_LOCATION_L2TAG2`.
        const TAG_LOCATION_L2TAG2 = 0x0000_0200;
        /// `VIRTCHNL_VLAN_TAG_LOCATION_L2TAG2_2`.
        const TAG_LOCATION_L2TAG2_2 = 0x0000_0400;
        /// `VIRTCHNL_VLAN_PRIO`.
        const PRIO = 0x0100_0000;
        /// `VIRTCHNL_VLAN_FILTER_MASK`.
        const FILTER_MASK = 0x1000_0000;
        /// `VIRTCHNL_VLAN_ETHERTYPE_AND`.
        const ETHERTYPE_AND = 0x2000_0000;
        /// `VIRTCHNL_VLAN_ETHERTYPE_XOR`.
        const ETHERTYPE_XOR = 0x4000_0000;
        /// `VIRTCHNL_VLAN_TOGGLE`.
        const TOGGLE = 0x8000_0000;
    }
}

impl VlanSupport {
    /// The ethertype bit for a TPID (0x8100, 0x88A8, 0x9100), if it has one.
    pub fn ethertype_for_tpid(tpid: u16) -> Option<VlanSupport> {
        match tpid {
            0x8100 => Some(Self::ETHERTYPE_8100),
            0x88a8 => Some(Self::ETHERTYPE_88A8),
            0x9100 => Some(Self::ETHERTYPE_9100),
            _ => None,
        }
    }
}

/// `struct virtchnl_vlan_supported_caps` (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SupportedCaps {
    /// Outer tag support.
    pub outer: VlanSupport,
    /// Inner tag support.
    pub inner: VlanSupport,
}

/// `struct virtchnl_vlan_filtering_caps` (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanFilteringCaps {
    /// Which tags can be filtered.
    pub filtering_support: SupportedCaps,
    /// Ethertypes filtering is set up for.
    pub ethertype_init: VlanSupport,
    /// How many VLAN filters the VF may add.
    pub max_filters: u16,
}

/// `struct virtchnl_vlan_offload_caps` (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanOffloadCaps {
    /// Which tags can be stripped.
    pub stripping_support: SupportedCaps,
    /// Which tags can be inserted.
    pub insertion_support: SupportedCaps,
    /// Ethertypes the offloads start with.
    pub ethertype_init: VlanSupport,
    /// 0: stripping must match insertion; 1: not required.
    pub ethertype_match: u8,
}

/// `struct virtchnl_vlan_caps` (40 bytes), the reply to GET_OFFLOAD_VLAN_V2_CAPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanCaps {
    /// Filtering capabilities.
    pub filtering: VlanFilteringCaps,
    /// Stripping and insertion capabilities.
    pub offloads: VlanOffloadCaps,
}

impl VlanCaps {
    /// Size on the wire (`VIRTCHNL_CHECK_STRUCT_LEN(40, virtchnl_vlan_caps)`).
    pub const LEN: usize = 40;

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        check_len(op, payload, Self::LEN)?;
        let mut r = Reader::new(op, payload);
        let sup = |r: &mut Reader<'_>| -> Result<SupportedCaps> {
            Ok(SupportedCaps {
                outer: VlanSupport(r.u32()?),
                inner: VlanSupport(r.u32()?),
            })
        };
        let filtering_support = sup(&mut r)?;
        let f_ethertype_init = VlanSupport(r.u32()?);
        let max_filters = r.u16()?;
        r.skip(2)?;
        let stripping_support = sup(&mut r)?;
        let insertion_support = sup(&mut r)?;
        let o_ethertype_init = VlanSupport(r.u32()?);
        let ethertype_match = r.u8()?;
        r.skip(3)?;
        Ok(VlanCaps {
            filtering: VlanFilteringCaps {
                filtering_support,
                ethertype_init: f_ethertype_init,
                max_filters,
            },
            offloads: VlanOffloadCaps {
                stripping_support,
                insertion_support,
                ethertype_init: o_ethertype_init,
                ethertype_match,
            },
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let sup = |out: &mut Vec<u8>, s: SupportedCaps| {
            out.put_u32(s.outer.0);
            out.put_u32(s.inner.0);
        };
        sup(out, self.filtering.filtering_support);
        out.put_u32(self.filtering.ethertype_init.0);
        out.put_u16(self.filtering.max_filters);
        out.put_zeros(2);
        sup(out, self.offloads.stripping_support);
        sup(out, self.offloads.insertion_support);
        out.put_u32(self.offloads.ethertype_init.0);
        out.put_u8(self.offloads.ethertype_match);
        out.put_zeros(3);
    }
}

/// `struct virtchnl_vlan` (8 bytes): one tag of a V2 filter.
///
/// A tag with `tci == 0` or `tpid == 0` means "not present".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtchnlVlan {
    /// Tag control: PCP in bits 15:13, VID in bits 11:0.
    pub tci: u16,
    /// Mask for `tci`, only with `VIRTCHNL_VLAN_FILTER_MASK`.
    pub tci_mask: u16,
    /// The real TPID: 0x8100, 0x88A8 or 0x9100.
    pub tpid: u16,
}

impl VirtchnlVlan {
    /// A tag for `vid` with TPID `tpid`, priority 0, no mask.
    pub fn new(tpid: u16, vid: u16) -> Self {
        VirtchnlVlan {
            tci: vid,
            tci_mask: 0,
            tpid,
        }
    }

    /// A plain 802.1Q tag for `vid`.
    pub fn dot1q(vid: u16) -> Self {
        VirtchnlVlan::new(0x8100, vid)
    }

    /// The VLAN id (`tci` bits 11:0).
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }

    /// The priority bits (`tci` bits 15:13).
    pub fn pcp(self) -> u16 {
        self.tci >> 13
    }

    /// Whether the PF treats this tag as present (`ice_vc_is_valid_vlan`).
    pub fn is_present(self) -> bool {
        self.tci != 0 && self.tpid != 0
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let v = VirtchnlVlan {
            tci: r.u16()?,
            tci_mask: r.u16()?,
            tpid: r.u16()?,
        };
        r.skip(2)?;
        Ok(v)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.tci);
        out.put_u16(self.tci_mask);
        out.put_u16(self.tpid);
        out.put_zeros(2);
    }
}

/// `struct virtchnl_vlan_filter` (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VlanFilterV2 {
    /// Inner tag (the only one in single VLAN mode).
    pub inner: VirtchnlVlan,
    /// Outer tag (used in double VLAN mode).
    pub outer: VirtchnlVlan,
}

impl VlanFilterV2 {
    /// A filter on one tag: in the outer position (`outer`: double VLAN
    /// mode) or the inner one (single VLAN mode), the other not present.
    pub fn single(tag: VirtchnlVlan, outer: bool) -> Self {
        if outer {
            VlanFilterV2 {
                inner: VirtchnlVlan::default(),
                outer: tag,
            }
        } else {
            VlanFilterV2 {
                inner: tag,
                outer: VirtchnlVlan::default(),
            }
        }
    }
}

/// `struct virtchnl_vlan_filter_list_v2`, payload of ADD_VLAN_V2 and DEL_VLAN_V2.
///
/// On the wire: `vport_id u16, num_elements u16, pad[4], filters[]` (length `8 + 32 * n`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VlanFilterListV2 {
    /// VSI the filters are for.
    pub vport_id: u16,
    /// The filters; never empty on the wire.
    pub filters: Vec<VlanFilterV2>,
}

impl VlanFilterListV2 {
    /// Most filters one message can carry within [`MAX_PAYLOAD`].
    pub const MAX_PER_MESSAGE: usize = (MAX_PAYLOAD - 8) / 32;

    pub(crate) fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Self> {
        let count = VLAN_FILTER_LIST_V2.check(op, payload)?;
        let mut r = Reader::new(op, payload);
        let vport_id = r.u16()?;
        r.skip(6)?;
        let mut filters = Vec::with_capacity(count);
        for _ in 0..count {
            let inner = VirtchnlVlan::decode(&mut r)?;
            let outer = VirtchnlVlan::decode(&mut r)?;
            r.skip(16)?;
            filters.push(VlanFilterV2 { inner, outer });
        }
        Ok(VlanFilterListV2 { vport_id, filters })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.vport_id);
        out.put_u16(count_u16(self.filters.len()));
        out.put_zeros(4);
        for f in &self.filters {
            f.inner.encode(out);
            f.outer.encode(out);
            out.put_zeros(16);
        }
    }
}
