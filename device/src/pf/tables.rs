//! The tables view: every VF's filters, policy and counters, serialisable
//! and deterministically ordered, for snapshots and the control socket.
//!
//! Designed to be read as a diff: one VF per key, sets as sorted lists,
//! MACs as `aa:bb:..` strings, and nothing that depends on timing.

use std::collections::BTreeMap;

use serde::Serialize;
use virtchnl::{MacAddr, VfCapFlags};

use super::policy::{VfPolicy, VfRole, VlanMode, VLAN_N_VID};
use super::switch::{TrafficCounters, UplinkCounters};
use super::vf::{Env, MailboxCounters, Vf, VfPhase, Vlan};

/// All VFs of a PF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tables {
    /// The PF's VLAN mode.
    pub vlan_mode: VlanMode,
    /// The PF's own link.
    pub link_up: bool,
    /// The switch's uplink counters.
    pub uplink: UplinkCounters,
    /// Per VF, keyed `vf0`, `vf1`, ... (sorted numerically: keys are zero-padded
    /// only in order, not in text, so `vf10` follows `vf9`).
    pub vfs: BTreeMap<VfKey, VfTable>,
}

/// A VF's key in [`Tables::vfs`]: serialises as `vfN`, orders by N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VfKey(pub u16);

impl Serialize for VfKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("vf{}", self.0))
    }
}

impl Tables {
    pub(crate) fn new(
        vlan_mode: VlanMode,
        link_up: bool,
        uplink: UplinkCounters,
        vfs: impl Iterator<Item = VfTable>,
    ) -> Self {
        let vfs = (0u16..).zip(vfs).map(|(i, t)| (VfKey(i), t)).collect();
        Tables {
            vlan_mode,
            link_up,
            uplink,
            vfs,
        }
    }

    /// The table of VF `index`, if it exists.
    pub fn vf(&self, index: u16) -> Option<&VfTable> {
        self.vfs.get(&VfKey(index))
    }
}

/// Promiscuous modes in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Promisc {
    /// Unicast promiscuous.
    pub unicast: bool,
    /// Multicast promiscuous (allmulti).
    pub multicast: bool,
}

/// Anti-spoof checks in effect on the VF's transmit path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AntiSpoof {
    /// Source MAC must be one of the VF's MAC filters.
    pub mac: bool,
    /// VLAN tag must be one of the VF's VLAN filters (on from the first non-zero VLAN).
    pub vlan: bool,
}

/// Enabled queues, as bitmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Queues {
    /// Receive queues enabled.
    pub rx: u32,
    /// Transmit queues enabled.
    pub tx: u32,
}

/// One VF's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VfTable {
    /// Who drives the VF. Serialised only when it is not the default
    /// [`VfRole::Driver`] (as `role: kernel`), so tables of driver VFs read
    /// as they always have.
    #[serde(skip_serializing_if = "VfRole::is_driver")]
    pub role: VfRole,
    /// Life-cycle phase.
    pub state: VfPhase,
    /// Version the VF announced, as `major.minor`.
    pub version: Option<String>,
    /// Capabilities granted, by name.
    pub caps: Vec<&'static str>,
    /// The host's policy for this VF.
    pub policy: VfPolicy,
    /// The VF's device MAC (`dev_lan_addr`; zero when the VF deleted it).
    pub mac: MacAddr,
    /// The MAC the host records for the VF and restores at reset (`hw_lan_addr`):
    /// the admin MAC, or the last primary MAC the VF was allowed to set.
    pub host_mac: MacAddr,
    /// MAC filters, sorted; broadcast is always present and not listed.
    pub macs: Vec<MacAddr>,
    /// MAC filters counted against the limit, broadcast included (`num_mac`).
    pub mac_filters: usize,
    /// 802.1Q VLAN filters, sorted; VLAN 0 is always present and not listed.
    pub vlans: Vec<u16>,
    /// Filters with other TPIDs (double VLAN mode), as `0x88a8/100`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vlans_other_tpid: Vec<String>,
    /// The VLAN filter limit the VF is held to now (4096 when trusted).
    pub vlan_limit: u16,
    /// Promiscuous modes.
    pub promisc: Promisc,
    /// Anti-spoof checks.
    pub antispoof: AntiSpoof,
    /// Rx VLAN pruning.
    pub vlan_pruning: bool,
    /// V1 VLAN stripping.
    pub vlan_stripping: bool,
    /// Enabled queues.
    pub queues: Queues,
    /// Link as it is now for this VF.
    pub link_up: bool,
    /// Link as last reported to the VF (`None`: never reported since reset).
    pub link_reported: Option<bool>,
    /// Mailbox counters.
    pub mailbox: MailboxCounters,
    /// Data-path counters (the switch's rule S7); they survive resets.
    pub traffic: TrafficCounters,
}

impl VfTable {
    pub(crate) fn new(vf: &Vf, env: &Env) -> Self {
        let (dot1q, other): (Vec<&Vlan>, Vec<&Vlan>) =
            vf.vlans.iter().partition(|v| v.tpid == 0x8100);
        VfTable {
            role: vf.role,
            state: vf.phase,
            version: vf.version.map(|v| format!("{}.{}", v.major, v.minor)),
            caps: vf.caps.unwrap_or(VfCapFlags::empty()).names().collect(),
            policy: vf.policy.clone(),
            mac: vf.dev_lan_addr,
            host_mac: vf.hw_lan_addr,
            macs: vf
                .macs
                .iter()
                .copied()
                .filter(|m| !m.is_broadcast())
                .collect(),
            mac_filters: vf.macs.len(),
            vlans: dot1q.iter().map(|v| v.vid).collect(),
            vlans_other_tpid: other
                .iter()
                .map(|v| format!("{:#06x}/{}", v.tpid, v.vid))
                .collect(),
            vlan_limit: if vf.policy.trust {
                VLAN_N_VID
            } else {
                vf.policy.max_vlans
            },
            promisc: Promisc {
                unicast: vf.promisc.contains(virtchnl::PromiscFlags::UNICAST),
                multicast: vf.promisc.contains(virtchnl::PromiscFlags::MULTICAST),
            },
            antispoof: AntiSpoof {
                mac: vf.policy.spoofchk,
                vlan: vf.vlan_antispoof,
            },
            vlan_pruning: vf.vlan_pruning,
            vlan_stripping: vf.vlan_stripping,
            queues: Queues {
                rx: vf.rx_queues,
                tx: vf.tx_queues,
            },
            link_up: vf.link_up(env),
            link_reported: vf.link_reported,
            mailbox: vf.counters,
            traffic: vf.traffic,
        }
    }
}
