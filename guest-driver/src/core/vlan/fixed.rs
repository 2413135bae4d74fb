//! The fixed VLAN filter machine: iavf with the four v7.1 VLAN patches
//! ("rename IAVF_VLAN_IS_NEW to IAVF_VLAN_ADDING", "stop removing VLAN
//! filters from PF on interface down", "wait for PF confirmation before
//! removing VLAN filters", "harden VLAN filter state machine race handling").
//!
//! | From                | Input        | To                                          |
//! |---------------------|--------------|---------------------------------------------|
//! | (none)              | user add     | ADD                                         |
//! | ADD                 | user del     | freed (never sent)                          |
//! | ADD                 | ADD sent     | ADDING                                      |
//! | ADDING              | PF success   | ACTIVE                                      |
//! | ADDING              | PF error     | freed                                       |
//! | ADDING, ACTIVE      | user del     | REMOVE                                      |
//! | REMOVE              | user add     | ACTIVE (the DEL was not sent: cancelled)    |
//! | REMOVE              | DEL sent     | REMOVING                                    |
//! | REMOVING            | PF success   | freed                                       |
//! | REMOVING            | PF error     | ACTIVE                                      |
//! | REMOVING            | user add     | ADD (sent once the DEL has completed)       |
//! | that ADD            | user del     | REMOVING again, while the DEL is out (H5)   |
//! | REMOVING            | user del     | REMOVING (no second DEL)                    |
//! | any                 | down, up     | unchanged: filters stay on the PF           |
//! | any                 | reset        | the kernel's VLANs, all ADD (H4)            |
//!
//! Where upstream leaves a window open, this machine closes it and says so
//! (H1-H5; the random interleaving test found H5):
//!
//! - **V1 errors** (H1): upstream has no reject handler for ADD_VLAN (V1), so
//!   a refused V1 filter stays ADDING for ever; here both flavours free it.
//! - **Changes while an ADD is in flight** (H2): a filter deleted (ADDING →
//!   REMOVE) and perhaps re-added (REMOVE → ACTIVE, "DEL not sent yet,
//!   cancel it") while its ADD is in flight is, upstream, left REMOVE or
//!   ACTIVE when the PF refuses the ADD, so the driver believes in a filter
//!   the PF never had. Here a refused ADD frees every filter it carried that
//!   has not been handed to a DEL.
//! - **Re-add while a DEL is in flight** (H3): REMOVING → ADD queues an ADD
//!   for after the DEL. If the PF refuses the DEL, the filter is still on the
//!   PF, so it goes straight back to ACTIVE instead of being added again.
//! - **Reset** (H4): upstream sets every filter in its list to ADD after a
//!   reset. That resurrects filters the kernel deleted whose DEL was not
//!   sent yet (REMOVE), was in flight (REMOVING), or was refused by a PF
//!   already resetting (back to ACTIVE), and it forgets VLANs whose ADD the
//!   resetting PF refused. Here a reset rebuilds the list from the VLANs the
//!   kernel has, all in ADD: the reset emptied the PF, so this re-adds
//!   exactly what is wanted.
//! - **Deleted again while its DEL is in flight** (H5): a REMOVING filter
//!   the kernel re-adds goes to ADD, and upstream frees an ADD filter at
//!   once when the kernel deletes it ("never sent"). But this one is still
//!   on the PF with a DEL on its way: if the PF refuses that DEL, the filter
//!   stays in the PF with no driver entry, the leak the series set out to
//!   fix. Here it goes back to REMOVING and the DEL's reply settles it.

use std::collections::BTreeSet;

use super::{List, Notice, Vlan, VlanState};
use crate::core::flags::AqFlags;
use crate::core::io::FilterOp;

use VlanState::{Active, Add, Adding, Remove, Removing};

/// iavf_add_vlan.
pub(crate) fn add_vlan(list: &mut List, vlan: Vlan) -> AqFlags {
    match list.get(&vlan).copied() {
        None => {
            list.insert(vlan, Add);
            AqFlags::ADD_VLAN_FILTER
        }
        // DEL not yet sent to the PF: cancel it.
        Some(Remove) => {
            list.insert(vlan, Active);
            AqFlags::empty()
        }
        // DEL already sent: add again once it completes (one request at a time).
        Some(Removing) => {
            list.insert(vlan, Add);
            AqFlags::ADD_VLAN_FILTER
        }
        Some(_) => AqFlags::empty(),
    }
}

/// iavf_del_vlan. `del_in_flight` is what the outstanding DEL carries.
pub(crate) fn del_vlan(list: &mut List, vlan: Vlan, del_in_flight: &BTreeSet<Vlan>) -> AqFlags {
    match list.get(&vlan).copied() {
        None => AqFlags::empty(),
        // H5: re-added while its DEL is in flight: the DEL settles it.
        Some(Add) if del_in_flight.contains(&vlan) => {
            list.insert(vlan, Removing);
            AqFlags::empty()
        }
        // Never sent: forget it.
        Some(Add) => {
            list.remove(&vlan);
            AqFlags::empty()
        }
        // DEL already sent; its completion frees the filter.
        Some(Removing) => AqFlags::empty(),
        Some(_) => {
            list.insert(vlan, Remove);
            AqFlags::DEL_VLAN_FILTER
        }
    }
}

/// iavf_add_vlans: ADD → ADDING.
pub(crate) fn add_vlans(list: &mut List, max: usize) -> Vec<Vlan> {
    let mut sent = Vec::new();
    for (vlan, state) in list.iter_mut() {
        if sent.len() == max {
            break;
        }
        if *state == Add {
            *state = Adding;
            sent.push(*vlan);
        }
    }
    sent
}

/// iavf_del_vlans: REMOVE → REMOVING, or freed at once if the PF allows no
/// VLAN filtering (then nothing is sent).
pub(crate) fn del_vlans(list: &mut List, max: usize, filtering_allowed: bool) -> Vec<Vlan> {
    if !filtering_allowed {
        list.retain(|_, s| *s != Remove);
        return Vec::new();
    }
    let mut sent = Vec::new();
    for (vlan, state) in list.iter_mut() {
        if sent.len() == max {
            break;
        }
        if *state == Remove {
            *state = Removing;
            sent.push(*vlan);
        }
    }
    sent
}

/// The ADD_VLAN / ADD_VLAN_V2 completion (both flavours, H1).
pub(crate) fn add_reply(list: &mut List, ok: bool, sent: &[Vlan]) -> Vec<Notice> {
    let mut notices = Vec::new();
    if ok {
        for (vlan, state) in list.iter_mut() {
            if *state == Adding {
                *state = Active;
                notices.push(Notice::Committed(*vlan));
            }
        }
        return notices;
    }
    // iavf_vlan_add_reject, plus H2 for filters changed while in flight.
    list.retain(|vlan, state| match *state {
        Adding => {
            notices.push(Notice::Rejected(*vlan, FilterOp::Add));
            false
        }
        Active if sent.contains(vlan) => {
            notices.push(Notice::Rejected(*vlan, FilterOp::Add));
            false
        }
        Remove if sent.contains(vlan) => false,
        _ => true,
    });
    notices
}

/// The DEL_VLAN / DEL_VLAN_V2 completion.
pub(crate) fn del_reply(list: &mut List, ok: bool, sent: &[Vlan]) -> Vec<Notice> {
    let mut notices = Vec::new();
    if ok {
        list.retain(|vlan, state| {
            if *state == Removing {
                notices.push(Notice::Removed(*vlan));
                false
            } else {
                true
            }
        });
        return notices;
    }
    for (vlan, state) in list.iter_mut() {
        match *state {
            // The PF rejected the DEL: keep the filter.
            Removing => {
                *state = Active;
                notices.push(Notice::Rejected(*vlan, FilterOp::Remove));
            }
            // H3: re-added during the DEL, and still on the PF.
            Add if sent.contains(vlan) => *state = Active,
            _ => {}
        }
    }
    notices
}

/// After a reset (H4): the list becomes the kernel's VLANs, all in ADD.
/// Returns whether there is anything to add.
pub(crate) fn reconfigure(list: &mut List, kernel: &BTreeSet<Vlan>) -> bool {
    list.clear();
    list.extend(kernel.iter().map(|v| (*v, Add)));
    !list.is_empty()
}
