//! How an [`Adapter`](super::Adapter) is built: which VLAN state machine it
//! runs, what it asks the PF for, and its timers.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use virtchnl::{MacAddr, VfCapFlags};

/// Which VLAN filter state machine the adapter runs.
///
/// Both are described, with their state diagrams, in the
/// [module docs](super#the-two-vlan-filter-state-machines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VlanFsm {
    /// The corrected design (iavf after "iavf: stop removing VLAN filters from
    /// PF on interface down" and the three patches around it): ADD → ADDING →
    /// ACTIVE, REMOVE → REMOVING → freed once the PF confirms, filters kept on
    /// the PF across down/up.
    #[default]
    Fixed,
    /// The design before that fix: IS_NEW with no V1 completion, DISABLE and
    /// INACTIVE on down with a DEL to the PF and a re-add on up, and filters
    /// freed as soon as their DEL is sent.
    Legacy,
}

impl VlanFsm {
    /// The name used on command lines and in status output.
    pub fn name(self) -> &'static str {
        match self {
            VlanFsm::Fixed => "fixed",
            VlanFsm::Legacy => "legacy",
        }
    }
}

impl fmt::Display for VlanFsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`VlanFsm`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown VLAN state machine {0:?}; expected `fixed` or `legacy`")]
pub struct UnknownVlanFsm(pub String);

impl FromStr for VlanFsm {
    type Err = UnknownVlanFsm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fixed" => Ok(VlanFsm::Fixed),
            "legacy" => Ok(VlanFsm::Legacy),
            _ => Err(UnknownVlanFsm(s.to_owned())),
        }
    }
}

/// The adapter's configuration. [`Config::default`] is what the guest driver
/// uses; tests change single fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The VLAN filter state machine.
    pub vlan_fsm: VlanFsm,
    /// Capabilities asked for in GET_VF_RESOURCES; the PF grants a subset.
    pub caps: VfCapFlags,
    /// How long a request may wait for its reply before the adapter gives up
    /// on it (iavf-like: log, forget the request, then retry during
    /// initialisation or reset the VF once configured).
    pub reply_timeout: Duration,
    /// How long to wait for the transport to report the device back after a
    /// reset before trying to initialise anyway (iavf polls VFGEN_RSTAT for
    /// about 20 s).
    pub reset_timeout: Duration,
    /// Delay before a failed initialisation starts again (iavf: 1 s).
    pub init_retry: Duration,
    /// Failed initialisations before the adapter gives up (`IAVF_AQ_MAX_ERR`).
    pub init_max_failures: u32,
    /// The MAC to use when the PF reports none. iavf draws a random one; the
    /// core takes it from here so that runs are reproducible.
    pub fallback_mac: MacAddr,
}

/// What the adapter asks the PF for: L2, both VLAN flavours (the PF grants at
/// most one) and link speed in Mbps.
pub const DEFAULT_CAPS: VfCapFlags = VfCapFlags(
    VfCapFlags::L2.0 | VfCapFlags::VLAN.0 | VfCapFlags::VLAN_V2.0 | VfCapFlags::ADV_LINK_SPEED.0,
);

impl Default for Config {
    fn default() -> Self {
        Config {
            vlan_fsm: VlanFsm::Fixed,
            caps: DEFAULT_CAPS,
            reply_timeout: Duration::from_secs(5),
            reset_timeout: Duration::from_secs(20),
            init_retry: Duration::from_secs(1),
            init_max_failures: 20,
            fallback_mac: MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]),
        }
    }
}

impl Config {
    /// The default configuration with another VLAN state machine.
    pub fn with_fsm(vlan_fsm: VlanFsm) -> Self {
        Config {
            vlan_fsm,
            ..Config::default()
        }
    }
}
