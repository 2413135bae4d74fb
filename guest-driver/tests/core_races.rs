//! The race windows of the iavf VLAN filter bug report ("iavf: VLAN filter
//! state machine races"), each written out as an explicit interleaving of
//! kernel calls, watchdog steps and PF replies between the adapter core and
//! the real PF model. Each window runs against both state machines: the
//! legacy one loses or leaks a filter, the fixed one ends with the PF table,
//! the driver's list and the kernel's intent in agreement.
//!
//! Tests are named `<window>_<machine>_<outcome>`.

mod core_support;

use std::time::Duration;

use core_support::{vlan, Pair, VF};
use vfrig_device::engine::{FaultAction, Trigger};
use vfrig_device::pf::{PfConfig, VfPolicy, VlanMode};
use vfrig_guest_driver::core::{
    Config, Event, FilterOp, NetdevEvent, Phase, Refused, ResetReason, Vlan, VlanFsm, VlanState,
};
use virtchnl::{VirtchnlOp, VirtchnlStatus};

use NetdevEvent::{Down, Up, VlanAdded, VlanRemoved};
use VlanFsm::{Fixed, Legacy};

fn running_with_vlans(fsm: VlanFsm, vids: &[u16]) -> Pair {
    let mut p = Pair::running(fsm);
    for &vid in vids {
        p.netdev(VlanAdded(vlan(vid))).expect("VLAN accepted");
    }
    p.settle();
    assert_eq!(p.pf_vlans(), vids.to_vec());
    p
}

// ----- Window 1: VLAN filters on interface down/up ---------------------------

/// The fix's core change: VLAN filters stay on the PF across down/up; no DEL
/// on down, nothing to restore on up.
#[test]
fn down_up_fixed_keeps_vlans_on_the_pf() {
    let mut p = running_with_vlans(Fixed, &[10, 20]);
    let mark = p.mark();

    p.netdev(Down).unwrap();
    p.settle();
    assert_eq!(p.vf.phase(), Phase::Down);
    assert_eq!(p.pf_table().queues.rx, 0, "queues disabled");
    assert_eq!(p.pf_vlans(), [10, 20], "VLANs stay while down");

    p.netdev(Up).unwrap();
    p.settle();
    assert_eq!(p.pf_vlans(), [10, 20]);
    assert_eq!(p.vf_active(), [10, 20]);
    assert!(
        p.vlan_requests_since(mark).is_empty(),
        "no VLAN traffic at all"
    );
    assert_eq!(
        p.ops_since(mark),
        [
            VirtchnlOp::DisableQueues,
            VirtchnlOp::DelEthAddr,
            VirtchnlOp::AddEthAddr,
            VirtchnlOp::EnableQueues,
        ]
    );
    assert!(p.vf.carrier());
}

/// Legacy sends every filter as DEL on down and re-adds it on up. Between the
/// two the PF has none of them, including after the netdev is up again:
/// with spoof checking, tagged traffic is dropped until the re-add lands.
#[test]
fn down_up_legacy_deletes_and_re_adds_with_a_gap() {
    let mut p = running_with_vlans(Legacy, &[10, 20]);
    assert!(p.pf_table().antispoof.vlan, "VLAN anti-spoof on with VLANs");
    let mark = p.mark();

    p.netdev(Down).unwrap();
    p.settle();
    assert_eq!(p.pf_vlans(), Vec::<u16>::new(), "the gap: DEL sent on down");
    assert_eq!(
        p.vf_vlans(),
        [(10, VlanState::Inactive), (20, VlanState::Inactive)]
    );

    // Up, one watchdog step at a time: the netdev is running before the
    // filters are back.
    p.netdev(Up).unwrap();
    assert_eq!(p.send(), Some(VirtchnlOp::AddEthAddr));
    assert!(p.deliver());
    assert_eq!(p.vf.phase(), Phase::Running);
    assert!(p.pf_vlans().is_empty(), "still the gap, interface up");
    assert!(!p.pf_table().antispoof.vlan);
    p.settle();

    assert_eq!(p.pf_vlans(), [10, 20]);
    assert_eq!(
        p.vlan_requests_since(mark),
        ["DEL_VLAN_V2 [10, 20]", "ADD_VLAN_V2 [10, 20]"]
    );
}

// ----- Window 2: DEL sent, interface down, PF rejects the DEL, up --------------

/// Legacy frees the filter when the DEL is sent. The PF refuses it: the
/// filter stays in the PF with no driver entry, and since the driver has no
/// entry, removing the VLAN again sends nothing. Leaked for good.
#[test]
fn rejected_del_across_down_up_legacy_leaks_the_filter() {
    let mut p = running_with_vlans(Legacy, &[10]);
    p.reject_next(VirtchnlOp::DelVlanV2, VirtchnlStatus::ErrParam);

    p.netdev(VlanRemoved(vlan(10))).unwrap();
    assert_eq!(p.send(), Some(VirtchnlOp::DelVlanV2));
    assert_eq!(p.vf.vlan_state(vlan(10)), None, "freed as soon as sent");
    p.netdev(Down).unwrap();
    assert!(p.deliver(), "the PF's refusal");
    p.netdev(Up).unwrap();
    p.settle();

    assert_eq!(p.pf_vlans(), [10], "still programmed in the PF");
    assert!(p.vf_vlans().is_empty(), "no driver entry");
    assert!(p.kernel_vlans().is_empty());

    // The kernel cannot make the driver remove it any more.
    let mark = p.mark();
    p.netdev(VlanRemoved(vlan(10))).unwrap();
    p.settle();
    assert!(p.vlan_requests_since(mark).is_empty());
    assert_eq!(p.pf_vlans(), [10]);
}

/// Fixed keeps the filter in REMOVING until the PF answers; the refusal puts
/// it back to ACTIVE, so the driver still matches the PF and reports the
/// refusal. A later removal goes through.
#[test]
fn rejected_del_across_down_up_fixed_stays_consistent() {
    let mut p = running_with_vlans(Fixed, &[10]);
    p.reject_next(VirtchnlOp::DelVlanV2, VirtchnlStatus::ErrParam);

    p.netdev(VlanRemoved(vlan(10))).unwrap();
    assert_eq!(p.send(), Some(VirtchnlOp::DelVlanV2));
    assert_eq!(p.vf.vlan_state(vlan(10)), Some(VlanState::Removing));
    p.netdev(Down).unwrap();
    assert!(p.deliver(), "the PF's refusal");
    assert_eq!(p.vf.vlan_state(vlan(10)), Some(VlanState::Active));
    p.netdev(Up).unwrap();
    p.settle();

    assert_eq!(p.pf_vlans(), [10]);
    assert_eq!(p.vf_vlans(), [(10, VlanState::Active)]);
    assert!(p.events.contains(&Event::VlanRejected {
        vlan: vlan(10),
        op: FilterOp::Remove
    }));

    let mark = p.mark();
    p.netdev(VlanRemoved(vlan(10))).unwrap();
    p.settle();
    assert_eq!(p.vlan_requests_since(mark), ["DEL_VLAN_V2 [10]"]);
    assert!(p.pf_vlans().is_empty());
    assert!(p.vf_vlans().is_empty());
}

// ----- Window 3: netns move, kill_vid concurrent with down/up ------------------

/// The namespace teardown removes the VLAN (kill_vid) and closes the netdev
/// before the watchdog runs. Legacy's DISABLE overwrites the REMOVE, the DEL
/// moves the filter to INACTIVE, and up in the new namespace adds it back: a
/// filter the kernel no longer has is restored and leaked.
#[test]
fn netns_move_kill_vid_races_down_legacy_restores_the_filter() {
    let mut p = running_with_vlans(Legacy, &[10]);
    let mark = p.mark();

    p.netdev(VlanRemoved(vlan(10))).unwrap();
    assert_eq!(p.vf.vlan_state(vlan(10)), Some(VlanState::Remove));
    p.netdev(Down).unwrap();
    assert_eq!(p.vf.vlan_state(vlan(10)), Some(VlanState::Disable));
    p.settle();
    assert_eq!(p.vf.vlan_state(vlan(10)), Some(VlanState::Inactive));
    p.netdev(Up).unwrap();
    p.settle();

    assert!(p.kernel_vlans().is_empty(), "the kernel removed VLAN 10");
    assert_eq!(p.pf_vlans(), [10], "restored in the PF");
    assert_eq!(p.vf_vlans(), [(10, VlanState::Active)], "and in the driver");
    assert_eq!(
        p.vlan_requests_since(mark),
        ["DEL_VLAN_V2 [10]", "ADD_VLAN_V2 [10]"]
    );
}

/// Fixed: down leaves the REMOVE alone, the filter is deleted exactly once
/// and freed on the PF's confirmation; up restores nothing.
#[test]
fn netns_move_kill_vid_races_down_fixed_removes_it_once() {
    let mut p = running_with_vlans(Fixed, &[10]);
    let mark = p.mark();

    p.netdev(VlanRemoved(vlan(10))).unwrap();
    p.netdev(Down).unwrap();
    assert_eq!(p.vf.vlan_state(vlan(10)), Some(VlanState::Remove));
    p.settle();
    p.netdev(Up).unwrap();
    p.settle();

    assert!(p.pf_vlans().is_empty());
    assert!(p.vf_vlans().is_empty());
    assert_eq!(p.vlan_requests_since(mark), ["DEL_VLAN_V2 [10]"]);
}

/// The same window while the watchdog is busy: an ADD for another VLAN is in
/// flight, so the DEL cannot go out before the netdev goes down.
#[test]
fn netns_move_kill_vid_while_busy_legacy_leaks_fixed_does_not() {
    for (fsm, leaked) in [(Legacy, true), (Fixed, false)] {
        let mut p = running_with_vlans(fsm, &[10]);
        p.netdev(VlanAdded(vlan(20))).unwrap();
        assert_eq!(p.send(), Some(VirtchnlOp::AddVlanV2), "{fsm}");
        // The namespace move: kill_vid for both, close.
        p.netdev(VlanRemoved(vlan(10))).unwrap();
        p.netdev(VlanRemoved(vlan(20))).unwrap();
        p.netdev(Down).unwrap();
        p.settle();
        p.netdev(Up).unwrap();
        p.settle();
        let expect: &[u16] = if leaked { &[10, 20] } else { &[] };
        assert_eq!(p.pf_vlans(), expect, "{fsm}");
        assert_eq!(p.vf_active(), expect, "{fsm}");
        assert!(p.kernel_vlans().is_empty(), "{fsm}");
    }
}

/// Namespace moves the way the netdev shell reports them (close, then every
/// VLAN upper deleted) are safe for both machines: the REMOVE comes last.
#[test]
fn netns_move_event_keeps_the_vlans_in_both_machines() {
    // The uppers stay behind, linked to the moved device: their VIDs stay
    // registered with it, so after up in the new namespace both machines
    // hold them on the PF (legacy by DEL on down and ADD on up).
    for fsm in [Legacy, Fixed] {
        let mut p = running_with_vlans(fsm, &[10, 20]);
        p.netdev(NetdevEvent::NetnsMoved).unwrap();
        p.settle();
        p.netdev(Up).unwrap();
        p.settle();
        assert_eq!(p.pf_vlans(), vec![10, 20], "{fsm}");
        assert_eq!(p.vf_vlans().len(), 2, "{fsm}");
    }
}

// ----- Window 4: V1-only PF ----------------------------------------------------

fn v1_only() -> VfPolicy {
    VfPolicy {
        vlan_v2: false,
        ..VfPolicy::default()
    }
}

/// Legacy had no success handler for ADD_VLAN (V1): the filter is in the PF
/// but the driver never sees it as ACTIVE.
#[test]
fn v1_only_pf_legacy_filters_stay_is_new() {
    let mut p = Pair::running_with(Legacy, v1_only());
    assert_eq!(p.vf.status().vlan_ops, "v1");
    let mark = p.mark();
    p.netdev(VlanAdded(vlan(10))).unwrap();
    p.settle();
    assert_eq!(p.vlan_requests_since(mark), ["ADD_VLAN [10]"]);
    assert_eq!(p.pf_vlans(), [10]);
    assert_eq!(p.vf_vlans(), [(10, VlanState::IsNew)]);
    assert!(p.vf_active().is_empty());
    // However long it waits.
    p.advance(Duration::from_secs(60));
    p.settle();
    assert_eq!(p.vf_vlans(), [(10, VlanState::IsNew)]);
}

/// Fixed completes V1 adds like V2 ones.
#[test]
fn v1_only_pf_fixed_filters_become_active() {
    let mut p = Pair::running_with(Fixed, v1_only());
    p.netdev(VlanAdded(vlan(10))).unwrap();
    p.settle();
    assert_eq!(p.pf_vlans(), [10]);
    assert_eq!(p.vf_vlans(), [(10, VlanState::Active)]);
    p.netdev(VlanRemoved(vlan(10))).unwrap();
    p.settle();
    assert!(p.pf_vlans().is_empty());
    assert!(p.vf_vlans().is_empty());
}

/// Fixed frees a V1 filter the PF refused (upstream leaves it ADDING).
#[test]
fn v1_only_pf_fixed_rejected_add_is_freed_and_reported() {
    let mut p = Pair::running_with(Fixed, v1_only());
    p.reject_next(VirtchnlOp::AddVlan, VirtchnlStatus::ErrParam);
    p.netdev(VlanAdded(vlan(10))).unwrap();
    p.settle();
    assert!(p.pf_vlans().is_empty());
    assert!(p.vf_vlans().is_empty());
    assert!(p.events.contains(&Event::VlanRejected {
        vlan: vlan(10),
        op: FilterOp::Add
    }));
}

// ----- Window 5: reset with VLANs configured ------------------------------------

/// RESET_IMPENDING while running with VLANs: the VF stops, waits for the
/// device, negotiates again and re-adds every filter, then re-enables its
/// queues. Both machines do this.
#[test]
fn reset_impending_with_vlans_both_re_add_everything() {
    for fsm in [Legacy, Fixed] {
        let mut p = running_with_vlans(fsm, &[10, 20]);
        p.admin(|pf| pf.begin_reset(VF, true)).unwrap();
        assert!(p.deliver(), "RESET_IMPENDING");
        assert_eq!(p.vf.phase(), Phase::Resetting, "{fsm}");
        assert!(!p.vf.carrier());
        p.drive();
        assert_eq!(p.vf.phase(), Phase::Resetting, "waits for the device");
        assert!(p.vf.poll_transmit(p.now).is_none());
        let mark = p.mark();
        p.admin(|pf| pf.finish_reset(VF)).unwrap();
        assert!(p.pf_vlans().is_empty(), "the reset wiped the PF's filters");
        p.settle();

        assert_eq!(p.vf.phase(), Phase::Running, "{fsm}");
        assert_eq!(p.pf_vlans(), [10, 20], "{fsm}");
        assert_eq!(p.vf_active(), [10, 20], "{fsm}");
        assert!(p.vf.carrier(), "{fsm}");
        assert_eq!(p.pf_table().queues.rx, 1, "{fsm}");
        assert_eq!(
            p.ops_since(mark),
            [
                VirtchnlOp::Version,
                VirtchnlOp::GetVfResources,
                VirtchnlOp::GetOffloadVlanV2Caps,
                VirtchnlOp::AddEthAddr,
                VirtchnlOp::AddVlanV2,
                VirtchnlOp::EnableQueues,
            ],
            "{fsm}"
        );
        let events = &p.events;
        assert!(events.contains(&Event::ResetStarted(ResetReason::ResetImpending)));
        assert!(events.contains(&Event::ResetDone));
    }
}

/// A reset while the netdev is down re-adds the VLANs but leaves the queues off.
#[test]
fn reset_while_down_re_adds_vlans_without_queues() {
    let mut p = running_with_vlans(Fixed, &[10]);
    p.netdev(Down).unwrap();
    p.settle();
    p.admin(|pf| pf.reset_vf(VF, true)).unwrap();
    p.settle();
    assert_eq!(p.vf.phase(), Phase::Down);
    assert_eq!(p.pf_vlans(), [10]);
    assert_eq!(p.pf_table().queues.rx, 0);
    assert!(!p.vf.carrier());
}

/// A VLAN the kernel removed just before the reset (REMOVE, DEL not sent):
/// legacy's resources handler sets it back to ADD and re-adds it; fixed
/// re-adds only what the kernel has.
#[test]
fn reset_with_pending_remove_legacy_resurrects_fixed_drops() {
    for (fsm, expect) in [(Legacy, vec![10, 20]), (Fixed, vec![10])] {
        let mut p = running_with_vlans(fsm, &[10, 20]);
        p.netdev(VlanRemoved(vlan(20))).unwrap();
        p.admin(|pf| pf.reset_vf(VF, true)).unwrap();
        assert!(p.deliver(), "RESET_IMPENDING before the watchdog runs");
        p.settle();
        assert_eq!(p.pf_vlans(), expect, "{fsm}");
        assert_eq!(p.vf_active(), expect, "{fsm}");
        assert_eq!(p.kernel_vlans(), [10], "{fsm}");
    }
}

/// The host resets the VF without notice while the kernel removes VLAN 20:
/// the DEL reaches a resetting PF and is refused. The VF learns of the reset
/// from the next refused request (ERR_NOT_SUPPORTED: the PF forgot what it
/// granted), resets itself and re-adds its filters. Legacy has by then
/// dropped VLAN 30, whose ADD the forgetful PF refused, and never re-adds it;
/// fixed re-adds the kernel's VLANs. (Upstream's fixed machine would have put
/// the refused DEL's filter back to ACTIVE and re-added VLAN 20 too.)
#[test]
fn reset_without_notice_legacy_loses_a_vlan_fixed_resyncs() {
    for (fsm, pf) in [(Legacy, vec![10]), (Fixed, vec![10, 30])] {
        let mut p = running_with_vlans(fsm, &[10, 20]);
        p.admin(|pf| pf.begin_reset(VF, false)).unwrap();
        p.netdev(VlanRemoved(vlan(20))).unwrap();
        p.drive();
        p.admin(|pf| pf.finish_reset(VF)).unwrap();
        p.netdev(VlanAdded(vlan(30))).unwrap();
        p.settle();
        let status = p.vf.status();
        assert_eq!(status.counters.resets, 1, "{fsm}");
        assert_eq!(status.counters.replies.get("ERR_NOT_SUPPORTED"), Some(&1));
        assert!(p
            .events
            .contains(&Event::ResetStarted(ResetReason::RequestRefused {
                op: VirtchnlOp::AddVlanV2
            })));
        if fsm == Fixed {
            let refused_del = Event::VlanRejected {
                vlan: vlan(20),
                op: FilterOp::Remove,
            };
            assert!(
                p.events.contains(&refused_del),
                "the resetting PF refused the DEL"
            );
        }
        assert_eq!(p.kernel_vlans(), [10, 30], "{fsm}");
        assert_eq!(p.pf_vlans(), pf, "{fsm}");
        assert_eq!(p.vf_active(), pf, "{fsm}");
        assert!(p.vf.carrier(), "{fsm}");
    }
}

/// A lost reply: the VF gives up after the timeout, asks for a VF reset and
/// re-initialises, which leaves the PF matching the driver again.
#[test]
fn dropped_reply_times_out_and_resets_the_vf() {
    let mut p = running_with_vlans(Fixed, &[10]);
    p.fault(VirtchnlOp::AddVlanV2, FaultAction::Drop, Trigger::Count(1));
    p.netdev(VlanAdded(vlan(20))).unwrap();
    let start = p.now;
    p.settle();
    assert!(
        p.now >= start + Duration::from_secs(5),
        "waited for the timeout"
    );
    let status = p.vf.status();
    assert_eq!((status.counters.timeouts, status.counters.resets), (1, 1));
    assert!(p.sent.contains(&virtchnl::Request::ResetVf));
    assert_eq!(p.pf_vlans(), [10, 20]);
    assert_eq!(p.vf_active(), [10, 20]);
    assert!(p.vf.carrier());
}

// ----- More around the fixed machine --------------------------------------------

/// A second kill_vid while the first DEL is in flight sends no second DEL.
#[test]
fn repeated_kill_vid_during_del_sends_one_del() {
    let mut p = running_with_vlans(Fixed, &[10]);
    let mark = p.mark();
    p.netdev(VlanRemoved(vlan(10))).unwrap();
    assert_eq!(p.send(), Some(VirtchnlOp::DelVlanV2));
    p.netdev(VlanRemoved(vlan(10))).unwrap();
    p.settle();
    assert_eq!(p.vlan_requests_since(mark), ["DEL_VLAN_V2 [10]"]);
    assert!(p.pf_vlans().is_empty());
}

/// Re-adding a VLAN whose DEL is in flight adds it again after the DEL.
#[test]
fn re_add_during_del_is_added_after_it() {
    let mut p = running_with_vlans(Fixed, &[10]);
    let mark = p.mark();
    p.netdev(VlanRemoved(vlan(10))).unwrap();
    assert_eq!(p.send(), Some(VirtchnlOp::DelVlanV2));
    p.netdev(VlanAdded(vlan(10))).unwrap();
    p.settle();
    assert_eq!(
        p.vlan_requests_since(mark),
        ["DEL_VLAN_V2 [10]", "ADD_VLAN_V2 [10]"]
    );
    assert_eq!(p.pf_vlans(), [10]);
    assert_eq!(p.vf_active(), [10]);
}

/// Re-added while its DEL is in flight, and the PF refuses the DEL: the
/// filter is still on the PF, so it goes back to ACTIVE and no ADD is sent
/// (H3). Sending the ADD anyway would risk a refusal that drops the driver's
/// entry for a filter the PF has.
#[test]
fn re_add_during_a_refused_del_sends_no_add() {
    let mut p = running_with_vlans(Fixed, &[10]);
    let mark = p.mark();
    p.reject_next(VirtchnlOp::DelVlanV2, VirtchnlStatus::ErrParam);
    p.reject_next(VirtchnlOp::AddVlanV2, VirtchnlStatus::ErrParam);
    p.netdev(VlanRemoved(vlan(10))).unwrap();
    assert_eq!(p.send(), Some(VirtchnlOp::DelVlanV2));
    p.netdev(VlanAdded(vlan(10))).unwrap();
    p.settle();
    assert_eq!(p.vlan_requests_since(mark), ["DEL_VLAN_V2 [10]"]);
    assert_eq!(p.pf_vlans(), [10]);
    assert_eq!(p.vf_active(), [10]);
    assert_eq!(p.kernel_vlans(), [10]);
}

/// The PF's V2 limit (8 for an untrusted VF) is enforced before anything is
/// sent, as iavf's ndo_vlan_rx_add_vid does.
#[test]
fn vlan_limit_is_refused_locally() {
    let vids: Vec<u16> = (1..=8).collect();
    let mut p = running_with_vlans(Fixed, &vids);
    assert_eq!(
        p.netdev(VlanAdded(vlan(9))),
        Err(Refused::VlanLimit { limit: 8 })
    );
    p.settle();
    assert_eq!(p.pf_vlans(), vids);
}

/// 802.1ad VLANs: refused by a single-VLAN-mode PF (it filters 0x8100
/// only), filtered on the outer tag by a double-VLAN-mode PF.
#[test]
fn dot1ad_vlans_follow_the_pf_vlan_mode() {
    let mut p = Pair::running(Fixed);
    assert_eq!(
        p.netdev(VlanAdded(Vlan::dot1ad(100))),
        Err(Refused::UnsupportedTpid { tpid: 0x88a8 })
    );

    let pf = PfConfig {
        vlan_mode: VlanMode::Double,
        ..PfConfig::default()
    };
    let mut p = Pair::with_pf(Config::default(), pf, 1);
    p.settle();
    p.netdev(VlanAdded(Vlan::dot1ad(100))).unwrap();
    p.netdev(VlanAdded(vlan(200))).unwrap();
    p.settle();
    let table = p.pf_table();
    assert_eq!(table.vlans, [200]);
    assert_eq!(table.vlans_other_tpid, ["0x88a8/100"]);
    assert_eq!(
        p.vf.active_vlans().into_iter().collect::<Vec<_>>(),
        [vlan(200), Vlan::dot1ad(100)]
    );
}

/// The host sets an admin MAC: the PF resets the VF, and the new MAC reaches
/// the netdev through the resources reply.
#[test]
fn admin_mac_change_reaches_the_netdev_after_reset() {
    let mut p = Pair::running(Fixed);
    let admin = virtchnl::MacAddr([0x02, 0xaa, 0, 0, 0, 1]);
    p.admin(|pf| pf.set_admin_mac(VF, Some(admin))).unwrap();
    p.settle();
    assert_eq!(p.vf.mac(), Some(admin));
    assert!(p.events.contains(&Event::MacAddress(admin)));
    assert_eq!(p.pf_table().mac, admin);
    assert!(p.vf.carrier());
}

/// Bring-up against the real PF: the driver's view matches the PF tables.
#[test]
fn bring_up_matches_the_pf_tables() {
    let p = Pair::running(Fixed);
    let table = p.pf_table();
    let status = p.vf.status();
    assert_eq!(status.mac, Some(table.mac));
    assert!(table.macs.contains(&table.mac));
    assert_eq!(table.caps, status.caps);
    assert!(table.link_up && status.link_up && status.carrier);
    assert_eq!((table.queues.rx, table.queues.tx), (1, 1));
    assert_eq!(status.counters.replies.get("SUCCESS"), Some(&5));
}
