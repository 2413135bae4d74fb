//! The link recorder end to end, with the agent in a network namespace of
//! its own (`unshare -n`) so the host's links are never touched.

mod common;

use common::{wait_until, Agent};
use vfrig_agent::proto::{LinkEvent, LinkEventKind, Op, Reply};

/// Link kinds tried in turn for a plain link; `dummy` is the natural one,
/// but not every host kernel has it.
const KINDS: &[&str] = &["dummy", "bridge", "ifb"];

fn events(reply: Reply) -> Vec<LinkEvent> {
    match reply {
        Reply::Events(events) => events,
        other => panic!("expected events, got {other:?}"),
    }
}

/// Why the environment cannot run a recorder test, or the agent.
#[allow(clippy::print_stderr)]
fn agent_in_netns() -> Option<Agent> {
    match Agent::start_in_new_netns() {
        Ok(agent) => Some(agent),
        Err(why) => {
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// Whether `ip` output says the kernel or our privileges cannot do it.
fn unsupported(stderr: &str) -> bool {
    [
        "Unknown device type",
        "Operation not permitted",
        "not supported",
        "Not supported",
    ]
    .iter()
    .any(|s| stderr.contains(s))
}

/// Creates `name` with the first kind in `kinds` the kernel supports.
#[allow(clippy::print_stderr)]
fn add_link(agent: &mut Agent, name: &str, kinds: &[&str]) -> Option<String> {
    for kind in kinds {
        let out = agent.run(&format!("ip link add {name} type {kind}"), Some(10_000));
        if out.success() {
            return Some((*kind).to_owned());
        }
        assert!(
            unsupported(&out.stderr),
            "ip link add {name} type {kind}: {out:?}"
        );
        eprintln!("{kind} links unsupported here: {}", out.stderr.trim());
    }
    eprintln!("skipping: no link kind of {kinds:?} can be created");
    None
}

#[test]
fn records_link_creation_and_deletion() {
    let Some(mut agent) = agent_in_netns() else {
        return;
    };
    agent.ok(Op::RecordStart);
    let Some(kind) = add_link(&mut agent, "vfrigtest0", KINDS) else {
        return;
    };
    let taken = events(agent.ok(Op::RecordTake));
    let new = taken
        .iter()
        .find(|e| e.name == "vfrigtest0")
        .unwrap_or_else(|| panic!("no vfrigtest0 event in {taken:?}"));
    assert_eq!(new.kind, LinkEventKind::New);
    assert_eq!(new.link_kind.as_deref(), Some(kind.as_str()));
    assert_eq!(new.netnsid, None);
    assert_eq!(taken[0].seq, 0);
    let ifindex = new.ifindex;
    let last_seq = taken.last().map(|e| e.seq).unwrap_or_default();

    agent.sh("ip link set vfrigtest0 up && ip link del vfrigtest0");
    let status = agent.ok(Op::Status);
    assert!(matches!(status, Reply::Status(s) if s.recording));
    let rest = events(agent.ok(Op::RecordStop));
    assert!(rest.iter().all(|e| e.seq > last_seq), "{rest:?}");
    assert!(
        rest.iter()
            .any(|e| e.name == "vfrigtest0" && e.flags & libc::IFF_UP as u32 != 0),
        "no up event in {rest:?}"
    );
    let del = rest
        .iter()
        .find(|e| e.kind == LinkEventKind::Del)
        .unwrap_or_else(|| panic!("no del event in {rest:?}"));
    assert_eq!((del.name.as_str(), del.ifindex), ("vfrigtest0", ifindex));

    assert!(agent.call(Op::RecordTake).is_err(), "take after stop");
    let status = agent.ok(Op::Status);
    assert!(matches!(status, Reply::Status(s) if !s.recording));
}

#[test]
fn records_a_link_moving_to_another_netns() {
    let Some(mut agent) = agent_in_netns() else {
        return;
    };
    // A process in a further namespace to move a link into.
    agent.ok(Op::Spawn {
        name: "netns".into(),
        cmd: "exec unshare -n sleep 30".into(),
    });
    let pid = match agent.ok(Op::Status) {
        Reply::Status(s) => s.jobs[0].pid,
        other => panic!("{other:?}"),
    };
    wait_until("the job's own netns", || {
        let out = agent.run(
            &format!("[ \"$(readlink /proc/{pid}/ns/net)\" != \"$(readlink /proc/self/ns/net)\" ]"),
            Some(10_000),
        );
        out.success()
    });
    let Some(_) = add_link(&mut agent, "vfrigmove0", &["veth"]) else {
        return;
    };
    agent.ok(Op::RecordStart);
    agent.sh(&format!("ip link set vfrigmove0 netns {pid}"));
    let taken = events(agent.ok(Op::RecordStop));
    let del = taken
        .iter()
        .find(|e| e.kind == LinkEventKind::Del && e.name == "vfrigmove0")
        .unwrap_or_else(|| panic!("no del event in {taken:?}"));
    assert_eq!(del.netnsid, None);
    let nsid = del.new_netnsid.expect("IFLA_NEW_NETNSID on the move");
    assert!(del.new_ifindex.is_some(), "{del:?}");
    // The link reappears in the other namespace, which now has an id here.
    let arrived = taken
        .iter()
        .find(|e| e.kind == LinkEventKind::New && e.name == "vfrigmove0" && e.netnsid.is_some())
        .unwrap_or_else(|| panic!("no event from the other netns in {taken:?}"));
    assert_eq!(arrived.netnsid, Some(nsid));
    assert_eq!(Some(arrived.ifindex as i32), del.new_ifindex);
    agent.ok(Op::Stop {
        name: "netns".into(),
        timeout_ms: None,
    });
}
