//! `aq_required`: work the watchdog still has to send to the PF.

use std::fmt;

/// A set of pending-work flags, iavf's `adapter->aq_required`.
///
/// Only the flags for operations this core models exist; their names are
/// iavf's without the `IAVF_FLAG_AQ_` prefix.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AqFlags(u16);

impl AqFlags {
    pub(crate) const DISABLE_QUEUES: AqFlags = AqFlags(1 << 0);
    pub(crate) const ADD_MAC_FILTER: AqFlags = AqFlags(1 << 1);
    pub(crate) const ADD_VLAN_FILTER: AqFlags = AqFlags(1 << 2);
    pub(crate) const DEL_MAC_FILTER: AqFlags = AqFlags(1 << 3);
    pub(crate) const DEL_VLAN_FILTER: AqFlags = AqFlags(1 << 4);
    pub(crate) const ENABLE_QUEUES: AqFlags = AqFlags(1 << 5);
    pub(crate) const CONFIGURE_PROMISC_MODE: AqFlags = AqFlags(1 << 6);

    /// The order in which the watchdog serves the flags: iavf_process_aq_command's
    /// order restricted to these (GET_CONFIG and GET_OFFLOAD_VLAN_V2_CAPS, which
    /// come first in iavf, are the initialisation steps here).
    pub(crate) const ORDER: [(AqFlags, &'static str); 7] = [
        (AqFlags::DISABLE_QUEUES, "DISABLE_QUEUES"),
        (AqFlags::ADD_MAC_FILTER, "ADD_MAC_FILTER"),
        (AqFlags::ADD_VLAN_FILTER, "ADD_VLAN_FILTER"),
        (AqFlags::DEL_MAC_FILTER, "DEL_MAC_FILTER"),
        (AqFlags::DEL_VLAN_FILTER, "DEL_VLAN_FILTER"),
        (AqFlags::ENABLE_QUEUES, "ENABLE_QUEUES"),
        (AqFlags::CONFIGURE_PROMISC_MODE, "CONFIGURE_PROMISC_MODE"),
    ];

    pub(crate) const fn empty() -> Self {
        AqFlags(0)
    }

    pub(crate) fn bits(self) -> u16 {
        self.0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn contains(self, other: AqFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn insert(&mut self, other: AqFlags) {
        self.0 |= other.0;
    }

    pub(crate) fn remove(&mut self, other: AqFlags) {
        self.0 &= !other.0;
    }

    /// Names of the set flags, in serving order.
    pub(crate) fn names(self) -> Vec<&'static str> {
        Self::ORDER
            .iter()
            .filter(|(f, _)| self.contains(*f))
            .map(|(_, n)| *n)
            .collect()
    }
}

impl std::ops::BitOr for AqFlags {
    type Output = AqFlags;

    fn bitor(self, rhs: AqFlags) -> AqFlags {
        AqFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for AqFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AqFlags({})", self.names().join(" | "))
    }
}
