//! The mailbox transcript: every request, its reply and what a fault did to it.

use serde::Serialize;
use virtchnl::{Request, VlanFilterListV2};

use crate::pf::VfId;

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Waiting: held, delayed, or not yet answered.
    Pending,
    /// Answered with this status.
    Replied(String),
    /// RESET_VF: never answered.
    NoReply,
    /// Lost by a `drop` fault.
    Dropped,
    /// Discarded unanswered because the VF was reset or disconnected.
    Discarded,
}

/// One request in the transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Order of arrival, from 0 since the PF started.
    pub seq: u64,
    /// The VF that sent it.
    pub vf: VfId,
    /// Opcode name.
    pub op: String,
    /// The VF's cookie.
    pub cookie: u32,
    /// A short description of the payload.
    pub summary: String,
    /// What became of it.
    pub outcome: Outcome,
    /// The fault that applied, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Microseconds since the PF started, when the request arrived.
    pub at_us: u64,
    /// Microseconds since the PF started, when the reply was queued for the VF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replied_at_us: Option<u64>,
}

/// A one-line description of a request's payload, for people reading a transcript.
pub fn summarize(req: &Request) -> String {
    fn v2(list: &VlanFilterListV2) -> String {
        let tags: Vec<String> = list
            .filters
            .iter()
            .flat_map(|f| [("outer", f.outer), ("inner", f.inner)])
            .filter(|(_, t)| t.tci != 0 || t.tpid != 0)
            .map(|(side, t)| format!("{side} {:#06x}/{}", t.tpid, t.vid()))
            .collect();
        format!("[{}]", tags.join(", "))
    }
    match req {
        Request::Version(v) => format!("{}.{}", v.major, v.minor),
        Request::GetVfResources { caps: Some(c) } => format!("caps {c:?}"),
        Request::GetVfResources { caps: None } => "no caps (1.0)".to_owned(),
        Request::EnableQueues(q) | Request::DisableQueues(q) => {
            format!("rx {:#x} tx {:#x}", q.rx_queues, q.tx_queues)
        }
        Request::AddEthAddr(l) | Request::DelEthAddr(l) => {
            let addrs: Vec<String> = l
                .addrs
                .iter()
                .map(|a| format!("{} {}", a.addr, a.kind))
                .collect();
            format!("[{}]", addrs.join(", "))
        }
        Request::AddVlan(l) | Request::DelVlan(l) => format!("{:?}", l.vids),
        Request::AddVlanV2(l) | Request::DelVlanV2(l) => v2(l),
        Request::ConfigPromiscuousMode(p) => format!("{:?}", p.flags),
        Request::GetStats(_)
        | Request::ResetVf
        | Request::EnableVlanStripping
        | Request::DisableVlanStripping
        | Request::GetOffloadVlanV2Caps => String::new(),
    }
}
