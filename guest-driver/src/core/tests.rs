//! Unit tests: the two VLAN machines transition by transition, then the
//! adapter against a scripted PF (hand-written replies, fake clock). The
//! tests against the real PF model are in `tests/core_*.rs`.

use std::time::{Duration, Instant};

use virtchnl::{
    EventKind, EventSeverity, MacAddr, PfEvent, PfMessage, PromiscFlags, Reply, ReplyBody, Request,
    SupportedCaps, VersionInfo, VfCapFlags, VfResource, VirtchnlOp, VirtchnlStatus, VlanCaps,
    VlanFilteringCaps, VlanSupport, VsiResource, VsiType,
};

use super::flags::AqFlags;
use super::vlan::{Notice, VlanFilters};
use super::*;

use VlanState::{Active, Add, Adding, Disable, Inactive, IsNew, Remove, Removing};

// ----- the VLAN machines -----------------------------------------------------

/// One transition applied to a list.
#[derive(Debug, Clone, Copy)]
enum Step {
    UserAdd(u16),
    UserDel(u16),
    Down,
    Up,
    SendAdd,
    SendDel,
    /// ADD reply: V2?, success?, the VIDs the message carried.
    AddReply(bool, bool, &'static [u16]),
    /// DEL reply: success?, the VIDs the message carried.
    DelReply(bool, &'static [u16]),
    /// A reset, with the VLANs the kernel has.
    Reset(&'static [u16]),
}

struct Outcome {
    list: Vec<(u16, VlanState)>,
    flags: AqFlags,
    sent: Vec<u16>,
    notices: Vec<Notice>,
}

fn run(fsm: VlanFsm, start: &[(u16, VlanState)], step: Step) -> Outcome {
    let states: Vec<(Vlan, VlanState)> = start.iter().map(|&(v, s)| (Vlan::dot1q(v), s)).collect();
    let mut filters = VlanFilters::with_states(fsm, &states);
    let mut flags = AqFlags::empty();
    let mut sent = Vec::new();
    let mut notices = Vec::new();
    let vids = |v: &[u16]| v.iter().map(|&v| Vlan::dot1q(v)).collect::<Vec<_>>();
    match step {
        Step::UserAdd(v) => flags = filters.user_add(Vlan::dot1q(v)),
        Step::UserDel(v) => flags = filters.user_del(Vlan::dot1q(v)),
        Step::Down => flags = filters.on_down(),
        Step::Up => flags = filters.on_up(),
        Step::SendAdd => sent = filters.take_add(100),
        Step::SendDel => sent = filters.take_del(100, true),
        Step::AddReply(v2, ok, carried) => notices = filters.on_add_reply(v2, ok, &vids(carried)),
        Step::DelReply(ok, carried) => notices = filters.on_del_reply(ok, &vids(carried)),
        Step::Reset(kernel) => {
            filters.on_reconfigure(&kernel.iter().map(|&v| Vlan::dot1q(v)).collect());
        }
    }
    Outcome {
        list: list(&filters),
        flags,
        sent: sent.iter().map(|v| v.vid).collect(),
        notices,
    }
}

fn list(filters: &VlanFilters) -> Vec<(u16, VlanState)> {
    filters.iter().map(|(v, s)| (v.vid, s)).collect()
}

/// Checks one transition: the list after it, and what it scheduled or sent.
fn check(
    fsm: VlanFsm,
    start: &[(u16, VlanState)],
    step: Step,
    expect: &[(u16, VlanState)],
    flags: AqFlags,
    sent: &[u16],
) -> Vec<Notice> {
    let out = run(fsm, start, step);
    let ctx = format!("{fsm}: {start:?} --{step:?}-->");
    assert_eq!(out.list, expect.to_vec(), "{ctx} list");
    assert_eq!(out.flags, flags, "{ctx} flags");
    assert_eq!(out.sent, sent.to_vec(), "{ctx} message");
    out.notices
}

const NONE: AqFlags = AqFlags::empty();
const ADD_F: AqFlags = AqFlags::ADD_VLAN_FILTER;
const DEL_F: AqFlags = AqFlags::DEL_VLAN_FILTER;
const F: VlanFsm = VlanFsm::Fixed;
const L: VlanFsm = VlanFsm::Legacy;

#[test]
fn fixed_add_goes_add_adding_active() {
    check(F, &[], Step::UserAdd(5), &[(5, Add)], ADD_F, &[]);
    check(F, &[(5, Add)], Step::SendAdd, &[(5, Adding)], NONE, &[5]);
    let n = check(
        F,
        &[(5, Adding)],
        Step::AddReply(true, true, &[5]),
        &[(5, Active)],
        NONE,
        &[],
    );
    assert_eq!(n, vec![Notice::Committed(Vlan::dot1q(5))]);
}

#[test]
fn fixed_v1_add_success_completes_too() {
    check(
        F,
        &[(5, Adding)],
        Step::AddReply(false, true, &[5]),
        &[(5, Active)],
        NONE,
        &[],
    );
}

#[test]
fn fixed_rejected_add_frees_the_filter_in_both_flavours() {
    for v2 in [true, false] {
        let n = check(
            F,
            &[(5, Adding)],
            Step::AddReply(v2, false, &[5]),
            &[],
            NONE,
            &[],
        );
        assert_eq!(n, vec![Notice::Rejected(Vlan::dot1q(5), FilterOp::Add)]);
    }
}

#[test]
fn fixed_del_waits_for_the_pf() {
    check(
        F,
        &[(5, Active)],
        Step::UserDel(5),
        &[(5, Remove)],
        DEL_F,
        &[],
    );
    check(
        F,
        &[(5, Remove)],
        Step::SendDel,
        &[(5, Removing)],
        NONE,
        &[5],
    );
    let n = check(
        F,
        &[(5, Removing)],
        Step::DelReply(true, &[5]),
        &[],
        NONE,
        &[],
    );
    assert_eq!(n, vec![Notice::Removed(Vlan::dot1q(5))]);
}

#[test]
fn fixed_rejected_del_reverts_to_active() {
    let n = check(
        F,
        &[(5, Removing)],
        Step::DelReply(false, &[5]),
        &[(5, Active)],
        NONE,
        &[],
    );
    assert_eq!(n, vec![Notice::Rejected(Vlan::dot1q(5), FilterOp::Remove)]);
}

#[test]
fn fixed_no_second_del_for_a_removing_filter() {
    check(
        F,
        &[(5, Removing)],
        Step::UserDel(5),
        &[(5, Removing)],
        NONE,
        &[],
    );
}

#[test]
fn fixed_add_during_del_is_queued_after_it() {
    check(
        F,
        &[(5, Removing)],
        Step::UserAdd(5),
        &[(5, Add)],
        ADD_F,
        &[],
    );
    // The DEL completes: the filter stays ADD and is added again.
    check(
        F,
        &[(5, Add)],
        Step::DelReply(true, &[5]),
        &[(5, Add)],
        NONE,
        &[],
    );
}

#[test]
fn fixed_add_during_rejected_del_is_active_at_once() {
    // H3: the PF still has it.
    let n = check(
        F,
        &[(5, Add)],
        Step::DelReply(false, &[5]),
        &[(5, Active)],
        NONE,
        &[],
    );
    assert!(n.is_empty());
}

#[test]
fn fixed_delete_again_while_the_del_is_in_flight_keeps_the_filter_tracked() {
    // H5: DEL sent (REMOVING), re-added (ADD), deleted again before the DEL
    // completed. Upstream frees it; here the DEL in flight still owns it.
    let v = Vlan::dot1q(5);
    let mut filters = VlanFilters::with_states(F, &[(v, Remove)]);
    assert_eq!(filters.take_del(100, true), vec![v]);
    assert_eq!(filters.user_add(v), ADD_F);
    assert_eq!(filters.get(v), Some(Add));
    assert_eq!(filters.user_del(v), NONE, "no second DEL");
    assert_eq!(filters.get(v), Some(Removing));
    let notices = filters.on_del_reply(false, &[v]);
    assert_eq!(filters.get(v), Some(Active), "the PF kept it, so do we");
    assert_eq!(notices, vec![Notice::Rejected(v, FilterOp::Remove)]);
    // Once the DEL has been answered, an unsent ADD is simply forgotten.
    let mut filters = VlanFilters::with_states(F, &[(v, Remove)]);
    let _ = filters.take_del(100, true);
    let _ = filters.user_add(v);
    let _ = filters.on_del_reply(true, &[v]);
    assert_eq!(filters.get(v), Some(Add));
    assert_eq!(filters.user_del(v), NONE);
    assert_eq!(filters.get(v), None);
}

#[test]
fn fixed_add_before_del_is_sent_cancels_it() {
    check(
        F,
        &[(5, Remove)],
        Step::UserAdd(5),
        &[(5, Active)],
        NONE,
        &[],
    );
}

#[test]
fn fixed_del_of_an_unsent_filter_forgets_it() {
    check(F, &[(5, Add)], Step::UserDel(5), &[], NONE, &[]);
}

#[test]
fn fixed_down_and_up_leave_filters_alone() {
    let all = [
        (1, Add),
        (2, Adding),
        (3, Active),
        (4, Remove),
        (5, Removing),
    ];
    check(F, &all, Step::Down, &all, NONE, &[]);
    check(F, &all, Step::Up, &all, NONE, &[]);
}

#[test]
fn fixed_reset_re_adds_what_the_kernel_has() {
    let all = [
        (1, Add),
        (2, Adding),
        (3, Active),
        (4, Remove),
        (5, Removing),
    ];
    // 3 is ACTIVE after a refused DEL: the kernel no longer has it. 6 was
    // refused by the PF before the reset: the kernel still has it.
    let kernel = &[1, 2, 6];
    check(
        F,
        &all,
        Step::Reset(kernel),
        &[(1, Add), (2, Add), (6, Add)],
        NONE,
        &[],
    );
}

#[test]
fn fixed_rejected_add_frees_filters_changed_in_flight() {
    // H2: ADDING → REMOVE (user del) → ACTIVE (user add) while the ADD was in
    // flight; the PF never had it.
    let n = check(
        F,
        &[(5, Active)],
        Step::AddReply(true, false, &[5]),
        &[],
        NONE,
        &[],
    );
    assert_eq!(n, vec![Notice::Rejected(Vlan::dot1q(5), FilterOp::Add)]);
    let n = check(
        F,
        &[(5, Remove)],
        Step::AddReply(true, false, &[5]),
        &[],
        NONE,
        &[],
    );
    assert!(n.is_empty());
    // Filters the message did not carry are left alone.
    check(
        F,
        &[(6, Active)],
        Step::AddReply(true, false, &[5]),
        &[(6, Active)],
        NONE,
        &[],
    );
}

#[test]
fn legacy_v1_add_never_completes() {
    check(L, &[(5, Add)], Step::SendAdd, &[(5, IsNew)], NONE, &[5]);
    for ok in [true, false] {
        check(
            L,
            &[(5, IsNew)],
            Step::AddReply(false, ok, &[5]),
            &[(5, IsNew)],
            NONE,
            &[],
        );
    }
}

#[test]
fn legacy_v2_add_completes_or_is_freed() {
    check(
        L,
        &[(5, IsNew)],
        Step::AddReply(true, true, &[5]),
        &[(5, Active)],
        NONE,
        &[],
    );
    check(
        L,
        &[(5, IsNew)],
        Step::AddReply(true, false, &[5]),
        &[],
        NONE,
        &[],
    );
}

#[test]
fn legacy_del_frees_the_filter_when_sent() {
    check(
        L,
        &[(5, Active)],
        Step::UserDel(5),
        &[(5, Remove)],
        DEL_F,
        &[],
    );
    check(L, &[(5, Remove)], Step::SendDel, &[], NONE, &[5]);
    // The reply, whatever it says, changes nothing.
    check(L, &[], Step::DelReply(false, &[5]), &[], NONE, &[]);
}

#[test]
fn legacy_down_disables_every_filter_and_up_restores_them() {
    let all = [(1, Add), (2, IsNew), (3, Active), (4, Remove)];
    let disabled = [(1, Disable), (2, Disable), (3, Disable), (4, Disable)];
    check(L, &all, Step::Down, &disabled, DEL_F, &[]);
    check(
        L,
        &disabled,
        Step::SendDel,
        &[(1, Inactive), (2, Inactive), (3, Inactive), (4, Inactive)],
        NONE,
        &[1, 2, 3, 4],
    );
    check(L, &[(3, Inactive)], Step::Up, &[(3, Add)], ADD_F, &[]);
}

#[test]
fn legacy_disable_overwrites_a_pending_remove() {
    // The kernel removed VLAN 5 (REMOVE) and the netdev went down before the
    // DEL was sent: DISABLE wins, so up restores the filter.
    check(L, &[(5, Remove)], Step::Down, &[(5, Disable)], DEL_F, &[]);
}

#[test]
fn legacy_reset_re_adds_everything() {
    let all = [(1, IsNew), (2, Active), (3, Inactive), (4, Remove)];
    check(
        L,
        &all,
        Step::Reset(&[]),
        &[(1, Add), (2, Add), (3, Add), (4, Add)],
        NONE,
        &[],
    );
}

// ----- the adapter against a scripted PF -------------------------------------

const VF_MAC: MacAddr = MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

/// An adapter and a clock; the test plays the PF by hand.
struct Script {
    now: Instant,
    vf: Adapter,
    /// The request waiting for the test's answer.
    pending: Option<Transmit>,
    events: Vec<Event>,
}

impl Script {
    fn new(fsm: VlanFsm) -> Self {
        Script {
            now: Instant::now(),
            vf: Adapter::new(Config::with_fsm(fsm)),
            pending: None,
            events: Vec::new(),
        }
    }

    /// The next request; panics if there is none or one is still unanswered.
    fn expect(&mut self, op: VirtchnlOp) -> Request {
        assert!(self.pending.is_none(), "previous request not answered");
        let tx = self
            .vf
            .poll_transmit(self.now)
            .unwrap_or_else(|| panic!("expected {op}, nothing sent: {:#?}", self.vf.status()));
        assert_eq!(tx.op(), op, "{:?}", tx.request);
        let request = tx.request.clone();
        self.pending = Some(tx);
        request
    }

    fn nothing_sent(&mut self) {
        assert_eq!(self.vf.poll_transmit(self.now), None);
    }

    fn answer(&mut self, status: VirtchnlStatus, body: ReplyBody) {
        let tx = self.pending.take().expect("a request to answer");
        let reply = Reply {
            op: tx.op(),
            status,
            body,
        };
        self.vf
            .handle_pf_message(self.now, tx.cookie, PfMessage::Reply(reply));
        self.drain();
    }

    fn ok(&mut self) {
        self.answer(VirtchnlStatus::Success, ReplyBody::Empty);
    }

    fn event(&mut self, kind: EventKind) {
        let event = PfEvent {
            kind,
            severity: EventSeverity::Info,
        };
        self.vf
            .handle_pf_message(self.now, 0, PfMessage::Event(event));
        self.drain();
    }

    fn netdev(&mut self, event: NetdevEvent) -> Result<(), Refused> {
        let result = self.vf.handle_netdev(event);
        self.drain();
        result
    }

    fn drain(&mut self) {
        while let Some(e) = self.vf.poll_event() {
            self.events.push(e);
        }
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.drain();
        std::mem::take(&mut self.events)
            .into_iter()
            .filter(|e| !matches!(e, Event::Log(_)))
            .collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.vf.handle_timeout(self.now);
        self.drain();
    }

    /// Negotiates with a PF that grants `granted`.
    fn init(&mut self, granted: VfCapFlags) {
        self.expect(VirtchnlOp::Version);
        self.answer(
            VirtchnlStatus::Success,
            ReplyBody::Version(VersionInfo::V1_1),
        );
        let req = self.expect(VirtchnlOp::GetVfResources);
        assert_eq!(
            req,
            Request::GetVfResources {
                caps: Some(DEFAULT_CAPS)
            }
        );
        self.answer(
            VirtchnlStatus::Success,
            ReplyBody::VfResource(resources(granted)),
        );
        if granted.contains(VfCapFlags::VLAN_V2) {
            self.expect(VirtchnlOp::GetOffloadVlanV2Caps);
            self.answer(VirtchnlStatus::Success, ReplyBody::VlanCaps(svm_caps(8)));
        }
        assert!(matches!(self.vf.phase(), Phase::Down | Phase::Running));
    }

    fn ready(fsm: VlanFsm) -> Self {
        let mut s = Script::new(fsm);
        s.init(VfCapFlags::L2 | VfCapFlags::VLAN_V2 | VfCapFlags::ADV_LINK_SPEED);
        s.take_events();
        s
    }

    /// Up, with every request answered and the link up.
    fn running(fsm: VlanFsm) -> Self {
        let mut s = Script::ready(fsm);
        s.netdev(NetdevEvent::Up).expect("up");
        s.expect(VirtchnlOp::AddEthAddr);
        s.ok();
        s.expect(VirtchnlOp::EnableQueues);
        s.ok();
        s.event(EventKind::LinkChange {
            link_speed: 25_000,
            link_up: true,
        });
        s.nothing_sent();
        assert!(s.vf.carrier());
        s.take_events();
        s
    }
}

fn resources(granted: VfCapFlags) -> VfResource {
    VfResource {
        num_queue_pairs: 1,
        max_vectors: 2,
        max_mtu: 9728,
        vf_cap_flags: granted,
        rss_key_size: 52,
        rss_lut_size: 64,
        vsi_res: vec![VsiResource {
            vsi_id: 1,
            num_queue_pairs: 1,
            vsi_type: VsiType::Sriov,
            qset_handle: 0,
            default_mac_addr: VF_MAC,
        }],
    }
}

fn svm_caps(max_filters: u16) -> VlanCaps {
    VlanCaps {
        filtering: VlanFilteringCaps {
            filtering_support: SupportedCaps {
                outer: VlanSupport::empty(),
                inner: VlanSupport::ETHERTYPE_8100,
            },
            ethertype_init: VlanSupport::ETHERTYPE_8100,
            max_filters,
        },
        offloads: Default::default(),
    }
}

fn vids(req: &Request) -> Vec<u16> {
    match req {
        Request::AddVlan(l) | Request::DelVlan(l) => l.vids.clone(),
        Request::AddVlanV2(l) | Request::DelVlanV2(l) => l
            .filters
            .iter()
            .map(|f| f.inner.tci | f.outer.tci)
            .collect(),
        other => panic!("not a VLAN request: {other:?}"),
    }
}

#[test]
fn init_negotiates_version_resources_and_vlan_v2_caps() {
    let mut s = Script::new(VlanFsm::Fixed);
    s.init(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
    assert_eq!(
        s.take_events(),
        vec![Event::MacAddress(VF_MAC), Event::Ready]
    );
    let status = s.vf.status();
    assert_eq!(status.vlan_ops, "v2");
    assert_eq!(status.mac, Some(VF_MAC));
    s.nothing_sent();
}

#[test]
fn init_without_vlan_v2_skips_the_caps_step() {
    let mut s = Script::new(VlanFsm::Fixed);
    s.init(VfCapFlags::L2 | VfCapFlags::VLAN);
    assert_eq!(s.vf.status().vlan_ops, "v1");
}

#[test]
fn init_uses_the_fallback_mac_when_the_pf_has_none() {
    let mut s = Script::new(VlanFsm::Fixed);
    s.expect(VirtchnlOp::Version);
    s.answer(
        VirtchnlStatus::Success,
        ReplyBody::Version(VersionInfo::V1_1),
    );
    s.expect(VirtchnlOp::GetVfResources);
    let mut res = resources(VfCapFlags::L2);
    res.vsi_res[0].default_mac_addr = MacAddr::ZERO;
    s.answer(VirtchnlStatus::Success, ReplyBody::VfResource(res));
    assert_eq!(s.vf.mac(), Some(Config::default().fallback_mac));
}

#[test]
fn init_failure_retries_after_a_delay_then_gives_up() {
    let mut s = Script::new(VlanFsm::Fixed);
    for attempt in 1..=20 {
        s.expect(VirtchnlOp::Version);
        s.answer(VirtchnlStatus::ErrParam, ReplyBody::Empty);
        if attempt == 20 {
            break;
        }
        s.nothing_sent();
        assert_eq!(s.vf.poll_timeout(), Some(s.now + Duration::from_secs(1)));
        s.advance(Duration::from_secs(1));
    }
    assert_eq!(s.vf.phase(), Phase::Failed);
    assert!(s.take_events().contains(&Event::Failed));
    s.nothing_sent();
    // A device reset brings it back.
    s.vf.handle_device_ready(s.now);
    s.expect(VirtchnlOp::Version);
}

#[test]
fn one_request_in_flight_and_foreign_replies_are_ignored() {
    let mut s = Script::ready(VlanFsm::Fixed);
    s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(10))).unwrap();
    let tx = s.vf.poll_transmit(s.now).expect("ADD_VLAN_V2");
    s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(11))).unwrap();
    assert_eq!(s.vf.poll_transmit(s.now), None, "10 still in flight");
    // Right opcode, wrong cookie; then wrong opcode, right cookie.
    for (op, cookie) in [
        (VirtchnlOp::AddVlanV2, tx.cookie + 100),
        (VirtchnlOp::DelVlanV2, tx.cookie),
    ] {
        let reply = Reply::empty(op, VirtchnlStatus::Success);
        s.vf.handle_pf_message(s.now, cookie, PfMessage::Reply(reply));
    }
    assert_eq!(s.vf.vlan_state(Vlan::dot1q(10)), Some(Adding));
    assert_eq!(s.vf.status().counters.replies_ignored, 2);
    s.pending = Some(tx);
    s.ok();
    assert_eq!(s.vf.vlan_state(Vlan::dot1q(10)), Some(Active));
    let req = s.expect(VirtchnlOp::AddVlanV2);
    assert_eq!(vids(&req), vec![11]);
}

#[test]
fn up_serves_the_watchdog_in_iavf_order() {
    let mut s = Script::ready(VlanFsm::Fixed);
    s.netdev(NetdevEvent::RxModeChanged {
        promisc: false,
        allmulti: true,
    })
    .unwrap();
    s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(7))).unwrap();
    s.netdev(NetdevEvent::Up).unwrap();
    assert_eq!(
        s.vf.status().pending,
        vec![
            "ADD_MAC_FILTER",
            "ADD_VLAN_FILTER",
            "ENABLE_QUEUES",
            "CONFIGURE_PROMISC_MODE"
        ]
    );
    let Request::AddEthAddr(list) = s.expect(VirtchnlOp::AddEthAddr) else {
        unreachable!()
    };
    assert_eq!(list.addrs[0].addr, VF_MAC);
    assert_eq!(list.addrs[0].kind, virtchnl::EtherAddrType::Primary);
    s.ok();
    s.expect(VirtchnlOp::AddVlanV2);
    s.ok();
    s.expect(VirtchnlOp::EnableQueues);
    s.ok();
    let Request::ConfigPromiscuousMode(p) = s.expect(VirtchnlOp::ConfigPromiscuousMode) else {
        unreachable!()
    };
    assert_eq!(p.flags, PromiscFlags::MULTICAST);
    s.ok();
    s.nothing_sent();
}

#[test]
fn carrier_follows_link_only_once_queues_are_enabled() {
    let mut s = Script::ready(VlanFsm::Fixed);
    s.netdev(NetdevEvent::Up).unwrap();
    s.event(EventKind::LinkChange {
        link_speed: 25_000,
        link_up: true,
    });
    assert!(!s.vf.carrier(), "link up before the queues is ignored");
    s.expect(VirtchnlOp::AddEthAddr);
    s.ok();
    s.expect(VirtchnlOp::EnableQueues);
    s.ok();
    assert_eq!(s.take_events(), vec![Event::Queues(true)]);
    s.event(EventKind::LinkChange {
        link_speed: 25_000,
        link_up: true,
    });
    assert_eq!(s.take_events(), vec![Event::Carrier(true)]);
    assert_eq!(s.vf.status().link_speed_mbps, Some(25_000));
    s.event(EventKind::LinkChange {
        link_speed: 0,
        link_up: false,
    });
    assert_eq!(s.take_events(), vec![Event::Carrier(false)]);
}

#[test]
fn fixed_down_disables_queues_and_removes_only_the_own_mac() {
    let mut s = Script::running(VlanFsm::Fixed);
    s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(7))).unwrap();
    s.expect(VirtchnlOp::AddVlanV2);
    s.ok();
    s.netdev(NetdevEvent::Down).unwrap();
    assert_eq!(s.take_events(), vec![Event::Carrier(false)]);
    s.expect(VirtchnlOp::DisableQueues);
    s.ok();
    let Request::DelEthAddr(list) = s.expect(VirtchnlOp::DelEthAddr) else {
        unreachable!()
    };
    assert_eq!(list.addrs.len(), 1);
    assert_eq!(list.addrs[0].addr, VF_MAC);
    s.ok();
    s.nothing_sent();
    assert_eq!(s.vf.vlan_state(Vlan::dot1q(7)), Some(Active));
}

#[test]
fn legacy_down_also_deletes_vlans_and_up_re_adds_them() {
    let mut s = Script::running(VlanFsm::Legacy);
    s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(7))).unwrap();
    s.expect(VirtchnlOp::AddVlanV2);
    s.ok();
    s.netdev(NetdevEvent::Down).unwrap();
    s.expect(VirtchnlOp::DisableQueues);
    s.ok();
    s.expect(VirtchnlOp::DelEthAddr);
    s.ok();
    let req = s.expect(VirtchnlOp::DelVlanV2);
    assert_eq!(vids(&req), vec![7]);
    s.ok();
    assert_eq!(s.vf.vlan_state(Vlan::dot1q(7)), Some(Inactive));
    s.netdev(NetdevEvent::Up).unwrap();
    s.expect(VirtchnlOp::AddEthAddr);
    s.ok();
    let req = s.expect(VirtchnlOp::AddVlanV2);
    assert_eq!(vids(&req), vec![7]);
    s.ok();
    s.expect(VirtchnlOp::EnableQueues);
}

#[test]
fn vlan_adds_are_refused_as_iavf_refuses_them() {
    let mut s = Script::new(VlanFsm::Fixed);
    assert_eq!(
        s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(5))),
        Err(Refused::NotReady)
    );
    let mut s = Script::ready(VlanFsm::Fixed);
    assert_eq!(s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(0))), Ok(()));
    assert_eq!(s.vf.vlan_filters().count(), 0, "VID 0 is ignored");
    assert_eq!(
        s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(4096))),
        Err(Refused::BadVid { vid: 4096 })
    );
    assert_eq!(
        s.netdev(NetdevEvent::VlanAdded(Vlan::dot1ad(5))),
        Err(Refused::UnsupportedTpid { tpid: 0x88a8 })
    );
    for vid in 1..=8 {
        s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(vid))).unwrap();
    }
    assert_eq!(
        s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(9))),
        Err(Refused::VlanLimit { limit: 8 })
    );
    // An existing VLAN is not a new filter.
    assert_eq!(s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(8))), Ok(()));

    let mut s = Script::new(VlanFsm::Fixed);
    s.init(VfCapFlags::L2);
    assert_eq!(
        s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(5))),
        Err(Refused::VlanFilteringNotAllowed)
    );
}

#[test]
fn v1_requests_carry_vids() {
    let mut s = Script::new(VlanFsm::Fixed);
    s.init(VfCapFlags::L2 | VfCapFlags::VLAN);
    s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(100))).unwrap();
    let req = s.expect(VirtchnlOp::AddVlan);
    assert_eq!(vids(&req), vec![100]);
}

#[test]
fn reply_timeout_after_init_resets_the_vf() {
    let mut s = Script::ready(VlanFsm::Fixed);
    s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(5))).unwrap();
    s.expect(VirtchnlOp::AddVlanV2);
    assert_eq!(s.vf.poll_timeout(), Some(s.now + Duration::from_secs(5)));
    s.pending = None; // the PF never answers
    s.advance(Duration::from_secs(5));
    assert_eq!(s.vf.phase(), Phase::Resetting);
    assert_eq!(
        s.take_events(),
        vec![Event::ResetStarted(ResetReason::ReplyTimeout {
            op: VirtchnlOp::AddVlanV2
        })]
    );
    let tx = s.vf.poll_transmit(s.now).expect("RESET_VF");
    assert_eq!(tx.request, Request::ResetVf);
    s.nothing_sent();
    s.vf.handle_device_ready(s.now);
    s.init(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
    assert_eq!(s.vf.vlan_state(Vlan::dot1q(5)), Some(Add));
    let req = s.expect(VirtchnlOp::AddVlanV2);
    assert_eq!(vids(&req), vec![5]);
    let counters = s.vf.status().counters;
    assert_eq!((counters.timeouts, counters.resets), (1, 1));
}

#[test]
fn reply_timeout_during_init_starts_over() {
    let mut s = Script::new(VlanFsm::Fixed);
    s.expect(VirtchnlOp::Version);
    s.pending = None;
    s.advance(Duration::from_secs(5));
    s.nothing_sent();
    s.advance(Duration::from_secs(1));
    s.expect(VirtchnlOp::Version);
}

#[test]
fn reset_impending_stops_and_restores_the_running_adapter() {
    let mut s = Script::running(VlanFsm::Fixed);
    s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(5))).unwrap();
    s.expect(VirtchnlOp::AddVlanV2);
    s.ok();
    s.event(EventKind::ResetImpending);
    assert_eq!(
        s.take_events(),
        vec![
            Event::ResetStarted(ResetReason::ResetImpending),
            Event::Carrier(false),
            Event::Queues(false),
        ]
    );
    s.nothing_sent();
    // A reply to something from before the reset is ignored.
    let stale = Reply::empty(VirtchnlOp::AddVlanV2, VirtchnlStatus::Success);
    s.vf.handle_pf_message(s.now, 1, PfMessage::Reply(stale));
    s.vf.handle_device_ready(s.now);
    s.init(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
    assert!(s.take_events().ends_with(&[Event::Ready, Event::ResetDone]));
    assert_eq!(s.vf.phase(), Phase::Running);
    s.expect(VirtchnlOp::AddEthAddr);
    s.ok();
    s.expect(VirtchnlOp::AddVlanV2);
    s.ok();
    s.expect(VirtchnlOp::EnableQueues);
    s.ok();
    assert_eq!(s.vf.vlan_state(Vlan::dot1q(5)), Some(Active));
}

#[test]
fn a_reset_that_never_finishes_is_given_up_on() {
    let mut s = Script::ready(VlanFsm::Fixed);
    s.event(EventKind::ResetImpending);
    assert_eq!(s.vf.poll_timeout(), Some(s.now + Duration::from_secs(20)));
    s.advance(Duration::from_secs(20));
    s.expect(VirtchnlOp::Version);
}

#[test]
fn rejected_mac_change_is_rolled_back() {
    let mut s = Script::running(VlanFsm::Fixed);
    let new = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
    s.netdev(NetdevEvent::MacChanged(new)).unwrap();
    s.expect(VirtchnlOp::AddEthAddr);
    s.answer(VirtchnlStatus::ErrAdminQueueError, ReplyBody::Empty);
    assert_eq!(
        s.take_events(),
        vec![Event::MacRejected { mac: new }, Event::MacAddress(VF_MAC)]
    );
    assert_eq!(s.vf.mac(), Some(VF_MAC));
    // The old address stays: nothing to delete.
    s.nothing_sent();
    assert_eq!(
        s.netdev(NetdevEvent::MacChanged(MacAddr::BROADCAST)),
        Err(Refused::InvalidMac {
            mac: MacAddr::BROADCAST
        })
    );
}

#[test]
fn accepted_mac_change_adds_the_new_then_deletes_the_old() {
    let mut s = Script::running(VlanFsm::Fixed);
    let new = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
    s.netdev(NetdevEvent::MacChanged(new)).unwrap();
    let Request::AddEthAddr(add) = s.expect(VirtchnlOp::AddEthAddr) else {
        unreachable!()
    };
    assert_eq!(add.addrs[0].addr, new);
    s.ok();
    let Request::DelEthAddr(del) = s.expect(VirtchnlOp::DelEthAddr) else {
        unreachable!()
    };
    assert_eq!(del.addrs[0].addr, VF_MAC);
    assert_eq!(del.addrs[0].kind, virtchnl::EtherAddrType::Extra);
    s.ok();
    assert_eq!(s.vf.mac(), Some(new));
}

#[test]
fn netns_move_goes_down_and_keeps_the_vlans() {
    let mut s = Script::running(VlanFsm::Fixed);
    for vid in [5, 6] {
        s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(vid))).unwrap();
    }
    s.expect(VirtchnlOp::AddVlanV2);
    s.ok();
    s.netdev(NetdevEvent::NetnsMoved).unwrap();
    assert_eq!(s.vf.phase(), Phase::Down);
    s.expect(VirtchnlOp::DisableQueues);
    s.ok();
    s.expect(VirtchnlOp::DelEthAddr);
    s.ok();
    assert!(s.vf.is_idle(), "no DEL_VLAN: the uppers still exist");
    assert_eq!(s.vf.vlan_filters().count(), 2);
    assert_eq!(s.vf.status().netdev.vlans.len(), 2);
}

#[test]
fn removed_asks_for_a_reset_and_refuses_everything_after() {
    let mut s = Script::running(VlanFsm::Fixed);
    s.netdev(NetdevEvent::Removed).unwrap();
    let tx = s.vf.poll_transmit(s.now).expect("RESET_VF");
    assert_eq!(tx.request, Request::ResetVf);
    s.nothing_sent();
    assert_eq!(s.vf.phase(), Phase::Removed);
    assert_eq!(s.netdev(NetdevEvent::Up), Err(Refused::Removed));
}

#[test]
fn malformed_frames_are_counted_not_fatal() {
    let mut s = Script::ready(VlanFsm::Fixed);
    s.vf.handle_mailbox(s.now, &[1, 2, 3]);
    assert_eq!(s.vf.status().counters.malformed, 1);
    assert_eq!(s.vf.phase(), Phase::Down);
}

#[test]
fn status_serialises_with_iavf_names() {
    let mut s = Script::ready(VlanFsm::Legacy);
    s.netdev(NetdevEvent::VlanAdded(Vlan::dot1q(5))).unwrap();
    let _ = s.expect(VirtchnlOp::AddVlanV2);
    let json = serde_json::to_value(s.vf.status()).expect("serialisable");
    assert_eq!(json["vlan_fsm"], "legacy");
    assert_eq!(json["phase"], "down");
    assert_eq!(json["vlans"][0]["state"], "IS_NEW");
    assert_eq!(json["outstanding"]["op"], "ADD_VLAN_V2");
    assert_eq!(json["mac"], "02:11:22:33:44:55");
    assert_eq!(json["counters"]["requests"]["VERSION"], 1);
}

#[test]
fn adapter_is_send() {
    fn send<T: Send>() {}
    send::<Adapter>();
}

#[test]
fn log_lines_print_their_level_by_name() {
    let line = LogLine {
        level: LogLevel::Warn,
        message: "failed to add VLAN filter, error ERR_PARAM".to_owned(),
    };
    assert_eq!(
        line.to_string(),
        "warn: failed to add VLAN filter, error ERR_PARAM"
    );
}

#[test]
fn vlan_fsm_parses_from_its_name() {
    assert_eq!("Legacy".parse::<VlanFsm>(), Ok(VlanFsm::Legacy));
    assert_eq!("fixed".parse::<VlanFsm>(), Ok(VlanFsm::Fixed));
    assert!("new".parse::<VlanFsm>().is_err());
}
