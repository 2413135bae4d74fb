//! [`Status`]: everything the adapter believes, serialisable and
//! deterministically ordered, for the harness to compare with the PF tables.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use virtchnl::{MacAddr, VirtchnlOp};

use super::config::VlanFsm;
use super::mac::MacState;
use super::vlan::{Vlan, VlanState};

/// Serialises an opcode by its kernel name (`"DEL_VLAN_V2"`).
pub(crate) fn op_name<S: Serializer>(op: &VirtchnlOp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(op)
}

/// Where the adapter is in its life (iavf's `adapter->state`, coarsened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Negotiating with the PF: VERSION, GET_VF_RESOURCES, VLAN V2 caps
    /// (`__IAVF_STARTUP` .. `__IAVF_INIT_CONFIG_ADAPTER`).
    Init,
    /// Negotiated, netdev down (`__IAVF_DOWN`).
    Down,
    /// Negotiated, netdev up (`__IAVF_RUNNING`).
    Running,
    /// Reset in progress: waiting for the device to come back (`__IAVF_RESETTING`).
    Resetting,
    /// Gave up after repeated initialisation failures (`__IAVF_COMM_FAILED`).
    Failed,
    /// The netdev was removed (`__IAVF_REMOVE`).
    Removed,
}

/// One MAC filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MacFilterStatus {
    /// The address.
    pub mac: MacAddr,
    /// Whether it is the netdev's own address (sent with type PRIMARY).
    pub primary: bool,
    /// Its state.
    pub state: MacState,
}

/// One VLAN filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VlanFilterStatus {
    /// TPID.
    pub tpid: u16,
    /// VLAN id.
    pub vid: u16,
    /// Its state.
    pub state: VlanState,
}

/// The request waiting for its reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outstanding {
    /// Its opcode.
    #[serde(serialize_with = "op_name")]
    pub op: VirtchnlOp,
    /// Its cookie.
    pub cookie: u32,
}

/// The netdev as the kernel last described it to the adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetdevStatus {
    /// Administratively up.
    pub up: bool,
    /// IFF_PROMISC.
    pub promisc: bool,
    /// IFF_ALLMULTI.
    pub allmulti: bool,
    /// Enslaved to a bond or team.
    pub enslaved: bool,
    /// VLANs the kernel added (on the netdev or a master it is enslaved to)
    /// and has not removed, as the adapter accepted them: the kernel's view.
    pub vlans: Vec<Vlan>,
}

/// Mailbox and life-cycle counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Requests handed to the transport (RESET_VF included).
    pub requests_sent: u64,
    /// Requests sent, by opcode name.
    pub requests: BTreeMap<String, u64>,
    /// Replies received, by status name.
    pub replies: BTreeMap<String, u64>,
    /// Replies that answered nothing outstanding (wrong opcode or cookie, or
    /// received while resetting), logged and ignored.
    pub replies_ignored: u64,
    /// PF events received.
    pub events: u64,
    /// Requests that got no reply in time.
    pub timeouts: u64,
    /// Resets gone through.
    pub resets: u64,
    /// Mailbox frames that did not decode.
    pub malformed: u64,
    /// Initialisations that failed and were retried.
    pub init_failures: u64,
}

/// Everything the adapter believes. Lists are sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The VLAN state machine in use.
    pub vlan_fsm: VlanFsm,
    /// Life-cycle phase.
    pub phase: Phase,
    /// The netdev's flags.
    pub netdev: NetdevStatus,
    /// The VF's MAC (`hw.mac.addr`), once known.
    pub mac: Option<MacAddr>,
    /// Capabilities the PF granted, by name.
    pub caps: Vec<&'static str>,
    /// Which VLAN opcodes are in use: `"v1"`, `"v2"` or `"none"`.
    pub vlan_ops: &'static str,
    /// The PF says the link is up.
    pub link_up: bool,
    /// Link speed in Mbps, when the PF reported one.
    pub link_speed_mbps: Option<u32>,
    /// The netdev's carrier.
    pub carrier: bool,
    /// The PF enabled the VF's queues.
    pub queues_enabled: bool,
    /// MAC filters.
    pub macs: Vec<MacFilterStatus>,
    /// VLAN filters.
    pub vlans: Vec<VlanFilterStatus>,
    /// Pending work (`aq_required`), in the order it will be sent.
    pub pending: Vec<&'static str>,
    /// The request waiting for its reply.
    pub outstanding: Option<Outstanding>,
    /// Counters.
    pub counters: Counters,
}

impl Status {
    /// VLANs in the given state, sorted.
    pub fn vlans_in(&self, state: VlanState) -> Vec<Vlan> {
        self.vlans
            .iter()
            .filter(|v| v.state == state)
            .map(|v| Vlan {
                tpid: v.tpid,
                vid: v.vid,
            })
            .collect()
    }
}
