//! Errors of the device crate.
//!
//! Only the host side (configuration, admin operations) can fail. Anything a
//! VF sends is answered on the mailbox with a virtchnl status, never with an
//! `Err` (see [`crate::pf`]).

use crate::pf::VfId;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong with a host-side request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The VF index is out of range.
    #[error("{vf} does not exist; this PF has {num_vfs} VFs (vf0..vf{last})", last = num_vfs.saturating_sub(1))]
    UnknownVf {
        /// The VF asked for.
        vf: VfId,
        /// How many VFs the PF has.
        num_vfs: u16,
    },
    /// A PF needs at least one VF.
    #[error("a PF needs at least one VF; got {0}")]
    BadVfCount(u16),
    /// A policy was given for a VF the PF does not have.
    #[error("policy given for {count} VFs but the PF has only {num_vfs}")]
    TooManyPolicies {
        /// Policies given.
        count: usize,
        /// VFs configured.
        num_vfs: u16,
    },
    /// A port VLAN id outside 1..=4094.
    #[error("port VLAN {0} is out of range; use 1..=4094, or no port VLAN")]
    BadPortVlan(u16),
    /// An administrative MAC that is not a unicast address.
    #[error("administrative MAC {0} is not a unicast address")]
    BadAdminMac(virtchnl::MacAddr),
}
