//! What the host decides about the PF and each VF (what `ip link set PF vf N
//! ...` and devlink configure on a real ice PF).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use virtchnl::MacAddr;

use super::VfId;

/// `ICE_MAX_MACADDR_PER_VF`: MAC filters an untrusted VF may hold (1 device
/// address, 1 broadcast, 16 more).
pub const ICE_MAX_MACADDR_PER_VF: u16 = 18;

/// `ICE_MAX_VLAN_PER_VF`: VLAN filters an untrusted VF may hold.
pub const ICE_MAX_VLAN_PER_VF: u16 = 8;

/// `VLAN_N_VID`: the V2 filter limit ice gives a trusted VF.
pub const VLAN_N_VID: u16 = 4096;

/// The PF's VLAN mode (ice: single or double VLAN mode, a device-wide setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VlanMode {
    /// SVM: one tag, filtered as the inner tag, TPID 0x8100 only.
    #[default]
    Single,
    /// DVM: VF filters apply to the outer tag (0x8100, 0x88A8, 0x9100).
    Double,
}

/// The host's override of a VF's link (`ip link set PF vf N state ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Follow the PF's link.
    #[default]
    Auto,
    /// Always up.
    Enable,
    /// Always down.
    Disable,
}

/// Who drives a VF, fixed for the VF's life (the host picks it when it
/// creates the VF, so unlike [`VfPolicy`] it cannot be changed later: it
/// decides how many queues the VF's virtio-net device has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VfRole {
    /// An AVF driver (vfrig's own, like iavf) speaks virtchnl on the
    /// mailbox: the VF comes out of reset in INIT and waits for it.
    #[default]
    Driver,
    /// The guest kernel's virtio_net drives the VF as a plain NIC (the
    /// standby of a net_failover pair), with no mailbox at all. The host
    /// configures it instead: after every reset it is ACTIVE with its one
    /// queue pair enabled, the host MAC (`host_mac` in the tables: the admin
    /// MAC) as its MAC filter, and hears no events. A mailbox frame from it
    /// cannot arrive through the shell; if one does, it is answered
    /// ERR_NOT_SUPPORTED and changes nothing.
    Kernel,
}

impl VfRole {
    /// Whether this is [`VfRole::Driver`], the default.
    pub fn is_driver(&self) -> bool {
        *self == VfRole::Driver
    }
}

/// Per-VF policy set by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VfPolicy {
    /// `trust on`: no MAC/VLAN limits, may set promiscuous modes and change an admin MAC.
    pub trust: bool,
    /// `spoofchk on`: MAC anti-spoof always, VLAN anti-spoof once the VF has a non-zero VLAN.
    pub spoofchk: bool,
    /// `mac ADDR`: an administratively set MAC the untrusted VF cannot change.
    ///
    /// A trusted VF may still replace it; as on ice, the host then records
    /// the VF's choice (`host_mac` in the tables) and enforces that one once
    /// trust is revoked.
    pub admin_mac: Option<MacAddr>,
    /// `vlan VID`: a port VLAN the PF inserts and strips for the VF.
    pub port_vlan: Option<u16>,
    /// MAC filter limit for an untrusted VF (ice: 18).
    pub max_macs: u16,
    /// VLAN filter limit for an untrusted VF (ice: 8; V1 stops one short, see rule P20).
    pub max_vlans: u16,
    /// Whether the PF grants `VIRTCHNL_VF_OFFLOAD_VLAN_V2`; false leaves only V1 VLAN ops.
    pub vlan_v2: bool,
    /// Link override.
    pub link: LinkState,
}

impl Default for VfPolicy {
    fn default() -> Self {
        VfPolicy {
            trust: false,
            spoofchk: true,
            admin_mac: None,
            port_vlan: None,
            max_macs: ICE_MAX_MACADDR_PER_VF,
            max_vlans: ICE_MAX_VLAN_PER_VF,
            vlan_v2: true,
            link: LinkState::Auto,
        }
    }
}

/// How the PF is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfConfig {
    /// Number of VFs, at least 1.
    pub num_vfs: u16,
    /// Device-wide VLAN mode.
    pub vlan_mode: VlanMode,
    /// Whether the PF's own link is up.
    pub link_up: bool,
    /// Link speed reported to VFs, in Mbps.
    pub link_speed_mbps: u32,
    /// Queue pairs each VF gets.
    pub queue_pairs_per_vf: u16,
    /// `ICE_FLAG_VF_TRUE_PROMISC_ENA`: promiscuous VFs get VLAN-promiscuous rules.
    pub true_promisc: bool,
    /// Policies for vf0, vf1, ...; VFs without one get [`VfPolicy::default`].
    pub policies: Vec<VfPolicy>,
    /// Roles of VFs that are not [`VfRole::Driver`]; every key must be a VF
    /// the PF has.
    pub roles: BTreeMap<VfId, VfRole>,
}

impl Default for PfConfig {
    fn default() -> Self {
        PfConfig {
            num_vfs: 1,
            vlan_mode: VlanMode::Single,
            link_up: true,
            link_speed_mbps: 25_000,
            queue_pairs_per_vf: 1,
            true_promisc: false,
            policies: Vec::new(),
            roles: BTreeMap::new(),
        }
    }
}
