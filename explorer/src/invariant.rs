//! The invariants, and the names of what breaks them.
//!
//! An [`Invariant`] is a rule over one state; its name is shared with the
//! VM's consistency check, so a replayed trace fails there under the same
//! name. A [`Kind`] says which failure of the iavf report (or which other
//! failure) a violation is, from the state and the little history the
//! [`Notes`](crate::world::Notes) keep.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use vfrig_guest_driver::core::{VlanFsm, VlanState};

use crate::world::{Removal, VlanOps, World};

/// A rule every state (or every state at rest) must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    /// At rest, every driver filter is settled: nothing is in a state that
    /// waits for a request or reply that will never come.
    NoStuckFilter,
    /// No filter the driver freed (or never had) is still on the PF.
    NoUntrackedPfFilter,
    /// The driver's view of the PF's filters is the PF's table.
    DriverMatchesPf,
    /// Every filter the driver holds is a VLAN the kernel has (or one whose
    /// removal the PF refused, which the driver reported).
    DriverMatchesIntent,
    /// The PF's table is the kernel's intent, except what the PF refused
    /// and the driver reported.
    PfMatchesIntent,
    /// While the interface is up with its queues enabled and VLAN
    /// anti-spoof on, no VLAN the PF had for the kernel is missing (the
    /// anti-spoof drop window). Checked in every state.
    NoSpoofDropWindow,
    /// Filter counts stay within the PF's limit, in the PF and the driver.
    /// Checked in every state.
    CountsWithinLimits,
}

impl Invariant {
    /// Every invariant, in the order they are checked.
    pub const ALL: [Invariant; 7] = [
        Invariant::NoStuckFilter,
        Invariant::NoUntrackedPfFilter,
        Invariant::DriverMatchesPf,
        Invariant::DriverMatchesIntent,
        Invariant::PfMatchesIntent,
        Invariant::NoSpoofDropWindow,
        Invariant::CountsWithinLimits,
    ];

    /// The name, as reports and the VM's consistency check print it.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::NoStuckFilter => "no-stuck-filter",
            Invariant::NoUntrackedPfFilter => "no-untracked-pf-filter",
            Invariant::DriverMatchesPf => "driver-matches-pf",
            Invariant::DriverMatchesIntent => "driver-matches-intent",
            Invariant::PfMatchesIntent => "pf-matches-intent",
            Invariant::NoSpoofDropWindow => "no-spoof-drop-window",
            Invariant::CountsWithinLimits => "counts-within-limits",
        }
    }

    /// Whether the VM's consistency check (a `consistent` step, at rest)
    /// checks it too: the transient ones need the explorer's every-state view.
    pub fn checked_in_vm(self) -> bool {
        !matches!(
            self,
            Invariant::NoSpoofDropWindow | Invariant::CountsWithinLimits
        )
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a violation is, in the bug report's words where it has some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A VLAN the kernel kept is missing on the PF after the interface went
    /// down and up (report, problem 1).
    LostAcrossDownUp,
    /// iavf_down's DISABLE overwrote a concurrent REMOVE: a VLAN the user
    /// deleted is kept, and re-added on up (report, problem 1).
    DisableOverwroteRemove,
    /// A DEL was freed as soon as it was sent; the PF refused it and kept
    /// the filter, which nothing tracks any more (report, problem 2).
    DelFreedThenRejected,
    /// ADD_VLAN (V1) has no completion: its filters stay IS_NEW for ever
    /// (report, problem 3).
    V1AddStuck,
    /// A netns move's implicit VLAN deletions raced with its down: a filter
    /// stays counted with no netdev, and comes back on up (report).
    NetnsMoveLeak,
    /// The anti-spoof drop window: a VLAN missing on the PF while traffic
    /// flows (report, problem 1 with spoof checking).
    SpoofDropWindow,
    /// A filter stuck in a transitional state, otherwise.
    StuckFilter,
    /// A filter on the PF nothing tracks, otherwise.
    UntrackedFilter,
    /// The driver's view and the PF's table differ, otherwise.
    DriverPfMismatch,
    /// The driver or the PF holds a VLAN the kernel removed, otherwise.
    VlanLeaked,
    /// A VLAN the kernel has is missing on the PF, otherwise.
    VlanLost,
    /// A filter count past the PF's limit.
    OverLimit,
}

impl Kind {
    /// The five failures of the iavf report that the explorer must find on
    /// the legacy machine.
    pub const REPORTED: [Kind; 5] = [
        Kind::LostAcrossDownUp,
        Kind::DisableOverwroteRemove,
        Kind::DelFreedThenRejected,
        Kind::V1AddStuck,
        Kind::NetnsMoveLeak,
    ];

    /// The name, as reports print it and scenario files are named.
    pub fn name(self) -> &'static str {
        match self {
            Kind::LostAcrossDownUp => "lost-across-down-up",
            Kind::DisableOverwroteRemove => "disable-overwrote-remove",
            Kind::DelFreedThenRejected => "del-freed-then-rejected",
            Kind::V1AddStuck => "v1-add-stuck",
            Kind::NetnsMoveLeak => "netns-move-leak",
            Kind::SpoofDropWindow => "spoof-drop-window",
            Kind::StuckFilter => "stuck-filter",
            Kind::UntrackedFilter => "untracked-filter",
            Kind::DriverPfMismatch => "driver-pf-mismatch",
            Kind::VlanLeaked => "vlan-leaked",
            Kind::VlanLost => "vlan-lost",
            Kind::OverLimit => "over-limit",
        }
    }

    /// One sentence on what it is.
    pub fn about(self) -> &'static str {
        match self {
            Kind::LostAcrossDownUp => "a VLAN the kernel kept is missing on the PF after the interface went down and up (iavf report, problem 1)",
            Kind::DisableOverwroteRemove => "iavf_down's DISABLE overwrote a concurrent REMOVE: a VLAN the user deleted stays in the driver, to be re-added on up (iavf report, problem 1)",
            Kind::DelFreedThenRejected => "a DEL was freed as soon as it was sent; the PF refused it and kept a filter nothing tracks (iavf report, problem 2)",
            Kind::V1AddStuck => "ADD_VLAN (V1) has no completion handler: the filter stays IS_NEW for ever (iavf report, problem 3)",
            Kind::NetnsMoveLeak => "a netns move's implicit VLAN deletions raced with its down: the filter stays counted with no netdev (iavf report)",
            Kind::SpoofDropWindow => "a VLAN is missing on the PF while traffic flows with VLAN anti-spoof on: its frames are dropped (iavf report, problem 1)",
            Kind::StuckFilter => "a filter stuck in a transitional state",
            Kind::UntrackedFilter => "a filter on the PF that nothing tracks",
            Kind::DriverPfMismatch => "the driver's view of the PF differs from the PF's table",
            Kind::VlanLeaked => "the driver or the PF holds a VLAN the kernel removed",
            Kind::VlanLost => "a VLAN the kernel has is missing on the PF",
            Kind::OverLimit => "a filter count past the PF's limit",
        }
    }

    /// Parses [`Kind::name`].
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Every kind.
    pub const ALL: [Kind; 12] = [
        Kind::LostAcrossDownUp,
        Kind::DisableOverwroteRemove,
        Kind::DelFreedThenRejected,
        Kind::V1AddStuck,
        Kind::NetnsMoveLeak,
        Kind::SpoofDropWindow,
        Kind::StuckFilter,
        Kind::UntrackedFilter,
        Kind::DriverPfMismatch,
        Kind::VlanLeaked,
        Kind::VlanLost,
        Kind::OverLimit,
    ];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken invariant in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The rule.
    pub invariant: Invariant,
    /// What it is.
    pub kind: Kind,
    /// The VLAN it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vid: Option<u16>,
    /// In words.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.invariant, self.kind, self.detail)
    }
}

/// Every violation in `w`, in [`Invariant::ALL`] order. The rest-state
/// invariants are checked only when `w` is at rest.
pub fn check(w: &World, vlan_ops: VlanOps) -> Vec<Violation> {
    let mut out = Vec::new();
    let table = w.table();
    let pf: BTreeSet<u16> = table.vlans.iter().copied().collect();
    let driver = w.driver_vlans();
    let kernel = &w.kernel;
    let notes = &w.notes;
    let mut push = |invariant, kind, vid: Option<u16>, detail: String| {
        out.push(Violation {
            invariant,
            kind,
            vid,
            detail,
        })
    };
    let leak_kind = |vid: u16, otherwise: Kind| match notes.removed.get(&vid) {
        Some(Removal::Netns) => Kind::NetnsMoveLeak,
        Some(Removal::User { down_after: true }) => Kind::DisableOverwroteRemove,
        _ => otherwise,
    };

    if w.is_quiescent() {
        for (&vid, &state) in &driver {
            let settled = state == VlanState::Active || state == VlanState::Inactive;
            if !settled {
                let kind = if state == VlanState::IsNew && vlan_ops == VlanOps::V1 {
                    Kind::V1AddStuck
                } else {
                    Kind::StuckFilter
                };
                push(
                    Invariant::NoStuckFilter,
                    kind,
                    Some(vid),
                    format!(
                        "VLAN {vid} stuck in {state}: nothing is outstanding and nothing pending"
                    ),
                );
            }
        }
        for &vid in pf.iter().filter(|v| !driver.contains_key(v)) {
            let kind = if notes.del_refused_by_pf.contains(&vid) && w.fsm() == VlanFsm::Legacy {
                Kind::DelFreedThenRejected
            } else {
                Kind::UntrackedFilter
            };
            push(
                Invariant::NoUntrackedPfFilter,
                kind,
                Some(vid),
                format!(
                    "VLAN {vid} leaked: the PF has a filter for it that the driver does not track"
                ),
            );
        }
        for (&vid, &state) in &driver {
            let believed = state == VlanState::Active;
            if believed && !pf.contains(&vid) {
                push(
                    Invariant::DriverMatchesPf,
                    Kind::DriverPfMismatch,
                    Some(vid),
                    format!(
                        "VLAN {vid} lost: the driver has it {state} but the PF has no such filter"
                    ),
                );
            }
            if state == VlanState::Inactive && pf.contains(&vid) {
                push(
                    Invariant::DriverMatchesPf,
                    Kind::DriverPfMismatch,
                    Some(vid),
                    format!("VLAN {vid}: the driver holds it INACTIVE but the PF has it"),
                );
            }
        }
        for (&vid, &state) in &driver {
            if !kernel.vlans.contains(&vid) && !notes.refused_del.contains(&vid) {
                push(
                    Invariant::DriverMatchesIntent,
                    leak_kind(vid, Kind::VlanLeaked),
                    Some(vid),
                    format!(
                        "VLAN {vid} leaked in the driver: it holds the filter {state}, but the \
                         kernel has no such VLAN"
                    ),
                );
            }
        }
        for &vid in kernel.vlans.difference(&pf) {
            let excused = notes.refused_add.contains(&vid)
                || (!kernel.up && driver.get(&vid) == Some(&VlanState::Inactive));
            if !excused {
                let kind = if notes.cycled.contains(&vid) {
                    Kind::LostAcrossDownUp
                } else {
                    Kind::VlanLost
                };
                push(
                    Invariant::PfMatchesIntent,
                    kind,
                    Some(vid),
                    format!(
                        "VLAN {vid} lost: the kernel has it{}, the PF has no filter for it",
                        if kernel.up {
                            " and the interface is up"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
        for &vid in pf.difference(&kernel.vlans) {
            if !notes.refused_del.contains(&vid) {
                push(
                    Invariant::PfMatchesIntent,
                    leak_kind(vid, Kind::VlanLeaked),
                    Some(vid),
                    format!("VLAN {vid} leaked: the PF has a filter for it, the kernel has no such VLAN"),
                );
            }
        }
    }

    let flowing = kernel.up && table.queues.rx != 0 && table.antispoof.vlan;
    if flowing {
        for &vid in notes.established.intersection(&kernel.vlans) {
            if !pf.contains(&vid) {
                push(
                    Invariant::NoSpoofDropWindow,
                    Kind::SpoofDropWindow,
                    Some(vid),
                    format!(
                        "VLAN {vid} is missing on the PF while the queues are enabled with VLAN \
                         anti-spoof on: its tagged frames are dropped"
                    ),
                );
            }
        }
    }
    let limit = usize::from(table.vlan_limit);
    if pf.len() > limit || driver.len() > limit {
        push(
            Invariant::CountsWithinLimits,
            Kind::OverLimit,
            None,
            format!(
                "{} VLAN filters on the PF, {} in the driver; the limit is {limit}",
                pf.len(),
                driver.len()
            ),
        );
    }
    out
}
