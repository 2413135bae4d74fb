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
    if let Some(u) = &r.uevents {
        let _ = writeln!(
            out,
            "  uevent observer: {} net add(s), {} without a master at first look \
             (window hit rate {:.0}%), {} never enslaved",
            u.adds,
            u.without_master,
            u.window_hit_rate * 100.0,
            u.never_enslaved
        );
        if let Some(d) = u.time_to_master_us {
            let _ = writeln!(
                out,
                "  time from uevent to master: min {} us, median {} us, p90 {} us, max {} us \
                 (n = {})",
                d.min, d.p50, d.p90, d.max, d.n
            );
        }
        for c in &u.per_ifname {
            let _ = writeln!(
                out,
                "    {}: {} add(s), {} without master, {} never enslaved",
                c.ifname, c.adds, c.without_master, c.never_enslaved
            );
        }
    }
    if !r.counters.is_empty() {
        let _ = writeln!(out, "  counters:");
        for c in &r.counters {
            let value = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "    {:<28} {:>12} -> {:<12} (since `{}`){}",
                c.name,
                value(c.before),
                value(c.after),
                c.since,
                if c.grew() { "" } else { "  did not grow" }
            );
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

/// A side-by-side table of two runs of the same scenario (the demo's fixed
/// and legacy runs): per VF the final VLANs and the VLAN requests sent.
pub fn compare(a: &ScenarioResult, b: &ScenarioResult) -> String {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let outcome = |r: &ScenarioResult| match &r.failure {
        None => "passed".to_owned(),
        Some(_) => format!("{} failed step(s)", 1 + r.more_failures.len()),
    };
    rows.push(("".into(), a.vlan_fsm.to_string(), b.vlan_fsm.to_string()));
    rows.push(("checks".into(), outcome(a), outcome(b)));
    let vfs = a
        .tables
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>());
    for vf in vfs.unwrap_or_default() {
        let vlans = |r: &ScenarioResult| r.tables[&vf]["vlans"].to_string();
        rows.push((format!("{vf} VLANs on the PF"), vlans(a), vlans(b)));
        for op in [
            "ADD_VLAN_V2",
            "DEL_VLAN_V2",
            "DISABLE_QUEUES",
            "ENABLE_QUEUES",
        ] {
            let count = |r: &ScenarioResult| {
                r.requests
                    .get(&vf)
                    .and_then(|m| m.get(op))
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            };
            rows.push((format!("{vf} {op} sent"), count(a), count(b)));
        }
        let drops =
            |r: &ScenarioResult| r.tables[&vf]["traffic"]["drops"]["anti_spoof_vlan"].to_string();
        rows.push((format!("{vf} VLAN anti-spoof drops"), drops(a), drops(b)));
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, x, y) in rows {
        let _ = writeln!(out, "  {k:<w0$}  {x:<w1$}  {y}");
    }
    out
}
