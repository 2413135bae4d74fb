//! The uevent observer end to end, with the agent in network and mount
//! namespaces of its own (sysfs mounted afresh), so the host's links are
//! never touched and never seen.

mod common;

use common::Agent;
use vfrig_agent::proto::{NetAdd, Op, Reply};

fn net_adds(reply: Reply) -> Vec<NetAdd> {
    match reply {
        Reply::NetAdds(adds) => adds,
        other => panic!("expected net adds, got {other:?}"),
    }
}

fn uevent_recording(agent: &mut Agent) -> bool {
    match agent.ok(Op::Status) {
        Reply::Status(status) => status.uevent_recording,
        other => panic!("expected status, got {other:?}"),
    }
}

#[allow(clippy::print_stderr)]
fn agent_in_netns() -> Option<Agent> {
    match Agent::start_in_new_netns_with_sysfs() {
        Ok(agent) => Some(agent),
        Err(why) => {
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// A veth created with `master` set: the kernel registers it (uevent) and
/// only then enslaves it, so the observer follows it to its master; its
/// peer never gets one.
#[test]
fn follows_a_new_port_to_its_bridge() {
    let Some(mut agent) = agent_in_netns() else {
        return;
    };
    let out = agent.run("ip link add vfrigbr0 type bridge", Some(10_000));
    if !out.success() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping: no bridge here: {}", out.stderr.trim());
        }
        return;
    }
    assert!(!uevent_recording(&mut agent));
    agent.ok(Op::UeventStart {
        give_up_ms: Some(50),
    });
    assert!(uevent_recording(&mut agent));
    agent.sh("ip link add vfrigue0 master vfrigbr0 type veth peer name vfrigue1");
    // No wait: the take itself waits for the follow-ups.
    let adds = net_adds(agent.ok(Op::UeventTake));
    let find = |name: &str| {
        adds.iter()
            .find(|a| a.ifname == name)
            .unwrap_or_else(|| panic!("no add of {name} in {adds:?}"))
            .clone()
    };
    let port = find("vfrigue0");
    assert_eq!(port.master.as_deref(), Some("vfrigbr0"), "{port:?}");
    assert!(port.us_to_master.is_some(), "{port:?}");
    assert_eq!(
        port.us_to_master == Some(0),
        port.master_at_first_look.is_some(),
        "{port:?}"
    );
    assert!(port.flags_at_first_look.is_some(), "{port:?}");
    assert!(port.flags_when_enslaved.is_some(), "{port:?}");
    assert!(port.devpath.ends_with("/net/vfrigue0"), "{port:?}");
    let peer = find("vfrigue1");
    assert_eq!(
        (
            peer.master.as_deref(),
            peer.us_to_master,
            peer.flags_when_enslaved
        ),
        (None, None, None),
        "{peer:?}"
    );
    let seqs: Vec<u64> = adds.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (0..adds.len() as u64).collect::<Vec<_>>());

    agent.sh("ip link add vfrigue2 type veth peer name vfrigue3");
    let rest = net_adds(agent.ok(Op::UeventStop));
    let names: Vec<&str> = rest.iter().map(|a| a.ifname.as_str()).collect();
    assert!(
        names.contains(&"vfrigue2") && names.contains(&"vfrigue3"),
        "{rest:?}"
    );
    assert!(rest.iter().all(|a| a.seq >= adds.len() as u64), "{rest:?}");
    assert!(!uevent_recording(&mut agent));
    assert!(agent.call(Op::UeventTake).is_err(), "take after stop");
}

#[test]
fn give_up_is_bounded() {
    let mut agent = Agent::start();
    let err = agent
        .call(Op::UeventStart {
            give_up_ms: Some(60_000),
        })
        .unwrap_err();
    assert!(err.contains("over the limit"), "{err}");
    let err = agent.call(Op::UeventStop).unwrap_err();
    assert!(err.contains("uevent_start first"), "{err}");
}
