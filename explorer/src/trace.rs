//! Traces: replaying them, shrinking them, printing them, and writing them
//! as scenario files a VM replays.

use std::fmt::{self, Write as _};

use serde::Serialize;
use vfrig_guest_driver::core::VlanFsm;

use crate::invariant::{check, Kind, Violation};
use crate::world::{Effect, Input, Model, NotEnabled, VlanOps, World, MACS};

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

impl fmt::Display for Step {
    /// `  3. kernel: delete VLAN 10`, with the request it sent or answered
    /// in brackets: `[DEL_VLAN_V2 -> ERR_PARAM]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>3}. {}", self.n, self.input)?;
        match (&self.effect.op, &self.effect.status) {
            (Some(op), Some(status)) => write!(f, " [{op} -> {status}]"),
            (Some(op), None) => write!(f, " [{op}]"),
            _ => Ok(()),
        }
    }
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

/// The same schedule on another machine: `trace`'s kernel operations and
/// PF decisions, in the same order, replayed on `model` with `fsm`. Where
/// that machine has nothing to send or answer, the watchdog pass or answer
/// is left out; a refusal of something the model may not refuse is an
/// answer; and the trace is run to rest at the end. The result replays
/// exactly: `cargo rig run` confirms a fix on it.
pub fn counterpart(
    model: &Model,
    fsm: VlanFsm,
    trace: &[Input],
) -> Result<(Model, Vec<Input>), ReplayError> {
    let other = Model {
        fsm,
        ..model.clone()
    };
    let mut w = World::start(&other).map_err(ReplayError::Start)?;
    let mut out = Vec::new();
    for (i, &input) in trace.iter().enumerate() {
        let candidates = w.candidates(&other);
        let input = match input {
            Input::Refuse if !candidates.contains(&Input::Refuse) => Input::Answer,
            other => other,
        };
        if !candidates.contains(&input) {
            if matches!(input, Input::Watchdog | Input::Answer) {
                continue;
            }
            return Err(ReplayError::NotEnabled { n: i + 1, input });
        }
        let mut next = w.clone();
        match next.apply_in(&other, input) {
            Ok(_) => {
                w = next;
                out.push(input);
            }
            Err(NotEnabled::NoOp(_)) => {}
            Err(NotEnabled::Impossible(_)) => {
                return Err(ReplayError::NotEnabled { n: i + 1, input })
            }
        }
    }
    out.extend(w.run_to_rest(&other).map_err(ReplayError::Start)?);
    Ok((other, out))
}

/// The trace as a numbered list, each input with both cores afterwards.
pub fn render(steps: &[Step]) -> String {
    let mut out = String::new();
    for s in steps {
        let _ = writeln!(out, "{s}");
        let _ = writeln!(out, "       {}", s.state);
        for v in &s.violations {
            let _ = writeln!(out, "       BROKEN {v}");
        }
    }
    out
}

/// Writes a replayed trace as a scenario file for `cargo rig run`.
///
/// The VM starts where the model does (vf0 up, settled), then the driver's
/// watchdog goes manual and every input becomes one step: a kernel change
/// is a guest command; a watchdog pass is a `hold` rule for the request the
/// model sent, then one pass that must send it; the PF's answer is a
/// `release`, a refusal a `release` with the status. So the VM goes through
/// the same ordering, and a divergence fails the step where it happens. The
/// scenario ends with a consistency check: when the trace ends in a
/// violation, the scenario expects to fail with its invariant (the VM's
/// check names it the same way); otherwise it must pass. `about` goes into
/// the description.
pub fn scenario(model: &Model, name: &str, steps: &[Step], about: &str) -> Result<String, String> {
    let last = steps.last().ok_or("an empty trace")?;
    let expect = if last.violations.is_empty() {
        None
    } else {
        Some(
            last.violations
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
                })?,
        )
    };
    let fsm = model.fsm;
    let mut out = String::new();
    let _ = writeln!(out, "name = \"{name}\"");
    let _ = writeln!(out, "description = \"\"\"");
    let _ = writeln!(out, "{}", wrap(about.trim_end(), 76));
    let _ = writeln!(
        out,
        "\nThe schedule, on the {fsm} VLAN state machine and a {} PF:\n",
        model.vlan_ops.describe()
    );
    for s in steps {
        let _ = writeln!(out, "{s}");
    }
    let _ = writeln!(
        out,
        "\nThe driver's watchdog is manual and the PF holds each request until the\n\
         schedule answers it, so the VM goes through the same ordering."
    );
    match expect {
        Some(v) => {
            let _ = writeln!(out, "It must end in {} ({}).", v.invariant, v.kind);
        }
        None => {
            let _ = writeln!(out, "It must end consistent.");
        }
    }
    let _ = writeln!(out, "\"\"\"");
    if model.fsm == VlanFsm::Legacy {
        let _ = writeln!(out, "driver = {{ vlan_fsm = \"legacy\" }}");
    }
    if let Some(v) = expect {
        let _ = writeln!(out, "expect_fail = \"{}\"", v.invariant);
    }
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
    match expect {
        Some(v) => {
            let _ = writeln!(out, "\n# The model ends here breaking {}.", v.invariant);
        }
        None => {
            let _ = writeln!(out, "\n# The model ends here at rest and consistent.");
        }
    }
    step(&mut out, "consistent = true");
    Ok(out)
}

/// `text` with its words filled into lines of at most `width` characters
/// (a longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_fills_lines_up_to_the_width() {
        assert_eq!(wrap("aa bb cc dd", 5), "aa bb\ncc dd");
        assert_eq!(wrap("a verylongword b", 4), "a\nverylongword\nb");
        assert_eq!(wrap("", 10), "");
    }
}
