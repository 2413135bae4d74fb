//! Snapshots: what is deterministic after a settle, as YAML under
//! `snapshots/` in the workspace, compared and reviewed with `insta`.
//!
//! A snapshot holds, per VF, the PF's filter table (state, capabilities,
//! policy, MACs, VLANs, promiscuous modes, anti-spoof, queues, link) and the
//! anti-spoof and malformed drop counters, which must not move in a correct
//! run, plus the driver's filters with their states. Mailbox counters,
//! traffic counts and timings are racy and go to the JSON result instead.

use std::collections::BTreeMap;

use serde::Serialize;
use vfrig_device::pf::{AntiSpoof, Promisc, Tables, VfPhase, VfPolicy};

use super::check::DriverView;

/// One VF in a snapshot.
#[derive(Debug, Serialize)]
pub struct VfSnapshot {
    state: VfPhase,
    caps: Vec<&'static str>,
    policy: VfPolicy,
    mac: String,
    host_mac: String,
    macs: Vec<String>,
    vlans: Vec<u16>,
    vlan_limit: u16,
    promisc: Promisc,
    antispoof: AntiSpoof,
    vlan_pruning: bool,
    vlan_stripping: bool,
    queues_enabled: bool,
    link_up: bool,
    drops: Drops,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<DriverSnapshot>,
}

/// The drop counters that must stay put in a correct run.
#[derive(Debug, Serialize)]
struct Drops {
    anti_spoof_mac: u64,
    anti_spoof_vlan: u64,
    malformed: u64,
}

/// The driver's filters.
#[derive(Debug, Serialize)]
struct DriverSnapshot {
    phase: String,
    vlans: Vec<String>,
    macs: Vec<String>,
}

/// The snapshot of all VFs.
pub fn view(tables: &Tables, drivers: &BTreeMap<u16, DriverView>) -> BTreeMap<String, VfSnapshot> {
    tables
        .vfs
        .iter()
        .map(|(key, t)| {
            let driver = drivers.get(&key.0).map(|d| DriverSnapshot {
                phase: d.phase.clone(),
                vlans: d
                    .vlans
                    .iter()
                    .map(|v| format!("{} {}", v.vid, v.state))
                    .collect(),
                macs: d.macs.iter().map(|(m, s)| format!("{m} {s}")).collect(),
            });
            let snap = VfSnapshot {
                state: t.state,
                caps: t.caps.clone(),
                policy: t.policy.clone(),
                mac: t.mac.to_string(),
                host_mac: t.host_mac.to_string(),
                macs: t.macs.iter().map(ToString::to_string).collect(),
                vlans: t.vlans.clone(),
                vlan_limit: t.vlan_limit,
                promisc: t.promisc,
                antispoof: t.antispoof,
                vlan_pruning: t.vlan_pruning,
                vlan_stripping: t.vlan_stripping,
                queues_enabled: t.queues.rx != 0 && t.queues.tx != 0,
                link_up: t.link_up,
                drops: Drops {
                    anti_spoof_mac: t.traffic.drops.anti_spoof_mac,
                    anti_spoof_vlan: t.traffic.drops.anti_spoof_vlan,
                    malformed: t.traffic.drops.malformed,
                },
                driver,
            };
            (format!("vf{}", key.0), snap)
        })
        .collect()
}

/// The directory snapshots live in.
pub fn dir() -> std::path::PathBuf {
    crate::paths::workspace_root().join("snapshots")
}

/// Compares `value` with `snapshots/<scenario>__<label>.snap` through insta
/// (which writes a `.snap.new` for `cargo insta review` unless
/// `INSTA_UPDATE=no`, as in CI). A mismatch or a missing snapshot is an
/// error naming what to do.
pub fn assert(
    scenario: &str,
    label: &str,
    description: &str,
    value: &BTreeMap<String, VfSnapshot>,
) -> Result<(), String> {
    let name = format!("{scenario}__{label}");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(dir());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    if !description.is_empty() {
        settings.set_description(description);
    }
    // insta reports a mismatch by printing the diff and panicking; the
    // panic is caught and becomes the step's error, so the default hook's
    // message and backtrace would only be noise.
    let outcome = {
        static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = HOOK.lock().unwrap_or_else(|e| e.into_inner());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            settings.bind(|| insta::assert_yaml_snapshot!(name.as_str(), value));
        }));
        std::panic::set_hook(previous);
        outcome
    };
    outcome.map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        format!(
            "snapshot `{name}` does not match {}: {why}\n\
             review the change with `cargo insta review` (or accept it with \
             INSTA_UPDATE=always), then commit the .snap file",
            dir().join(format!("{name}.snap")).display()
        )
    })
}
