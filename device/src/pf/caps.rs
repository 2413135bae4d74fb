//! What a VF is granted: capabilities (GET_VF_RESOURCES), the opcodes it may
//! then use (ice's allowlist), and its VLAN V2 capabilities.

use virtchnl::{
    LinkSpeed, SupportedCaps, VfCapFlags, VirtchnlOp, VlanCaps, VlanFilteringCaps, VlanOffloadCaps,
    VlanSupport,
};

use super::policy::{VfPolicy, VlanMode, VLAN_N_VID};

/// Capabilities this PF model implements; anything else a VF asks for is not granted.
///
/// ice grants many more (RSS, FDIR, PTP, ...); vfrig's PF models filters,
/// queues and link only, so it grants what it can answer.
pub const MODELLED_CAPS: VfCapFlags = VfCapFlags(
    VfCapFlags::L2.0 | VfCapFlags::VLAN.0 | VfCapFlags::VLAN_V2.0 | VfCapFlags::ADV_LINK_SPEED.0,
);

/// The capabilities granted for a request (ice_vc_get_vf_res_msg, reference 3.3).
///
/// `asked` is `None` for a 1.0 VF, which is treated as asking for L2 | VLAN.
pub fn grant(asked: Option<VfCapFlags>, policy: &VfPolicy, mode: VlanMode) -> VfCapFlags {
    let asked = asked.unwrap_or(VfCapFlags::L2 | VfCapFlags::VLAN);
    let mut granted = VfCapFlags::L2;
    if asked.contains(VfCapFlags::ADV_LINK_SPEED) {
        granted |= VfCapFlags::ADV_LINK_SPEED;
    }
    if asked.contains(VfCapFlags::VLAN_V2) && policy.vlan_v2 {
        granted |= VfCapFlags::VLAN_V2;
    } else if asked.contains(VfCapFlags::VLAN) {
        let port_vlan = policy.port_vlan.is_some();
        let v1_ok = match mode {
            VlanMode::Single => !port_vlan,
            VlanMode::Double => port_vlan,
        };
        if v1_ok {
            granted |= VfCapFlags::VLAN;
        }
    }
    granted
}

/// Whether `op` is allowed for a VF (ice_vc_is_opcode_allowed, rule P3).
///
/// `caps` is `None` until GET_VF_RESOURCES succeeded: then only the default
/// set is allowed.
pub fn is_allowed(op: VirtchnlOp, caps: Option<VfCapFlags>) -> bool {
    use VirtchnlOp as Op;
    if matches!(op, Op::Version | Op::GetVfResources | Op::ResetVf) {
        return true;
    }
    let Some(caps) = caps else {
        return false;
    };
    match op {
        Op::ConfigTxQueue
        | Op::ConfigRxQueue
        | Op::ConfigVsiQueues
        | Op::ConfigIrqMap
        | Op::EnableQueues
        | Op::DisableQueues
        | Op::GetStats
        | Op::Event => true,
        Op::AddEthAddr | Op::DelEthAddr | Op::ConfigPromiscuousMode => {
            caps.contains(VfCapFlags::L2)
        }
        Op::RequestQueues => caps.contains(VfCapFlags::REQ_QUEUES),
        Op::AddVlan | Op::DelVlan | Op::EnableVlanStripping | Op::DisableVlanStripping => {
            caps.contains(VfCapFlags::VLAN)
        }
        Op::GetOffloadVlanV2Caps
        | Op::AddVlanV2
        | Op::DelVlanV2
        | Op::EnableVlanStrippingV2
        | Op::DisableVlanStrippingV2
        | Op::EnableVlanInsertionV2
        | Op::DisableVlanInsertionV2 => caps.contains(VfCapFlags::VLAN_V2),
        Op::ConfigRssKey
        | Op::ConfigRssLut
        | Op::GetRssHashcfgCaps
        | Op::SetRssHashcfg
        | Op::ConfigRssHfunc => caps.contains(VfCapFlags::RSS_PF),
        Op::GetSupportedRxdids => caps.contains(VfCapFlags::RX_FLEX_DESC),
        Op::AddRssCfg | Op::DelRssCfg => caps.contains(VfCapFlags::ADV_RSS_PF),
        Op::AddFdirFilter | Op::DelFdirFilter => caps.contains(VfCapFlags::FDIR_PF),
        Op::GetQosCaps | Op::ConfigQueueBw | Op::ConfigQuanta => caps.contains(VfCapFlags::QOS),
        Op::PtpGetCaps | Op::PtpGetTime => caps.contains(VfCapFlags::PTP),
        _ => false,
    }
}

/// The GET_OFFLOAD_VLAN_V2_CAPS answer (ice_vc_set_svm_caps / ice_vc_set_dvm_caps).
///
/// Filtering capabilities are ice's. Offload (stripping and insertion)
/// capabilities are reported as unsupported: the emulated switch neither
/// strips nor inserts tags, so a VF must not expect it to.
pub fn vlan_v2_caps(policy: &VfPolicy, mode: VlanMode) -> VlanCaps {
    let max_filters = if policy.trust {
        VLAN_N_VID
    } else {
        policy.max_vlans
    };
    let filtering = match (mode, policy.port_vlan.is_some()) {
        (_, true) => VlanFilteringCaps::default(),
        (VlanMode::Single, false) => VlanFilteringCaps {
            filtering_support: SupportedCaps {
                outer: VlanSupport::empty(),
                inner: VlanSupport::ETHERTYPE_8100,
            },
            ethertype_init: VlanSupport::ETHERTYPE_8100,
            max_filters,
        },
        (VlanMode::Double, false) => {
            let types = VlanSupport::ETHERTYPE_8100
                | VlanSupport::ETHERTYPE_88A8
                | VlanSupport::ETHERTYPE_9100;
            VlanFilteringCaps {
                filtering_support: SupportedCaps {
                    outer: types | VlanSupport::ETHERTYPE_AND,
                    inner: VlanSupport::empty(),
                },
                ethertype_init: types,
                max_filters,
            }
        }
    };
    VlanCaps {
        filtering,
        offloads: VlanOffloadCaps::default(),
    }
}

/// The legacy `enum virtchnl_link_speed` value for a speed in Mbps.
pub fn legacy_link_speed(mbps: u32) -> LinkSpeed {
    match mbps {
        100 => LinkSpeed::Speed100Mb,
        1_000 => LinkSpeed::Speed1Gb,
        2_500 => LinkSpeed::Speed2_5Gb,
        5_000 => LinkSpeed::Speed5Gb,
        10_000 => LinkSpeed::Speed10Gb,
        20_000 => LinkSpeed::Speed20Gb,
        25_000 => LinkSpeed::Speed25Gb,
        40_000 => LinkSpeed::Speed40Gb,
        _ => LinkSpeed::Unknown(0),
    }
}
