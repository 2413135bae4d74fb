//! Fuzzes the virtchnl decoders with arbitrary bytes.
//!
//! Beyond "never panics" (the crate's documented promise), it checks:
//! (a) a frame that decodes as a `Request` re-encodes to a frame that decodes
//!     to the same `Request`, with the same opcode and cookie;
//! (b) a payload `Request::decode` accepts passes `validate_request_len` for
//!     at least one VF version (none announced, 1.0 or 1.1);
//! (c) the same round trip as (a) for `PfMessage` (replies and events);
//! (d) a `Reply` from `Reply::decode` round-trips through `encode_payload`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtchnl::{
    validate_request_len, PfMessage, Reply, Request, VersionInfo, VirtchnlOp, VirtchnlStatus,
};

fuzz_target!(|data: &[u8]| {
    // The whole input as a frame, VF to PF.
    if let Ok((header, req)) = Request::from_frame(data) {
        let again = Request::from_frame(&req.to_frame(header.cookie));
        let (h2, req2) = again.expect("(a) re-encoded request must decode");
        assert_eq!(req2, req, "(a) request round trip");
        assert_eq!((h2.op, h2.cookie), (header.op, header.cookie), "(a) header");
    }

    // The whole input as a frame, PF to VF.
    if let Ok((header, msg)) = PfMessage::from_frame(data) {
        let again = PfMessage::from_frame(&msg.to_frame(header.cookie));
        let (h2, msg2) = again.expect("(c) re-encoded PF message must decode");
        assert_eq!(msg2, msg, "(c) PF message round trip");
        assert_eq!((h2.op, h2.cookie), (header.op, header.cookie), "(c) header");
    }

    // First 4 bytes: opcode (LE); the rest: a bare payload.
    let Some((op, payload)) = data.split_first_chunk::<4>() else {
        return;
    };
    let op = VirtchnlOp::from(u32::from_le_bytes(*op));

    let versions = [None, Some(VersionInfo::V1_0), Some(VersionInfo::V1_1)];
    let valid = versions.map(|v| validate_request_len(op, payload, v).is_ok());
    if let Ok(req) = Request::decode(op, payload) {
        assert_eq!(req.op(), op, "(b) decoded request carries its opcode");
        assert!(valid.contains(&true), "(b) decoded {req:?} but no version validates it");
    }

    if let Ok(reply) = Reply::decode(op, VirtchnlStatus::Success, payload) {
        let again = Reply::decode(op, reply.status, &reply.encode_payload());
        assert_eq!(again.ok(), Some(reply), "(d) reply round trip");
    }
});
