//! [`Relay`]: what the message relay in front of the `vhost-user-backend`
//! daemon does with each message the frontend sends. Sans-IO: it sees
//! headers and payloads, never a socket or a file descriptor; `pump` does
//! the I/O.
//!
//! # Why a relay
//!
//! `vhost` 0.18's request handler refuses VHOST_USER_SET_VRING_ENABLE
//! unless the features *acked* by SET_FEATURES contain
//! VHOST_USER_F_PROTOCOL_FEATURES, and `vhost-user-backend` 0.24 ends the
//! connection at the first refused request. QEMU's vhost-user net (10.x)
//! enables and disables its queue pairs as soon as the protocol features
//! are negotiated, before SET_FEATURES: once when the device is realized,
//! and on every reconnect once a guest driver has the device running. With
//! the frontend reconnecting, every connection would end at its first
//! SET_VRING_ENABLE, for ever. The relay bridges the gap without changing
//! either crate.
//!
//! # Rules, per connection
//!
//! Until a SET_FEATURES has been forwarded:
//!
//! - a well-formed SET_VRING_ENABLE (8-byte payload, `num` 0 or 1, ring
//!   index below VHOST_USER_MAX_VRINGS) is held back. The relay remembers
//!   the last `num` per ring and, if the frontend set NEED_REPLY and
//!   REPLY_ACK is negotiated, answers "success" itself, as the backend
//!   would have;
//! - SET_PROTOCOL_FEATURES is forwarded; the relay notes whether it acks
//!   REPLY_ACK, as the backend does (which also requires
//!   VHOST_USER_F_PROTOCOL_FEATURES offered; ours always offers it);
//! - SET_FEATURES is forwarded, followed, if it acks
//!   VHOST_USER_F_PROTOCOL_FEATURES, by one SET_VRING_ENABLE 1 without
//!   NEED_REPLY for each ring last left enabled, lowest index first.
//!   Disables need no replay: with PROTOCOL_FEATURES rings start disabled
//!   (vhost-user spec, "Ring states").
//!   Without it SET_FEATURES enables every ring and SET_VRING_ENABLE is not
//!   part of the protocol, so nothing is replayed;
//! - everything else, including a malformed SET_VRING_ENABLE, is forwarded
//!   unchanged and left to the backend to judge.
//!
//! After that every message is forwarded unchanged. Messages from the
//! backend are always forwarded unchanged and never reach the relay.

use std::collections::BTreeMap;

use vhost::vhost_user::message::{
    FrontendReq, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
    VHOST_USER_MAX_VRINGS,
};

/// Length of a vhost-user message header.
pub(crate) const HEADER_LEN: usize = 12;

/// The largest payload a message may carry (`vhost`'s limit, which the
/// backend enforces too).
pub(crate) const MAX_PAYLOAD: usize = vhost::vhost_user::message::MAX_MSG_SIZE;

/// The version every message carries in its flags (bits 0 and 1).
const VERSION_1: u32 = 0x1;

/// A vhost-user message header: request, flags, payload size, each a u32
/// in native byte order (vhost-user spec, "Message Specification").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The request code (`FrontendReq` for frontend messages).
    pub(crate) request: u32,
    /// Version (bits 0 and 1), REPLY, NEED_REPLY.
    pub(crate) flags: u32,
    /// Payload bytes after the header.
    pub(crate) size: u32,
}

impl Header {
    /// Decodes a header. Every bit pattern is a header; the relay checks
    /// only what it acts on.
    pub(crate) fn parse(bytes: [u8; HEADER_LEN]) -> Header {
        let word =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Header {
            request: word(0),
            flags: word(4),
            size: word(8),
        }
    }

    /// Encodes the header.
    pub(crate) fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[0..4].copy_from_slice(&self.request.to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.flags.to_ne_bytes());
        bytes[8..12].copy_from_slice(&self.size.to_ne_bytes());
        bytes
    }

    /// The frontend request, `None` for a code `vhost` does not know.
    pub(crate) fn frontend_req(self) -> Option<FrontendReq> {
        FrontendReq::try_from(self.request).ok()
    }

    fn need_reply(self) -> bool {
        self.flags & VhostUserHeaderFlag::NEED_REPLY.bits() != 0
    }

    fn is_version_1(self) -> bool {
        self.flags & VhostUserHeaderFlag::VERSION.bits() == VERSION_1
    }
}

/// A whole message the relay makes up: a reply or a replayed request.
/// It never carries file descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The header; `size` matches `payload`.
    pub(crate) header: Header,
    /// The payload.
    pub(crate) payload: Vec<u8>,
}

impl Message {
    /// VHOST_USER_SET_VRING_ENABLE `index` 1, without NEED_REPLY.
    fn enable(index: u32) -> Message {
        let mut payload = Vec::with_capacity(8);
        payload.extend_from_slice(&index.to_ne_bytes());
        payload.extend_from_slice(&1u32.to_ne_bytes());
        Message::new(FrontendReq::SET_VRING_ENABLE, VERSION_1, payload)
    }

    /// The REPLY_ACK answer "success" (u64 0) to a `request`.
    fn ack(request: FrontendReq) -> Message {
        let flags = VERSION_1 | VhostUserHeaderFlag::REPLY.bits();
        Message::new(request, flags, 0u64.to_ne_bytes().to_vec())
    }

    fn new(request: FrontendReq, flags: u32, payload: Vec<u8>) -> Message {
        let size = u32::try_from(payload.len()).expect("the relay makes only 8-byte payloads");
        Message {
            header: Header {
                request: u32::from(request),
                flags,
                size,
            },
            payload,
        }
    }
}

/// What to do with one frontend message. Each variant's doc says what the
/// caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub(crate) enum Decision {
    /// Send the message to the backend unchanged, with its descriptors.
    Forward,
    /// Do not send the message to the backend (close its descriptors, if
    /// any); send `reply`, if there is one, to the frontend.
    Swallow {
        /// The answer to a NEED_REPLY.
        reply: Option<Message>,
    },
    /// Send the message to the backend unchanged, with its descriptors,
    /// then each of `replay`, in order. None of them asks for a reply.
    ForwardThenReplay {
        /// Ring enables held back until now.
        replay: Vec<Message>,
    },
}

/// The relay's state for one connection; see the module docs for the
/// rules. A new connection needs a new `Relay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Relay {
    /// No SET_FEATURES forwarded yet: ring enables are held back.
    BeforeFeatures(BeforeFeatures),
    /// SET_FEATURES forwarded: everything passes.
    Passthrough,
}

/// What [`Relay::BeforeFeatures`] remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BeforeFeatures {
    /// SET_PROTOCOL_FEATURES acked REPLY_ACK.
    reply_ack: bool,
    /// Ring index to enabled, as last asked for.
    rings: BTreeMap<u32, bool>,
}

impl Default for Relay {
    fn default() -> Self {
        Relay::BeforeFeatures(BeforeFeatures::default())
    }
}

impl Relay {
    /// A relay for a new connection.
    pub(crate) fn new() -> Relay {
        Relay::default()
    }

    /// Decides what happens to the frontend message `header` + `payload`
    /// (`payload.len()` is `header.size`).
    pub(crate) fn handle_frontend(&mut self, header: Header, payload: &[u8]) -> Decision {
        let Relay::BeforeFeatures(early) = self else {
            return Decision::Forward;
        };
        match header.frontend_req() {
            Some(FrontendReq::SET_VRING_ENABLE) => {
                let Some((index, enable)) = ring_state(header, payload) else {
                    return Decision::Forward;
                };
                early.rings.insert(index, enable);
                let reply = (early.reply_ack && header.need_reply())
                    .then(|| Message::ack(FrontendReq::SET_VRING_ENABLE));
                Decision::Swallow { reply }
            }
            Some(FrontendReq::SET_PROTOCOL_FEATURES) => {
                if let Some(acked) = u64_payload(payload) {
                    early.reply_ack = acked & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0;
                }
                Decision::Forward
            }
            Some(FrontendReq::SET_FEATURES) => {
                let Some(features) = u64_payload(payload) else {
                    return Decision::Forward;
                };
                let protocol = features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
                let replay = if protocol {
                    early
                        .rings
                        .iter()
                        .filter(|&(_, &enabled)| enabled)
                        .map(|(&index, _)| Message::enable(index))
                        .collect()
                } else {
                    Vec::new()
                };
                *self = Relay::Passthrough;
                Decision::ForwardThenReplay { replay }
            }
            _ => Decision::Forward,
        }
    }
}

/// `(index, enable)` of a SET_VRING_ENABLE the backend would accept once
/// features are set; `None` for one it would refuse anyway.
fn ring_state(header: Header, payload: &[u8]) -> Option<(u32, bool)> {
    if !header.is_version_1() {
        return None;
    }
    let bytes: &[u8; 8] = payload.try_into().ok()?;
    let index = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let num = u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let enable = match num {
        0 => false,
        1 => true,
        _ => return None,
    };
    (u64::from(index) < VHOST_USER_MAX_VRINGS).then_some((index, enable))
}

/// The u64 payload of SET_FEATURES or SET_PROTOCOL_FEATURES.
fn u64_payload(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.try_into().ok()?;
    Some(u64::from_ne_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTOCOL: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    const REPLY_ACK: u64 = VhostUserProtocolFeatures::REPLY_ACK.bits();
    const NEED_REPLY: u32 = VhostUserHeaderFlag::NEED_REPLY.bits();

    /// One frontend message, built the way QEMU builds it.
    #[derive(Debug, Clone)]
    struct In {
        header: Header,
        payload: Vec<u8>,
    }

    fn msg(request: FrontendReq, flags: u32, payload: Vec<u8>) -> In {
        In {
            header: Header {
                request: u32::from(request),
                flags: VERSION_1 | flags,
                size: payload.len() as u32,
            },
            payload,
        }
    }

    fn enable(index: u32, num: u32, flags: u32) -> In {
        let mut payload = index.to_ne_bytes().to_vec();
        payload.extend_from_slice(&num.to_ne_bytes());
        msg(FrontendReq::SET_VRING_ENABLE, flags, payload)
    }

    fn set_protocol_features(bits: u64) -> In {
        msg(
            FrontendReq::SET_PROTOCOL_FEATURES,
            NEED_REPLY,
            bits.to_ne_bytes().to_vec(),
        )
    }

    fn set_features(bits: u64) -> In {
        msg(
            FrontendReq::SET_FEATURES,
            NEED_REPLY,
            bits.to_ne_bytes().to_vec(),
        )
    }

    fn plain(request: FrontendReq) -> In {
        msg(request, 0, Vec::new())
    }

    fn ack() -> Decision {
        Decision::Swallow {
            reply: Some(Message::ack(FrontendReq::SET_VRING_ENABLE)),
        }
    }

    fn quiet() -> Decision {
        Decision::Swallow { reply: None }
    }

    fn replay(indices: &[u32]) -> Decision {
        Decision::ForwardThenReplay {
            replay: indices.iter().map(|&i| Message::enable(i)).collect(),
        }
    }

    /// Feeds `inputs` to a new relay and compares each decision.
    fn check(steps: &[(In, Decision)]) {
        let mut relay = Relay::new();
        for (n, (input, expect)) in steps.iter().enumerate() {
            let got = relay.handle_frontend(input.header, &input.payload);
            assert_eq!(&got, expect, "step {n}: {input:?}");
        }
    }

    #[test]
    fn an_early_enable_is_held_back_and_replayed_after_set_features() {
        check(&[
            (plain(FrontendReq::GET_FEATURES), Decision::Forward),
            (set_protocol_features(REPLY_ACK), Decision::Forward),
            (enable(0, 1, 0), quiet()),
            (enable(1, 1, 0), quiet()),
            (set_features(PROTOCOL), replay(&[0, 1])),
        ]);
    }

    #[test]
    fn an_early_disable_is_held_back_and_not_replayed() {
        check(&[
            (enable(2, 0, 0), quiet()),
            (enable(3, 0, 0), quiet()),
            (enable(0, 1, 0), quiet()),
            (set_features(PROTOCOL), replay(&[0])),
        ]);
    }

    #[test]
    fn the_last_state_of_a_ring_wins() {
        check(&[
            (enable(1, 1, 0), quiet()),
            (enable(1, 0, 0), quiet()),
            (enable(2, 0, 0), quiet()),
            (enable(2, 1, 0), quiet()),
            (set_features(PROTOCOL), replay(&[2])),
        ]);
    }

    #[test]
    fn need_reply_is_answered_once_reply_ack_is_negotiated() {
        check(&[
            // REPLY_ACK not negotiated: the backend would not answer either.
            (enable(0, 1, NEED_REPLY), quiet()),
            (set_protocol_features(REPLY_ACK), Decision::Forward),
            (enable(1, 1, NEED_REPLY), ack()),
            (enable(2, 0, 0), quiet()),
            (set_features(PROTOCOL), replay(&[0, 1])),
        ]);
        check(&[
            (set_protocol_features(0), Decision::Forward),
            (enable(0, 1, NEED_REPLY), quiet()),
        ]);
    }

    #[test]
    fn the_ack_is_a_reply_to_set_vring_enable_with_status_success() {
        let Decision::Swallow { reply: Some(reply) } = ack() else {
            unreachable!()
        };
        let expect = Header {
            request: 18,
            flags: 0x1 | 0x4,
            size: 8,
        };
        assert_eq!(reply.header, expect);
        assert_eq!(reply.payload, [0; 8]);
    }

    #[test]
    fn a_replayed_enable_asks_for_no_reply() {
        let message = Message::enable(3);
        let expect = Header {
            request: 18,
            flags: 0x1,
            size: 8,
        };
        assert_eq!(message.header, expect);
        let mut payload = 3u32.to_ne_bytes().to_vec();
        payload.extend_from_slice(&1u32.to_ne_bytes());
        assert_eq!(message.payload, payload);
    }

    #[test]
    fn after_set_features_everything_is_forwarded() {
        check(&[
            (set_protocol_features(REPLY_ACK), Decision::Forward),
            (set_features(PROTOCOL), replay(&[])),
            (enable(0, 1, NEED_REPLY), Decision::Forward),
            (enable(1, 0, 0), Decision::Forward),
            (set_features(PROTOCOL), Decision::Forward),
            (plain(FrontendReq::GET_VRING_BASE), Decision::Forward),
        ]);
    }

    #[test]
    fn without_protocol_features_nothing_is_replayed() {
        check(&[
            (enable(0, 1, 0), quiet()),
            (set_features(0), replay(&[])),
            (enable(0, 1, 0), Decision::Forward),
        ]);
    }

    #[test]
    fn a_malformed_early_enable_is_left_to_the_backend() {
        let mut short = enable(0, 1, 0);
        short.payload.truncate(4);
        short.header.size = 4;
        let mut old_version = enable(0, 1, 0);
        old_version.header.flags = 0x2;
        check(&[
            (enable(0, 2, 0), Decision::Forward),
            (short, Decision::Forward),
            (old_version, Decision::Forward),
            (enable(0x8000, 1, 0), Decision::Forward),
            (enable(0x7fff, 1, 0), quiet()),
            (set_features(PROTOCOL), replay(&[0x7fff])),
        ]);
    }

    #[test]
    fn a_malformed_set_features_keeps_holding_enables_back() {
        let mut bad = set_features(PROTOCOL);
        bad.payload.push(0);
        bad.header.size = 9;
        check(&[
            (enable(0, 1, 0), quiet()),
            (bad, Decision::Forward),
            (enable(1, 1, 0), quiet()),
            (set_features(PROTOCOL), replay(&[0, 1])),
        ]);
    }

    #[test]
    fn unknown_requests_are_forwarded() {
        let mut unknown = plain(FrontendReq::GET_FEATURES);
        unknown.header.request = 9999;
        check(&[(unknown, Decision::Forward), (enable(0, 1, 0), quiet())]);
    }

    #[test]
    fn headers_round_trip() {
        let header = Header {
            request: 18,
            flags: 0x9,
            size: 8,
        };
        assert_eq!(Header::parse(header.to_bytes()), header);
        assert_eq!(header.frontend_req(), Some(FrontendReq::SET_VRING_ENABLE));
    }
}
