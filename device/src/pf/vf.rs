//! One VF as the PF sees it, and the handlers for its requests.
//!
//! Rule numbers (P5, P13, ...) refer to "PF behaviours (ice)" in the
//! virtchnl reference notes; each names the ice function it models.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use virtchnl::{
    EthStats, EtherAddr, EtherAddrList, EtherAddrType, MacAddr, PromiscFlags, QueueSelect,
    ReplyBody, Request, VersionInfo, VfCapFlags, VfResource, VirtchnlStatus, VlanCaps,
    VlanFilterList, VlanFilterListV2, VlanFilteringCaps, VlanSupport, VsiResource, VsiType,
};

use super::caps;
use super::policy::{LinkState, VfPolicy, VfRole, VlanMode};
use super::switch::TrafficCounters;

use VirtchnlStatus::{ErrAdminQueueError, ErrParam, Success};

/// `ICE_VF_VSI_ID`: the fixed VSI id every VF must use.
pub const VSI_ID: u16 = 1;

/// Queue bitmaps may name at most `ICE_MAX_RSS_QS_PER_VF` (16) queues.
const MAX_QUEUE_BITS: u32 = 16;

/// The queues a [`VfRole::Kernel`] VF has enabled after every reset: its
/// one queue pair, the only one its virtio-net device has.
const KERNEL_VF_QUEUES: u32 = 0b1;

/// How long a LEGACY-typed MAC add is remembered for a following DEL (P17).
const LEGACY_MAC_WINDOW: Duration = Duration::from_millis(3000);

/// `ICE_AQ_SET_MAC_FRAME_SIZE_MAX`, reported as `max_mtu`.
const MAX_FRAME_SIZE: u16 = 9728;

/// LLDP group addresses an untrusted VF may not add (P16).
const LLDP_MACS: [MacAddr; 3] = [
    MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x00]),
    MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x03]),
    MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]),
];

/// Where a VF is in its life cycle (ice's INIT, ACTIVE and DIS state bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VfPhase {
    /// A reset is in progress (DIS set, INIT clear): every request gets ERR_PARAM.
    Resetting,
    /// Reset done (INIT set), waiting for GET_VF_RESOURCES.
    Init,
    /// Resources granted (ACTIVE set): configuration requests are accepted.
    Active,
}

/// A VLAN filter: TPID and VLAN id. V1 requests use TPID 0x8100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vlan {
    /// Tag protocol id.
    pub tpid: u16,
    /// VLAN id, 1..=4095.
    pub vid: u16,
}

impl Vlan {
    /// An 802.1Q (0x8100) filter.
    pub fn dot1q(vid: u16) -> Self {
        Vlan { tpid: 0x8100, vid }
    }
}

/// Mailbox counters for one VF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MailboxCounters {
    /// Frames received from the VF.
    pub requests: u64,
    /// Replies with SUCCESS.
    pub replies_ok: u64,
    /// Replies with an error status.
    pub replies_err: u64,
    /// Frames that could not be parsed or failed the length check.
    pub malformed: u64,
    /// Events sent to the VF.
    pub events: u64,
}

/// What the PF does after handling a request.
pub(crate) enum Response {
    /// Reply.
    Reply(VirtchnlStatus, ReplyBody),
    /// Reply, then tell the VF its link state (after GET_VF_RESOURCES and ENABLE_QUEUES, P32).
    ReplyThenLink(VirtchnlStatus, ReplyBody),
}

impl Response {
    fn status(status: VirtchnlStatus) -> Self {
        Response::Reply(status, ReplyBody::Empty)
    }
}

/// PF-wide settings a VF handler needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env {
    pub(crate) vlan_mode: VlanMode,
    pub(crate) link_up: bool,
    pub(crate) link_speed_mbps: u32,
    pub(crate) queue_pairs: u16,
    pub(crate) true_promisc: bool,
}

/// Why one MAC element was not applied.
enum MacRefusal {
    /// Already present / not present: ignored, the message still succeeds (P14).
    Ignored,
    /// Not permitted: the message fails with ERR_ADMIN_QUEUE_ERROR (P15, P16).
    Permission,
}

/// One VF's state in the PF.
#[derive(Debug, Clone)]
pub(crate) struct Vf {
    /// Who drives the VF; never changes.
    pub(crate) role: VfRole,
    pub(crate) policy: VfPolicy,
    pub(crate) phase: VfPhase,
    /// What the VF announced in VERSION.
    pub(crate) version: Option<VersionInfo>,
    /// `driver_caps`: granted by GET_VF_RESOURCES; `None` means only the default allowlist.
    pub(crate) caps: Option<VfCapFlags>,
    /// The VLAN V2 caps last reported; V2 filter lists are validated against them.
    pub(crate) vlan_v2_caps: Option<VlanCaps>,
    /// The VF's current device MAC (`dev_lan_addr`).
    pub(crate) dev_lan_addr: MacAddr,
    /// The MAC the host reports and restores after reset (`hw_lan_addr`).
    pub(crate) hw_lan_addr: MacAddr,
    /// MAC filters, including broadcast and the host-added device MAC.
    pub(crate) macs: BTreeSet<MacAddr>,
    legacy_last_added: Option<(MacAddr, Instant)>,
    /// Non-zero VLAN filters; VLAN 0 (or the port VLAN) is always present and not listed.
    pub(crate) vlans: BTreeSet<Vlan>,
    pub(crate) promisc: PromiscFlags,
    pub(crate) rx_queues: u32,
    pub(crate) tx_queues: u32,
    /// Tx VLAN filtering (VLAN anti-spoof).
    pub(crate) vlan_antispoof: bool,
    /// Rx VLAN pruning.
    pub(crate) vlan_pruning: bool,
    pub(crate) vlan_stripping: bool,
    /// The link state last reported in a LINK_CHANGE event.
    pub(crate) link_reported: Option<bool>,
    pub(crate) counters: MailboxCounters,
    /// Data-path counters kept by the switch (S7). Like `counters`, they are
    /// the host's statistics: a reset does not clear them.
    pub(crate) traffic: TrafficCounters,
}

impl Vf {
    /// A VF as created: already through a first reset, waiting for its
    /// driver (or, in the kernel role, configured by the host).
    pub(crate) fn new(policy: VfPolicy, role: VfRole) -> Self {
        let hw = policy.admin_mac.unwrap_or(MacAddr::ZERO);
        let mut vf = Vf {
            role,
            policy,
            phase: VfPhase::Init,
            version: None,
            caps: None,
            vlan_v2_caps: None,
            dev_lan_addr: hw,
            hw_lan_addr: hw,
            macs: BTreeSet::new(),
            legacy_last_added: None,
            vlans: BTreeSet::new(),
            promisc: PromiscFlags::empty(),
            rx_queues: 0,
            tx_queues: 0,
            vlan_antispoof: false,
            vlan_pruning: false,
            vlan_stripping: false,
            link_reported: None,
            counters: MailboxCounters::default(),
            traffic: TrafficCounters::default(),
        };
        vf.rebuild();
        vf
    }

    /// Feeds the VF's configuration to `h`: what decides how it answers
    /// later requests. Counters and the policy (which only the host
    /// changes) are left out.
    pub(crate) fn fingerprint<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        (
            self.role,
            self.phase,
            self.version,
            self.caps,
            self.vlan_v2_caps,
        )
            .hash(h);
        (self.dev_lan_addr, self.hw_lan_addr, &self.macs).hash(h);
        self.legacy_last_added.map(|(mac, _)| mac).hash(h);
        (&self.vlans, self.promisc, self.rx_queues, self.tx_queues).hash(h);
        (
            self.vlan_antispoof,
            self.vlan_pruning,
            self.vlan_stripping,
            self.link_reported,
        )
            .hash(h);
    }

    /// First half of a reset (ice_trigger_vf_reset): the VF stops working at once.
    pub(crate) fn begin_reset(&mut self) {
        self.phase = VfPhase::Resetting;
        self.caps = None;
        self.rx_queues = 0;
        self.tx_queues = 0;
    }

    /// Second half of a reset: rebuild the VSI with only the host's
    /// configuration (P11). Every VF-added filter is gone. A kernel-role VF
    /// then comes straight back ACTIVE with its queue pair enabled: no
    /// driver will ever ask for that.
    pub(crate) fn rebuild(&mut self) {
        self.phase = VfPhase::Init;
        self.caps = None;
        self.vlan_v2_caps = None;
        self.promisc = PromiscFlags::empty();
        self.rx_queues = 0;
        self.tx_queues = 0;
        self.legacy_last_added = None;
        self.vlans.clear();
        self.macs.clear();
        self.macs.insert(MacAddr::BROADCAST);
        if self.hw_lan_addr.is_valid_unicast() {
            self.macs.insert(self.hw_lan_addr);
        }
        self.dev_lan_addr = self.hw_lan_addr;
        self.vlan_pruning = true;
        self.vlan_stripping = false;
        self.vlan_antispoof = self.policy.spoofchk && self.policy.port_vlan.is_some();
        self.link_reported = None;
        if self.role == VfRole::Kernel {
            self.phase = VfPhase::Active;
            self.rx_queues = KERNEL_VF_QUEUES;
            self.tx_queues = KERNEL_VF_QUEUES;
        }
    }

    /// Whether the VF has a mailbox (everything but the kernel role).
    pub(crate) fn has_mailbox(&self) -> bool {
        self.role != VfRole::Kernel
    }

    pub(crate) fn is_active(&self) -> bool {
        self.phase == VfPhase::Active
    }

    fn has(&self, cap: VfCapFlags) -> bool {
        self.caps.is_some_and(|c| c.contains(cap))
    }

    /// `ice_can_vf_change_mac`: false while an admin MAC binds an untrusted VF.
    fn can_change_mac(&self) -> bool {
        self.policy.admin_mac.is_none() || self.policy.trust
    }

    /// `vsi->num_vlan`: non-zero VLANs plus VLAN 0.
    fn num_vlan(&self) -> usize {
        self.vlans.len() + 1
    }

    /// `ice_vf_has_max_vlans` for V1 (P20): VLAN 0 counts as one of the limit.
    fn v1_at_vlan_limit(&self) -> bool {
        !self.policy.trust && self.vlans.len() + 1 >= usize::from(self.policy.max_vlans)
    }

    /// `ice_is_vlan_promisc_allowed` (P24).
    fn vlan_promisc(&self, env: &Env) -> bool {
        env.true_promisc
            && self
                .promisc
                .intersects(PromiscFlags::UNICAST | PromiscFlags::MULTICAST)
    }

    /// Whether the VF's link is up (`ice_is_vf_link_up`, P32).
    pub(crate) fn link_up(&self, env: &Env) -> bool {
        if self.phase == VfPhase::Resetting || (self.rx_queues | self.tx_queues) == 0 {
            return false;
        }
        match self.policy.link {
            LinkState::Auto => env.link_up,
            LinkState::Enable => true,
            LinkState::Disable => false,
        }
    }

    /// The `link_speed` field of a LINK_CHANGE event: Mbps with ADV_LINK_SPEED,
    /// else the legacy enum; unknown (0) when down.
    pub(crate) fn link_speed_field(&self, env: &Env, up: bool) -> u32 {
        if !up {
            0
        } else if self.has(VfCapFlags::ADV_LINK_SPEED) {
            env.link_speed_mbps
        } else {
            caps::legacy_link_speed(env.link_speed_mbps).to_raw()
        }
    }

    /// Re-applies spoof checking after a policy change (P29).
    pub(crate) fn apply_spoofchk(&mut self) {
        self.vlan_antispoof =
            self.policy.spoofchk && (!self.vlans.is_empty() || self.policy.port_vlan.is_some());
    }

    /// Handles one decoded request. RESET_VF is handled by the PF, not here.
    pub(crate) fn handle(&mut self, env: &Env, now: Instant, req: Request) -> Response {
        match req {
            Request::Version(v) => self.version(v),
            Request::GetVfResources { caps } => self.get_vf_resources(env, caps),
            Request::EnableQueues(q) => self.queues(env, q, true),
            Request::DisableQueues(q) => self.queues(env, q, false),
            Request::AddEthAddr(l) => Response::status(self.mac_list(now, &l, true)),
            Request::DelEthAddr(l) => Response::status(self.mac_list(now, &l, false)),
            Request::AddVlan(l) => Response::status(self.vlan_v1(env, &l, true)),
            Request::DelVlan(l) => Response::status(self.vlan_v1(env, &l, false)),
            Request::ConfigPromiscuousMode(p) => Response::status(self.promisc(p)),
            Request::GetStats(q) => self.get_stats(q),
            Request::EnableVlanStripping => Response::status(self.vlan_stripping(env, true)),
            Request::DisableVlanStripping => Response::status(self.vlan_stripping(env, false)),
            Request::GetOffloadVlanV2Caps => self.get_vlan_v2_caps(env),
            Request::AddVlanV2(l) => Response::status(self.vlan_v2(env, &l, true)),
            Request::DelVlanV2(l) => Response::status(self.vlan_v2(env, &l, false)),
            // Dispatched by the PF before it reaches a VF; answer sanely anyway.
            Request::ResetVf => Response::status(ErrParam),
        }
    }

    /// P8 (ice_vc_get_ver_msg): remember the VF's version, answer 1.1 or 1.0.
    fn version(&mut self, v: VersionInfo) -> Response {
        self.version = Some(v);
        let reply = if v == VersionInfo::V1_0 {
            VersionInfo::V1_0
        } else {
            VersionInfo::V1_1
        };
        Response::Reply(Success, ReplyBody::Version(reply))
    }

    /// P9 (ice_vc_get_vf_res_msg): grant caps, become ACTIVE, set default stripping.
    fn get_vf_resources(&mut self, env: &Env, asked: Option<VfCapFlags>) -> Response {
        if self.phase == VfPhase::Resetting {
            return Response::status(ErrParam);
        }
        let granted = caps::grant(asked, &self.policy, env.vlan_mode);
        self.caps = Some(granted);
        self.phase = VfPhase::Active;
        let port_vlan_svm = self.policy.port_vlan.is_some() && env.vlan_mode == VlanMode::Single;
        if !port_vlan_svm {
            self.vlan_stripping = granted.contains(VfCapFlags::VLAN);
        }
        let max_mtu = if self.policy.port_vlan.is_some() {
            MAX_FRAME_SIZE - 4
        } else {
            MAX_FRAME_SIZE
        };
        let res = VfResource {
            num_queue_pairs: env.queue_pairs,
            max_vectors: env.queue_pairs + 1,
            max_mtu,
            vf_cap_flags: granted,
            rss_key_size: 52,
            rss_lut_size: 64,
            vsi_res: vec![VsiResource {
                vsi_id: VSI_ID,
                num_queue_pairs: env.queue_pairs,
                vsi_type: VsiType::Sriov,
                qset_handle: 0,
                default_mac_addr: self.hw_lan_addr,
            }],
        };
        Response::ReplyThenLink(Success, ReplyBody::VfResource(res))
    }

    /// ice_vc_ena_qs_msg / ice_vc_dis_qs_msg (P6, P7, P32).
    fn queues(&mut self, env: &Env, q: QueueSelect, enable: bool) -> Response {
        if !self.is_active() {
            return Response::status(ErrParam);
        }
        let limit = 1u32 << MAX_QUEUE_BITS;
        if (q.rx_queues == 0 && q.tx_queues == 0) || q.rx_queues >= limit || q.tx_queues >= limit {
            return Response::status(ErrParam);
        }
        if q.vsi_id != VSI_ID {
            return Response::status(ErrParam);
        }
        let have = (1u32 << env.queue_pairs.min(16)) - 1;
        if (q.rx_queues | q.tx_queues) & !have != 0 {
            return Response::status(ErrParam);
        }
        if enable {
            self.rx_queues |= q.rx_queues;
            self.tx_queues |= q.tx_queues;
            Response::ReplyThenLink(Success, ReplyBody::Empty)
        } else {
            self.rx_queues &= !q.rx_queues;
            self.tx_queues &= !q.tx_queues;
            Response::status(Success)
        }
    }

    /// ice_vc_handle_mac_addr_msg (P6, P7, P13, P14, P15, P16, P18).
    fn mac_list(&mut self, now: Instant, list: &EtherAddrList, add: bool) -> VirtchnlStatus {
        if !self.is_active() || list.vsi_id != VSI_ID {
            return ErrParam;
        }
        let limit = usize::from(self.policy.max_macs);
        if add && !self.policy.trust && self.macs.len() + list.addrs.len() > limit {
            return ErrParam;
        }
        for entry in &list.addrs {
            if entry.addr.is_broadcast() || entry.addr.is_zero() {
                continue;
            }
            let result = if add {
                self.add_mac(now, entry)
            } else {
                self.del_mac(now, entry)
            };
            match result {
                Ok(()) | Err(MacRefusal::Ignored) => {}
                Err(MacRefusal::Permission) => return ErrAdminQueueError,
            }
        }
        Success
    }

    /// ice_vc_add_mac_addr.
    fn add_mac(&mut self, now: Instant, entry: &EtherAddr) -> Result<(), MacRefusal> {
        let mac = entry.addr;
        if mac == self.dev_lan_addr {
            return Ok(());
        }
        if !mac.is_multicast() && !self.can_change_mac() {
            return Err(MacRefusal::Permission);
        }
        if !self.policy.trust && LLDP_MACS.contains(&mac) {
            return Err(MacRefusal::Permission);
        }
        let added = self.macs.insert(mac);
        self.track_primary_on_add(now, entry);
        if added {
            Ok(())
        } else {
            Err(MacRefusal::Ignored)
        }
    }

    /// ice_vc_del_mac_addr.
    fn del_mac(&mut self, now: Instant, entry: &EtherAddr) -> Result<(), MacRefusal> {
        let mac = entry.addr;
        if !self.can_change_mac() && mac == self.dev_lan_addr {
            return Ok(());
        }
        if !self.macs.remove(&mac) {
            return Err(MacRefusal::Ignored);
        }
        self.track_primary_on_del(now, entry);
        Ok(())
    }

    /// ice_vfhw_mac_add (P17).
    fn track_primary_on_add(&mut self, now: Instant, entry: &EtherAddr) {
        if !entry.addr.is_valid_unicast() {
            return;
        }
        let kind = entry.kind.masked();
        let legacy = kind == EtherAddrType::Legacy;
        if (legacy && self.hw_lan_addr.is_zero()) || kind == EtherAddrType::Primary {
            self.dev_lan_addr = entry.addr;
            self.hw_lan_addr = entry.addr;
        }
        if legacy {
            self.legacy_last_added = Some((entry.addr, now));
        }
    }

    /// ice_vfhw_mac_del and ice_update_legacy_cached_mac (P17).
    fn track_primary_on_del(&mut self, now: Instant, entry: &EtherAddr) {
        if !entry.addr.is_valid_unicast() || entry.addr != self.dev_lan_addr {
            return;
        }
        self.dev_lan_addr = MacAddr::ZERO;
        if entry.kind.masked() != EtherAddrType::Legacy {
            return;
        }
        if let Some((mac, at)) = self.legacy_last_added {
            if now.saturating_duration_since(at) < LEGACY_MAC_WINDOW {
                self.dev_lan_addr = mac;
                self.hw_lan_addr = mac;
            }
        }
    }

    /// ice_vc_process_vlan_msg (P5, P6, P7, P19..P24).
    fn vlan_v1(&mut self, env: &Env, list: &VlanFilterList, add: bool) -> VirtchnlStatus {
        if !self.is_active() || !self.has(VfCapFlags::VLAN) || list.vsi_id != VSI_ID {
            return ErrParam;
        }
        if list.vids.iter().any(|&vid| vid >= 4096) {
            return ErrParam;
        }
        if add && self.v1_at_vlan_limit() {
            return Success;
        }
        if self.policy.port_vlan.is_some() {
            return match env.vlan_mode {
                VlanMode::Single => ErrParam,
                VlanMode::Double => Success,
            };
        }
        let vlan_promisc = self.vlan_promisc(env);
        if add {
            for &vid in &list.vids {
                if self.v1_at_vlan_limit() {
                    break;
                }
                if vid == 0 {
                    continue;
                }
                self.vlans.insert(Vlan::dot1q(vid));
                if !vlan_promisc && env.vlan_mode == VlanMode::Single {
                    if self.policy.spoofchk {
                        self.vlan_antispoof = true;
                    }
                    self.vlan_pruning = true;
                }
            }
        } else {
            let budget = self.num_vlan();
            for &vid in list.vids.iter().take(budget) {
                if vid == 0 {
                    continue;
                }
                self.vlans.remove(&Vlan::dot1q(vid));
                if self.vlans.is_empty() {
                    self.vlan_antispoof = false;
                    self.vlan_pruning = false;
                }
            }
        }
        Success
    }

    /// ice_vc_add_vlan_v2_msg / ice_vc_remove_vlan_v2_msg (P6, P7, P22, P25, P26).
    fn vlan_v2(&mut self, env: &Env, list: &VlanFilterListV2, add: bool) -> VirtchnlStatus {
        // DEL_VLAN_V2 does not test ACTIVE: it relies on the stored caps (P6).
        if (add && !self.is_active()) || list.vport_id != VSI_ID {
            return ErrParam;
        }
        let caps = self.vlan_v2_caps.map(|c| c.filtering).unwrap_or_default();
        if !valid_v2_filters(&caps, list) {
            return ErrParam;
        }
        if add && self.vlans.len() + list.filters.len() > usize::from(caps.max_filters) {
            return ErrParam;
        }
        for filter in &list.filters {
            for (tag, outer) in [(filter.outer, true), (filter.inner, false)] {
                if !tag.is_present() || tag.vid() == 0 {
                    continue;
                }
                let vlan = Vlan {
                    tpid: tag.tpid,
                    vid: tag.vid(),
                };
                if add {
                    self.vlans.insert(vlan);
                    let side_filters = match env.vlan_mode {
                        VlanMode::Double => outer,
                        VlanMode::Single => !outer,
                    };
                    if self.policy.spoofchk && side_filters {
                        self.vlan_antispoof = true;
                    }
                } else {
                    self.vlans.remove(&vlan);
                    if self.vlans.is_empty() {
                        self.vlan_antispoof = false;
                    }
                }
            }
        }
        Success
    }

    /// ice_vc_get_offload_vlan_v2_caps (P6): remember what was reported.
    fn get_vlan_v2_caps(&mut self, env: &Env) -> Response {
        if !self.is_active() {
            return Response::status(ErrParam);
        }
        let caps = caps::vlan_v2_caps(&self.policy, env.vlan_mode);
        self.vlan_v2_caps = Some(caps);
        Response::Reply(Success, ReplyBody::VlanCaps(caps))
    }

    /// ice_vc_ena/dis_vlan_stripping (P5, P28).
    fn vlan_stripping(&mut self, env: &Env, enable: bool) -> VirtchnlStatus {
        if !self.is_active() || !self.has(VfCapFlags::VLAN) {
            return ErrParam;
        }
        if self.policy.port_vlan.is_some() && env.vlan_mode == VlanMode::Single {
            return ErrParam;
        }
        self.vlan_stripping = enable;
        Success
    }

    /// ice_vc_cfg_promiscuous_mode_msg (P30).
    fn promisc(&mut self, p: virtchnl::PromiscInfo) -> VirtchnlStatus {
        if !self.is_active() || p.vsi_id != VSI_ID {
            return ErrParam;
        }
        if !self.policy.trust {
            tracing::warn!(
                "untrusted VF attempted to configure promiscuous mode; replying success without change"
            );
            return Success;
        }
        let wanted = p.flags & (PromiscFlags::UNICAST | PromiscFlags::MULTICAST);
        self.vlan_pruning = wanted == PromiscFlags::empty();
        self.promisc = wanted;
        Success
    }

    /// ice_vc_get_stats_msg (P34): the switch's counters for this VF (S7),
    /// zero-filled with ERR_PARAM when not allowed.
    fn get_stats(&self, q: QueueSelect) -> Response {
        if !self.is_active() || q.vsi_id != VSI_ID {
            return Response::Reply(ErrParam, ReplyBody::Stats(EthStats::default()));
        }
        Response::Reply(Success, ReplyBody::Stats(self.traffic.eth_stats()))
    }
}

/// ice_vc_validate_vlan_filter_list (P25).
fn valid_v2_filters(caps: &VlanFilteringCaps, list: &VlanFilterListV2) -> bool {
    let outer = caps.filtering_support.outer;
    let inner = caps.filtering_support.inner;
    let side_ok = |tag: virtchnl::VirtchnlVlan, side: VlanSupport| {
        if tag.is_present() && side == VlanSupport::empty() {
            return false;
        }
        if tag.tci_mask != 0 && !side.contains(VlanSupport::FILTER_MASK) {
            return false;
        }
        if tag.pcp() != 0 && !side.contains(VlanSupport::PRIO) {
            return false;
        }
        if tag.is_present() {
            let known = VlanSupport::ethertype_for_tpid(tag.tpid);
            if !known.is_some_and(|e| side.contains(e)) {
                return false;
            }
        }
        true
    };
    !list.filters.is_empty()
        && list
            .filters
            .iter()
            .all(|f| side_ok(f.outer, outer) && side_ok(f.inner, inner))
}
