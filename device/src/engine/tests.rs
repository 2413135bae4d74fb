//! Engine behaviour: faults, transcript, ordering, quiesce.

use std::time::{Duration, Instant};

use virtchnl::{
    EventKind, PfMessage, QueueSelect, Reply, Request, VersionInfo, VfCapFlags, VirtchnlOp,
    VirtchnlStatus, VirtchnlVlan, VlanFilterListV2, VlanFilterV2,
};

use super::*;
use crate::pf::{LinkState, PfConfig};

struct Rig {
    engine: Engine,
    now: Instant,
    cookie: u32,
}

impl Rig {
    fn new(vfs: u16) -> Self {
        let now = Instant::now();
        let config = EngineConfig {
            pf: PfConfig {
                num_vfs: vfs,
                ..PfConfig::default()
            },
            seed: 7,
        };
        let mut engine = Engine::new(config, now).expect("valid config");
        for vf in 0..vfs {
            engine.connected(VfId(vf));
        }
        Rig {
            engine,
            now,
            cookie: 0,
        }
    }

    fn send(&mut self, vf: u16, req: &Request) -> u32 {
        self.cookie += 1;
        self.engine
            .handle_mailbox(self.now, VfId(vf), &req.to_frame(self.cookie));
        self.cookie
    }

    /// Everything waiting in `vf`'s receive mailbox, decoded.
    fn inbox(&mut self, vf: u16) -> Vec<(u32, PfMessage)> {
        let mut out = Vec::new();
        while let Some(frame) = self.engine.receive(VfId(vf), Pair::Mailbox, 8192) {
            let (h, msg) = PfMessage::from_frame(&frame).expect("PF frames decode");
            out.push((h.cookie, msg));
        }
        out
    }

    /// Replies (not events) waiting for `vf`, as (cookie, op, status).
    fn replies(&mut self, vf: u16) -> Vec<(u32, VirtchnlOp, VirtchnlStatus)> {
        self.inbox(vf)
            .into_iter()
            .filter_map(|(c, m)| match m {
                PfMessage::Reply(Reply { op, status, .. }) => Some((c, op, status)),
                PfMessage::Event(_) => None,
            })
            .collect()
    }

    fn bring_up(&mut self, vf: u16) {
        let caps = VfCapFlags::L2 | VfCapFlags::VLAN_V2;
        for req in [
            Request::Version(VersionInfo::V1_1),
            Request::GetVfResources { caps: Some(caps) },
            Request::GetOffloadVlanV2Caps,
            Request::EnableQueues(QueueSelect {
                vsi_id: 1,
                rx_queues: 1,
                tx_queues: 1,
            }),
        ] {
            self.send(vf, &req);
        }
        let replies = self.replies(vf);
        assert!(replies.iter().all(|r| r.2.is_success()), "{replies:?}");
    }

    fn vlans(&self, vf: u16) -> Vec<u16> {
        self.engine
            .tables()
            .vf(vf)
            .expect("vf exists")
            .vlans
            .clone()
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }
}

fn add(vids: &[u16]) -> Request {
    Request::AddVlanV2(v2(vids))
}

fn del(vids: &[u16]) -> Request {
    Request::DelVlanV2(v2(vids))
}

fn v2(vids: &[u16]) -> VlanFilterListV2 {
    VlanFilterListV2 {
        vport_id: 1,
        filters: vids
            .iter()
            .map(|&v| VlanFilterV2::single(VirtchnlVlan::dot1q(v), false))
            .collect(),
    }
}

fn rule(op: Option<VirtchnlOp>, action: FaultAction, trigger: Trigger) -> FaultRule {
    FaultRule {
        vf: None,
        op,
        action,
        trigger,
        fired: 0,
    }
}

#[test]
fn without_faults_a_request_is_answered_at_once_and_transcribed() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    let cookie = rig.send(0, &add(&[100]));
    assert_eq!(
        rig.replies(0),
        vec![(cookie, VirtchnlOp::AddVlanV2, VirtchnlStatus::Success)]
    );
    let last = rig.engine.transcript().back().expect("transcribed").clone();
    assert_eq!(last.op, "ADD_VLAN_V2");
    assert_eq!(last.summary, "[inner 0x8100/100]");
    assert_eq!(last.outcome, Outcome::Replied("SUCCESS".into()));
    assert!(rig.engine.quiesce().settled);
}

#[test]
fn a_rejected_request_is_not_applied_and_gets_the_given_status() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    rig.send(0, &add(&[100]));
    rig.replies(0);
    let status = VirtchnlStatus::ErrAdminQueueError;
    rig.engine.add_fault(rule(
        Some(VirtchnlOp::DelVlanV2),
        FaultAction::Reject { status },
        Trigger::Count(1),
    ));
    let cookie = rig.send(0, &del(&[100]));
    assert_eq!(
        rig.replies(0),
        vec![(cookie, VirtchnlOp::DelVlanV2, status)]
    );
    assert_eq!(rig.vlans(0), vec![100], "the PF never saw the DEL");
    let last = rig.engine.transcript().back().expect("transcribed");
    assert_eq!(last.fault.as_deref(), Some("reject ERR_ADMIN_QUEUE_ERROR"));
    // The rule is spent: the next DEL goes through.
    rig.send(0, &del(&[100]));
    assert!(rig.vlans(0).is_empty());
    assert_eq!(rig.engine.faults()[0].fired, 1);
}

#[test]
fn a_dropped_request_never_reaches_the_pf_and_is_never_answered() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    rig.engine
        .add_fault(rule(None, FaultAction::Drop, Trigger::Count(1)));
    rig.send(0, &add(&[5]));
    assert!(rig.replies(0).is_empty());
    assert!(rig.vlans(0).is_empty());
    assert_eq!(
        rig.engine.transcript().back().map(|e| &e.outcome),
        Some(&Outcome::Dropped)
    );
    assert!(
        rig.engine.quiesce().settled,
        "a lost request is not pending"
    );
}

#[test]
fn a_delayed_request_is_handled_when_its_timer_ends() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    rig.engine.add_fault(rule(
        Some(VirtchnlOp::AddVlanV2),
        FaultAction::Delay { delay_ms: 50 },
        Trigger::Count(1),
    ));
    let start = rig.now;
    let cookie = rig.send(0, &add(&[7]));
    assert_eq!(
        rig.engine.poll_timeout(),
        Some(start + Duration::from_millis(50))
    );
    assert_eq!(rig.engine.quiesce().delayed, 1);
    rig.advance(49);
    rig.engine.handle_timeout(rig.now);
    assert!(rig.replies(0).is_empty() && rig.vlans(0).is_empty());
    rig.advance(1);
    rig.engine.handle_timeout(rig.now);
    assert_eq!(
        rig.replies(0),
        vec![(cookie, VirtchnlOp::AddVlanV2, VirtchnlStatus::Success)]
    );
    assert_eq!(rig.vlans(0), vec![7]);
    assert_eq!(rig.engine.poll_timeout(), None);
    let entry = rig.engine.transcript().back().expect("transcribed");
    assert_eq!(entry.replied_at_us.map(|r| r - entry.at_us), Some(50_000));
}

#[test]
fn a_held_request_waits_for_release_and_keeps_the_mailbox_unsettled() {
    let mut rig = Rig::new(2);
    rig.bring_up(0);
    rig.bring_up(1);
    rig.engine
        .add_fault(rule(None, FaultAction::Hold, Trigger::Count(2)));
    let first = rig.send(0, &add(&[1]));
    let second = rig.send(1, &add(&[2]));
    assert_eq!(rig.engine.quiesce().held, 2);
    assert!(!rig.engine.quiesce().settled);
    // Releasing vf1 leaves vf0's request held.
    assert_eq!(rig.engine.release(rig.now, Some(VfId(1))), 1);
    assert_eq!(
        rig.replies(1),
        vec![(second, VirtchnlOp::AddVlanV2, VirtchnlStatus::Success)]
    );
    assert!(rig.replies(0).is_empty());
    assert_eq!(rig.engine.release(rig.now, None), 1);
    assert_eq!(
        rig.replies(0),
        vec![(first, VirtchnlOp::AddVlanV2, VirtchnlStatus::Success)]
    );
    assert!(rig.engine.quiesce().settled);
}

#[test]
fn a_reordered_reply_arrives_after_the_next_message_to_that_vf() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    rig.engine
        .add_fault(rule(None, FaultAction::Reorder, Trigger::Count(1)));
    let cookie = rig.send(0, &add(&[3]));
    assert_eq!(rig.vlans(0), vec![3], "handled at once");
    assert!(rig.inbox(0).is_empty(), "but the reply is held back");
    assert_eq!(rig.engine.quiesce().reordered, 1);
    // The host forces the link down: the event overtakes the reply.
    rig.engine
        .admin(|pf| pf.set_link_state(VfId(0), LinkState::Disable))
        .expect("vf0 exists");
    let inbox = rig.inbox(0);
    assert_eq!(inbox.len(), 2);
    assert!(
        matches!(&inbox[0].1, PfMessage::Event(e) if matches!(e.kind, EventKind::LinkChange { link_up: false, .. }))
    );
    assert!(
        matches!(&inbox[1], (c, PfMessage::Reply(r)) if *c == cookie && r.op == VirtchnlOp::AddVlanV2)
    );
    assert!(rig.engine.quiesce().settled);
}

#[test]
fn rules_match_only_their_vf_and_opcode() {
    let mut rig = Rig::new(2);
    rig.bring_up(0);
    rig.bring_up(1);
    rig.engine.add_fault(FaultRule {
        vf: Some(VfId(1)),
        op: Some(VirtchnlOp::AddVlanV2),
        action: FaultAction::Drop,
        trigger: Trigger::Count(10),
        fired: 0,
    });
    rig.send(0, &add(&[1]));
    rig.send(1, &del(&[2]));
    rig.send(1, &add(&[3]));
    assert_eq!(rig.vlans(0), vec![1]);
    assert!(rig.vlans(1).is_empty());
    assert_eq!(rig.engine.faults()[0].fired, 1);
}

#[test]
fn probabilistic_rules_repeat_exactly_with_the_same_seed() {
    let run = |p: f64| {
        let mut rig = Rig::new(1);
        rig.bring_up(0);
        rig.engine
            .add_fault(rule(None, FaultAction::Drop, Trigger::Probability(p)));
        (0..64u16)
            .map(|i| {
                rig.send(0, &add(&[i % 4 + 1]));
                rig.replies(0).is_empty()
            })
            .collect::<Vec<bool>>()
    };
    let half = run(0.5);
    assert_eq!(half, run(0.5), "same seed, same drops");
    let dropped = half.iter().filter(|d| **d).count();
    assert!(
        (16..=48).contains(&dropped),
        "about half dropped: {dropped}"
    );
    assert!(run(0.0).iter().all(|d| !d));
    assert!(run(1.0).iter().all(|d| *d));
}

#[test]
fn a_disconnect_resets_the_vf_and_discards_what_was_waiting() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    rig.send(0, &add(&[9]));
    rig.engine
        .add_fault(rule(None, FaultAction::Hold, Trigger::Count(1)));
    rig.send(0, &add(&[10]));
    rig.engine.disconnected(rig.now, VfId(0));
    assert!(rig.inbox(0).is_empty());
    assert!(rig.vlans(0).is_empty(), "the VF was reset");
    assert_eq!(
        rig.engine.transcript().back().map(|e| &e.outcome),
        Some(&Outcome::Discarded)
    );
    assert!(rig.engine.quiesce().settled);
}

#[test]
fn reset_vf_is_transcribed_as_never_answered() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    rig.send(0, &Request::ResetVf);
    assert_eq!(
        rig.engine.transcript().back().map(|e| &e.outcome),
        Some(&Outcome::NoReply)
    );
}

#[test]
fn clearing_the_transcript_keeps_later_entries_addressable() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    rig.engine.clear_transcript();
    rig.engine.add_fault(rule(
        None,
        FaultAction::Delay { delay_ms: 5 },
        Trigger::Count(1),
    ));
    rig.send(0, &add(&[1]));
    rig.advance(5);
    rig.engine.handle_timeout(rig.now);
    let t = rig.engine.transcript();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].outcome, Outcome::Replied("SUCCESS".into()));
}

#[test]
fn a_frame_too_large_for_the_receive_buffer_is_dropped_not_stuck() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    rig.send(0, &Request::GetOffloadVlanV2Caps); // 16 + 40 bytes
    rig.send(0, &add(&[1])); // 16 bytes
    let first = rig.engine.receive(VfId(0), Pair::Mailbox, 20);
    assert_eq!(
        first.map(|f| f.len()),
        Some(16),
        "the big reply was skipped"
    );
}

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(60, 0xab);
    f
}

fn give_mac(rig: &mut Rig, vf: u16, mac: [u8; 6]) {
    let list = virtchnl::EtherAddrList {
        vsi_id: 1,
        addrs: vec![virtchnl::EtherAddr {
            addr: virtchnl::MacAddr(mac),
            kind: virtchnl::EtherAddrType::Primary,
        }],
    };
    rig.send(vf, &Request::AddEthAddr(list));
    assert!(rig.replies(vf).iter().all(|r| r.2.is_success()));
}

#[test]
fn data_frames_are_switched_into_the_receivers_backlog_and_the_uplink() {
    let mut rig = Rig::new(2);
    let (a, b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
    for (vf, mac) in [(0, a), (1, b)] {
        rig.bring_up(vf);
        give_mac(&mut rig, vf, mac);
    }
    while rig.engine.poll_wake().is_some() {}
    let unicast = frame(b, a);
    rig.engine.handle_data(rig.now, VfId(0), &unicast);
    assert_eq!(rig.engine.poll_wake(), Some(VfId(1)));
    assert_eq!(rig.engine.receive(VfId(1), Pair::Data, 2048), Some(unicast));
    assert_eq!(rig.engine.poll_uplink(), None, "known unicast stays local");
    let broadcast = frame([0xff; 6], a);
    rig.engine.handle_data(rig.now, VfId(0), &broadcast);
    assert_eq!(
        rig.engine.receive(VfId(1), Pair::Data, 2048),
        Some(broadcast.clone())
    );
    assert_eq!(rig.engine.poll_uplink(), Some(broadcast));
}

#[test]
fn a_full_backlog_or_a_disconnected_receiver_counts_no_rx_buffer() {
    let mut rig = Rig::new(2);
    let (a, b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
    for (vf, mac) in [(0, a), (1, b)] {
        rig.bring_up(vf);
        give_mac(&mut rig, vf, mac);
    }
    for _ in 0..DATA_BACKLOG + 3 {
        rig.engine.handle_data(rig.now, VfId(0), &frame(b, a));
    }
    let drops = |rig: &Rig| {
        rig.engine
            .tables()
            .vf(1)
            .expect("vf1")
            .traffic
            .drops
            .no_rx_buffer
    };
    assert_eq!(drops(&rig), 3);
    rig.engine.disconnected(rig.now, VfId(1));
    rig.engine.handle_data(rig.now, VfId(0), &frame(b, a));
    assert_eq!(rig.engine.receive(VfId(1), Pair::Data, 2048), None);
}

#[test]
fn the_transcript_keeps_the_newest_entries_up_to_its_limit() {
    let mut rig = Rig::new(1);
    rig.bring_up(0);
    rig.engine.clear_transcript();
    rig.engine.add_fault(rule(
        None,
        FaultAction::Delay { delay_ms: 1 },
        Trigger::Count(1),
    ));
    rig.send(0, &add(&[1]));
    for _ in 0..TRANSCRIPT_LIMIT {
        rig.send(0, &Request::GetStats(QueueSelect::default()));
    }
    assert_eq!(rig.engine.transcript().len(), TRANSCRIPT_LIMIT);
    assert_eq!(rig.engine.transcript_forgotten(), 1);
    // The delayed request's entry was forgotten; its late reply is harmless.
    rig.advance(1);
    rig.engine.handle_timeout(rig.now);
    assert_eq!(rig.vlans(0), vec![1]);
    assert_eq!(
        rig.engine.transcript().front().map(|e| e.op.as_str()),
        Some("GET_STATS")
    );
}

#[test]
fn a_held_request_released_as_refused_gets_the_reject_reply_and_never_reaches_the_pf() {
    let mut rig = Rig::new(2);
    rig.bring_up(0);
    rig.bring_up(1);
    rig.send(0, &add(&[100]));
    rig.replies(0);
    rig.engine
        .add_fault(rule(None, FaultAction::Hold, Trigger::Count(3)));
    let first = rig.send(0, &del(&[100]));
    let other = rig.send(1, &add(&[7]));
    let second = rig.send(0, &add(&[200]));
    assert_eq!(rig.engine.quiesce().held, 3);

    let status = VirtchnlStatus::ErrNotSupported;
    let refused = rig.engine.release_refused(rig.now, Some(VfId(0)), status);
    assert_eq!(refused, 2, "both of vf0's, not vf1's");
    assert_eq!(
        rig.replies(0),
        vec![
            (first, VirtchnlOp::DelVlanV2, status),
            (second, VirtchnlOp::AddVlanV2, status)
        ],
        "in arrival order, each with the status given"
    );
    assert_eq!(rig.vlans(0), vec![100], "the PF saw neither request");
    let outcomes: Vec<(&str, &Outcome)> = rig
        .engine
        .transcript()
        .iter()
        .filter(|e| e.vf == VfId(0) && e.fault.is_some())
        .map(|e| (e.op.as_str(), &e.outcome))
        .collect();
    let refusal = Outcome::Replied("ERR_NOT_SUPPORTED".into());
    assert_eq!(
        outcomes,
        vec![("DEL_VLAN_V2", &refusal), ("ADD_VLAN_V2", &refusal)]
    );
    // The same reply a reject fault gives, byte for byte.
    let mut reject = Rig::new(1);
    reject.bring_up(0);
    reject.engine.add_fault(rule(
        None,
        FaultAction::Reject { status },
        Trigger::Count(1),
    ));
    reject.cookie = first - 1;
    reject.send(0, &del(&[100]));
    let mut held = Rig::new(1);
    held.bring_up(0);
    held.engine
        .add_fault(rule(None, FaultAction::Hold, Trigger::Count(1)));
    held.cookie = first - 1;
    held.send(0, &del(&[100]));
    held.engine.release_refused(held.now, None, status);
    let refusal = held
        .engine
        .receive(VfId(0), Pair::Mailbox, 4096)
        .expect("the refusal");
    assert_eq!(
        Some(refusal),
        reject.engine.receive(VfId(0), Pair::Mailbox, 4096)
    );

    // vf1's request is still held; a plain release handles it.
    assert_eq!(rig.engine.quiesce().held, 1);
    assert_eq!(rig.engine.release(rig.now, None), 1);
    assert_eq!(
        rig.replies(1),
        vec![(other, VirtchnlOp::AddVlanV2, VirtchnlStatus::Success)]
    );
    assert_eq!(rig.vlans(1), vec![7]);
}

#[test]
fn the_mailbox_state_counts_every_frame_a_vf_took_whoever_produced_it() {
    let mut rig = Rig::new(1);
    assert_eq!(rig.engine.mailbox(VfId(0)), Some(MailboxState::default()));
    assert_eq!(rig.engine.mailbox(VfId(1)), None, "no such VF");
    let pf_counted = |rig: &Rig| {
        let m = rig.engine.tables().vf(0).expect("vf0").mailbox;
        m.replies_ok + m.replies_err + m.events
    };
    rig.bring_up(0); // four replies and two link events, all taken
    let start = rig.engine.mailbox(VfId(0)).expect("vf0");
    assert_eq!((start.delivered, start.waiting), (6, 0));
    assert_eq!(pf_counted(&rig), 6, "without faults, the PF's count agrees");

    // A reject fault and a refused release answer without the PF: the PF's
    // counters miss them, the engine's do not.
    let status = VirtchnlStatus::ErrParam;
    rig.engine.add_fault(rule(
        None,
        FaultAction::Reject { status },
        Trigger::Count(1),
    ));
    rig.send(0, &add(&[1]));
    rig.engine
        .add_fault(rule(None, FaultAction::Hold, Trigger::Count(1)));
    rig.send(0, &add(&[2]));
    rig.engine.release_refused(rig.now, Some(VfId(0)), status);
    // A PF-initiated reset: RESET_IMPENDING.
    rig.engine
        .admin(|pf| pf.reset_vf(VfId(0), true))
        .expect("vf0 exists");
    let waiting = rig.engine.mailbox(VfId(0)).expect("vf0");
    assert_eq!((waiting.delivered, waiting.waiting), (6, 3));
    assert_eq!(rig.inbox(0).len(), 3);
    let taken = rig.engine.mailbox(VfId(0)).expect("vf0");
    assert_eq!((taken.delivered, taken.waiting), (9, 0));
    assert_eq!(pf_counted(&rig), 7, "only the event went through the PF");

    // A reordered reply is not waiting until it is sent.
    rig.bring_up(0);
    rig.engine
        .add_fault(rule(None, FaultAction::Reorder, Trigger::Count(1)));
    rig.send(0, &add(&[3]));
    let held_back = rig.engine.mailbox(VfId(0)).expect("vf0");
    assert_eq!((held_back.waiting, held_back.reordered), (0, 1));

    // A new connection starts over, as a new driver's counters do.
    rig.engine.disconnected(rig.now, VfId(0));
    rig.engine.connected(VfId(0));
    assert_eq!(rig.engine.mailbox(VfId(0)), Some(MailboxState::default()));
}
