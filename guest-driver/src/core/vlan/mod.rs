//! The VLAN filter list and its two state machines.
//!
//! [`VlanFilters`] holds one [`VlanState`] per filter and forwards every
//! transition to the machine the adapter was built with: [`fixed`] or
//! [`legacy`]. Each machine is a set of free functions over the list, one per
//! iavf function it models, so the two can be read side by side with the
//! kernel sources. The diagrams are in the [core docs](super).
//!
//! Invariant (both machines): a VLAN is in the list at most once, and the
//! list changes only through these transitions.

pub(crate) mod fixed;
pub(crate) mod legacy;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::config::VlanFsm;
use super::flags::AqFlags;
use super::io::FilterOp;

/// A VLAN filter's key: TPID and VLAN id (`struct iavf_vlan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Vlan {
    /// Tag protocol id: 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// VLAN id, 1..=4095.
    pub vid: u16,
}

impl Vlan {
    /// The 802.1Q TPID.
    pub const TPID_8021Q: u16 = 0x8100;
    /// The 802.1ad (QinQ service tag) TPID.
    pub const TPID_8021AD: u16 = 0x88a8;

    /// An 802.1Q VLAN.
    pub const fn dot1q(vid: u16) -> Self {
        Vlan {
            tpid: Self::TPID_8021Q,
            vid,
        }
    }

    /// An 802.1ad VLAN.
    pub const fn dot1ad(vid: u16) -> Self {
        Vlan {
            tpid: Self::TPID_8021AD,
            vid,
        }
    }
}

impl fmt::Display for Vlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tpid == Self::TPID_8021Q {
            write!(f, "{}", self.vid)
        } else {
            write!(f, "{:#06x}/{}", self.tpid, self.vid)
        }
    }
}

/// A VLAN filter's state (`enum iavf_vlan_state_t`).
///
/// The fixed machine uses ADD, ADDING, ACTIVE, REMOVE and REMOVING; the
/// legacy machine uses ADD, IS_NEW, ACTIVE, DISABLE, INACTIVE and REMOVE.
/// They serialise under iavf's names (`"REMOVING"`, `"IS_NEW"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VlanState {
    /// `IAVF_VLAN_ADD`: to be sent to the PF.
    Add,
    /// `IAVF_VLAN_ADDING` (fixed): ADD sent, waiting for the reply.
    Adding,
    /// `IAVF_VLAN_IS_NEW` (legacy): ADD sent; only a V2 reply ever completes it.
    IsNew,
    /// `IAVF_VLAN_ACTIVE`: the PF has it.
    Active,
    /// `IAVF_VLAN_DISABLE` (legacy): the netdev went down, DEL to be sent, then INACTIVE.
    Disable,
    /// `IAVF_VLAN_INACTIVE` (legacy): deleted from the PF while down, re-added on up.
    Inactive,
    /// `IAVF_VLAN_REMOVE`: the user deleted it; DEL to be sent.
    Remove,
    /// `IAVF_VLAN_REMOVING` (fixed): DEL sent, freed when the PF confirms.
    Removing,
}

impl VlanState {
    /// iavf's name without the `IAVF_VLAN_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            VlanState::Add => "ADD",
            VlanState::Adding => "ADDING",
            VlanState::IsNew => "IS_NEW",
            VlanState::Active => "ACTIVE",
            VlanState::Disable => "DISABLE",
            VlanState::Inactive => "INACTIVE",
            VlanState::Remove => "REMOVE",
            VlanState::Removing => "REMOVING",
        }
    }
}

impl fmt::Display for VlanState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a reply did to the list, for the log and the netdev shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The PF confirmed the filter.
    Committed(Vlan),
    /// The PF confirmed the removal; the filter is gone.
    Removed(Vlan),
    /// The PF refused an add or a remove.
    Rejected(Vlan, FilterOp),
}

/// The filter list: `adapter->vlan_filter_list`, ordered by VLAN so that
/// messages are deterministic.
pub(crate) type List = BTreeMap<Vlan, VlanState>;

/// The adapter's VLAN filters and the machine that moves them.
#[derive(Debug, Clone)]
pub(crate) struct VlanFilters {
    fsm: VlanFsm,
    list: List,
    /// The VLANs the outstanding DEL carries (fixed machine only).
    del_in_flight: BTreeSet<Vlan>,
}

impl VlanFilters {
    pub(crate) fn new(fsm: VlanFsm) -> Self {
        VlanFilters {
            fsm,
            list: List::new(),
            del_in_flight: BTreeSet::new(),
        }
    }

    /// A list in the given states, for tests of single transitions.
    #[cfg(test)]
    pub(crate) fn with_states(fsm: VlanFsm, states: &[(Vlan, VlanState)]) -> Self {
        VlanFilters {
            fsm,
            list: states.iter().copied().collect(),
            del_in_flight: BTreeSet::new(),
        }
    }

    /// Feeds the list and the outstanding DEL's VLANs to `h`.
    pub(crate) fn fingerprint<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        self.list.hash(h);
        self.del_in_flight.hash(h);
    }

    /// `adapter->num_vlan_filters`: every filter in the list, whatever its state.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn get(&self, vlan: Vlan) -> Option<VlanState> {
        self.list.get(&vlan).copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Vlan, VlanState)> + '_ {
        self.list.iter().map(|(v, s)| (*v, *s))
    }

    /// `ndo_vlan_rx_add_vid` (iavf_add_vlan). Returns the flags to schedule.
    pub(crate) fn user_add(&mut self, vlan: Vlan) -> AqFlags {
        match self.fsm {
            VlanFsm::Fixed => fixed::add_vlan(&mut self.list, vlan),
            VlanFsm::Legacy => legacy::add_vlan(&mut self.list, vlan),
        }
    }

    /// `ndo_vlan_rx_kill_vid` (iavf_del_vlan). Returns the flags to schedule.
    pub(crate) fn user_del(&mut self, vlan: Vlan) -> AqFlags {
        match self.fsm {
            VlanFsm::Fixed => fixed::del_vlan(&mut self.list, vlan, &self.del_in_flight),
            VlanFsm::Legacy => legacy::del_vlan(&mut self.list, vlan),
        }
    }

    /// iavf_down's share of the VLAN list.
    pub(crate) fn on_down(&mut self) -> AqFlags {
        match self.fsm {
            VlanFsm::Fixed => AqFlags::empty(),
            VlanFsm::Legacy => legacy::clear_vlan_filters(&mut self.list),
        }
    }

    /// iavf_open's share of the VLAN list.
    pub(crate) fn on_up(&mut self) -> AqFlags {
        match self.fsm {
            VlanFsm::Fixed => AqFlags::empty(),
            VlanFsm::Legacy => legacy::restore_filters(&mut self.list),
        }
    }

    /// Whether iavf_add_vlans would find something to send.
    pub(crate) fn has_pending_add(&self) -> bool {
        self.list.values().any(|s| *s == VlanState::Add)
    }

    /// Whether iavf_del_vlans would find something to send.
    pub(crate) fn has_pending_del(&self) -> bool {
        match self.fsm {
            VlanFsm::Fixed => self.list.values().any(|s| *s == VlanState::Remove),
            VlanFsm::Legacy => self
                .list
                .values()
                .any(|s| matches!(s, VlanState::Remove | VlanState::Disable)),
        }
    }

    /// iavf_add_vlans: up to `max` filters leave ADD; they are the message.
    pub(crate) fn take_add(&mut self, max: usize) -> Vec<Vlan> {
        match self.fsm {
            VlanFsm::Fixed => fixed::add_vlans(&mut self.list, max),
            VlanFsm::Legacy => legacy::add_vlans(&mut self.list, max),
        }
    }

    /// iavf_del_vlans: up to `max` filters for the DEL message. When the PF
    /// allows no VLAN filtering, nothing is sent and the list is cleaned up
    /// locally.
    pub(crate) fn take_del(&mut self, max: usize, filtering_allowed: bool) -> Vec<Vlan> {
        match self.fsm {
            VlanFsm::Fixed => {
                let sent = fixed::del_vlans(&mut self.list, max, filtering_allowed);
                self.del_in_flight = sent.iter().copied().collect();
                sent
            }
            VlanFsm::Legacy => legacy::del_vlans(&mut self.list, max, filtering_allowed),
        }
    }

    /// The reply to ADD_VLAN (`v2 == false`) or ADD_VLAN_V2 that carried `sent`.
    pub(crate) fn on_add_reply(&mut self, v2: bool, ok: bool, sent: &[Vlan]) -> Vec<Notice> {
        match self.fsm {
            VlanFsm::Fixed => fixed::add_reply(&mut self.list, ok, sent),
            VlanFsm::Legacy => legacy::add_reply(&mut self.list, v2, ok),
        }
    }

    /// The reply to DEL_VLAN or DEL_VLAN_V2 that carried `sent`.
    pub(crate) fn on_del_reply(&mut self, ok: bool, sent: &[Vlan]) -> Vec<Notice> {
        self.del_in_flight.clear();
        match self.fsm {
            VlanFsm::Fixed => fixed::del_reply(&mut self.list, ok, sent),
            VlanFsm::Legacy => Vec::new(),
        }
    }

    /// A reset started: the outstanding request, if any, is forgotten.
    pub(crate) fn on_reset(&mut self) {
        self.del_in_flight.clear();
    }

    /// The GET_VF_RESOURCES / GET_OFFLOAD_VLAN_V2_CAPS handler after a
    /// reset: filters go back to ADD (the fixed machine takes them from
    /// `kernel`, the VLANs the kernel has). Returns whether any must be sent.
    pub(crate) fn on_reconfigure(&mut self, kernel: &BTreeSet<Vlan>) -> bool {
        match self.fsm {
            VlanFsm::Fixed => fixed::reconfigure(&mut self.list, kernel),
            VlanFsm::Legacy => legacy::reconfigure(&mut self.list),
        }
    }
}
