//! Fault rules: what the PF does to a VF's mailbox requests instead of
//! answering them at once.
//!
//! A rule matches a VF (or any) and an opcode (or any) and fires either for
//! the next `count` matching requests or, with a seeded generator, with a
//! probability. The first rule that matches and fires decides; requests no
//! rule fires for are answered normally.

use serde::{Deserialize, Serialize};
use virtchnl::{VirtchnlOp, VirtchnlStatus};

use crate::pf::VfId;

/// What happens to a request a rule fires for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum FaultAction {
    /// The PF refuses the request without applying it and replies `status`.
    Reject {
        /// The status of the reply, ERR_PARAM when not given.
        #[serde(with = "status_name", default = "default_reject_status")]
        status: VirtchnlStatus,
    },
    /// The request is lost: the PF never sees it and nothing is replied.
    Drop,
    /// The PF handles the request `delay_ms` later (its reply comes then).
    Delay {
        /// Milliseconds.
        delay_ms: u64,
    },
    /// The PF holds the request unhandled until it is released.
    Hold,
    /// The PF handles the request at once but its reply is sent after the
    /// next message the PF sends to that VF (an event or another reply).
    Reorder,
}

fn default_reject_status() -> VirtchnlStatus {
    VirtchnlStatus::ErrParam
}

/// When a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// For the next `n` matching requests, then the rule is spent.
    Count(u32),
    /// For each matching request with this probability (0.0..=1.0), from the
    /// engine's seeded generator, until the rule is cleared.
    Probability(f64),
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// The VF it applies to; `None` for every VF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vf: Option<VfId>,
    /// The opcode it applies to; `None` for every opcode.
    #[serde(with = "op_name", skip_serializing_if = "Option::is_none", default)]
    pub op: Option<VirtchnlOp>,
    /// What it does.
    #[serde(flatten)]
    pub action: FaultAction,
    /// When it fires.
    pub trigger: Trigger,
    /// How many requests it has fired for so far.
    #[serde(default)]
    pub fired: u32,
}

impl FaultRule {
    /// Whether the rule applies to a request from `vf` with opcode `op`.
    pub fn matches(&self, vf: VfId, op: VirtchnlOp) -> bool {
        self.vf.is_none_or(|v| v == vf) && self.op.is_none_or(|o| o == op)
    }

    /// Whether a count rule has fired as often as it may.
    pub fn spent(&self) -> bool {
        matches!(self.trigger, Trigger::Count(n) if self.fired >= n)
    }
}

/// Serialises an opcode as its kernel name (`"DEL_VLAN"`).
mod op_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use virtchnl::VirtchnlOp;

    pub fn serialize<S: Serializer>(op: &Option<VirtchnlOp>, s: S) -> Result<S::Ok, S::Error> {
        match op {
            Some(op) => s.collect_str(op),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<VirtchnlOp>, D::Error> {
        let name = Option::<String>::deserialize(d)?;
        match name.as_deref() {
            None | Some("any") | Some("ANY") => Ok(None),
            Some(name) => name.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// Serialises a status as its kernel name (`"ERR_PARAM"`).
pub(crate) mod status_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use virtchnl::VirtchnlStatus;

    pub fn serialize<S: Serializer>(status: &VirtchnlStatus, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(status)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VirtchnlStatus, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}
