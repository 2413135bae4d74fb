use std::collections::BTreeSet;

use serde_json::json;
use vfrig_device::engine::{Entry, Outcome};
use vfrig_device::pf::{Pf, PfConfig, VfId, VfTable};

use super::*;
use crate::scenario::format::Expect;

fn table(vlans: &[u16]) -> VfTable {
    let pf = Pf::new(PfConfig {
        num_vfs: 1,
        ..PfConfig::default()
    })
    .expect("a PF");
    let mut t = pf.tables().vf(0).cloned().expect("vf0");
    t.vlans = vlans.to_vec();
    t
}

fn entry(op: &str, summary: &str, status: &str) -> Entry {
    Entry {
        seq: 0,
        vf: VfId(0),
        op: op.to_owned(),
        cookie: 0,
        summary: summary.to_owned(),
        outcome: Outcome::Replied(status.to_owned()),
        fault: None,
        at_us: 0,
        replied_at_us: None,
    }
}

fn driver(up: bool, vlans: &[(u16, &str)]) -> DriverView {
    DriverView {
        phase: if up { "running" } else { "down" }.to_owned(),
        up,
        vlans: vlans
            .iter()
            .map(|(vid, state)| DriverVlan {
                vid: *vid,
                state: (*state).to_owned(),
            })
            .collect(),
        macs: Vec::new(),
        pending: Vec::new(),
        outstanding: None,
        netdev_refused: 0,
    }
}

fn kernel(up: bool, vlans: &[u16]) -> KernelVf {
    KernelVf {
        netns: String::new(),
        up,
        master: None,
        vlans: vlans.iter().copied().collect::<BTreeSet<_>>(),
    }
}

#[test]
fn three_equal_views_are_consistent() {
    let c = compare(
        0,
        &table(&[100, 200]),
        &[],
        Some(&driver(true, &[(100, "ACTIVE"), (200, "ACTIVE")])),
        Some(&kernel(true, &[100, 200])),
    );
    assert_eq!(c, Comparison::default());
}

#[test]
fn a_rejected_del_is_refused_not_inconsistent() {
    let e = entry("DEL_VLAN_V2", "[outer 0x8100/100]", "ERR_PARAM");
    let c = compare(
        0,
        &table(&[100]),
        &[&e],
        Some(&driver(true, &[(100, "ACTIVE")])),
        Some(&kernel(true, &[])),
    );
    assert!(c.problems.is_empty(), "{c}");
    assert_eq!(
        c.refused,
        vec![Refusal {
            vid: 100,
            request: "del",
            status: "ERR_PARAM".into()
        }]
    );
    // The legacy driver freed the filter when it sent the DEL: a leak.
    let c = compare(
        0,
        &table(&[100]),
        &[&e],
        Some(&driver(true, &[])),
        Some(&kernel(true, &[])),
    );
    assert_eq!(
        c.problems,
        vec![
            "no-untracked-pf-filter: VLAN 100 leaked: the PF has a filter for it that the driver \
             does not track"
        ],
        "{c}"
    );
}

#[test]
fn legacy_states_after_a_settle() {
    // INACTIVE while down: expected of the legacy machine.
    let c = compare(
        0,
        &table(&[]),
        &[],
        Some(&driver(false, &[(100, "INACTIVE")])),
        Some(&kernel(false, &[100])),
    );
    assert!(c.problems.is_empty(), "{c}");
    // INACTIVE while up: lost.
    let c = compare(
        0,
        &table(&[]),
        &[],
        Some(&driver(true, &[(100, "INACTIVE")])),
        Some(&kernel(true, &[100])),
    );
    assert!(
        c.problems
            .iter()
            .all(|p| p.starts_with("pf-matches-intent: VLAN 100 lost")),
        "{c}"
    );
    assert_eq!(c.problems.len(), 2, "{c}");
    // A V1 ADD the driver never completed.
    let c = compare(
        0,
        &table(&[100]),
        &[],
        Some(&driver(true, &[(100, "IS_NEW")])),
        Some(&kernel(true, &[100])),
    );
    assert_eq!(c.problems.len(), 1, "{c}");
    assert!(
        c.problems[0].starts_with("no-stuck-filter: VLAN 100 stuck in IS_NEW"),
        "{c}"
    );
}

#[test]
fn a_vlan_the_kernel_deleted_but_the_pf_kept_is_a_leak() {
    let c = compare(
        0,
        &table(&[100]),
        &[],
        Some(&driver(true, &[(100, "ACTIVE")])),
        Some(&kernel(true, &[])),
    );
    assert_eq!(
        c.problems,
        vec![
            "driver-matches-intent: VLAN 100 leaked in the driver: it holds the filter ACTIVE, \
             but the kernel has no such VLAN on vf0",
            "pf-matches-intent: VLAN 100 leaked: the PF has a filter for it, the kernel has no \
             such VLAN on vf0",
        ],
        "{c}"
    );
    // Without a driver, only the PF and the kernel are compared.
    let c = compare(0, &table(&[100]), &[], None, Some(&kernel(true, &[])));
    assert_eq!(c.problems.len(), 1, "{c}");
    assert!(c.problems[0].starts_with("pf-matches-intent: "), "{c}");
}

/// The invariants `c`'s problems break, in order.
fn broken(c: &Comparison) -> Vec<&str> {
    c.problems
        .iter()
        .map(|p| {
            let (name, _) = p.split_once(": ").expect("`name: problem`");
            assert!(invariant::ALL.contains(&name), "{p}");
            name
        })
        .collect()
}

#[test]
fn every_problem_names_the_invariant_it_breaks() {
    assert_eq!(
        invariant::ALL,
        [
            "no-stuck-filter",
            "no-untracked-pf-filter",
            "driver-matches-pf",
            "driver-matches-intent",
            "pf-matches-intent",
        ],
        "the names the explorer uses"
    );
    // The driver believes the PF has 300 (it does not), has 200 as ADD (the
    // PF has it), and its MAC is not on the PF; the kernel has 100, which no
    // one else has.
    let mut d = driver(true, &[(200, "ADD"), (300, "ACTIVE")]);
    d.macs = vec![("02:00:00:00:00:01".into(), "ACTIVE".into())];
    let c = compare(
        0,
        &table(&[200]),
        &[],
        Some(&d),
        Some(&kernel(true, &[100, 200, 300])),
    );
    assert_eq!(
        c.problems,
        vec![
            "no-stuck-filter: VLAN 200 stuck in ADD: the PF has answered everything, yet the \
             driver never completed the filter",
            "driver-matches-pf: VLAN 200 leaked: the PF has a filter for it that the driver does \
             not track (the driver has it ADD)",
            "driver-matches-pf: VLAN 300 lost: the driver has it ACTIVE but the PF has no such \
             filter",
            "driver-matches-pf: MAC filters differ: the driver has {\"02:00:00:00:00:01\"} \
             active, the PF has {}",
            "pf-matches-intent: VLAN 100 lost: the kernel has it on vf0, the PF has no filter \
             for it",
            "pf-matches-intent: VLAN 300 lost: the kernel has it on vf0, the PF has no filter \
             for it",
        ],
        "{c}"
    );
}

#[test]
fn a_filter_the_driver_keeps_for_a_vlan_the_kernel_dropped_breaks_driver_matches_intent() {
    // The legacy machine after a netns move: vf0 closed, the upper deleted,
    // the filter left INACTIVE in num_vlan_filters.
    let c = compare(
        0,
        &table(&[]),
        &[],
        Some(&driver(false, &[(100, "INACTIVE")])),
        Some(&kernel(false, &[])),
    );
    assert_eq!(
        c.problems,
        vec![
            "driver-matches-intent: VLAN 100 leaked in the driver: it holds the filter INACTIVE, \
             but the kernel has no such VLAN on vf0"
        ]
    );
    // On a bond, the master's uppers count.
    let mut on_bond = kernel(true, &[200]);
    on_bond.master = Some("bond0".into());
    let c = compare(
        0,
        &table(&[200, 300]),
        &[],
        Some(&driver(true, &[(200, "ACTIVE"), (300, "ACTIVE")])),
        Some(&on_bond),
    );
    assert_eq!(broken(&c), ["driver-matches-intent", "pf-matches-intent"]);
    assert!(
        c.problems[0].ends_with("the kernel has no such VLAN on vf0 (or its master bond0)"),
        "{c}"
    );
    // A filter on its way out is not held.
    for removing in ["REMOVE", "REMOVING"] {
        let c = compare(
            0,
            &table(&[100]),
            &[],
            Some(&driver(true, &[(100, removing)])),
            Some(&kernel(true, &[])),
        );
        assert!(!broken(&c).contains(&"driver-matches-intent"), "{c}");
        assert!(broken(&c).contains(&"no-stuck-filter"), "{c}");
    }
    // Nor is one whose DEL the PF refused: the driver keeps it, as iavf does.
    let refused = entry("DEL_VLAN_V2", "[outer 0x8100/100]", "ERR_PARAM");
    let c = compare(
        0,
        &table(&[100]),
        &[&refused],
        Some(&driver(true, &[(100, "ACTIVE")])),
        Some(&kernel(true, &[])),
    );
    assert!(c.problems.is_empty(), "{c}");
    // Without a kernel view (vf0 is gone), nothing is compared with intent.
    let c = compare(
        0,
        &table(&[]),
        &[],
        Some(&driver(false, &[(100, "INACTIVE")])),
        None,
    );
    assert!(c.problems.is_empty(), "{c}");
}

/// The `expect_fail` of a library scenario.
fn library_symptom(name: &str) -> String {
    let path = crate::scenario::library_dir().join(format!("{name}.toml"));
    let s = crate::scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    s.expected_failure(s.vlan_fsm)
        .unwrap_or_else(|| panic!("{name} has no expected failure"))
        .to_owned()
}

/// What a `consistent` step of VF 0 reports for these views, as the runner
/// words it; `None` when they agree.
fn consistent_step(
    table: &VfTable,
    transcript: &[&Entry],
    driver: &DriverView,
    kernel: &KernelVf,
) -> Option<String> {
    let c = compare(0, table, transcript, Some(driver), Some(kernel));
    let problems: Vec<String> = c.problems.iter().map(|p| format!("vf0: {p}")).collect();
    (!problems.is_empty()).then(|| disagreement(&problems))
}

fn shows(message: &str, symptom: &str) -> bool {
    message.to_lowercase().contains(&symptom.to_lowercase())
}

/// The legacy counterparts whose symptom comes from a `consistent` step
/// still fail with it: the views below are what each one's steps leave
/// (traced through `vlan/legacy.rs` in each comment).
#[test]
fn the_legacy_counterparts_still_show_their_symptoms() {
    // iavf-pf-rejects-del-legacy: VLAN 100's DEL is refused, but the driver
    // freed the filter when it sent the DEL.
    let del = entry("DEL_VLAN_V2", "[inner 0x8100/100]", "ERR_PARAM");
    let message = consistent_step(
        &table(&[100, 200]),
        &[&del],
        &driver(true, &[(200, "ACTIVE")]),
        &kernel(true, &[200]),
    )
    .expect("a failure");
    let symptom = library_symptom("iavf-pf-rejects-del-legacy");
    assert!(shows(&message, &symptom), "{message}\nwants {symptom}");

    // iavf-v1-only-pf-legacy: V1 ADDs are never completed.
    let message = consistent_step(
        &table(&[100, 200]),
        &[],
        &driver(true, &[(100, "IS_NEW"), (200, "IS_NEW")]),
        &kernel(true, &[100, 200]),
    )
    .expect("a failure");
    let symptom = library_symptom("iavf-v1-only-pf-legacy");
    assert!(shows(&message, &symptom), "{message}\nwants {symptom}");

    // iavf-down-while-del-pending-legacy: the down turned 100's REMOVE into
    // DISABLE, the DEL made it INACTIVE, the up re-added it.
    let message = consistent_step(
        &table(&[100, 200, 300]),
        &[],
        &driver(true, &[(100, "ACTIVE"), (200, "ACTIVE"), (300, "ACTIVE")]),
        &kernel(true, &[200, 300]),
    )
    .expect("a failure");
    let symptom = library_symptom("iavf-down-while-del-pending-legacy");
    assert!(shows(&message, &symptom), "{message}\nwants {symptom}");

    // iavf-netns-move-vlan-uppers-legacy fails later, at its `expect`: its
    // `consistent` step right after the move (vf0 down in ns1, both filters
    // INACTIVE, the uppers still in the initial namespace) must pass.
    let mut moved = kernel(false, &[100, 200]);
    moved.netns = "ns1".into();
    let message = consistent_step(
        &table(&[]),
        &[],
        &driver(false, &[(100, "INACTIVE"), (200, "INACTIVE")]),
        &moved,
    );
    assert_eq!(message, None);
}

#[test]
fn over_the_limit_is_refused() {
    let mut t = table(&[100]);
    t.vlan_limit = 1;
    let c = compare(
        0,
        &t,
        &[],
        Some(&driver(true, &[(100, "ACTIVE")])),
        Some(&kernel(true, &[100, 200])),
    );
    assert!(c.problems.is_empty(), "{c}");
    assert_eq!(c.refused[0].vid, 200);
    assert!(c.refused[0].status.contains("limit of 1"), "{c:?}");
}

#[test]
fn summaries_give_their_vlan_ids() {
    assert_eq!(vids_in_summary("[100, 200]"), vec![100, 200]);
    assert_eq!(
        vids_in_summary("[outer 0x8100/100, inner 0x88a8/5]"),
        vec![100]
    );
    assert_eq!(vids_in_summary("[]"), Vec::<u16>::new());
}

#[test]
fn the_kernel_view_follows_uppers_across_namespaces_and_bonds() {
    let root = json!([
        {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"]},
        {"ifindex": 7, "ifname": "vf0.100", "link_index": 3, "link_netnsid": 0, "flags": ["UP"],
         "linkinfo": {"info_kind": "vlan", "info_data": {"protocol": "802.1Q", "id": 100}}},
        {"ifindex": 4, "ifname": "vf1", "master": "bond0", "flags": ["UP", "SLAVE"]},
        {"ifindex": 5, "ifname": "bond0", "flags": ["UP", "MASTER"]},
        {"ifindex": 6, "ifname": "bond0.300", "link": "bond0", "flags": ["UP"],
         "linkinfo": {"info_kind": "vlan", "info_data": {"protocol": "802.1Q", "id": 300}}},
        {"ifindex": 8, "ifname": "x.400", "link": "bond0", "flags": [],
         "linkinfo": {"info_kind": "vlan", "info_data": {"protocol": "802.1ad", "id": 400}}}
    ]);
    let ns1 = json!([
        {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK"]},
        {"ifindex": 3, "ifname": "vf0", "flags": ["BROADCAST"]}
    ]);
    let text = format!("== ns - -\n{root:#}\n== ns ns1 0\n{ns1}\n");
    let view = KernelView::parse(&text).expect("parses");
    assert_eq!(view.namespaces.len(), 2);
    assert_eq!(view.namespaces[1].nsid, Some(0));
    let vf0 = view.vf("vf0").expect("vf0");
    assert_eq!(vf0.netns, "ns1");
    assert!(!vf0.up);
    assert_eq!(vf0.vlans.iter().copied().collect::<Vec<_>>(), vec![100]);
    let vf1 = view.vf("vf1").expect("vf1");
    assert_eq!(vf1.master.as_deref(), Some("bond0"));
    assert_eq!(vf1.vlans.iter().copied().collect::<Vec<_>>(), vec![300]);
    assert!(view.vf("vf2").is_none());
    assert!(KernelView::parse("== ns - -\nnot json\n").is_err());
}

#[test]
fn expect_reports_each_mismatch() {
    let t = table(&[100]);
    let del = entry("DEL_VLAN_V2", "[outer 0x8100/200]", "SUCCESS");
    let e = Expect {
        vf: 0,
        vlans: Some(vec![200, 100]),
        drops: [("anti_spoof_vlan".to_owned(), 0)].into(),
        requests: [("DEL_VLAN_V2".to_owned(), 0)].into(),
        ..Expect::default()
    };
    let out = expect(&e, &t, &[&del]);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].contains("expected [100, 200]"), "{out:?}");
    assert!(
        out[1].contains("requests DEL_VLAN_V2: expected 0, the PF received 1"),
        "{out:?}"
    );
    let twice = Expect {
        vf: 0,
        vlan_dels: [("200".to_owned(), 1), ("100".to_owned(), 0)].into(),
        ..Expect::default()
    };
    assert!(expect(&twice, &t, &[&del]).is_empty());
    let out = expect(&twice, &t, &[&del, &del]);
    assert_eq!(
        out,
        vec!["vf0 VLAN 200 removed 2 time(s), expected 1 (DEL requests naming it)"]
    );
    let ok = Expect {
        vf: 0,
        vlans: Some(vec![100]),
        promisc: Some(false),
        ..Expect::default()
    };
    assert!(expect(&ok, &t, &[]).is_empty());
}

#[test]
fn link_events_count_appearances_removals_and_missing_masters() {
    use vfrig_agent::proto::{LinkEvent, LinkEventKind};
    let ev = |kind, name: &str, master: Option<u32>, new_netnsid: Option<i32>| LinkEvent {
        seq: 0,
        t_ms: 0,
        kind,
        ifindex: 4,
        name: name.to_owned(),
        flags: 0,
        link_kind: None,
        master,
        netnsid: None,
        new_netnsid,
        new_ifindex: None,
    };
    // Appears, is enslaved, moves to another netns and shows up there (not
    // a new appearance), is deleted, and appears again already enslaved.
    let events = [
        ev(LinkEventKind::New, "vf1", None, None),
        ev(LinkEventKind::New, "vf1", Some(5), None),
        ev(LinkEventKind::Del, "vf1", None, Some(0)),
        ev(LinkEventKind::New, "vf1", None, None),
        ev(LinkEventKind::New, "vf0", None, None),
        ev(LinkEventKind::Del, "vf1", None, None),
        ev(LinkEventKind::New, "vf1", Some(5), None),
    ];
    let e = crate::scenario::format::ExpectLinks {
        ifname: "vf1".into(),
        appeared: Some(2),
        removed: Some(1),
        appeared_without_master: Some(1),
    };
    assert_eq!(expect_links(&e, &events), Vec::<String>::new());
    let wrong = crate::scenario::format::ExpectLinks {
        appeared_without_master: Some(0),
        ..e
    };
    assert_eq!(
        expect_links(&wrong, &events),
        vec!["vf1 appeared without a master 1 time(s) in the recorded link events, expected 0"]
    );
}
