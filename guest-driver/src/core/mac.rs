//! The MAC filter list, as iavf keeps it (`struct iavf_mac_filter`).
//!
//! iavf tracks MAC filters with flags (`add`, `is_new_mac`, `remove`); the
//! combinations it uses are the four [`MacState`]s. Unlike VLAN filters, a MAC
//! filter is freed as soon as its DEL is sent (upstream iavf still does this),
//! and on interface down only the netdev's own address is removed; it is
//! re-read from the PF and re-added on up.

use std::collections::BTreeMap;

use serde::Serialize;
use virtchnl::MacAddr;

/// Where a MAC filter is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MacState {
    /// `add`: to be sent in ADD_ETH_ADDR.
    Add,
    /// `is_new_mac` and not `add`: sent, waiting for the PF.
    Adding,
    /// Accepted by the PF.
    Active,
    /// `remove`: to be sent in DEL_ETH_ADDR, then freed.
    Remove,
}

/// One MAC filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MacFilter {
    /// `is_primary`: the netdev's own address, sent with type PRIMARY.
    pub(crate) primary: bool,
    pub(crate) state: MacState,
}

/// The adapter's MAC filters.
#[derive(Debug, Clone, Default)]
pub(crate) struct MacFilters {
    list: BTreeMap<MacAddr, MacFilter>,
}

impl MacFilters {
    pub(crate) fn iter(&self) -> impl Iterator<Item = (MacAddr, MacFilter)> + '_ {
        self.list.iter().map(|(m, f)| (*m, *f))
    }

    /// iavf_add_filter: a new filter is queued; a filter waiting for its DEL
    /// is kept instead. Returns whether ADD_MAC_FILTER must be scheduled.
    pub(crate) fn add(&mut self, mac: MacAddr, primary: bool) -> bool {
        match self.list.get_mut(&mac) {
            Some(f) => {
                f.primary |= primary;
                if f.state == MacState::Remove {
                    f.state = MacState::Active;
                }
                false
            }
            None => {
                self.list.insert(
                    mac,
                    MacFilter {
                        primary,
                        state: MacState::Add,
                    },
                );
                true
            }
        }
    }

    /// iavf_del_filter: a filter not sent yet is dropped, any other is
    /// marked for DEL. Returns whether DEL_MAC_FILTER must be scheduled.
    pub(crate) fn del(&mut self, mac: MacAddr) -> bool {
        match self.list.get(&mac).map(|f| f.state) {
            None => false,
            Some(MacState::Add) => {
                self.list.remove(&mac);
                false
            }
            Some(_) => {
                if let Some(f) = self.list.get_mut(&mac) {
                    f.state = MacState::Remove;
                    f.primary = false;
                }
                true
            }
        }
    }

    /// Like [`MacFilters::del`], but the filter keeps its PRIMARY type (iavf_down).
    pub(crate) fn del_keeping_type(&mut self, mac: MacAddr) -> bool {
        let primary = self.list.get(&mac).is_some_and(|f| f.primary);
        let scheduled = self.del(mac);
        if let Some(f) = self.list.get_mut(&mac) {
            f.primary = primary;
        }
        scheduled
    }

    pub(crate) fn has(&self, state: MacState) -> bool {
        self.list.values().any(|f| f.state == state)
    }

    /// iavf_add_ether_addrs: up to `max` filters go from ADD to ADDING.
    pub(crate) fn take_add(&mut self, max: usize) -> Vec<(MacAddr, bool)> {
        let mut out = Vec::new();
        for (mac, f) in self.list.iter_mut() {
            if out.len() == max {
                break;
            }
            if f.state == MacState::Add {
                f.state = MacState::Adding;
                out.push((*mac, f.primary));
            }
        }
        out
    }

    /// iavf_del_ether_addrs: up to `max` filters marked REMOVE are sent and freed.
    pub(crate) fn take_del(&mut self, max: usize) -> Vec<(MacAddr, bool)> {
        let out: Vec<(MacAddr, bool)> = self
            .list
            .iter()
            .filter(|(_, f)| f.state == MacState::Remove)
            .take(max)
            .map(|(m, f)| (*m, f.primary))
            .collect();
        for (mac, _) in &out {
            self.list.remove(mac);
        }
        out
    }

    /// The ADD_ETH_ADDR reply. Success: iavf_mac_add_ok. Failure:
    /// iavf_mac_add_reject, which frees every filter still waiting and
    /// cancels the removal of `keep` (the address the netdev falls back to).
    /// Returns the refused addresses.
    pub(crate) fn on_add_reply(&mut self, ok: bool, keep: Option<MacAddr>) -> Vec<MacAddr> {
        if ok {
            for f in self.list.values_mut() {
                if f.state == MacState::Adding {
                    f.state = MacState::Active;
                }
            }
            return Vec::new();
        }
        if let Some(f) = keep.and_then(|m| self.list.get_mut(&m)) {
            if f.state == MacState::Remove {
                f.state = MacState::Active;
                f.primary = true;
            }
        }
        let refused: Vec<MacAddr> = self
            .list
            .iter()
            .filter(|(_, f)| f.state == MacState::Adding)
            .map(|(m, _)| *m)
            .collect();
        for mac in &refused {
            self.list.remove(mac);
        }
        refused
    }

    /// At the start of a reset: the primary filter is dropped (the PF may
    /// have changed the address; it is re-read from the resources reply).
    pub(crate) fn on_reset(&mut self) {
        self.list.retain(|_, f| !f.primary);
    }

    /// After the resources reply: every remaining filter is re-added, and
    /// filters marked for removal are dropped (the reset removed them).
    /// Returns whether ADD_MAC_FILTER must be scheduled.
    pub(crate) fn on_reconfigure(&mut self) -> bool {
        self.list.retain(|_, f| f.state != MacState::Remove);
        for f in self.list.values_mut() {
            f.state = MacState::Add;
        }
        !self.list.is_empty()
    }
}
