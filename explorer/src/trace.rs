//! Traces: replaying them, shrinking them, printing them, and writing them
//! as scenario files a VM replays.

use std::fmt::Write as _;

use serde::Serialize;
use vfrig_guest_driver::core::VlanFsm;

use crate::invariant::{check, Kind, Violation};
use crate::world::{Effect, Input, Model, VlanOps, World, MACS};

/// One input of a replayed trace and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// 1-based.
    pub n: usize,
    /// The input.
    pub input: Input,
    /// The request it sent or answered.
    pub effect: Effect,
    /// Both cores and the kernel afterwards, in one line.
    pub state: String,
    /// What is broken afterwards.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

/// Why a trace does not replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The start state could not be built.
    #[error("the model does not start: {0}")]
    Start(String),
    /// Input `n` (1-based) is not enabled where it comes.
    #[error("input {n} ({input}) is not enabled there")]
    NotEnabled {
        /// Its position.
        n: usize,
        /// The input.
        input: Input,
    },
}

/// Replays `trace` from the start, stopping at the first state that breaks
/// an invariant. Returns the steps taken.
pub fn replay(model: &Model, trace: &[Input]) -> Result<Vec<Step>, ReplayError> {
    let mut w = World::start(model).map_err(ReplayError::Start)?;
    let mut steps = Vec::new();
    for (i, &input) in trace.iter().enumerate() {
        let effect = w
            .apply_in(model, input)
            .map_err(|_| ReplayError::NotEnabled { n: i + 1, input })?;
        let violations = check(&w, model.vlan_ops);
        let broken = !violations.is_empty();
        steps.push(Step {
            n: i + 1,
            input,
            effect,
            state: w.describe(),
            violations,
        });
        if broken {
            break;
        }
    }
    Ok(steps)
}

/// Whether `trace` replays and ends in a violation of `kind`.
fn breaks(model: &Model, trace: &[Input], kind: Kind) -> Option<usize> {
    let steps = replay(model, trace).ok()?;
    let last = steps.last()?;
    last.violations
        .iter()
        .any(|v| v.kind == kind)
        .then_some(steps.len())
}

/// Shrinks `trace`, which must end in a violation of `kind`: removes inputs
/// (halves, then smaller chunks, down to single inputs) and swaps adjacent
/// inputs into a canonical order, keeping every change after which the same
/// kind still breaks, until nothing changes. Returns the shrunk trace.
pub fn shrink(model: &Model, trace: &[Input], kind: Kind) -> Vec<Input> {
    let Some(len) = breaks(model, trace, kind) else {
        return trace.to_vec();
    };
    let mut best: Vec<Input> = trace[..len].to_vec();
    loop {
        let mut changed = false;
        let mut chunk = best.len() / 2;
        while chunk >= 1 {
            let mut start = 0;
            while start + chunk <= best.len() {
                let mut candidate = best[..start].to_vec();
                candidate.extend_from_slice(&best[start + chunk..]);
                match breaks(model, &candidate, kind) {
                    Some(n) => {
                        candidate.truncate(n);
                        best = candidate;
                        changed = true;
                    }
                    None => start += 1,
                }
            }
            chunk /= 2;
        }
        for i in 0..best.len().saturating_sub(1) {
            if best[i + 1] < best[i] {
                let mut candidate = best.clone();
                candidate.swap(i, i + 1);
                if let Some(n) = breaks(model, &candidate, kind) {
                    if n == candidate.len() {
                        best = candidate;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            return best;
        }
    }
}

/// The trace as a numbered list, each input with both cores afterwards.
pub fn render(steps: &[Step]) -> String {
    let mut out = String::new();
    for s in steps {
        let what = match (&s.effect.op, &s.effect.status) {
            (Some(op), Some(status)) => format!(" [{op} -> {status}]"),
            (Some(op), None) => format!(" [{op}]"),
            _ => String::new(),
        };
        let _ = writeln!(out, "{:>3}. {}{}", s.n, s.input, what);
        let _ = writeln!(out, "       {}", s.state);
        for v in &s.violations {
            let _ = writeln!(out, "       BROKEN {v}");
        }
    }
    out
}

/// Writes a shrunk trace as a scenario file for `cargo rig run`.
///
/// The VM starts where the model does (vf0 up, settled), then the driver's
/// watchdog goes manual and every input becomes one step: a kernel change
/// is a guest command; a watchdog pass is a `hold` rule for the request the
/// model sent, then one pass that must send it; the PF's answer is a
/// `release`, a refusal a `release` with the status. So the VM goes through
/// the same ordering, and a divergence fails the step where it happens. The
/// scenario ends with a consistency check, which the legacy machine must
/// fail with the invariant the model broke and the fixed machine must pass.
pub fn scenario(model: &Model, name: &str, steps: &[Step]) -> Result<String, String> {
    let last = steps.last().ok_or("an empty trace")?;
    let v = last
        .violations
        .iter()
        .find(|v| v.invariant.checked_in_vm())
        .ok_or_else(|| {
            format!(
                "the trace breaks only {}, which the VM's consistency check cannot see at rest",
                last.violations
                    .iter()
                    .map(|v| v.invariant.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let fsm = match model.fsm {
        VlanFsm::Legacy => "legacy",
        VlanFsm::Fixed => "fixed",
    };
    let mut out = String::new();
    let _ = writeln!(out, "name = \"{name}\"");
    let _ = writeln!(out, "description = \"\"\"");
    let _ = writeln!(
        out,
        "Found by `cargo rig explore` on the {fsm} VLAN state machine ({} PF):",
        match model.vlan_ops {
            VlanOps::V2 => "VLAN V2",
            VlanOps::V1 => "VLAN V1 only",
        }
    );
    let _ = writeln!(out, "{} ({}). The shrunk trace:", v.kind, v.invariant);
    let _ = writeln!(out);
    for s in steps {
        let what = match (&s.effect.op, &s.effect.status) {
            (Some(op), Some(status)) => format!(" [{op} -> {status}]"),
            (Some(op), None) => format!(" [{op}]"),
            _ => String::new(),
        };
        let _ = writeln!(out, "{:>3}. {}{}", s.n, s.input, what);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "The driver's watchdog is manual and the PF holds each request until the\n\
         trace answers it, so the VM goes through the same ordering. The legacy\n\
         machine must break {}; the fixed one must pass.",
        v.invariant
    );
    let _ = writeln!(out, "\"\"\"");
    let _ = writeln!(out, "expect_fail_on = {{ {fsm} = \"{}\" }}", v.invariant);
    if model.vlan_ops == VlanOps::V1 {
        let _ = writeln!(out, "\n[pf.vf0]\nvlan_v2 = false");
    }
    let step = |out: &mut String, body: &str| {
        let _ = writeln!(out, "\n[[step]]\n{body}");
    };
    step(&mut out, "guest = \"ip link set vf0 up\"");
    step(&mut out, "settle = true");
    step(&mut out, "watchdog = { vf = 0, mode = \"manual\" }");
    let mut netns = false;
    let mut kernel_vlans: Vec<u16> = Vec::new();
    for s in steps {
        let ip = if netns { "ip -n ns1" } else { "ip" };
        let _ = writeln!(out, "\n# {}. {}", s.n, s.input);
        match s.input {
            Input::AddVlan(vid) => {
                kernel_vlans.push(vid);
                step(
                    &mut out,
                    &format!(
                        "guest = \"{ip} link add link vf0 name vf0.{vid} type vlan id {vid}\""
                    ),
                );
            }
            Input::DelVlan(vid) => {
                kernel_vlans.retain(|v| *v != vid);
                step(&mut out, &format!("guest = \"{ip} link del vf0.{vid}\""));
            }
            Input::Down => step(&mut out, &format!("guest = \"{ip} link set vf0 down\"")),
            Input::Up => step(&mut out, &format!("guest = \"{ip} link set vf0 up\"")),
            Input::NetnsMove => {
                let mut cmd = String::new();
                for vid in kernel_vlans.drain(..) {
                    let _ = write!(cmd, "ip link del vf0.{vid} && ");
                }
                cmd.push_str("ip netns add ns1 && ip link set vf0 netns ns1");
                step(&mut out, &format!("guest = \"{cmd}\""));
                netns = true;
            }
            Input::SetMac(i) => step(
                &mut out,
                &format!(
                    "guest = \"{ip} link set vf0 address {}\"",
                    MACS[usize::from(i) % 2]
                ),
            ),
            Input::Watchdog => {
                let op = s
                    .effect
                    .op
                    .as_deref()
                    .ok_or("a watchdog pass that sent nothing")?;
                step(
                    &mut out,
                    &format!("fault = {{ vf = 0, op = \"{op}\", action = \"hold\" }}"),
                );
                step(
                    &mut out,
                    &format!("watchdog = {{ vf = 0, expect = \"{op}\" }}"),
                );
            }
            Input::Answer => step(&mut out, "release = { vf = 0 }"),
            Input::Refuse => {
                let status = s
                    .effect
                    .status
                    .as_deref()
                    .ok_or("a refusal without a status")?;
                step(
                    &mut out,
                    &format!("release = {{ vf = 0, status = \"{status}\" }}"),
                );
            }
            Input::LinkDown => step(&mut out, "pf_event = { vf = 0, kind = \"link_down\" }"),
            Input::LinkUp => step(&mut out, "pf_event = { vf = 0, kind = \"link_auto\" }"),
            Input::VfReset => step(&mut out, "pf_event = { vf = 0, kind = \"reset\" }"),
        }
    }
    let _ = writeln!(
        out,
        "\n# The state the model reached breaks {}.",
        v.invariant
    );
    step(&mut out, "consistent = true");
    Ok(out)
}
