//! Typed messages: [`Request`] (VF to PF) and [`PfMessage`] (PF to VF: a
//! [`Reply`] or a [`PfEvent`]).

pub(crate) mod event;
pub(crate) mod mac;
pub(crate) mod promisc;
pub(crate) mod queues;
pub(crate) mod resources;
pub(crate) mod version;
pub(crate) mod vlan;
pub(crate) mod vlan_v2;

use crate::frame::{encode_frame, Frame, FrameHeader, MAX_PAYLOAD};
use crate::wire::check_len;
use crate::{Error, Result, VirtchnlOp, VirtchnlStatus};

use event::PfEvent;
use mac::EtherAddrList;
use promisc::PromiscInfo;
use queues::{EthStats, QueueSelect};
use resources::{VfCapFlags, VfResource};
use version::VersionInfo;
use vlan::VlanFilterList;
use vlan_v2::{VlanCaps, VlanFilterListV2};

use VirtchnlOp as Op;

/// A request from a VF to the PF. Each variant names the opcode it travels with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// `VIRTCHNL_OP_VERSION`: the VF's protocol version.
    Version(VersionInfo),
    /// `VIRTCHNL_OP_RESET_VF`: the VF asks to be reset; no reply.
    ResetVf,
    /// `VIRTCHNL_OP_GET_VF_RESOURCES`: a 1.1 VF sends the capabilities it wants,
    /// a 1.0 VF sends nothing.
    GetVfResources {
        /// Capabilities asked for, or `None` for a 1.0 VF.
        caps: Option<VfCapFlags>,
    },
    /// `VIRTCHNL_OP_ENABLE_QUEUES`.
    EnableQueues(QueueSelect),
    /// `VIRTCHNL_OP_DISABLE_QUEUES`.
    DisableQueues(QueueSelect),
    /// `VIRTCHNL_OP_ADD_ETH_ADDR`.
    AddEthAddr(EtherAddrList),
    /// `VIRTCHNL_OP_DEL_ETH_ADDR`.
    DelEthAddr(EtherAddrList),
    /// `VIRTCHNL_OP_ADD_VLAN` (V1).
    AddVlan(VlanFilterList),
    /// `VIRTCHNL_OP_DEL_VLAN` (V1).
    DelVlan(VlanFilterList),
    /// `VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE`.
    ConfigPromiscuousMode(PromiscInfo),
    /// `VIRTCHNL_OP_GET_STATS` (only `vsi_id` is used).
    GetStats(QueueSelect),
    /// `VIRTCHNL_OP_ENABLE_VLAN_STRIPPING` (V1).
    EnableVlanStripping,
    /// `VIRTCHNL_OP_DISABLE_VLAN_STRIPPING` (V1).
    DisableVlanStripping,
    /// `VIRTCHNL_OP_GET_OFFLOAD_VLAN_V2_CAPS`.
    GetOffloadVlanV2Caps,
    /// `VIRTCHNL_OP_ADD_VLAN_V2`.
    AddVlanV2(VlanFilterListV2),
    /// `VIRTCHNL_OP_DEL_VLAN_V2`.
    DelVlanV2(VlanFilterListV2),
}

impl Request {
    /// The opcode this request travels with.
    pub fn op(&self) -> VirtchnlOp {
        match self {
            Request::Version(_) => Op::Version,
            Request::ResetVf => Op::ResetVf,
            Request::GetVfResources { .. } => Op::GetVfResources,
            Request::EnableQueues(_) => Op::EnableQueues,
            Request::DisableQueues(_) => Op::DisableQueues,
            Request::AddEthAddr(_) => Op::AddEthAddr,
            Request::DelEthAddr(_) => Op::DelEthAddr,
            Request::AddVlan(_) => Op::AddVlan,
            Request::DelVlan(_) => Op::DelVlan,
            Request::ConfigPromiscuousMode(_) => Op::ConfigPromiscuousMode,
            Request::GetStats(_) => Op::GetStats,
            Request::EnableVlanStripping => Op::EnableVlanStripping,
            Request::DisableVlanStripping => Op::DisableVlanStripping,
            Request::GetOffloadVlanV2Caps => Op::GetOffloadVlanV2Caps,
            Request::AddVlanV2(_) => Op::AddVlanV2,
            Request::DelVlanV2(_) => Op::DelVlanV2,
        }
    }

    /// Decodes the payload of a request with opcode `op`.
    ///
    /// Never panics; allocates at most in proportion to `payload`, which must
    /// not exceed [`MAX_PAYLOAD`]. A valid request this crate has no type for
    /// is [`Error::Unsupported`]; EVENT and unassigned opcodes are
    /// [`Error::NotARequest`].
    pub fn decode(op: VirtchnlOp, payload: &[u8]) -> Result<Request> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::PayloadTooLarge {
                op,
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let empty = |req: Request| check_len(op, payload, 0).map(|()| req);
        match op {
            Op::Version => VersionInfo::decode(op, payload).map(Request::Version),
            Op::ResetVf => empty(Request::ResetVf),
            Op::GetVfResources => match payload {
                [] => Ok(Request::GetVfResources { caps: None }),
                [a, b, c, d] => Ok(Request::GetVfResources {
                    caps: Some(VfCapFlags(u32::from_le_bytes([*a, *b, *c, *d]))),
                }),
                _ => Err(Error::WrongLength {
                    op,
                    len: payload.len(),
                    expected: 4,
                }),
            },
            Op::EnableQueues => QueueSelect::decode(op, payload).map(Request::EnableQueues),
            Op::DisableQueues => QueueSelect::decode(op, payload).map(Request::DisableQueues),
            Op::AddEthAddr => EtherAddrList::decode(op, payload).map(Request::AddEthAddr),
            Op::DelEthAddr => EtherAddrList::decode(op, payload).map(Request::DelEthAddr),
            Op::AddVlan => VlanFilterList::decode(op, payload).map(Request::AddVlan),
            Op::DelVlan => VlanFilterList::decode(op, payload).map(Request::DelVlan),
            Op::ConfigPromiscuousMode => {
                PromiscInfo::decode(op, payload).map(Request::ConfigPromiscuousMode)
            }
            Op::GetStats => QueueSelect::decode(op, payload).map(Request::GetStats),
            Op::EnableVlanStripping => empty(Request::EnableVlanStripping),
            Op::DisableVlanStripping => empty(Request::DisableVlanStripping),
            Op::GetOffloadVlanV2Caps => empty(Request::GetOffloadVlanV2Caps),
            Op::AddVlanV2 => VlanFilterListV2::decode(op, payload).map(Request::AddVlanV2),
            Op::DelVlanV2 => VlanFilterListV2::decode(op, payload).map(Request::DelVlanV2),
            Op::Unspecified | Op::Event | Op::Reserved16 | Op::Unknown(_) => {
                Err(Error::NotARequest { op })
            }
            _ => Err(Error::Unsupported { op }),
        }
    }

    /// Encodes the payload (without the frame header).
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Request::Version(v) => v.encode(&mut out),
            Request::ResetVf
            | Request::EnableVlanStripping
            | Request::DisableVlanStripping
            | Request::GetOffloadVlanV2Caps
            | Request::GetVfResources { caps: None } => {}
            Request::GetVfResources { caps: Some(caps) } => {
                out.extend_from_slice(&caps.0.to_le_bytes())
            }
            Request::EnableQueues(q) | Request::DisableQueues(q) | Request::GetStats(q) => {
                q.encode(&mut out)
            }
            Request::AddEthAddr(l) | Request::DelEthAddr(l) => l.encode(&mut out),
            Request::AddVlan(l) | Request::DelVlan(l) => l.encode(&mut out),
            Request::ConfigPromiscuousMode(p) => p.encode(&mut out),
            Request::AddVlanV2(l) | Request::DelVlanV2(l) => l.encode(&mut out),
        }
        out
    }

    /// Encodes a whole mailbox frame with `cookie`.
    pub fn to_frame(&self, cookie: u32) -> Vec<u8> {
        encode_frame(
            self.op(),
            VirtchnlStatus::Success,
            cookie,
            &self.encode_payload(),
        )
    }

    /// Decodes a whole mailbox frame sent by a VF.
    pub fn from_frame(bytes: &[u8]) -> Result<(FrameHeader, Request)> {
        let frame = Frame::parse(bytes)?;
        let req = Request::decode(frame.header.op, frame.payload)?;
        Ok((frame.header, req))
    }
}

/// The payload of a reply; which one depends on the opcode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplyBody {
    /// No payload: every reply except the four below, and most error replies.
    Empty,
    /// VERSION: the PF's version.
    Version(VersionInfo),
    /// GET_VF_RESOURCES: the resources and capabilities granted.
    VfResource(VfResource),
    /// GET_OFFLOAD_VLAN_V2_CAPS: the VLAN capabilities.
    VlanCaps(VlanCaps),
    /// GET_STATS: the VSI's counters.
    Stats(EthStats),
}

/// A reply from the PF to one request: same opcode, a status, maybe a body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    /// The opcode of the request this answers.
    pub op: VirtchnlOp,
    /// The outcome.
    pub status: VirtchnlStatus,
    /// The payload.
    pub body: ReplyBody,
}

impl Reply {
    /// A reply with no payload.
    pub fn empty(op: VirtchnlOp, status: VirtchnlStatus) -> Self {
        Reply {
            op,
            status,
            body: ReplyBody::Empty,
        }
    }

    /// Decodes a reply payload for `op`. An empty payload is always
    /// [`ReplyBody::Empty`] (error replies usually carry none).
    pub fn decode(op: VirtchnlOp, status: VirtchnlStatus, payload: &[u8]) -> Result<Reply> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::PayloadTooLarge {
                op,
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let body = if payload.is_empty() {
            ReplyBody::Empty
        } else {
            match op {
                Op::Version => ReplyBody::Version(VersionInfo::decode(op, payload)?),
                Op::GetVfResources => ReplyBody::VfResource(VfResource::decode(op, payload)?),
                Op::GetOffloadVlanV2Caps => ReplyBody::VlanCaps(VlanCaps::decode(op, payload)?),
                Op::GetStats => ReplyBody::Stats(EthStats::decode(op, payload)?),
                _ => {
                    return Err(Error::UnexpectedPayload {
                        op,
                        len: payload.len(),
                    })
                }
            }
        };
        Ok(Reply { op, status, body })
    }

    /// Encodes the payload (without the frame header).
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.body {
            ReplyBody::Empty => {}
            ReplyBody::Version(v) => v.encode(&mut out),
            ReplyBody::VfResource(r) => r.encode(&mut out),
            ReplyBody::VlanCaps(c) => c.encode(&mut out),
            ReplyBody::Stats(s) => s.encode(&mut out),
        }
        out
    }
}

/// A message from the PF to a VF.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PfMessage {
    /// The answer to a request.
    Reply(Reply),
    /// `VIRTCHNL_OP_EVENT`: something the PF tells the VF unasked.
    Event(PfEvent),
}

impl PfMessage {
    /// Decodes a payload given the frame header's opcode and status.
    ///
    /// Opcode EVENT with SUCCESS is an event. Opcode EVENT with an error
    /// status is a reply: a PF answers a VF that wrongly sent EVENT with
    /// ERR_PARAM under the same opcode (as ice does), and events never carry
    /// an error status.
    pub fn decode(op: VirtchnlOp, status: VirtchnlStatus, payload: &[u8]) -> Result<PfMessage> {
        if op == Op::Event && status.is_success() {
            PfEvent::decode(op, payload).map(PfMessage::Event)
        } else {
            Reply::decode(op, status, payload).map(PfMessage::Reply)
        }
    }

    /// Encodes a whole mailbox frame; `cookie` is the request's (0 for events).
    pub fn to_frame(&self, cookie: u32) -> Vec<u8> {
        match self {
            PfMessage::Reply(r) => encode_frame(r.op, r.status, cookie, &r.encode_payload()),
            PfMessage::Event(e) => {
                let mut payload = Vec::with_capacity(PfEvent::LEN);
                e.encode(&mut payload);
                encode_frame(Op::Event, VirtchnlStatus::Success, cookie, &payload)
            }
        }
    }

    /// Decodes a whole mailbox frame sent by the PF.
    pub fn from_frame(bytes: &[u8]) -> Result<(FrameHeader, PfMessage)> {
        let frame = Frame::parse(bytes)?;
        let msg = PfMessage::decode(frame.header.op, frame.header.status, frame.payload)?;
        Ok((frame.header, msg))
    }
}
