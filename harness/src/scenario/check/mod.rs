//! The checks of `expect` and `consistent` steps, as pure functions over
//! what the runner observed: the PF's tables and transcript, the drivers'
//! status and the guest kernel's links.
//!
//! Three views of a VF's filters are compared:
//! - the **kernel's intent**: the 802.1Q VLAN uppers of `vfN` (or of the
//!   bond `vfN` is enslaved to), found in every network namespace, including
//!   uppers left in another namespace after `vfN` moved (they stay linked
//!   across and keep their VID registered);
//! - the **driver's view**: `vfrig-driver status`, each filter with its
//!   state;
//! - the **PF table**.
//!
//! After a settle, the driver's view must equal the PF table. The PF table
//! must equal the kernel's intent except where a request was refused (by a
//! PF reply with an error status, or by the driver holding the VF to the
//! PF's VLAN limit): those differences are listed as refused, with the
//! status, and are not inconsistencies. The legacy machine's INACTIVE
//! filters (deleted from the PF while the interface is down, to be re-added
//! on up) are expected while `vfN` is down and a loss while it is up.
//!
//! Each problem starts with the name of the [`invariant`] it breaks and
//! `": "`; the names are shared with the interleaving explorer, so a trace
//! it found fails the VM's check under the same name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;
use vfrig_device::engine::{Entry, Outcome};
use vfrig_device::pf::VfTable;

use vfrig_agent::proto::{LinkEvent, LinkEventKind};

use super::format::{Expect, ExpectLinks};

/// The invariants a `consistent` step checks, by the names the
/// interleaving explorer gives them. Every problem [`compare`] reports
/// starts with one of these and `": "`.
pub mod invariant {
    /// At rest, every driver filter is in a final state: nothing stuck in a
    /// transitional one (`ADD`, `ADDING`, `IS_NEW`, `REMOVE`, ...).
    pub const NO_STUCK_FILTER: &str = "no-stuck-filter";
    /// The PF has no VLAN filter the driver has no entry for at all.
    pub const NO_UNTRACKED_PF_FILTER: &str = "no-untracked-pf-filter";
    /// The filters the driver believes the PF has are the PF's (VLANs and
    /// active MACs).
    pub const DRIVER_MATCHES_PF: &str = "driver-matches-pf";
    /// Every VLAN filter the driver holds (but those it is removing) is a
    /// VLAN the kernel has, or one whose DEL the PF refused.
    pub const DRIVER_MATCHES_INTENT: &str = "driver-matches-intent";
    /// The PF's VLAN filters are the kernel's VLANs, except what the PF
    /// refused.
    pub const PF_MATCHES_INTENT: &str = "pf-matches-intent";
    /// All of them, in the order [`compare`](super::compare) checks them.
    pub const ALL: [&str; 5] = [
        NO_STUCK_FILTER,
        NO_UNTRACKED_PF_FILTER,
        DRIVER_MATCHES_PF,
        DRIVER_MATCHES_INTENT,
        PF_MATCHES_INTENT,
    ];
}

/// One network namespace's links, as `ip -d -j link show` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Namespace {
    /// `""` for the initial namespace, else its `ip netns` name.
    pub name: String,
    /// The nsid this namespace has in the initial namespace, if any.
    pub nsid: Option<i64>,
    /// The links.
    pub links: Vec<Value>,
}

/// What the guest kernel has, across namespaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KernelView {
    /// The namespaces, the initial one first.
    pub namespaces: Vec<Namespace>,
}

/// What the kernel has for one VF's netdev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelVf {
    /// The namespace `vfN` is in (`""`: the initial one).
    pub netns: String,
    /// Administratively up.
    pub up: bool,
    /// Its master, if enslaved.
    pub master: Option<String>,
    /// 802.1Q VLAN ids of its uppers and of its master's uppers.
    pub vlans: BTreeSet<u16>,
}

/// The guest command that prints what [`KernelView::parse`] reads.
pub const KERNEL_VIEW_CMD: &str = "echo '== ns - -'; ip -d -j link show; \
     ip netns list 2>/dev/null | while read -r ns rest; do \
     id=$(echo \"$rest\" | sed -n 's/.*id: \\([0-9-]*\\).*/\\1/p'); \
     echo \"== ns $ns ${id:--}\"; ip -n \"$ns\" -d -j link show; done";

impl KernelView {
    /// Parses the output of [`KERNEL_VIEW_CMD`].
    pub fn parse(text: &str) -> Result<KernelView, String> {
        let mut view = KernelView::default();
        let mut current: Option<(String, Option<i64>, String)> = None;
        let finish = |cur: Option<(String, Option<i64>, String)>,
                      view: &mut KernelView|
         -> Result<(), String> {
            if let Some((name, nsid, json)) = cur {
                let links: Vec<Value> = serde_json::from_str(json.trim())
                    .map_err(|e| format!("`ip -j link show` in netns `{name}`: {e}"))?;
                view.namespaces.push(Namespace { name, nsid, links });
            }
            Ok(())
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("== ns ") {
                finish(current.take(), &mut view)?;
                let mut it = rest.split_whitespace();
                let name = it.next().unwrap_or("-");
                let nsid = it.next().and_then(|n| n.parse().ok());
                let name = if name == "-" { "" } else { name };
                current = Some((name.to_owned(), nsid, String::new()));
            } else if let Some((_, _, json)) = current.as_mut() {
                json.push_str(line);
                json.push('\n');
            }
        }
        finish(current, &mut view)?;
        Ok(view)
    }

    /// The kernel's state for interface `ifname`, if it exists.
    pub fn vf(&self, ifname: &str) -> Option<KernelVf> {
        let (home, link) = self.namespaces.iter().find_map(|ns| {
            ns.links
                .iter()
                .find(|l| l["ifname"] == ifname)
                .map(|l| (ns, l))
        })?;
        let master = link["master"].as_str().map(str::to_owned);
        let index_of = |name: &str| {
            home.links
                .iter()
                .find(|l| l["ifname"] == name)
                .and_then(|l| l["ifindex"].as_i64())
        };
        let parents: Vec<(String, Option<i64>)> = std::iter::once(ifname.to_owned())
            .chain(master.clone())
            .map(|n| {
                let index = index_of(&n);
                (n, index)
            })
            .collect();
        let mut vlans = BTreeSet::new();
        for ns in &self.namespaces {
            for l in &ns.links {
                let info = &l["linkinfo"];
                if info["info_kind"] != "vlan" || info["info_data"]["protocol"] != "802.1Q" {
                    continue;
                }
                let Some(vid) = info["info_data"]["id"].as_u64() else {
                    continue;
                };
                let is_ours = if std::ptr::eq(ns, home) {
                    parents.iter().any(|(name, _)| l["link"] == name.as_str())
                } else if let Some(target) = l["link_netnsid"].as_i64() {
                    // An upper left behind in another namespace names its
                    // lower by ifindex and the lower's namespace by nsid,
                    // which is only known here for uppers in the initial
                    // namespace; elsewhere the ifindex alone decides.
                    let ns_matches = !ns.name.is_empty() || home.nsid.is_none_or(|id| id == target);
                    ns_matches
                        && parents
                            .iter()
                            .any(|(_, index)| index.is_some() && l["link_index"].as_i64() == *index)
                } else {
                    false
                };
                if is_ours {
                    vlans.insert(u16::try_from(vid).unwrap_or(u16::MAX));
                }
            }
        }
        let up = link["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"));
        Some(KernelVf {
            netns: home.name.clone(),
            up,
            master,
            vlans,
        })
    }
}

/// One VLAN filter in the driver's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverVlan {
    /// VLAN id (802.1Q only).
    pub vid: u16,
    /// Its state, under iavf's name.
    pub state: String,
}

/// The driver's view of one VF, from `vfrig-driver status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverView {
    /// The adapter's phase.
    pub phase: String,
    /// Whether it believes the netdev is up.
    pub up: bool,
    /// 802.1Q VLAN filters.
    pub vlans: Vec<DriverVlan>,
    /// MAC filters as `mac state`.
    pub macs: Vec<(String, String)>,
    /// Pending work.
    pub pending: Vec<String>,
    /// The request waiting for a reply.
    pub outstanding: Option<String>,
    /// Requests the driver refused for the kernel (over the PF's limits).
    pub netdev_refused: u64,
}

impl DriverView {
    /// Reads `vfrig-driver status --vf N` output.
    pub fn parse(status: &Value) -> Result<DriverView, String> {
        let a = &status["adapter"];
        let phase = a["phase"]
            .as_str()
            .ok_or_else(|| format!("driver status without adapter.phase: {status}"))?
            .to_owned();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(DriverView {
            phase,
            up: a["netdev"]["up"].as_bool().unwrap_or(false),
            vlans: a["vlans"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter(|v| v["tpid"] == 0x8100)
                        .filter_map(|v| {
                            Some(DriverVlan {
                                vid: u16::try_from(v["vid"].as_u64()?).ok()?,
                                state: v["state"].as_str()?.to_owned(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            macs: a["macs"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|m| {
                            Some((
                                m["mac"].as_str()?.to_owned(),
                                m["state"].as_str()?.to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            pending: strings(&a["pending"]),
            outstanding: a["outstanding"]["op"].as_str().map(str::to_owned),
            netdev_refused: status["driver"]["netdev_refused"].as_u64().unwrap_or(0),
        })
    }

    /// Whether it has nothing to send and nothing outstanding.
    pub fn idle(&self) -> bool {
        self.pending.is_empty() && self.outstanding.is_none()
    }
}

/// A difference between the views that is allowed: the PF refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The VLAN.
    pub vid: u16,
    /// What was refused: `add` or `del`.
    pub request: &'static str,
    /// Who refused and how: a status name, or the limit.
    pub status: String,
}

/// The outcome of comparing the three views of one VF.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// Inconsistencies, one sentence each.
    pub problems: Vec<String>,
    /// Differences that the PF's refusals explain.
    pub refused: Vec<Refusal>,
}

/// The last refusal per VLAN id and direction in a VF's transcript entries.
fn refusals(entries: &[&Entry]) -> BTreeMap<(u16, &'static str), String> {
    let mut out = BTreeMap::new();
    for e in entries {
        let request = match e.op.as_str() {
            "ADD_VLAN" | "ADD_VLAN_V2" => "add",
            "DEL_VLAN" | "DEL_VLAN_V2" => "del",
            _ => continue,
        };
        for vid in vids_in_summary(&e.summary) {
            match &e.outcome {
                Outcome::Replied(status) if status != "SUCCESS" => {
                    out.insert((vid, request), status.clone());
                }
                Outcome::Replied(_) => {
                    out.remove(&(vid, request));
                }
                _ => {}
            }
        }
    }
    out
}

/// VLAN ids in a transcript summary: `[100, 200]` (V1) or
/// `[outer 0x8100/100]` (V2, 802.1Q tags only).
fn vids_in_summary(summary: &str) -> Vec<u16> {
    let inner = summary.trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .filter_map(|part| {
            let part = part.trim();
            match part.split_once('/') {
                Some((head, vid)) if head.ends_with("0x8100") => vid.trim().parse().ok(),
                Some(_) => None,
                None => part.parse().ok(),
            }
        })
        .collect()
}

/// Compares the kernel's intent, the driver's view and the PF table of VF
/// `vf` after a settle. `kernel` is `None` when `vfN` does not exist in the
/// guest, `driver` when no driver runs for it. Each problem is prefixed with
/// the name of the [`invariant`] it breaks.
pub fn compare(
    vf: u16,
    table: &VfTable,
    transcript: &[&Entry],
    driver: Option<&DriverView>,
    kernel: Option<&KernelVf>,
) -> Comparison {
    use invariant::{
        DRIVER_MATCHES_INTENT, DRIVER_MATCHES_PF, NO_STUCK_FILTER, NO_UNTRACKED_PF_FILTER,
        PF_MATCHES_INTENT,
    };
    let mut c = Comparison::default();
    let mut problem = |invariant: &str, text: String| {
        c.problems.push(format!("{invariant}: {text}"));
    };
    let pf: BTreeSet<u16> = table.vlans.iter().copied().collect();
    let refused = refusals(transcript);
    let name = format!("vf{vf}");
    let on = |k: &KernelVf| {
        format!(
            "{name}{}",
            k.master
                .as_deref()
                .map(|m| format!(" (or its master {m})"))
                .unwrap_or_default()
        )
    };

    if let Some(d) = driver {
        let state = |vid: u16| {
            d.vlans
                .iter()
                .find(|v| v.vid == vid)
                .map(|v| v.state.as_str())
        };
        for v in &d.vlans {
            match v.state.as_str() {
                "ACTIVE" => {}
                "INACTIVE" if !d.up => {}
                "INACTIVE" => problem(
                    PF_MATCHES_INTENT,
                    format!(
                        "VLAN {} lost: the driver holds it INACTIVE while {name} is up, so it \
                         is missing from the PF and will not be added back",
                        v.vid
                    ),
                ),
                other => problem(
                    NO_STUCK_FILTER,
                    format!(
                        "VLAN {} stuck in {other}: the PF has answered everything, yet the \
                         driver never completed the filter",
                        v.vid
                    ),
                ),
            }
        }
        // Which filters the driver believes the PF has.
        let believed: BTreeSet<u16> = d
            .vlans
            .iter()
            .filter(|v| !matches!(v.state.as_str(), "ADD" | "INACTIVE"))
            .map(|v| v.vid)
            .collect();
        for vid in pf.difference(&believed) {
            let text = format!(
                "VLAN {vid} leaked: the PF has a filter for it that the driver does not track"
            );
            match state(*vid) {
                Some(s) => problem(DRIVER_MATCHES_PF, format!("{text} (the driver has it {s})")),
                None => problem(NO_UNTRACKED_PF_FILTER, text),
            }
        }
        for vid in believed.difference(&pf) {
            problem(
                DRIVER_MATCHES_PF,
                format!(
                    "VLAN {vid} lost: the driver has it {} but the PF has no such filter",
                    state(*vid).unwrap_or("?")
                ),
            );
        }
        let driver_macs: BTreeSet<String> = d
            .macs
            .iter()
            .filter(|(_, s)| s == "ACTIVE")
            .map(|(m, _)| m.clone())
            .collect();
        // After a VF reset the PF puts back the filter for the MAC the host
        // recorded for the VF (ice_vf_rebuild_host_mac_cfg): host state a
        // driver that has not opened the netdev yet does not track.
        let host_mac = table.host_mac.to_string();
        let pf_macs: BTreeSet<String> = table
            .macs
            .iter()
            .map(|m| m.to_string())
            .filter(|m| *m != host_mac || d.macs.iter().any(|(dm, _)| *dm == host_mac))
            .collect();
        if driver_macs != pf_macs {
            problem(
                DRIVER_MATCHES_PF,
                format!(
                    "MAC filters differ: the driver has {driver_macs:?} active, the PF has \
                     {pf_macs:?}"
                ),
            );
        }
    }

    if let (Some(d), Some(k)) = (driver, kernel) {
        // The driver holds what the kernel asked for: a filter it is not
        // removing is a VLAN the kernel has, or one whose DEL the PF
        // refused (the driver keeps it then, and reported the refusal).
        for v in &d.vlans {
            if matches!(v.state.as_str(), "REMOVE" | "REMOVING")
                || k.vlans.contains(&v.vid)
                || refused.contains_key(&(v.vid, "del"))
            {
                continue;
            }
            problem(
                DRIVER_MATCHES_INTENT,
                format!(
                    "VLAN {} leaked in the driver: it holds the filter {}, but the kernel has \
                     no such VLAN on {}",
                    v.vid,
                    v.state,
                    on(k)
                ),
            );
        }
    }

    if let Some(k) = kernel {
        let inactive = |vid: u16| {
            driver.is_some_and(|d| {
                d.vlans
                    .iter()
                    .any(|v| v.vid == vid && v.state == "INACTIVE")
            })
        };
        for &vid in k.vlans.difference(&pf) {
            if let Some(status) = refused.get(&(vid, "add")) {
                c.refused.push(Refusal {
                    vid,
                    request: "add",
                    status: status.clone(),
                });
            } else if driver.is_some_and(|d| !d.vlans.iter().any(|v| v.vid == vid))
                && usize::from(table.vlan_limit) <= pf.len()
            {
                c.refused.push(Refusal {
                    vid,
                    request: "add",
                    status: format!("over the PF's limit of {} VLANs", table.vlan_limit),
                });
            } else if !k.up && inactive(vid) {
                // Legacy: deleted while down, re-added on up.
            } else {
                problem(
                    PF_MATCHES_INTENT,
                    format!(
                        "VLAN {vid} lost: the kernel has it on {}, the PF has no filter for it",
                        on(k)
                    ),
                );
            }
        }
        for &vid in pf.difference(&k.vlans) {
            if let Some(status) = refused.get(&(vid, "del")) {
                c.refused.push(Refusal {
                    vid,
                    request: "del",
                    status: status.clone(),
                });
            } else {
                problem(
                    PF_MATCHES_INTENT,
                    format!(
                        "VLAN {vid} leaked: the PF has a filter for it, the kernel has no such \
                         VLAN on {name}"
                    ),
                );
            }
        }
    }
    c.problems.dedup();
    c
}

/// The failure message of a `consistent` step: `problems` are the
/// comparisons' problems, each already prefixed with its VF (`vf0: ...`).
pub fn disagreement(problems: &[String]) -> String {
    format!(
        "the kernel, the driver and the PF disagree:\n  - {}",
        problems.join("\n  - ")
    )
}

/// Checks an `expect` step against a VF's table and transcript entries;
/// returns one sentence per mismatch.
pub fn expect(e: &Expect, table: &VfTable, transcript: &[&Entry]) -> Vec<String> {
    let mut out = Vec::new();
    let vf = e.vf;
    if let Some(want) = &e.vlans {
        let mut want = want.clone();
        want.sort_unstable();
        want.dedup();
        if want != table.vlans {
            out.push(format!(
                "vf{vf} VLANs: expected {want:?}, the PF has {:?}",
                table.vlans
            ));
        }
    }
    if let Some(want) = &e.macs {
        let want: BTreeSet<String> = want.iter().map(|m| m.to_string()).collect();
        let have: BTreeSet<String> = table.macs.iter().map(|m| m.to_string()).collect();
        if want != have {
            out.push(format!(
                "vf{vf} MACs: expected {want:?}, the PF has {have:?}"
            ));
        }
    }
    let flag = |out: &mut Vec<String>, what: &str, want: Option<bool>, have: bool| {
        if want.is_some_and(|w| w != have) {
            out.push(format!(
                "vf{vf} {what}: expected {}, the PF has {have}",
                !have
            ));
        }
    };
    flag(&mut out, "promisc", e.promisc, table.promisc.unicast);
    flag(&mut out, "allmulti", e.allmulti, table.promisc.multicast);
    flag(
        &mut out,
        "queues enabled",
        e.queues_enabled,
        table.queues.rx != 0 && table.queues.tx != 0,
    );
    let drops = serde_json::to_value(table.traffic.drops).unwrap_or(Value::Null);
    for (name, want) in &e.drops {
        let have = drops[name].as_u64().unwrap_or(0);
        if have != *want {
            out.push(format!(
                "vf{vf} drops {name}: expected {want}, the PF counted {have}"
            ));
        }
    }
    for (op, want) in &e.requests {
        let have = transcript.iter().filter(|t| &t.op == op).count() as u64;
        if have != *want {
            out.push(format!(
                "vf{vf} requests {op}: expected {want}, the PF received {have}"
            ));
        }
    }
    for (vid, want) in &e.vlan_dels {
        let vid: u16 = vid.parse().unwrap_or_default();
        let have = transcript
            .iter()
            .filter(|t| t.op == "DEL_VLAN" || t.op == "DEL_VLAN_V2")
            .filter(|t| vids_in_summary(&t.summary).contains(&vid))
            .count() as u64;
        if have != *want {
            out.push(format!(
                "vf{vf} VLAN {vid} removed {have} time(s), expected {want} \
                 (DEL requests naming it)"
            ));
        }
    }
    out
}

/// Checks an `expect_links` step against the recorded link events.
pub fn expect_links(e: &ExpectLinks, events: &[LinkEvent]) -> Vec<String> {
    let mut appeared = 0;
    let mut removed = 0;
    let mut without_master = 0;
    let mut present = false;
    for ev in events.iter().filter(|ev| ev.name == e.ifname) {
        match ev.kind {
            LinkEventKind::New => {
                if !present {
                    appeared += 1;
                    if ev.master.is_none() {
                        without_master += 1;
                    }
                }
                present = true;
            }
            LinkEventKind::Del => {
                // A move to another namespace is a DELLINK with the new
                // netns id; the link lives on.
                if ev.new_netnsid.is_none() {
                    removed += 1;
                    present = false;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (what, want, have) in [
        ("appeared", e.appeared, appeared),
        ("removed", e.removed, removed),
        (
            "appeared without a master",
            e.appeared_without_master,
            without_master,
        ),
    ] {
        if let Some(want) = want {
            if want != have {
                out.push(format!(
                    "{} {what} {have} time(s) in the recorded link events, expected {want}",
                    e.ifname
                ));
            }
        }
    }
    out
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        for r in &self.refused {
            writeln!(
                f,
                "  - refused by the PF (not an inconsistency): {} of VLAN {}: {}",
                r.request, r.vid, r.status
            )?;
        }
        Ok(())
    }
}

pub mod counters;
pub mod uevents;

#[cfg(test)]
mod tests;
