//! Behaviour tests for the PF model, one or more per rule of the reference
//! notes ("PF behaviours (ice)"); each test name starts with its rule.

use std::time::{Duration, Instant};

use virtchnl::{
    encode_frame, EtherAddr, EtherAddrList, EtherAddrType, EventKind, MacAddr, PfEvent,
    PromiscFlags, PromiscInfo, QueueSelect, ReplyBody, Request, VersionInfo, VfCapFlags,
    VfResource, VirtchnlOp, VirtchnlStatus, VirtchnlVlan, VlanCaps, VlanFilterList,
    VlanFilterListV2, VlanFilterV2,
};

use super::*;
use VirtchnlStatus::{ErrAdminQueueError, ErrNotSupported, ErrParam, Success};

/// Everything a current iavf asks for (reference 3.3).
const IAVF_CAPS: VfCapFlags = VfCapFlags(0xb3ff_8cf9 | VfCapFlags::VLAN.0);

/// A PF plus a fake clock and a cookie counter: drives the PF like a VF would.
struct Rig {
    pf: Pf,
    now: Instant,
    cookie: u32,
    /// Events seen since the last `take_events`.
    events: Vec<(VfId, PfEvent)>,
}

impl Rig {
    fn new(config: PfConfig) -> Self {
        Rig {
            pf: Pf::new(config).expect("valid config"),
            now: Instant::now(),
            cookie: 0,
            events: Vec::new(),
        }
    }

    fn with_policy(policy: VfPolicy) -> Self {
        Self::new(PfConfig {
            policies: vec![policy],
            ..PfConfig::default()
        })
    }

    fn untrusted() -> Self {
        Self::new(PfConfig::default())
    }

    fn trusted() -> Self {
        Self::with_policy(VfPolicy {
            trust: true,
            ..VfPolicy::default()
        })
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }

    /// Sends raw bytes and returns the replies; events go to `self.events`.
    fn raw(&mut self, vf: u16, bytes: &[u8]) -> Vec<(u32, virtchnl::Reply)> {
        self.pf.handle_mailbox(self.now, VfId(vf), bytes);
        let mut replies = Vec::new();
        while let Some(effect) = self.pf.poll_effect() {
            // Every effect must survive the trip through a frame.
            let frame = effect.to_frame();
            virtchnl::PfMessage::from_frame(&frame).expect("PF frames decode");
            match effect {
                Effect::Reply { cookie, reply, .. } => replies.push((cookie, reply)),
                Effect::Event { vf, event } => self.events.push((vf, event)),
            }
        }
        replies
    }

    /// Sends a request and returns its one reply.
    fn call(&mut self, vf: u16, req: Request) -> virtchnl::Reply {
        self.cookie += 1;
        let op = req.op();
        let mut replies = self.raw(vf, &req.to_frame(self.cookie));
        assert_eq!(replies.len(), 1, "{op}: exactly one reply");
        let (cookie, reply) = replies.remove(0);
        assert_eq!(cookie, self.cookie, "{op}: reply echoes the cookie");
        assert_eq!(reply.op, op, "reply carries the request's opcode");
        reply
    }

    fn status(&mut self, vf: u16, req: Request) -> VirtchnlStatus {
        self.call(vf, req).status
    }

    fn take_events(&mut self) -> Vec<(VfId, PfEvent)> {
        std::mem::take(&mut self.events)
    }

    /// VERSION 1.1 and GET_VF_RESOURCES asking for `caps`; returns the grant.
    fn bring_up_with(&mut self, vf: u16, caps: VfCapFlags) -> VfResource {
        assert_eq!(
            self.status(vf, Request::Version(VersionInfo::V1_1)),
            Success
        );
        let reply = self.call(vf, Request::GetVfResources { caps: Some(caps) });
        assert_eq!(reply.status, Success);
        let ReplyBody::VfResource(res) = reply.body else {
            panic!("GET_VF_RESOURCES reply has resources: {reply:?}")
        };
        if res.vf_cap_flags.contains(VfCapFlags::VLAN_V2) {
            let caps = self.call(vf, Request::GetOffloadVlanV2Caps);
            assert_eq!(caps.status, Success);
        }
        res
    }

    /// Brings a VF up the way iavf does and enables its queue pair.
    fn bring_up(&mut self, vf: u16) -> VfResource {
        let res = self.bring_up_with(vf, IAVF_CAPS);
        assert_eq!(self.status(vf, Request::EnableQueues(queues(1))), Success);
        res
    }

    fn table(&self, vf: u16) -> VfTable {
        self.pf.tables().vf(vf).expect("VF exists").clone()
    }
}

fn queues(bits: u32) -> QueueSelect {
    QueueSelect {
        vsi_id: VSI_ID,
        rx_queues: bits,
        tx_queues: bits,
    }
}

fn mac(s: &str) -> MacAddr {
    s.parse().expect("valid MAC in test")
}

fn macs(kind: EtherAddrType, list: &[&str]) -> EtherAddrList {
    EtherAddrList {
        vsi_id: VSI_ID,
        addrs: list
            .iter()
            .map(|m| EtherAddr { addr: mac(m), kind })
            .collect(),
    }
}

fn add_macs(list: &[&str]) -> Request {
    Request::AddEthAddr(macs(EtherAddrType::Extra, list))
}

fn del_macs(list: &[&str]) -> Request {
    Request::DelEthAddr(macs(EtherAddrType::Extra, list))
}

fn nth_mac(i: usize) -> String {
    format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256)
}

fn v1(vids: &[u16]) -> VlanFilterList {
    VlanFilterList {
        vsi_id: VSI_ID,
        vids: vids.to_vec(),
    }
}

fn v2_tags(tags: &[(VirtchnlVlan, VirtchnlVlan)]) -> VlanFilterListV2 {
    VlanFilterListV2 {
        vport_id: VSI_ID,
        filters: tags
            .iter()
            .map(|&(inner, outer)| VlanFilterV2 { inner, outer })
            .collect(),
    }
}

/// V2 filters in the inner tag, as iavf sends them in single VLAN mode.
fn v2(vids: &[u16]) -> VlanFilterListV2 {
    let tags: Vec<_> = vids
        .iter()
        .map(|&v| (VirtchnlVlan::dot1q(v), VirtchnlVlan::default()))
        .collect();
    v2_tags(&tags)
}

fn is_reset_impending(e: &PfEvent) -> bool {
    e.kind == EventKind::ResetImpending
}

fn link_of(e: &PfEvent) -> Option<(u32, bool)> {
    match e.kind {
        EventKind::LinkChange {
            link_speed,
            link_up,
        } => Some((link_speed, link_up)),
        _ => None,
    }
}

// ---- Dispatch -------------------------------------------------------------

#[test]
fn p1_frames_for_a_vf_that_does_not_exist_are_dropped_without_reply() {
    let mut rig = Rig::untrusted();
    let replies = rig.raw(7, &Request::Version(VersionInfo::V1_1).to_frame(1));
    assert!(replies.is_empty());
    assert_eq!(rig.pf.dropped_unknown_vf(), 1);
}

#[test]
fn p2_a_frame_shorter_than_its_header_gets_err_param() {
    let mut rig = Rig::untrusted();
    let replies = rig.raw(0, &[1, 0, 0]);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].1.status, ErrParam);
    assert_eq!(replies[0].1.op, VirtchnlOp::Unspecified);
    assert_eq!(rig.table(0).mailbox.malformed, 1);
}

#[test]
fn p2_a_frame_with_a_lying_length_gets_err_param_with_its_opcode_and_cookie() {
    let mut rig = Rig::untrusted();
    let mut frame = Request::Version(VersionInfo::V1_1).to_frame(42);
    frame.truncate(frame.len() - 2);
    let replies = rig.raw(0, &frame);
    assert_eq!(replies.len(), 1);
    let (cookie, reply) = &replies[0];
    assert_eq!(
        (*cookie, reply.op, reply.status),
        (42, VirtchnlOp::Version, ErrParam)
    );
}

#[test]
fn p2_a_list_whose_count_disagrees_with_its_length_gets_err_param_and_changes_nothing() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    let before = rig.table(0);
    let mut payload =
        Request::AddEthAddr(macs(EtherAddrType::Extra, &["02:00:00:00:00:05"])).encode_payload();
    payload[2] = 3; // num_elements = 3, room for 1
    let frame = encode_frame(VirtchnlOp::AddEthAddr, Success, 9, &payload);
    let replies = rig.raw(0, &frame);
    assert_eq!(replies[0].1.status, ErrParam);
    let after = rig.table(0);
    assert_eq!(after.macs, before.macs);
    assert_eq!(after.mailbox.malformed, before.mailbox.malformed + 1);
}

#[test]
fn p2_requests_during_a_reset_get_err_param() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    rig.pf.begin_reset(VfId(0), false).expect("vf0 exists");
    assert_eq!(rig.pf.phase(VfId(0)), Ok(VfPhase::Resetting));
    assert_eq!(rig.status(0, Request::Version(VersionInfo::V1_1)), ErrParam);
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[5]))), ErrParam);
    rig.pf.finish_reset(VfId(0)).expect("vf0 exists");
    assert_eq!(rig.status(0, Request::Version(VersionInfo::V1_1)), Success);
}

#[test]
fn p3_before_resources_only_version_resources_and_reset_are_allowed() {
    let mut rig = Rig::untrusted();
    assert_eq!(rig.status(0, Request::Version(VersionInfo::V1_1)), Success);
    assert_eq!(
        rig.status(0, add_macs(&["02:00:00:00:00:01"])),
        ErrNotSupported
    );
    assert_eq!(
        rig.status(0, Request::EnableQueues(queues(1))),
        ErrNotSupported
    );
    assert_eq!(
        rig.status(0, Request::GetOffloadVlanV2Caps),
        ErrNotSupported
    );
    assert!(rig.table(0).macs.is_empty());
}

#[test]
fn p3_an_unassigned_opcode_or_an_event_from_a_vf_gets_err_param() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    for op in [
        VirtchnlOp::Unknown(999),
        VirtchnlOp::Event,
        VirtchnlOp::Unspecified,
    ] {
        let replies = rig.raw(0, &encode_frame(op, Success, 5, &[]));
        assert_eq!(replies[0].1.status, ErrParam, "{op}");
        assert_eq!(replies[0].1.op, op);
    }
}

#[test]
fn p4_an_allowed_opcode_without_a_handler_gets_not_supported() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    // CONFIG_VSI_QUEUES with one queue pair: 72 + 64 bytes, num_queue_pairs = 1.
    let mut payload = vec![0u8; 136];
    payload[0] = 1;
    payload[2] = 1;
    let replies = rig.raw(
        0,
        &encode_frame(VirtchnlOp::ConfigVsiQueues, Success, 3, &payload),
    );
    assert_eq!(replies[0].1.status, ErrNotSupported);
    // ...but the length check comes first: a short one is ERR_PARAM.
    let replies = rig.raw(
        0,
        &encode_frame(VirtchnlOp::ConfigVsiQueues, Success, 4, &payload[..70]),
    );
    assert_eq!(replies[0].1.status, ErrParam);
}

#[test]
fn p5_v1_vlan_opcodes_are_not_supported_once_vlan_v2_is_negotiated() {
    let mut rig = Rig::untrusted();
    let res = rig.bring_up(0);
    assert!(res.vf_cap_flags.contains(VfCapFlags::VLAN_V2));
    assert!(!res.vf_cap_flags.contains(VfCapFlags::VLAN));
    assert_eq!(rig.status(0, Request::AddVlan(v1(&[10]))), ErrNotSupported);
    assert_eq!(rig.status(0, Request::EnableVlanStripping), ErrNotSupported);
    assert!(rig.table(0).vlans.is_empty());
}

#[test]
fn p5_a_pf_without_vlan_v2_grants_v1_and_refuses_v2_caps() {
    let mut rig = Rig::with_policy(VfPolicy {
        vlan_v2: false,
        ..VfPolicy::default()
    });
    let res = rig.bring_up(0);
    assert!(res.vf_cap_flags.contains(VfCapFlags::VLAN));
    assert!(!res.vf_cap_flags.contains(VfCapFlags::VLAN_V2));
    assert_eq!(
        rig.status(0, Request::GetOffloadVlanV2Caps),
        ErrNotSupported
    );
    assert_eq!(rig.status(0, Request::AddVlan(v1(&[10, 20]))), Success);
    assert_eq!(rig.table(0).vlans, vec![10, 20]);
}

#[test]
fn p6_v2_filters_before_the_v2_caps_exchange_get_err_param_even_on_delete() {
    let mut rig = Rig::untrusted();
    rig.bring_up_with(0, VfCapFlags::L2); // asks no VLAN caps at all
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[5]))), ErrNotSupported);

    let mut rig = Rig::untrusted();
    rig.status(0, Request::Version(VersionInfo::V1_1));
    rig.status(
        0,
        Request::GetVfResources {
            caps: Some(IAVF_CAPS),
        },
    );
    // V2 granted, but the caps were never asked for: stored caps are zero.
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[5]))), ErrParam);
    assert_eq!(rig.status(0, Request::DelVlanV2(v2(&[5]))), ErrParam);
}

#[test]
fn p7_a_wrong_vsi_id_gets_err_param() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    let mut list = macs(EtherAddrType::Extra, &["02:00:00:00:00:09"]);
    list.vsi_id = 2;
    assert_eq!(rig.status(0, Request::AddEthAddr(list)), ErrParam);
    let mut vlans = v2(&[5]);
    vlans.vport_id = 0;
    assert_eq!(rig.status(0, Request::AddVlanV2(vlans)), ErrParam);
    let q = QueueSelect {
        vsi_id: 3,
        ..queues(1)
    };
    assert_eq!(rig.status(0, Request::DisableQueues(q)), ErrParam);
    let promisc = PromiscInfo {
        vsi_id: 0,
        flags: PromiscFlags::empty(),
    };
    assert_eq!(
        rig.status(0, Request::ConfigPromiscuousMode(promisc)),
        ErrParam
    );
    assert!(rig.table(0).macs.is_empty());
}

// ---- Version, resources, reset -------------------------------------------

#[test]
fn p8_version_reply_is_1_1_unless_the_vf_said_1_0() {
    let mut rig = Rig::untrusted();
    for (sent, expected) in [
        (VersionInfo::V1_0, VersionInfo::V1_0),
        (VersionInfo::V1_1, VersionInfo::V1_1),
        (VersionInfo { major: 2, minor: 7 }, VersionInfo::V1_1),
    ] {
        let reply = rig.call(0, Request::Version(sent));
        assert_eq!(reply.status, Success);
        assert_eq!(reply.body, ReplyBody::Version(expected));
    }
}

#[test]
fn p9_get_vf_resources_grants_only_modelled_caps_and_then_reports_link() {
    let mut rig = Rig::untrusted();
    rig.status(0, Request::Version(VersionInfo::V1_1));
    rig.take_events();
    let reply = rig.call(
        0,
        Request::GetVfResources {
            caps: Some(IAVF_CAPS),
        },
    );
    let ReplyBody::VfResource(res) = reply.body else {
        panic!("resources expected")
    };
    assert_eq!(
        res.vf_cap_flags,
        VfCapFlags::L2 | VfCapFlags::VLAN_V2 | VfCapFlags::ADV_LINK_SPEED
    );
    assert_eq!(res.vsi_res.len(), 1);
    assert_eq!(res.vsi_res[0].vsi_id, VSI_ID);
    assert_eq!(rig.pf.phase(VfId(0)), Ok(VfPhase::Active));
    // The link event follows the reply; no queue is enabled yet, so it is down.
    let events = rig.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(link_of(&events[0].1), Some((0, false)));
}

#[test]
fn p9_a_1_0_vf_is_treated_as_asking_for_l2_and_vlan() {
    let mut rig = Rig::untrusted();
    rig.status(0, Request::Version(VersionInfo::V1_0));
    let reply = rig.call(0, Request::GetVfResources { caps: None });
    let ReplyBody::VfResource(res) = reply.body else {
        panic!("resources expected")
    };
    assert_eq!(res.vf_cap_flags, VfCapFlags::L2 | VfCapFlags::VLAN);
    // P9: default VLAN stripping is on when V1 VLAN was negotiated.
    assert!(rig.table(0).vlan_stripping);
}

#[test]
fn p9_the_caps_word_must_match_the_announced_version() {
    let mut rig = Rig::untrusted();
    rig.status(0, Request::Version(VersionInfo::V1_1));
    assert_eq!(
        rig.status(0, Request::GetVfResources { caps: None }),
        ErrParam
    );
    assert_eq!(rig.table(0).state, VfPhase::Init);
}

#[test]
fn p10_reset_vf_gets_no_reply_and_drops_every_vf_filter() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    assert_eq!(rig.status(0, add_macs(&["02:00:00:00:00:05"])), Success);
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[100, 200]))), Success);
    let replies = rig.raw(0, &Request::ResetVf.to_frame(77));
    assert!(replies.is_empty(), "RESET_VF is never answered");
    let t = rig.table(0);
    assert_eq!(t.state, VfPhase::Init);
    assert!(t.macs.is_empty());
    assert!(t.vlans.is_empty());
    assert!(t.caps.is_empty());
    assert_eq!((t.queues.rx, t.queues.tx), (0, 0));
}

#[test]
fn p11_reset_keeps_only_host_configuration_and_forgets_vlan_v2_caps() {
    let admin = mac("02:aa:00:00:00:01");
    let mut rig = Rig::with_policy(VfPolicy {
        trust: true,
        admin_mac: Some(admin),
        ..VfPolicy::default()
    });
    rig.bring_up(0);
    let promisc = PromiscInfo {
        vsi_id: VSI_ID,
        flags: PromiscFlags::UNICAST,
    };
    assert_eq!(
        rig.status(0, Request::ConfigPromiscuousMode(promisc)),
        Success
    );
    assert_eq!(rig.status(0, add_macs(&["02:00:00:00:00:05"])), Success);
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[7]))), Success);

    rig.pf.reset_vf(VfId(0), false).expect("vf0 exists");
    let t = rig.table(0);
    assert_eq!(t.macs, vec![admin], "only the host MAC survives");
    assert_eq!(t.mac_filters, 2, "host MAC + broadcast");
    assert_eq!(t.mac, admin);
    assert!(t.vlans.is_empty());
    assert!(!t.promisc.unicast);
    assert!(t.vlan_pruning);
    // After the next GET_VF_RESOURCES the V2 caps must be asked for again.
    rig.status(
        0,
        Request::GetVfResources {
            caps: Some(IAVF_CAPS),
        },
    );
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[7]))), ErrParam);
    assert_eq!(rig.status(0, Request::GetOffloadVlanV2Caps), Success);
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[7]))), Success);
}

#[test]
fn p12_trust_admin_mac_and_port_vlan_changes_reset_the_vf_with_notice() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    rig.take_events();
    type HostChange = fn(&mut Pf) -> crate::Result<()>;
    let set: [HostChange; 3] = [
        |pf| pf.set_trust(VfId(0), true),
        |pf| pf.set_admin_mac(VfId(0), Some(mac("02:aa:00:00:00:02"))),
        |pf| pf.set_port_vlan(VfId(0), Some(30)),
    ];
    for change in set {
        rig.bring_up(0);
        rig.take_events();
        change(&mut rig.pf).expect("valid change");
        assert_eq!(rig.pf.phase(VfId(0)), Ok(VfPhase::Init));
        let _ = rig.raw(0, &[]); // drain
        let events = rig.take_events();
        assert!(
            events.iter().any(|(_, e)| is_reset_impending(e)),
            "{events:?}"
        );
    }
}

#[test]
fn p12_a_pf_reset_warns_every_vf_then_resets_them_all() {
    let mut rig = Rig::new(PfConfig {
        num_vfs: 3,
        ..PfConfig::default()
    });
    rig.bring_up(0);
    rig.bring_up(2);
    rig.take_events();
    rig.pf.pf_reset();
    let _ = rig.raw(9, &[]);
    let warned: Vec<_> = rig
        .take_events()
        .into_iter()
        .filter(|(_, e)| is_reset_impending(e))
        .map(|(vf, _)| vf.0)
        .collect();
    assert_eq!(warned, vec![0, 1, 2]);
    for vf in 0..3 {
        assert_eq!(rig.pf.phase(VfId(vf)), Ok(VfPhase::Init));
    }
}

// ---- MAC filters -----------------------------------------------------------

#[test]
fn p13_an_untrusted_vf_over_the_mac_limit_has_the_whole_message_rejected() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    // Broadcast is filter 1 of 18: 17 more fit.
    let first: Vec<String> = (0..17).map(nth_mac).collect();
    let refs: Vec<&str> = first.iter().map(String::as_str).collect();
    assert_eq!(rig.status(0, add_macs(&refs)), Success);
    assert_eq!(rig.table(0).mac_filters, 18);
    // One more, in a message with an existing address: rejected as a whole.
    assert_eq!(
        rig.status(0, add_macs(&[&nth_mac(0), &nth_mac(99)])),
        ErrParam
    );
    assert_eq!(rig.table(0).mac_filters, 18);
    assert!(!rig.table(0).macs.contains(&mac(&nth_mac(99))));
}

#[test]
fn p13_a_trusted_vf_has_no_mac_limit() {
    let mut rig = Rig::trusted();
    rig.bring_up(0);
    let many: Vec<String> = (0..40).map(nth_mac).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(rig.status(0, add_macs(&refs)), Success);
    assert_eq!(rig.table(0).macs.len(), 40);
}

#[test]
fn p14_duplicates_missing_deletes_broadcast_and_zero_are_ignored_with_success() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    let m = "02:00:00:00:00:05";
    assert_eq!(rig.status(0, add_macs(&[m, m])), Success);
    assert_eq!(
        rig.status(0, add_macs(&[m, "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"])),
        Success
    );
    assert_eq!(rig.table(0).macs, vec![mac(m)]);
    assert_eq!(rig.table(0).mac_filters, 2);
    assert_eq!(rig.status(0, del_macs(&["02:00:00:00:00:06", m])), Success);
    assert!(rig.table(0).macs.is_empty());
    assert_eq!(rig.table(0).mac_filters, 1, "broadcast stays");
}

#[test]
fn p15_an_admin_mac_stops_an_untrusted_vf_at_the_first_other_unicast() {
    let admin = mac("02:aa:00:00:00:01");
    let mut rig = Rig::with_policy(VfPolicy {
        admin_mac: Some(admin),
        ..VfPolicy::default()
    });
    let res = rig.bring_up(0);
    assert_eq!(res.vsi_res[0].default_mac_addr, admin);
    // Re-adding the admin MAC is fine; multicast is fine; other unicast is not.
    let list = [
        "02:aa:00:00:00:01",
        "33:33:00:00:00:01",
        "02:00:00:00:00:07",
        "33:33:00:00:00:02",
    ];
    assert_eq!(rig.status(0, add_macs(&list)), ErrAdminQueueError);
    assert_eq!(
        rig.table(0).macs,
        vec![admin, mac("33:33:00:00:00:01")],
        "elements before the refused one stay, later ones are not applied"
    );
    // Deleting the admin MAC "succeeds" and changes nothing.
    assert_eq!(rig.status(0, del_macs(&["02:aa:00:00:00:01"])), Success);
    assert!(rig.table(0).macs.contains(&admin));
    assert_eq!(rig.table(0).mac, admin);
}

#[test]
fn p15_a_trusted_vf_may_replace_an_admin_mac() {
    let mut rig = Rig::with_policy(VfPolicy {
        trust: true,
        admin_mac: Some(mac("02:aa:00:00:00:01")),
        ..VfPolicy::default()
    });
    rig.bring_up(0);
    let new = Request::AddEthAddr(macs(EtherAddrType::Primary, &["02:00:00:00:00:08"]));
    assert_eq!(rig.status(0, new), Success);
    assert_eq!(rig.table(0).mac, mac("02:00:00:00:00:08"));
}

#[test]
fn p16_an_untrusted_vf_may_not_add_lldp_group_addresses() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    for lldp in [
        "01:80:c2:00:00:00",
        "01:80:c2:00:00:03",
        "01:80:c2:00:00:0e",
    ] {
        assert_eq!(
            rig.status(0, add_macs(&[lldp])),
            ErrAdminQueueError,
            "{lldp}"
        );
    }
    assert!(rig.table(0).macs.is_empty());
    let mut rig = Rig::trusted();
    rig.bring_up(0);
    assert_eq!(rig.status(0, add_macs(&["01:80:c2:00:00:0e"])), Success);
}

#[test]
fn p17_a_primary_add_becomes_the_device_mac_and_an_extra_add_does_not() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    assert_eq!(
        rig.table(0).mac,
        MacAddr::ZERO,
        "no MAC assigned by the host"
    );
    let primary = Request::AddEthAddr(macs(EtherAddrType::Primary, &["02:00:00:00:00:0a"]));
    assert_eq!(rig.status(0, primary), Success);
    assert_eq!(rig.status(0, add_macs(&["02:00:00:00:00:0b"])), Success);
    assert_eq!(rig.table(0).mac, mac("02:00:00:00:00:0a"));
    // It is what the host restores after a reset.
    rig.pf.reset_vf(VfId(0), false).expect("vf0 exists");
    assert_eq!(rig.table(0).macs, vec![mac("02:00:00:00:00:0a")]);
}

#[test]
fn p17_a_legacy_add_then_delete_of_the_old_mac_adopts_the_new_one_within_3s() {
    for (wait_ms, adopted) in [(2_000, true), (3_500, false)] {
        let mut rig = Rig::untrusted();
        rig.bring_up(0);
        let legacy = |m: &str| macs(EtherAddrType::Legacy, &[m]);
        rig.status(0, Request::AddEthAddr(legacy("02:00:00:00:00:01")));
        assert_eq!(rig.table(0).mac, mac("02:00:00:00:00:01"));
        rig.status(0, Request::AddEthAddr(legacy("02:00:00:00:00:02")));
        rig.advance(wait_ms);
        rig.status(0, Request::DelEthAddr(legacy("02:00:00:00:00:01")));
        let expected = if adopted {
            mac("02:00:00:00:00:02")
        } else {
            MacAddr::ZERO
        };
        assert_eq!(rig.table(0).mac, expected, "after {wait_ms} ms");
    }
}

// ---- V1 VLAN ---------------------------------------------------------------

fn v1_rig(policy: VfPolicy) -> Rig {
    let mut rig = Rig::with_policy(VfPolicy {
        vlan_v2: false,
        ..policy
    });
    rig.bring_up(0);
    rig
}

#[test]
fn p19_a_vid_of_4096_or_more_rejects_the_whole_list() {
    let mut rig = v1_rig(VfPolicy::default());
    assert_eq!(rig.status(0, Request::AddVlan(v1(&[10, 4096]))), ErrParam);
    assert!(rig.table(0).vlans.is_empty());
}

#[test]
fn p19_duplicate_adds_and_deletes_of_absent_vids_succeed() {
    let mut rig = v1_rig(VfPolicy::default());
    assert_eq!(rig.status(0, Request::AddVlan(v1(&[10, 10]))), Success);
    assert_eq!(rig.status(0, Request::AddVlan(v1(&[10]))), Success);
    assert_eq!(rig.table(0).vlans, vec![10]);
    assert_eq!(rig.status(0, Request::DelVlan(v1(&[11]))), Success);
    assert_eq!(rig.table(0).vlans, vec![10]);
}

#[test]
fn p20_an_untrusted_v1_vf_silently_stops_at_seven_vlans() {
    let mut rig = v1_rig(VfPolicy::default());
    let vids: Vec<u16> = (1..=10).collect();
    assert_eq!(rig.status(0, Request::AddVlan(v1(&vids))), Success);
    assert_eq!(rig.table(0).vlans, (1..=7).collect::<Vec<_>>());
    assert_eq!(rig.status(0, Request::AddVlan(v1(&[50]))), Success);
    assert_eq!(
        rig.table(0).vlans.len(),
        7,
        "still 7: the refusal is silent"
    );
}

#[test]
fn p20_a_trusted_v1_vf_has_no_vlan_limit() {
    let mut rig = v1_rig(VfPolicy {
        trust: true,
        ..VfPolicy::default()
    });
    let vids: Vec<u16> = (1..=100).collect();
    assert_eq!(rig.status(0, Request::AddVlan(v1(&vids))), Success);
    assert_eq!(rig.table(0).vlans.len(), 100);
}

#[test]
fn p21_with_a_port_vlan_in_single_vlan_mode_a_vf_gets_no_vlan_filters() {
    let mut rig = Rig::with_policy(VfPolicy {
        port_vlan: Some(30),
        ..VfPolicy::default()
    });
    let res = rig.bring_up(0);
    assert!(!res.vf_cap_flags.contains(VfCapFlags::VLAN));
    let caps = rig.call(0, Request::GetOffloadVlanV2Caps);
    assert_eq!(caps.body, ReplyBody::VlanCaps(VlanCaps::default()));
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[5]))), ErrParam);
    assert_eq!(rig.status(0, Request::AddVlan(v1(&[5]))), ErrNotSupported);
    let t = rig.table(0);
    assert!(t.vlans.is_empty());
    assert!(
        t.antispoof.vlan,
        "the port VLAN itself is anti-spoof checked"
    );
}

#[test]
fn p21_with_a_port_vlan_in_double_vlan_mode_v1_adds_succeed_and_program_nothing() {
    let mut rig = Rig::new(PfConfig {
        vlan_mode: VlanMode::Double,
        policies: vec![VfPolicy {
            port_vlan: Some(30),
            vlan_v2: false,
            ..VfPolicy::default()
        }],
        ..PfConfig::default()
    });
    let res = rig.bring_up(0);
    assert!(res.vf_cap_flags.contains(VfCapFlags::VLAN));
    assert_eq!(rig.status(0, Request::AddVlan(v1(&[5]))), Success);
    assert!(rig.table(0).vlans.is_empty());
}

#[test]
fn p22_vlan_0_is_never_added_or_removed_by_a_vf() {
    let mut rig = v1_rig(VfPolicy::default());
    assert_eq!(rig.status(0, Request::AddVlan(v1(&[0, 5]))), Success);
    assert_eq!(rig.table(0).vlans, vec![5]);
    assert_eq!(rig.status(0, Request::DelVlan(v1(&[0]))), Success);
    assert_eq!(rig.table(0).vlans, vec![5]);

    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    let absent = (
        VirtchnlVlan {
            tci: 0,
            tci_mask: 0,
            tpid: 0x8100,
        },
        VirtchnlVlan::default(),
    );
    assert_eq!(
        rig.status(0, Request::AddVlanV2(v2_tags(&[absent]))),
        Success
    );
    assert!(rig.table(0).vlans.is_empty());
}

#[test]
fn p23_vlan_anti_spoof_turns_on_at_the_first_vlan_and_off_with_the_last() {
    let mut rig = v1_rig(VfPolicy::default());
    let t = rig.table(0);
    assert!(t.antispoof.mac && !t.antispoof.vlan);
    rig.status(0, Request::AddVlan(v1(&[10, 20])));
    assert!(rig.table(0).antispoof.vlan);
    rig.status(0, Request::DelVlan(v1(&[10])));
    assert!(rig.table(0).antispoof.vlan, "20 is left");
    rig.status(0, Request::DelVlan(v1(&[20])));
    let t = rig.table(0);
    assert!(!t.antispoof.vlan && !t.vlan_pruning);

    let mut rig = v1_rig(VfPolicy {
        spoofchk: false,
        ..VfPolicy::default()
    });
    rig.status(0, Request::AddVlan(v1(&[10])));
    let t = rig.table(0);
    assert!(
        !t.antispoof.vlan && t.vlan_pruning,
        "pruning is on without spoofchk"
    );
}

#[test]
fn p23_a_v1_delete_looks_at_no_more_entries_than_the_vf_has_vlans() {
    let mut rig = v1_rig(VfPolicy::default());
    rig.status(0, Request::AddVlan(v1(&[10])));
    // num_vlan = 2 (VLAN 0 and 10): only the first two entries are processed.
    assert_eq!(rig.status(0, Request::DelVlan(v1(&[99, 98, 10]))), Success);
    assert_eq!(rig.table(0).vlans, vec![10], "the quirk leaves 10 in place");
    assert_eq!(rig.status(0, Request::DelVlan(v1(&[10, 99, 98]))), Success);
    assert!(rig.table(0).vlans.is_empty());
}

#[test]
fn p24_with_true_promisc_a_promiscuous_vf_gets_no_vlan_anti_spoof() {
    let mut rig = Rig::new(PfConfig {
        true_promisc: true,
        policies: vec![VfPolicy {
            trust: true,
            vlan_v2: false,
            ..VfPolicy::default()
        }],
        ..PfConfig::default()
    });
    rig.bring_up(0);
    let promisc = PromiscInfo {
        vsi_id: VSI_ID,
        flags: PromiscFlags::MULTICAST,
    };
    rig.status(0, Request::ConfigPromiscuousMode(promisc));
    rig.status(0, Request::AddVlan(v1(&[10])));
    assert_eq!(rig.table(0).vlans, vec![10]);
    assert!(!rig.table(0).antispoof.vlan);
}

// ---- V2 VLAN ---------------------------------------------------------------

#[test]
fn p25_v2_filters_outside_the_reported_caps_get_err_param() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    let tag = |tci, tci_mask, tpid| VirtchnlVlan {
        tci,
        tci_mask,
        tpid,
    };
    let none = VirtchnlVlan::default();
    let bad = [
        ("outer tag in single VLAN mode", (none, tag(5, 0, 0x8100))),
        ("TPID 0x88a8 not in the caps", (tag(5, 0, 0x88a8), none)),
        ("unknown TPID", (tag(5, 0, 0x1234), none)),
        ("mask without FILTER_MASK", (tag(5, 0x0fff, 0x8100), none)),
        ("PCP without PRIO", (tag(5 | 3 << 13, 0, 0x8100), none)),
    ];
    for (what, filter) in bad {
        let list = v2_tags(&[(VirtchnlVlan::dot1q(9), none), filter]);
        assert_eq!(rig.status(0, Request::AddVlanV2(list)), ErrParam, "{what}");
    }
    assert!(
        rig.table(0).vlans.is_empty(),
        "nothing of a refused list is applied"
    );
}

#[test]
fn p25_v2_adds_beyond_max_filters_get_err_param() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    let caps = rig.call(0, Request::GetOffloadVlanV2Caps);
    let ReplyBody::VlanCaps(caps) = caps.body else {
        panic!("caps expected")
    };
    assert_eq!(caps.filtering.max_filters, 8);
    let eight: Vec<u16> = (1..=8).collect();
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&eight))), Success);
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[9]))), ErrParam);
    assert_eq!(rig.table(0).vlans, eight);
    // A smaller policy limit is reported and enforced.
    let mut rig = Rig::with_policy(VfPolicy {
        max_vlans: 2,
        ..VfPolicy::default()
    });
    rig.bring_up(0);
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[1, 2, 3]))), ErrParam);
    assert!(rig.table(0).vlans.is_empty());
}

#[test]
fn p25_double_vlan_mode_filters_outer_tags_of_three_tpids() {
    let mut rig = Rig::new(PfConfig {
        vlan_mode: VlanMode::Double,
        ..PfConfig::default()
    });
    rig.bring_up(0);
    let outer = |tpid| {
        (
            VirtchnlVlan::default(),
            VirtchnlVlan {
                tci: 100,
                tci_mask: 0,
                tpid,
            },
        )
    };
    let list = v2_tags(&[outer(0x8100), outer(0x88a8), outer(0x9100)]);
    assert_eq!(rig.status(0, Request::AddVlanV2(list)), Success);
    let t = rig.table(0);
    assert_eq!(t.vlans, vec![100]);
    assert_eq!(t.vlans_other_tpid, vec!["0x88a8/100", "0x9100/100"]);
    assert!(t.antispoof.vlan);
    // Inner tags are not filterable in double VLAN mode.
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&[5]))), ErrParam);
}

#[test]
fn p26_v2_anti_spoof_follows_the_non_zero_vlans() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    rig.status(0, Request::AddVlanV2(v2(&[100, 200])));
    assert!(rig.table(0).antispoof.vlan);
    rig.status(0, Request::DelVlanV2(v2(&[100, 200])));
    assert!(!rig.table(0).antispoof.vlan);
}

#[test]
fn v1_and_v2_deletes_apply_to_the_same_table_as_adds() {
    // The V2 view after a V1 VF resets into a V2 grant: one table, not two.
    let mut rig = Rig::with_policy(VfPolicy {
        vlan_v2: false,
        trust: true,
        ..VfPolicy::default()
    });
    rig.bring_up(0);
    rig.status(0, Request::AddVlan(v1(&[10])));
    assert_eq!(rig.table(0).vlans, vec![10]);
    rig.pf
        .set_policy(
            VfId(0),
            VfPolicy {
                trust: true,
                ..VfPolicy::default()
            },
        )
        .expect("valid policy");
    rig.bring_up(0);
    rig.status(0, Request::AddVlanV2(v2(&[10, 20])));
    rig.status(0, Request::DelVlanV2(v2(&[10])));
    assert_eq!(rig.table(0).vlans, vec![20]);
}

#[test]
fn p27_v2_offload_toggles_are_not_supported_because_no_offload_caps_are_offered() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    let caps = rig.call(0, Request::GetOffloadVlanV2Caps);
    let ReplyBody::VlanCaps(caps) = caps.body else {
        panic!("caps expected")
    };
    assert_eq!(caps.offloads, virtchnl::VlanOffloadCaps::default());
    // virtchnl_vlan_setting: outer 0, inner 8100, vport_id 1.
    let mut setting = vec![0u8; 16];
    setting[4] = 1;
    setting[8] = 1;
    for op in [
        VirtchnlOp::EnableVlanStrippingV2,
        VirtchnlOp::DisableVlanStrippingV2,
        VirtchnlOp::EnableVlanInsertionV2,
        VirtchnlOp::DisableVlanInsertionV2,
    ] {
        let replies = rig.raw(0, &encode_frame(op, Success, 1, &setting));
        assert_eq!(replies[0].1.status, ErrNotSupported, "{op}");
    }
}

#[test]
fn p28_v1_vlan_stripping_toggles_and_is_refused_under_a_svm_port_vlan() {
    let mut rig = v1_rig(VfPolicy::default());
    assert!(
        rig.table(0).vlan_stripping,
        "on by default with V1 VLAN (P9)"
    );
    assert_eq!(rig.status(0, Request::DisableVlanStripping), Success);
    assert!(!rig.table(0).vlan_stripping);
    assert_eq!(rig.status(0, Request::EnableVlanStripping), Success);
    assert!(rig.table(0).vlan_stripping);

    // A 1.0 VF under a port VLAN in SVM: VLAN is not granted, so the opcodes are
    // not even allowed.
    let mut rig = Rig::with_policy(VfPolicy {
        port_vlan: Some(7),
        vlan_v2: false,
        ..VfPolicy::default()
    });
    rig.status(0, Request::Version(VersionInfo::V1_0));
    rig.status(0, Request::GetVfResources { caps: None });
    assert_eq!(rig.status(0, Request::EnableVlanStripping), ErrNotSupported);
}

// ---- Spoof check, promiscuous, trust --------------------------------------

#[test]
fn p29_spoofchk_applies_at_once_without_a_reset() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    rig.status(0, Request::AddVlanV2(v2(&[10])));
    rig.pf.set_spoofchk(VfId(0), false).expect("vf0 exists");
    let t = rig.table(0);
    assert_eq!(t.state, VfPhase::Active, "no reset");
    assert_eq!(t.vlans, vec![10]);
    assert!(!t.antispoof.mac && !t.antispoof.vlan);
    rig.pf.set_spoofchk(VfId(0), true).expect("vf0 exists");
    let t = rig.table(0);
    assert!(t.antispoof.mac && t.antispoof.vlan);
}

#[test]
fn p30_an_untrusted_vf_is_told_promiscuous_mode_succeeded_but_nothing_changes() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    let all = PromiscInfo {
        vsi_id: VSI_ID,
        flags: PromiscFlags::UNICAST | PromiscFlags::MULTICAST,
    };
    assert_eq!(rig.status(0, Request::ConfigPromiscuousMode(all)), Success);
    let t = rig.table(0);
    assert!(!t.promisc.unicast && !t.promisc.multicast);
}

#[test]
fn p30_a_trusted_vf_sets_promiscuous_modes_and_vlan_pruning_follows() {
    let mut rig = Rig::trusted();
    rig.bring_up(0);
    let set = |flags| {
        Request::ConfigPromiscuousMode(PromiscInfo {
            vsi_id: VSI_ID,
            flags,
        })
    };
    assert_eq!(rig.status(0, set(PromiscFlags::MULTICAST)), Success);
    let t = rig.table(0);
    assert!(!t.promisc.unicast && t.promisc.multicast && !t.vlan_pruning);
    assert_eq!(rig.status(0, set(PromiscFlags::empty())), Success);
    let t = rig.table(0);
    assert!(!t.promisc.multicast && t.vlan_pruning);
}

#[test]
fn p31_trust_resets_the_vf_and_the_next_v2_caps_carry_the_new_limit() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    rig.pf.set_trust(VfId(0), true).expect("vf0 exists");
    assert_eq!(rig.pf.phase(VfId(0)), Ok(VfPhase::Init));
    rig.status(
        0,
        Request::GetVfResources {
            caps: Some(IAVF_CAPS),
        },
    );
    let caps = rig.call(0, Request::GetOffloadVlanV2Caps);
    let ReplyBody::VlanCaps(caps) = caps.body else {
        panic!("caps expected")
    };
    assert_eq!(caps.filtering.max_filters, 4096);
    let many: Vec<u16> = (1..=20).collect();
    assert_eq!(rig.status(0, Request::AddVlanV2(v2(&many))), Success);
    assert_eq!(rig.table(0).vlan_limit, 4096);
}

// ---- Events and stats -----------------------------------------------------

#[test]
fn p32_enabling_queues_reports_link_up_in_mbps_with_adv_link_speed() {
    let mut rig = Rig::untrusted();
    rig.bring_up_with(0, IAVF_CAPS);
    rig.take_events();
    assert_eq!(rig.status(0, Request::EnableQueues(queues(1))), Success);
    let events = rig.take_events();
    assert_eq!(
        events
            .iter()
            .filter_map(|(_, e)| link_of(e))
            .collect::<Vec<_>>(),
        vec![(25_000, true)]
    );
    assert!(rig.table(0).link_up);
}

#[test]
fn p32_without_adv_link_speed_the_legacy_speed_enum_is_used() {
    let mut rig = Rig::untrusted();
    rig.bring_up_with(0, VfCapFlags::L2);
    rig.take_events();
    rig.status(0, Request::EnableQueues(queues(1)));
    let events = rig.take_events();
    let speed = virtchnl::LinkSpeed::Speed25Gb.to_raw();
    assert_eq!(link_of(&events[0].1), Some((speed, true)));
}

#[test]
fn p32_pf_link_and_host_overrides_are_reported_to_the_vf() {
    let mut rig = Rig::new(PfConfig {
        num_vfs: 2,
        ..PfConfig::default()
    });
    rig.bring_up(0);
    rig.bring_up(1);
    rig.take_events();
    rig.pf.set_pf_link(false);
    let _ = rig.raw(9, &[]);
    let downs: Vec<_> = rig
        .take_events()
        .iter()
        .filter_map(|(vf, e)| link_of(e).map(|l| (vf.0, l)))
        .collect();
    assert_eq!(downs, vec![(0, (0, false)), (1, (0, false))]);
    rig.pf
        .set_link_state(VfId(1), LinkState::Enable)
        .expect("vf1 exists");
    let _ = rig.raw(9, &[]);
    let events = rig.take_events();
    assert_eq!(link_of(&events[0].1), Some((25_000, true)));
    assert!(rig.table(1).link_up && !rig.table(0).link_up);
}

#[test]
fn p32_queue_bitmaps_must_name_existing_queues() {
    let mut rig = Rig::untrusted();
    rig.bring_up_with(0, IAVF_CAPS);
    assert_eq!(rig.status(0, Request::EnableQueues(queues(0))), ErrParam);
    assert_eq!(rig.status(0, Request::EnableQueues(queues(0b10))), ErrParam);
    assert_eq!(
        rig.status(0, Request::EnableQueues(queues(1 << 16))),
        ErrParam
    );
    assert_eq!(rig.table(0).queues.rx, 0);
    assert_eq!(rig.status(0, Request::EnableQueues(queues(1))), Success);
    assert_eq!(rig.status(0, Request::DisableQueues(queues(1))), Success);
    let t = rig.table(0);
    assert_eq!((t.queues.rx, t.queues.tx, t.link_up), (0, 0, false));
}

#[test]
fn p33_a_host_reset_with_notice_sends_reset_impending_at_certain_doom() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    rig.take_events();
    rig.pf.reset_vf(VfId(0), true).expect("vf0 exists");
    let _ = rig.raw(9, &[]);
    assert_eq!(
        rig.take_events(),
        vec![(VfId(0), PfEvent::reset_impending())]
    );
}

#[test]
fn p34_get_stats_is_zero_filled_with_err_param_for_a_wrong_vsi() {
    let mut rig = Rig::untrusted();
    rig.bring_up(0);
    let ok = rig.call(0, Request::GetStats(queues(0)));
    assert_eq!(ok.status, Success);
    let bad = rig.call(
        0,
        Request::GetStats(QueueSelect {
            vsi_id: 5,
            ..queues(0)
        }),
    );
    assert_eq!(bad.status, ErrParam);
    assert_eq!(bad.body, ReplyBody::Stats(virtchnl::EthStats::default()));
}

// ---- Host configuration errors, tables --------------------------------------

#[test]
fn host_configuration_errors_name_what_to_fix() {
    let err = Pf::new(PfConfig {
        num_vfs: 0,
        ..PfConfig::default()
    })
    .unwrap_err();
    assert_eq!(err, crate::Error::BadVfCount(0));
    let mut pf = Pf::new(PfConfig {
        num_vfs: 2,
        ..PfConfig::default()
    })
    .expect("valid");
    let err = pf.set_trust(VfId(2), true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "vf2 does not exist; this PF has 2 VFs (vf0..vf1)"
    );
    assert_eq!(
        pf.set_port_vlan(VfId(0), Some(4095)),
        Err(crate::Error::BadPortVlan(4095))
    );
    assert!(matches!(
        pf.set_admin_mac(VfId(0), Some(mac("01:00:5e:00:00:01"))),
        Err(crate::Error::BadAdminMac(_))
    ));
    assert_eq!(
        pf.policy(VfId(0)),
        Ok(&VfPolicy::default()),
        "a refused policy is not applied"
    );
}

#[test]
fn tables_after_a_typical_bring_up() {
    let mut rig = Rig::new(PfConfig {
        num_vfs: 2,
        policies: vec![VfPolicy {
            admin_mac: Some(mac("02:00:00:00:00:10")),
            ..VfPolicy::default()
        }],
        ..PfConfig::default()
    });
    rig.bring_up(0);
    rig.status(0, add_macs(&["33:33:00:00:00:01"]));
    rig.status(0, Request::AddVlanV2(v2(&[200, 100])));
    insta::assert_yaml_snapshot!(rig.pf.tables());
}

// ---- Kernel-role VFs (no mailbox) --------------------------------------------

const KERNEL_MAC: &str = "02:00:00:00:00:20";
const DRIVER_MAC: &str = "02:00:00:00:00:01";
const STRANGER_MAC: &str = "02:00:00:00:99:99";

/// vf0 driven over the mailbox (brought up, primary MAC [`DRIVER_MAC`]);
/// vf1 in the kernel role with the admin MAC [`KERNEL_MAC`], never spoken to.
fn kernel_rig() -> Rig {
    let mut rig = Rig::new(PfConfig {
        num_vfs: 2,
        policies: vec![
            VfPolicy::default(),
            VfPolicy {
                admin_mac: Some(mac(KERNEL_MAC)),
                ..VfPolicy::default()
            },
        ],
        roles: [(VfId(1), VfRole::Kernel)].into(),
        ..PfConfig::default()
    });
    rig.bring_up(0);
    assert_eq!(rig.status(0, add_macs(&[DRIVER_MAC])), Success);
    rig.take_events();
    rig
}

/// An untagged IPv4 frame from `src` to `dst`.
fn eth(dst: &str, src: &str) -> Vec<u8> {
    let mut frame = mac(dst).0.to_vec();
    frame.extend_from_slice(&mac(src).0);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.resize(60, 0x5a);
    frame
}

/// Where a frame from `vf` went.
fn ports(rig: &mut Rig, vf: u16, frame: &[u8]) -> Vec<Port> {
    let out = rig.pf.switch_from_vf(VfId(vf), frame).expect("VF exists");
    out.into_iter().map(|d| d.to).collect()
}

#[test]
fn kernel_vf_is_host_configured_and_passes_traffic_without_a_mailbox_message() {
    let mut rig = kernel_rig();
    let t = rig.table(1);
    assert_eq!(rig.pf.role(VfId(1)), Ok(VfRole::Kernel));
    assert_eq!((t.role, t.state), (VfRole::Kernel, VfPhase::Active));
    assert_eq!((t.queues.rx, t.queues.tx), (1, 1));
    assert_eq!((t.mac, t.host_mac), (mac(KERNEL_MAC), mac(KERNEL_MAC)));
    assert_eq!(t.macs, vec![mac(KERNEL_MAC)]);
    assert!(t.link_up, "follows the PF's link");

    // From the kernel VF to the driver VF, and back.
    assert_eq!(
        ports(&mut rig, 1, &eth(DRIVER_MAC, KERNEL_MAC)),
        vec![Port::Vf(VfId(0))]
    );
    assert_eq!(
        ports(&mut rig, 0, &eth(KERNEL_MAC, DRIVER_MAC)),
        vec![Port::Vf(VfId(1))]
    );
    // From the wire to it; its broadcast reaches the driver VF and the wire.
    let from_wire = rig.pf.switch_from_uplink(&eth(KERNEL_MAC, STRANGER_MAC));
    assert_eq!(from_wire.len(), 1);
    assert_eq!(from_wire[0].to, Port::Vf(VfId(1)));
    assert_eq!(
        ports(&mut rig, 1, &eth("ff:ff:ff:ff:ff:ff", KERNEL_MAC)),
        vec![Port::Vf(VfId(0)), Port::Uplink]
    );
    // Spoof checking still applies to it.
    assert!(ports(&mut rig, 1, &eth(DRIVER_MAC, STRANGER_MAC)).is_empty());

    let t = rig.table(1);
    assert_eq!((t.traffic.tx_frames, t.traffic.rx_frames), (2, 2));
    assert_eq!(t.traffic.drops.anti_spoof_mac, 1);
    assert_eq!(t.mailbox, MailboxCounters::default(), "no mailbox traffic");
    assert!(rig.pf.poll_effect().is_none(), "nothing sent to any VF");
}

#[test]
fn kernel_vf_answers_a_mailbox_frame_with_an_error_and_changes_nothing() {
    let mut rig = kernel_rig();
    let before = rig.table(1);
    for req in [
        Request::Version(VersionInfo::V1_1),
        Request::GetVfResources {
            caps: Some(IAVF_CAPS),
        },
        Request::EnableQueues(queues(1)),
        Request::DisableQueues(queues(1)),
        Request::DelEthAddr(macs(EtherAddrType::Primary, &[KERNEL_MAC])),
        // Even RESET_VF, which a driver VF never gets a reply to.
        Request::ResetVf,
    ] {
        assert_eq!(rig.status(1, req), ErrNotSupported);
    }
    let garbage = rig.raw(1, &[0xff; 3]);
    assert_eq!(
        garbage.len(),
        1,
        "one reply to a frame too short for a header"
    );
    assert_eq!(garbage[0].1.status, ErrParam);
    assert!(rig.take_events().is_empty(), "no events for a kernel VF");

    let after = rig.table(1);
    assert_eq!(after.mailbox.requests, 7);
    assert_eq!(after.mailbox.replies_err, 7);
    assert_eq!(
        VfTable {
            mailbox: before.mailbox,
            ..after
        },
        before,
        "only the mailbox counters moved"
    );
}

#[test]
fn kernel_vf_is_configured_again_after_every_reset_and_hears_no_events() {
    let mut rig = kernel_rig();
    rig.pf.reset_vf(VfId(1), true).expect("vf1 exists");
    rig.pf.begin_reset(VfId(1), true).expect("vf1 exists");
    assert_eq!(rig.table(1).state, VfPhase::Resetting);
    assert!(ports(&mut rig, 1, &eth(DRIVER_MAC, KERNEL_MAC)).is_empty());
    rig.pf.finish_reset(VfId(1)).expect("vf1 exists");
    rig.pf.set_pf_link(false);
    rig.pf.set_pf_link(true);
    rig.pf.pf_reset();
    // A new admin MAC resets the VF; it comes back with that one.
    let new = "02:00:00:00:00:21";
    rig.pf
        .set_admin_mac(VfId(1), Some(mac(new)))
        .expect("valid MAC");
    let _ = rig.raw(9, &[]);
    assert!(
        rig.take_events().iter().all(|(vf, _)| *vf == VfId(0)),
        "every event went to the driver VF"
    );
    let t = rig.table(1);
    assert_eq!((t.state, t.queues.rx, t.queues.tx), (VfPhase::Active, 1, 1));
    assert_eq!(t.macs, vec![mac(new)]);
    assert_eq!(t.mailbox.events, 0);
    assert_eq!(t.link_reported, None, "never told");
    rig.pf.reset_vf(VfId(0), false).expect("vf0 exists");
    assert_eq!(
        ports(&mut rig, 1, &eth("ff:ff:ff:ff:ff:ff", new)),
        vec![Port::Uplink],
        "the reset driver VF takes nothing; the kernel VF still sends"
    );
}

#[test]
fn the_role_is_in_the_tables_only_for_a_kernel_vf() {
    let rig = kernel_rig();
    let json = serde_json::to_value(rig.pf.tables()).expect("tables serialise");
    assert_eq!(json["vfs"]["vf1"]["role"], "kernel");
    assert!(
        json["vfs"]["vf0"].get("role").is_none(),
        "a driver VF's table is as it always was"
    );
    let err = Pf::new(PfConfig {
        num_vfs: 2,
        roles: [(VfId(2), VfRole::Kernel)].into(),
        ..PfConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        err,
        crate::Error::UnknownVf {
            vf: VfId(2),
            num_vfs: 2
        }
    );
}
