//! Kernel splat detection in a console log.
//!
//! A splat is any of the kernel's "something went wrong" reports: `BUG:`,
//! `WARNING:`, `Oops`, `Call Trace:`, `general protection`, `KASAN` and
//! `Kernel panic`. A single report usually contains several of these markers
//! (an Oops has a call trace); they are grouped into one [`Splat`] when they
//! are close together.

use std::fmt;

/// Markers that start or belong to a kernel report, as they appear on the
/// console (after the `[    1.234567] ` timestamp, if any).
const MARKERS: &[&str] = &[
    "BUG:",
    "WARNING:",
    "Oops",
    "Call Trace:",
    "general protection",
    "KASAN",
    "Kernel panic",
    "kernel panic",
];

/// Lines after the last marker line that still belong to the same report.
const TAIL_LINES: usize = 40;

/// One kernel report found in a console log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splat {
    /// 1-based line number of the first marker line.
    pub line: usize,
    /// The first marker line, without its timestamp.
    pub headline: String,
    /// The report: from the first marker line to the end of the trace (at
    /// most [`TAIL_LINES`] lines after the last marker).
    pub excerpt: String,
}

impl fmt::Display for Splat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kernel splat at console line {}: {}",
            self.line, self.headline
        )?;
        f.write_str(&self.excerpt)
    }
}

/// Finds every kernel report in `log`, in order.
pub fn find(log: &str) -> Vec<Splat> {
    let lines: Vec<&str> = log.lines().collect();
    let mut splats = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !is_marker(lines[i]) {
            i += 1;
            continue;
        }
        // The report goes on while lines look like part of it, up to its
        // end-of-trace line, and at most TAIL_LINES past the last marker.
        let start = i;
        let mut last_marker = i;
        let mut stop = i + 1;
        while stop < lines.len() && stop <= last_marker + TAIL_LINES {
            let line = strip_timestamp(lines[stop]);
            if line.contains("---[ end") {
                stop += 1;
                break;
            }
            if is_marker(lines[stop]) {
                last_marker = stop;
            } else if !is_trace_line(line) {
                break;
            }
            stop += 1;
        }
        splats.push(Splat {
            line: start + 1,
            headline: strip_timestamp(lines[start]).trim().to_owned(),
            excerpt: lines[start..stop].join("\n"),
        });
        i = stop;
    }
    splats
}

fn is_marker(line: &str) -> bool {
    let line = strip_timestamp(line);
    MARKERS.iter().any(|m| line.contains(m))
}

/// Lines that belong to a report body: register dumps, stack frames,
/// module lists, the tainted/hardware lines.
fn is_trace_line(line: &str) -> bool {
    let t = line.trim_start();
    line.starts_with(' ')
        || line.starts_with('\t')
        || t.starts_with('<')
        || t.starts_with("RIP:")
        || t.starts_with("RSP:")
        || t.starts_with("RAX:")
        || t.starts_with("RDX:")
        || t.starts_with("RBP:")
        || t.starts_with("R10:")
        || t.starts_with("R13:")
        || t.starts_with("FS:")
        || t.starts_with("CS:")
        || t.starts_with("CR2:")
        || t.starts_with("Code:")
        || t.starts_with("Modules linked in:")
        || t.starts_with("CPU:")
        || t.starts_with("Tainted:")
        || t.starts_with("Hardware name:")
        || t.starts_with("Workqueue:")
        || t.starts_with("Oops:")
        || t.starts_with("Call Trace:")
        || t.starts_with("Kernel Offset:")
        || t.starts_with("---[")
        || t.starts_with("? ")
        || t.contains("+0x")
}

/// Removes a leading `[ 1234.567890] ` printk timestamp.
fn strip_timestamp(line: &str) -> &str {
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix('[') {
        if let Some(close) = rest.find(']') {
            let stamp = &rest[..close];
            if stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.') {
                return rest[close + 1..]
                    .strip_prefix(' ')
                    .unwrap_or(&rest[close + 1..]);
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "\
[    0.000000] Linux version 6.12.117+deb12-cloud-amd64
[    0.512000] virtio_net virtio1: registered
[    2.100000] vfrig-agent: ready
";

    const OOPS: &str = "\
[   12.345678] Oops: divide error: 0000 [#1] PREEMPT SMP NOPTI
[   12.345700] CPU: 1 UID: 0 PID: 245 Comm: sender Tainted: G           OE      6.12.117+deb12-cloud-amd64 #1
[   12.345710] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.3-debian-1.16.3-2 04/01/2014
[   12.345720] RIP: 0010:bond_xmit_roundrobin_slave_get+0x4a/0x120 [bonding]
[   12.345730] Code: 48 8b 87 a0 08 00 00 31 d2 f7 b7 c0 0a 00 00
[   12.345740] RSP: 0018:ffffb2c0c0173b70 EFLAGS: 00010246
[   12.345750] Call Trace:
[   12.345760]  <TASK>
[   12.345770]  ? die+0x36/0x90
[   12.345780]  bond_start_xmit+0x2f1/0x470 [bonding]
[   12.345790]  </TASK>
[   12.345800] Modules linked in: bonding(OE) tls 8021q garp mrp stp llc
[   12.345810] ---[ end trace 0000000000000000 ]---
";

    #[test]
    fn clean_boot_has_no_splat() {
        assert!(find(BOOT).is_empty());
    }

    #[test]
    fn an_oops_with_its_trace_is_one_splat() {
        let log = format!("{BOOT}{OOPS}[   13.000000] vfrig-agent: still here\n");
        let splats = find(&log);
        assert_eq!(splats.len(), 1, "{splats:#?}");
        let s = &splats[0];
        assert_eq!(s.line, 4);
        assert_eq!(
            s.headline,
            "Oops: divide error: 0000 [#1] PREEMPT SMP NOPTI"
        );
        assert!(s.excerpt.contains("bond_xmit_roundrobin_slave_get"));
        assert!(s.excerpt.ends_with("---[ end trace 0000000000000000 ]---"));
        assert!(!s.excerpt.contains("still here"));
    }

    #[test]
    fn separate_reports_are_separate_splats() {
        let warn = "\
[    5.000000] ------------[ cut here ]------------
[    5.000001] WARNING: CPU: 0 PID: 1 at net/core/dev.c:1234 netdev_foo+0x10/0x20
[    5.000002] Call Trace:
[    5.000003]  <TASK>
[    5.000004]  netdev_foo+0x10/0x20
[    5.000005]  </TASK>
[    5.000006] ---[ end trace 0000000000000001 ]---
[    6.000000] vfrig-agent: ok
";
        let log = format!("{warn}{OOPS}");
        let splats = find(&log);
        assert_eq!(splats.len(), 2, "{splats:#?}");
        assert!(splats[0].headline.starts_with("WARNING: CPU: 0"));
        assert!(splats[1].headline.starts_with("Oops: divide error"));
    }

    #[test]
    fn every_marker_is_detected() {
        for marker in [
            "BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "WARNING: CPU: 1 PID: 3 at mm/slub.c:1 x+0x1/0x2",
            "Oops: 0000 [#1] SMP",
            "general protection fault, probably for non-canonical address",
            "BUG: KASAN: use-after-free in foo+0x1/0x2",
            "Kernel panic - not syncing: Fatal exception",
        ] {
            let log = format!("[    1.000000] ok\n[    2.000000] {marker}\n");
            let splats = find(&log);
            assert_eq!(splats.len(), 1, "{marker}");
            assert_eq!(splats[0].headline, marker);
        }
    }

    #[test]
    fn timestamps_are_optional() {
        assert_eq!(find("BUG: soft lockup - CPU#0 stuck for 22s!\n").len(), 1);
        assert_eq!(strip_timestamp("[    1.5] x"), "x");
        assert_eq!(strip_timestamp("[not a stamp] x"), "[not a stamp] x");
    }
}
