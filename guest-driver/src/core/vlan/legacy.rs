//! The legacy VLAN filter machine: iavf's list-based VLAN states as they were
//! before the v7.1 fixes (the exact range of kernels is unconfirmed),
//! reproduced with their flaws, because the rig exists to show that
//! scenarios catch them.
//!
//! | From                | Input        | To                                          |
//! |---------------------|--------------|---------------------------------------------|
//! | (none)              | user add     | ADD                                         |
//! | ADD                 | user del     | freed (never sent)                          |
//! | ADD                 | ADD sent     | IS_NEW                                      |
//! | IS_NEW              | V2 success   | ACTIVE                                      |
//! | IS_NEW              | V2 error     | freed                                       |
//! | IS_NEW              | V1 reply     | IS_NEW (no handler)                         |
//! | any but ADD         | user del     | REMOVE                                      |
//! | REMOVE              | user add     | ACTIVE                                      |
//! | REMOVE              | DEL sent     | freed, before the PF answers                |
//! | any                 | down         | DISABLE                                     |
//! | DISABLE             | DEL sent     | INACTIVE                                    |
//! | INACTIVE            | up           | ADD                                         |
//! | any                 | reset        | ADD                                         |
//!
//! The flaws the bug report names, all kept:
//!
//! - ADD_VLAN (V1) has no success handler: V1 filters stay IS_NEW for ever.
//! - Every filter takes a DEL to the PF on down and an ADD on up; between the
//!   two the PF has none of them (with spoof checking, tagged traffic is
//!   dropped until the re-add finishes).
//! - A filter is freed as soon as its DEL is sent: if the PF refuses the
//!   DEL, the filter stays in the PF with no driver entry.
//! - iavf_down overwrites every state with DISABLE, including a concurrent
//!   REMOVE: the DEL then moves the filter to INACTIVE and iavf_open adds it
//!   back, so a VLAN the user removed is restored.

use super::{List, Notice, Vlan, VlanState};
use crate::core::flags::AqFlags;
use crate::core::io::FilterOp;

use VlanState::{Active, Add, Disable, Inactive, IsNew, Remove};

/// iavf_add_vlan: a new filter is queued; REMOVE (DEL not sent yet) goes back to ACTIVE.
pub(crate) fn add_vlan(list: &mut List, vlan: Vlan) -> AqFlags {
    match list.get(&vlan).copied() {
        None => {
            list.insert(vlan, Add);
            AqFlags::ADD_VLAN_FILTER
        }
        Some(Remove) => {
            list.insert(vlan, Active);
            AqFlags::empty()
        }
        Some(_) => AqFlags::empty(),
    }
}

/// iavf_del_vlan: ADD is freed, every other state becomes REMOVE.
pub(crate) fn del_vlan(list: &mut List, vlan: Vlan) -> AqFlags {
    match list.get(&vlan).copied() {
        None => AqFlags::empty(),
        Some(Add) => {
            list.remove(&vlan);
            AqFlags::empty()
        }
        Some(_) => {
            list.insert(vlan, Remove);
            AqFlags::DEL_VLAN_FILTER
        }
    }
}

/// iavf_clear_mac_vlan_filters (VLAN part), from iavf_down: every filter,
/// whatever its state, becomes DISABLE.
pub(crate) fn clear_vlan_filters(list: &mut List) -> AqFlags {
    for state in list.values_mut() {
        *state = Disable;
    }
    if list.is_empty() {
        AqFlags::empty()
    } else {
        AqFlags::DEL_VLAN_FILTER
    }
}

/// iavf_restore_filters, from iavf_open: INACTIVE → ADD.
pub(crate) fn restore_filters(list: &mut List) -> AqFlags {
    for state in list.values_mut() {
        if *state == Inactive {
            *state = Add;
        }
    }
    AqFlags::ADD_VLAN_FILTER
}

/// iavf_add_vlans: ADD → IS_NEW.
pub(crate) fn add_vlans(list: &mut List, max: usize) -> Vec<Vlan> {
    let mut sent = Vec::new();
    for (vlan, state) in list.iter_mut() {
        if sent.len() == max {
            break;
        }
        if *state == Add {
            *state = IsNew;
            sent.push(*vlan);
        }
    }
    sent
}

/// iavf_del_vlans: DISABLE → INACTIVE and REMOVE → freed, as the message is
/// built. Without VLAN filtering nothing is sent and the same happens locally.
pub(crate) fn del_vlans(list: &mut List, max: usize, filtering_allowed: bool) -> Vec<Vlan> {
    if !filtering_allowed {
        list.retain(|_, s| *s != Remove);
        for state in list.values_mut() {
            if *state == Disable {
                *state = Inactive;
            }
        }
        return Vec::new();
    }
    let sent: Vec<Vlan> = list
        .iter()
        .filter(|(_, s)| matches!(s, Disable | Remove))
        .take(max)
        .map(|(v, _)| *v)
        .collect();
    for vlan in &sent {
        match list.get(vlan).copied() {
            Some(Disable) => {
                list.insert(*vlan, Inactive);
            }
            Some(_) => {
                list.remove(vlan);
            }
            None => {}
        }
    }
    sent
}

/// The completion: only ADD_VLAN_V2 is handled (IS_NEW → ACTIVE on success,
/// iavf_vlan_add_reject on error); ADD_VLAN (V1) replies change nothing.
pub(crate) fn add_reply(list: &mut List, v2: bool, ok: bool) -> Vec<Notice> {
    let mut notices = Vec::new();
    if !v2 {
        return notices;
    }
    if ok {
        for (vlan, state) in list.iter_mut() {
            if *state == IsNew {
                *state = Active;
                notices.push(Notice::Committed(*vlan));
            }
        }
    } else {
        list.retain(|vlan, state| {
            if *state == IsNew {
                notices.push(Notice::Rejected(*vlan, FilterOp::Add));
                false
            } else {
                true
            }
        });
    }
    notices
}

/// After a reset, the resources handler sets every filter to ADD.
pub(crate) fn reconfigure(list: &mut List) -> bool {
    for state in list.values_mut() {
        *state = Add;
    }
    !list.is_empty()
}
