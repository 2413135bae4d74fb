//! A scenario result for people: the verdict, the failed step, the three
//! views on a mismatch, the splat, and where the artifacts are.

use std::fmt::Write as _;

use super::runner::ScenarioResult;

/// The text `cargo rig run` prints for one scenario.
pub fn text(r: &ScenarioResult) -> String {
    let mut out = String::new();
    let mark = if r.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(
        out,
        "{mark} {} ({} VLAN state machine, {:.1} s): {}",
        r.name, r.vlan_fsm, r.timings.total_s, r.verdict
    );
    if let Some(f) = &r.failure {
        if !r.passed || r.expect_fail.is_some() {
            let _ = writeln!(out, "  at {}", f.step);
            for line in f.message.lines() {
                let _ = writeln!(out, "  | {line}");
            }
            if let Some(views) = f.views.as_ref().and_then(|v| v.as_object()) {
                for (vf, v) in views {
                    let _ = writeln!(out, "  {vf}:");
                    let _ = writeln!(out, "    kernel: {}", compact(&v["kernel"]));
                    let _ = writeln!(out, "    driver: {}", compact(&v["driver"]));
                    let _ = writeln!(out, "    PF:     {}", compact(&v["pf"]));
                    if v["refused"].as_array().is_some_and(|a| !a.is_empty()) {
                        let _ = writeln!(out, "    refused by the PF: {}", compact(&v["refused"]));
                    }
                }
            }
        }
    }
    if !r.passed {
        for splat in &r.splats {
            let _ = writeln!(out, "  kernel splat:");
            for line in splat.lines() {
                let _ = writeln!(out, "  | {line}");
            }
        }
    }
    if let Some(dir) = &r.artifacts {
        let _ = writeln!(out, "  artifacts: {}", dir.display());
    }
    out
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}
