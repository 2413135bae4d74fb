//! Message length rules for every VF request, as `virtchnl_vc_validate_vf_msg`
//! in virtchnl.h applies them before a PF looks at the contents.

use crate::wire::{check_len, CountWidth, ListLayout, Reader};
use crate::{Error, Result, VersionInfo, VirtchnlOp};

use VirtchnlOp as Op;

/// `virtchnl_ether_addr_list`: 12 + 8n (full flavour).
pub(crate) const ETHER_ADDR_LIST: ListLayout = ListLayout {
    field: "num_elements",
    count_at: 2,
    width: CountWidth::U16,
    legacy: 12,
    base: 12,
    elem: 8,
    zero_ok: false,
};

/// `virtchnl_vlan_filter_list`: 6 + 2n (full flavour).
pub(crate) const VLAN_FILTER_LIST: ListLayout = ListLayout {
    field: "num_elements",
    count_at: 2,
    width: CountWidth::U16,
    legacy: 6,
    base: 6,
    elem: 2,
    zero_ok: false,
};

/// `virtchnl_vlan_filter_list_v2`: 8 + 32n (by-element flavour).
pub(crate) const VLAN_FILTER_LIST_V2: ListLayout = ListLayout {
    field: "num_elements",
    count_at: 2,
    width: CountWidth::U16,
    legacy: 40,
    base: 8,
    elem: 32,
    zero_ok: false,
};

const VSI_QUEUE_CONFIG: ListLayout = ListLayout {
    field: "num_queue_pairs",
    count_at: 2,
    width: CountWidth::U16,
    legacy: 72,
    base: 72,
    elem: 64,
    zero_ok: false,
};

const IRQ_MAP_INFO: ListLayout = ListLayout {
    field: "num_vectors",
    count_at: 0,
    width: CountWidth::U16,
    legacy: 14,
    base: 14,
    elem: 12,
    zero_ok: false,
};

const TC_INFO: ListLayout = ListLayout {
    field: "num_tc",
    count_at: 0,
    width: CountWidth::U32,
    legacy: 24,
    base: 8,
    elem: 16,
    zero_ok: false,
};

const QUEUES_BW_CFG: ListLayout = ListLayout {
    field: "num_queues",
    count_at: 2,
    width: CountWidth::U16,
    legacy: 16,
    base: 4,
    elem: 12,
    zero_ok: false,
};

const RDMA_QVLIST_INFO: ListLayout = ListLayout {
    field: "num_vectors",
    count_at: 0,
    width: CountWidth::U32,
    legacy: 16,
    base: 4,
    elem: 12,
    zero_ok: true,
};

const RSS_KEY: ListLayout = ListLayout {
    field: "key_len",
    count_at: 2,
    width: CountWidth::U16,
    legacy: 6,
    base: 5,
    elem: 1,
    zero_ok: true,
};

const RSS_LUT: ListLayout = ListLayout {
    field: "lut_entries",
    count_at: 2,
    width: CountWidth::U16,
    legacy: 6,
    base: 5,
    elem: 1,
    zero_ok: true,
};

/// Checks a VF request's payload length the way the PF does before handling it.
///
/// `vf_version` is what the VF announced in VERSION (`None` before that): a
/// 1.1 VF sends a capability word with GET_VF_RESOURCES, a 1.0 VF sends
/// nothing. EVENT, UNKNOWN and unassigned opcodes are [`Error::NotARequest`].
/// A PF answers any error from here with `VIRTCHNL_STATUS_ERR_PARAM`.
pub fn validate_request_len(
    op: VirtchnlOp,
    payload: &[u8],
    vf_version: Option<VersionInfo>,
) -> Result<()> {
    let fixed = |expected| check_len(op, payload, expected);
    match op {
        Op::Version => fixed(8),
        Op::ResetVf
        | Op::GetRssHashcfgCaps
        | Op::EnableVlanStripping
        | Op::DisableVlanStripping
        | Op::DisableChannels
        | Op::GetSupportedRxdids
        | Op::GetOffloadVlanV2Caps
        | Op::GetQosCaps
        | Op::ReleaseRdmaIrqMap => fixed(0),
        Op::GetVfResources => {
            let with_caps = vf_version.is_some_and(|v| v.sends_caps());
            fixed(if with_caps { 4 } else { 0 })
        }
        Op::ConfigTxQueue => fixed(24),
        Op::ConfigRxQueue => fixed(40),
        Op::EnableQueues | Op::DisableQueues | Op::GetStats => fixed(12),
        Op::ConfigPromiscuousMode => fixed(4),
        Op::ConfigRssHfunc | Op::SetRssHashcfg => fixed(8),
        Op::RequestQueues => fixed(2),
        Op::EnableVlanStrippingV2
        | Op::DisableVlanStrippingV2
        | Op::EnableVlanInsertionV2
        | Op::DisableVlanInsertionV2 => fixed(16),
        Op::PtpGetCaps => fixed(48),
        Op::PtpGetTime => fixed(16),
        Op::AddFdirFilter => fixed(2616),
        Op::DelFdirFilter => fixed(12),
        Op::AddRssCfg | Op::DelRssCfg => fixed(2444),
        Op::AddCloudFilter | Op::DelCloudFilter => fixed(272),
        Op::ConfigQuanta => {
            fixed(12)?;
            let mut r = Reader::new(op, payload);
            let quanta_size = r.u16()?;
            r.skip(8)?;
            let num_queues = r.u16()?;
            if quanta_size == 0 {
                return Err(Error::ZeroCount {
                    op,
                    field: "quanta_size",
                });
            }
            if num_queues == 0 {
                return Err(Error::ZeroCount {
                    op,
                    field: "num_queues",
                });
            }
            Ok(())
        }
        Op::ConfigVsiQueues => VSI_QUEUE_CONFIG.check(op, payload).map(drop),
        Op::ConfigIrqMap => IRQ_MAP_INFO.check(op, payload).map(drop),
        Op::AddEthAddr | Op::DelEthAddr => ETHER_ADDR_LIST.check(op, payload).map(drop),
        Op::AddVlan | Op::DelVlan => VLAN_FILTER_LIST.check(op, payload).map(drop),
        Op::AddVlanV2 | Op::DelVlanV2 => VLAN_FILTER_LIST_V2.check(op, payload).map(drop),
        Op::EnableChannels => TC_INFO.check(op, payload).map(drop),
        Op::ConfigQueueBw => QUEUES_BW_CFG.check(op, payload).map(drop),
        Op::ConfigRdmaIrqMap => RDMA_QVLIST_INFO.check(op, payload).map(drop),
        Op::ConfigRssKey => RSS_KEY.check(op, payload).map(drop),
        Op::ConfigRssLut => RSS_LUT.check(op, payload).map(drop),
        Op::Rdma => {
            if payload.is_empty() {
                Err(Error::WrongLength {
                    op,
                    len: 0,
                    expected: 1,
                })
            } else {
                Ok(())
            }
        }
        Op::Unspecified | Op::Event | Op::Reserved16 | Op::Unknown(_) => {
            Err(Error::NotARequest { op })
        }
    }
}
