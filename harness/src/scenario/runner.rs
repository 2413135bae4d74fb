//! Runs a [`Scenario`] against a real VM: the I/O shell around the pure
//! parts in [`format`](super::format) and [`check`](super::check).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use vfrig_device::engine::{Entry, Outcome};
use vfrig_device::pf::{Tables, VfId};

use super::check::counters::{self, CounterDelta, Sample, GUEST_COUNTERS_CMD};
use super::check::uevents::{self, UeventSummary};
use super::check::{self, Comparison, DriverView, KernelView, KERNEL_VIEW_CMD};
use super::format::{Action, PassSends, Recorder, Role, Scenario, Step, VlanFsm, WatchdogMode};
use super::snapshot;
use crate::image::{self, ImageOptions};
use crate::qemu::{AccelChoice, VfKind};
use crate::rundir::SocketDir;
use crate::vm::scaled;
use crate::{AgentClient, Rig, RigConfig, VmConfig};

/// How to run scenarios.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides the scenario's `driver.vlan_fsm` (snapshots are skipped).
    pub vlan_fsm: Option<VlanFsm>,
    /// Boot this bzImage instead of the Debian kernel.
    pub kernel: Option<PathBuf>,
    /// Modules for `kernel`.
    pub modules: Option<PathBuf>,
    /// Seed of the PF's probabilistic faults.
    pub seed: u64,
    /// Accelerator (default: `VFRIG_ACCEL`, else a KVM probe).
    pub accel: Option<AccelChoice>,
    /// Print each step and the PF tables as they change.
    pub verbose: bool,
    /// Go on after a failed step (the first failure is still the verdict).
    pub keep_going: bool,
    /// Multiplies every `repeat` count (soaks); 0 counts as 1.
    pub repeat_scale: u32,
}

/// Where and why a scenario failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The step, as `step 3 (line 21) fault` or `after the steps`.
    pub step: String,
    /// What went wrong.
    pub message: String,
    /// On a consistency failure: per VF, the three views.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub views: Option<Value>,
}

/// The result of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// The VLAN state machine it ran with.
    pub vlan_fsm: VlanFsm,
    /// The symptom it was expected to fail with with that machine, if any
    /// (`expect_fail`, or `expect_fail_on`'s entry for the machine).
    pub expect_fail: Option<String>,
    /// Whether it passed: it ran to the end, or failed with the expected
    /// symptom.
    pub passed: bool,
    /// Why it did not run to the end.
    pub failure: Option<Failure>,
    /// Later failures, when running with `keep_going`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_failures: Vec<Failure>,
    /// Why it did not pass (a failure, or an expected failure that did not
    /// come).
    pub verdict: String,
    /// The final PF tables, per VF (`tables.vf0.vlans`, `tables.vf0.macs`, ...).
    pub tables: Value,
    /// Requests each VF sent, by opcode.
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    /// Kernel splats on the console.
    pub splats: Vec<String>,
    /// What the uevent observer saw, when the scenario recorded uevents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uevents: Option<UeventSummary>,
    /// The counters `expect_grew` steps compared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<CounterDelta>,
    /// Figures: boot time, run time, settle times.
    pub timings: Timings,
    /// The run's artifact directory.
    pub artifacts: Option<PathBuf>,
}

/// How long things took.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// QEMU start to the agent's hello, seconds.
    pub boot_s: f64,
    /// The whole scenario including boot and shutdown, seconds.
    pub total_s: f64,
    /// Each settle, milliseconds.
    pub settle_ms: Vec<f64>,
}

/// Why a step failed.
#[derive(Debug)]
struct StepError {
    message: String,
    views: Option<Value>,
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        StepError {
            message,
            views: None,
        }
    }
}

/// What the runner saw at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Observation {
    drivers: BTreeMap<u16, DriverView>,
    kernel: KernelView,
}

/// The state of a running scenario.
struct Run<'a> {
    scenario: &'a Scenario,
    rig: &'a Rig,
    fsm: VlanFsm,
    snapshots: bool,
    verbose: bool,
    keep_going: bool,
    repeat_scale: u32,
    failures: Vec<Failure>,
    recorded: Vec<vfrig_agent::proto::LinkEvent>,
    /// Net adds the uevent observer reported; `None` until `record = "uevents"`.
    uevents: Option<Vec<vfrig_agent::proto::NetAdd>>,
    samples: BTreeMap<String, Sample>,
    counters: Vec<CounterDelta>,
    plugged: BTreeSet<u16>,
    /// VFs whose driver's watchdog a `watchdog` step made manual.
    manual: BTreeSet<u16>,
    backgrounds: BTreeSet<String>,
    timings: Timings,
    last_vlans: String,
}

/// Runs one scenario: boots its VM, runs its steps, shuts down. Errors
/// before the VM is up (no image, no QEMU) are returned as `Err`;
/// everything after is in the result.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<ScenarioResult> {
    let start = Instant::now();
    let fsm = opts.vlan_fsm.unwrap_or(scenario.vlan_fsm);
    let img = image::prepare(&ImageOptions {
        flavour: scenario.flavour,
        kernel: opts.kernel.clone(),
        modules: opts.modules.clone(),
        mutants: scenario.mutant.iter().cloned().collect(),
    })?;
    let policy_dir = SocketDir::create()?;
    let policy = policy_dir.path().join("policy.toml");
    std::fs::write(&policy, policy_file(scenario))?;
    let mut vm = VmConfig::new(
        &format!("scenario-{}-{fsm}", scenario.name),
        &img.kernel,
        &img.initramfs,
    );
    vm.vfs_at_boot = scenario.vfs_at_boot.clone();
    vm.vf_kinds = vf_kinds(scenario);
    vm.failover_primary = scenario.failover.as_ref().map(|f| f.primary.clone());
    if scenario.mutant.is_some() {
        // A mutant's oops stops the machine at once (panic=-1 and QEMU's
        // -no-reboot): the splat is the verdict, not a later timeout.
        vm.extra_cmdline.push("oops=panic".into());
    }
    if let Some(accel) = opts.accel {
        vm.accel = accel;
    }
    let rig = Rig::start(&RigConfig {
        vfs: scenario.vfs,
        kernel_vfs: scenario.roles.keys().copied().collect(),
        policy: Some(policy),
        seed: opts.seed,
        vm,
    })?;
    let _ = std::fs::write(
        rig.vm.run_dir().join("scenario.toml"),
        std::fs::read(&scenario.path).unwrap_or_default(),
    );
    let mut run = Run {
        scenario,
        rig: &rig,
        fsm,
        snapshots: opts.vlan_fsm.is_none_or(|f| f == scenario.vlan_fsm),
        verbose: opts.verbose,
        keep_going: opts.keep_going,
        repeat_scale: opts.repeat_scale.max(1),
        failures: Vec::new(),
        recorded: Vec::new(),
        uevents: None,
        samples: BTreeMap::new(),
        counters: Vec::new(),
        plugged: BTreeSet::new(),
        manual: BTreeSet::new(),
        backgrounds: BTreeSet::new(),
        timings: Timings {
            boot_s: rig.vm.boot().ready_after.as_secs_f64(),
            ..Timings::default()
        },
        last_vlans: String::new(),
    };
    for &vf in &scenario.vfs_at_boot {
        if scenario.roles.contains_key(&vf) {
            continue;
        }
        if let Err(e) = run.start_driver(vf) {
            run.failures.push(Failure {
                step: "starting the drivers".into(),
                message: e.message,
                views: None,
            });
            break;
        }
    }
    if run.failures.is_empty() {
        run.steps(&scenario.steps, "");
    }
    let splats: Vec<String> = rig.vm.splats().iter().map(|s| s.excerpt.clone()).collect();
    if let Some(first) = splats.first() {
        // The splat explains whatever failed after it (a mutant's oops
        // takes the machine down, so every later step fails): it comes first.
        let step = match run.failures.first() {
            Some(f) => format!("{} (the kernel crashed)", f.step),
            None => "after the steps".into(),
        };
        run.failures.insert(
            0,
            Failure {
                step,
                message: format!("kernel splat on the console:\n{first}"),
                views: None,
            },
        );
    }
    if splats.is_empty() {
        if let Some(first) = run.failures.first_mut() {
            if lost_the_guest(&first.message) {
                // The artifacts may be gone (a CI machine): say here what the
                // guest printed last.
                let _ = write!(
                    first.message,
                    "\n  the guest's console, last lines:\n{}",
                    console_tail(&rig.vm.console(), CONSOLE_TAIL_LINES)
                );
            }
        }
    }
    run.teardown();
    let (tables, requests) = rig.daemon.device().with(|engine, _| {
        (
            engine.tables(),
            request_counts(engine.transcript().iter(), scenario.vfs),
        )
    });
    let artifacts = Some(rig.vm.run_dir().to_owned());
    let timings = std::mem::take(&mut run.timings);
    let uevent_summary = run.uevents.as_deref().map(uevents::summary);
    let counters = std::mem::take(&mut run.counters);
    let mut failures = std::mem::take(&mut run.failures).into_iter();
    let failure = failures.next();
    let more_failures = failures.collect();
    drop(run);
    // A splat was reported above; a shutdown error is only worth a line.
    if let Err(err) = rig.shutdown() {
        if splats.is_empty() {
            crate::ui::say(format!("shutting the VM down: {err}"));
        }
    }
    let expected = scenario.expected_failure(fsm);
    let (passed, verdict) = verdict(expected, failure.as_ref());
    Ok(ScenarioResult {
        name: scenario.name.clone(),
        file: scenario.path.clone(),
        vlan_fsm: fsm,
        expect_fail: expected.map(str::to_owned),
        passed,
        failure,
        more_failures,
        verdict,
        tables: serde_json::to_value(&tables.vfs).unwrap_or(Value::Null),
        requests,
        splats,
        uevents: uevent_summary,
        counters,
        timings: Timings {
            total_s: start.elapsed().as_secs_f64(),
            ..timings
        },
        artifacts,
    })
}

/// How much of the console a failure that lost the guest quotes.
const CONSOLE_TAIL_LINES: usize = 30;

/// Whether a step failed because the guest stopped answering (the agent
/// timed out or its channel closed) rather than because a check failed.
fn lost_the_guest(message: &str) -> bool {
    message.contains("the guest agent did not answer")
        || message.contains("the guest agent's channel closed")
}

/// The last `n` lines of `console`, indented.
fn console_tail(console: &str, n: usize) -> String {
    let lines: Vec<&str> = console.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  | {}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a run passed, and why in words.
fn verdict(expect_fail: Option<&str>, failure: Option<&Failure>) -> (bool, String) {
    match (expect_fail, failure) {
        (None, None) => (true, "passed".into()),
        (None, Some(f)) => (false, format!("failed at {}", f.step)),
        (Some(symptom), Some(f)) if f.message.to_lowercase().contains(&symptom.to_lowercase()) => (
            true,
            format!("failed as expected at {} with \"{symptom}\"", f.step),
        ),
        (Some(symptom), Some(f)) => (
            false,
            format!(
                "expected to fail with \"{symptom}\", but failed at {} with something else",
                f.step
            ),
        ),
        (Some(symptom), None) => (
            false,
            format!(
                "expected to fail with \"{symptom}\", but passed: the rig did not catch the bug"
            ),
        ),
    }
}

/// How QEMU presents each VF vfrig's driver does not bind.
fn vf_kinds(scenario: &Scenario) -> BTreeMap<u16, VfKind> {
    scenario
        .roles
        .iter()
        .map(|(&vf, role)| {
            let kind = match role {
                _ if scenario.failover.as_ref().is_some_and(|f| f.standby == vf) => VfKind::Standby,
                Role::Kernel => VfKind::Kernel,
                Role::Driver => VfKind::Driver,
            };
            (vf, kind)
        })
        .collect()
}

/// The daemon's policy file for the scenario's `[pf.vfN]` tables. A VF the
/// guest kernel binds gets the MAC QEMU shows it as its admin MAC (the host
/// configures such a VF; no driver of ours tells the PF its address).
fn policy_file(scenario: &Scenario) -> String {
    let mut policies = scenario.pf.clone();
    for &vf in scenario.roles.keys() {
        let patch = policies.entry(vf).or_default();
        if patch.admin_mac.is_none() {
            patch.admin_mac = crate::qemu::vf_mac(vf).parse().ok();
        }
    }
    let mut out = String::new();
    for (vf, patch) in &policies {
        let _ = writeln!(out, "[vf{vf}]");
        out.push_str(&toml::to_string(patch).unwrap_or_default());
    }
    out
}

/// Requests per VF (`vf0`) and opcode.
fn request_counts<'e>(
    entries: impl Iterator<Item = &'e Entry>,
    vfs: u16,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = (0..vfs)
        .map(|vf| (format!("vf{vf}"), BTreeMap::new()))
        .collect();
    for e in entries {
        *out.entry(format!("vf{}", e.vf.0))
            .or_default()
            .entry(e.op.clone())
            .or_default() += 1;
    }
    out
}

fn driver_job(vf: u16) -> String {
    format!("driver-vf{vf}")
}

const T: Duration = Duration::from_secs(60);

/// How long the uevent observer waits for a new interface's master.
const UEVENT_GIVE_UP: Duration = Duration::from_millis(100);

impl Run<'_> {
    fn agent(&self) -> &AgentClient {
        self.rig.vm.agent()
    }

    fn control(&self, cmd: &Value) -> Result<Value, String> {
        let line = cmd.to_string();
        let reply = self
            .rig
            .daemon
            .device()
            .with(|engine, now| vfrig_device::control::handle_line(engine, now, &line));
        let reply: Value =
            serde_json::from_str(&reply).map_err(|e| format!("PF control reply: {e}: {reply}"))?;
        match reply.get("ok") {
            Some(v) => Ok(v.clone()),
            None => Err(format!("the PF refused `{line}`: {}", reply["error"])),
        }
    }

    fn tables(&self) -> Tables {
        self.rig.daemon.device().with(|engine, _| engine.tables())
    }

    fn transcript(&self) -> Vec<Entry> {
        self.rig
            .daemon
            .device()
            .with(|engine, _| engine.transcript().iter().cloned().collect())
    }

    fn say(&self, msg: impl AsRef<str>) {
        if self.verbose {
            crate::ui::say(msg);
        }
    }

    fn start_driver(&mut self, vf: u16) -> Result<(), StepError> {
        // A new driver runs its own watchdog.
        self.manual.remove(&vf);
        let mut cmd = format!(
            "RUST_LOG=info exec vfrig-driver run --vf {vf} --vlan-fsm {}",
            self.fsm
        );
        if let Some(master) = self.scenario.enslave.get(&vf) {
            let _ = write!(cmd, " --enslave {master}");
        }
        self.agent()
            .spawn(&driver_job(vf), &cmd)
            .map_err(|e| e.to_string())?;
        self.plugged.insert(vf);
        let deadline = Instant::now() + scaled(T);
        loop {
            let out = self
                .agent()
                .run(
                    &format!("ip link show vf{vf} >/dev/null && vfrig-driver status --vf {vf}"),
                    scaled(T),
                )
                .map_err(|e| e.to_string())?;
            // Down, or running when it enslaved its netdev to a master
            // (bonding brings a new slave up).
            if out.success()
                && (out.stdout.contains(r#""phase":"down""#)
                    || out.stdout.contains(r#""phase":"running""#))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the driver for vf{vf} did not come up within {:?}: {}{}\n{}",
                    scaled(T),
                    out.stdout,
                    out.stderr,
                    self.driver_log(vf)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops a driver and keeps its log in the artifacts.
    fn stop_driver(&mut self, vf: u16) -> String {
        self.plugged.remove(&vf);
        self.manual.remove(&vf);
        let log = match self.agent().stop(&driver_job(vf)) {
            Ok(out) => out.stderr,
            Err(err) => format!("(the driver's output is unavailable: {err})"),
        };
        let _ = std::fs::write(
            self.rig.vm.run_dir().join(format!("driver-vf{vf}.log")),
            &log,
        );
        log
    }

    fn driver_log(&self, vf: u16) -> String {
        format!(
            "the driver's log will be in {}",
            self.rig
                .vm
                .run_dir()
                .join(format!("driver-vf{vf}.log"))
                .display()
        )
    }

    fn teardown(&mut self) {
        if let Some(seen) = self.uevents.as_mut() {
            // Adds after the last expect_uevents still count in the result.
            if let Ok(rest) = self.rig.vm.agent().uevent_stop() {
                seen.extend(rest);
            }
        }
        for id in std::mem::take(&mut self.backgrounds) {
            if let Ok(out) = self.agent().stop(&id) {
                let _ = std::fs::write(
                    self.rig.vm.run_dir().join(format!("background-{id}.log")),
                    format!("{}{}", out.stdout, out.stderr),
                );
            }
        }
        for vf in self.plugged.clone() {
            self.stop_driver(vf);
        }
    }

    /// Runs steps in order, recording failures; returns false when the run
    /// must stop (the first failure, unless keep_going).
    fn steps(&mut self, steps: &[Step], context: &str) -> bool {
        for (i, step) in steps.iter().enumerate() {
            let at = format!(
                "{context}step {} (line {}) {}",
                i + 1,
                step.pos.line,
                step.action.keyword()
            );
            self.say(format!("{at}: {}", step.action.summary()));
            match &step.action {
                Action::Repeat { times, steps } => {
                    let times = times.saturating_mul(self.repeat_scale);
                    for round in 1..=times {
                        let inner = format!("{at}, round {round}/{times}: ");
                        if !self.steps(steps, &inner) {
                            return false;
                        }
                    }
                }
                action => {
                    if let Err(e) = self.step(action) {
                        if self.verbose {
                            crate::ui::say(format!("  FAILED: {}", e.message));
                        }
                        self.failures.push(Failure {
                            step: at,
                            message: e.message,
                            views: e.views,
                        });
                        if !self.keep_going {
                            return false;
                        }
                    }
                }
            }
            if self.verbose {
                self.print_changes();
            }
        }
        true
    }

    fn print_changes(&mut self) {
        let tables = self.tables();
        let now: Vec<String> = tables
            .vfs
            .iter()
            .map(|(key, t)| {
                format!(
                    "vf{}: vlans {:?} macs {} queues {}",
                    key.0,
                    t.vlans,
                    t.macs.len(),
                    if t.queues.rx != 0 { "on" } else { "off" }
                )
            })
            .collect();
        let now = now.join("; ");
        if now != self.last_vlans {
            crate::ui::say(format!("  PF  {now}"));
            self.last_vlans = now;
        }
    }

    fn step(&mut self, action: &Action) -> Result<(), StepError> {
        match action {
            Action::Guest {
                cmd,
                may_fail,
                timeout_ms,
            } => {
                let timeout = timeout_ms.map_or(scaled(T), |ms| scaled(Duration::from_millis(ms)));
                let out = self.agent().run(cmd, timeout).map_err(|e| e.to_string())?;
                if !out.success() && !may_fail {
                    return Err(format!(
                        "guest command `{cmd}` failed ({}):\n{}{}",
                        describe_exit(&out),
                        out.stdout,
                        out.stderr
                    )
                    .into());
                }
                Ok(())
            }
            Action::Background { cmd, id } => {
                self.agent().spawn(id, cmd).map_err(|e| e.to_string())?;
                self.backgrounds.insert(id.clone());
                Ok(())
            }
            Action::Stop { id } => {
                let out = self.agent().stop(id).map_err(|e| e.to_string())?;
                self.backgrounds.remove(id);
                let _ = std::fs::write(
                    self.rig.vm.run_dir().join(format!("background-{id}.log")),
                    format!("{}{}", out.stdout, out.stderr),
                );
                Ok(())
            }
            Action::Parallel { cmds, may_fail } => {
                let agent = self.agent();
                let results: Vec<_> = std::thread::scope(|s| {
                    let handles: Vec<_> = cmds
                        .iter()
                        .map(|cmd| s.spawn(move || agent.run(cmd, scaled(T))))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or(Err(crate::AgentError::Closed)))
                        .collect()
                });
                let mut errors = Vec::new();
                for (cmd, result) in cmds.iter().zip(results) {
                    match result {
                        Err(e) => errors.push(format!("`{cmd}`: {e}")),
                        Ok(out) if !out.success() && !may_fail => errors.push(format!(
                            "`{cmd}` failed ({}):\n{}{}",
                            describe_exit(&out),
                            out.stdout,
                            out.stderr
                        )),
                        Ok(_) => {}
                    }
                }
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(format!("parallel guest commands failed:\n{}", errors.join("\n")).into())
                }
            }
            Action::Fault(fault) => self
                .control(&fault.command())
                .map(|_| ())
                .map_err(Into::into),
            Action::Release {
                vf,
                status,
                timeout_ms,
            } => {
                let wait = scaled(Duration::from_millis(timeout_ms.unwrap_or(3000)));
                let deadline = Instant::now() + wait;
                while !self.holds(*vf) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let mut cmd = json!({"cmd": "release"});
                if let Some(vf) = vf {
                    cmd["vf"] = (*vf).into();
                }
                if let Some(status) = status {
                    cmd["status"] = status.as_str().into();
                }
                let released = self.control(&cmd)?;
                self.say(format!(
                    "  {} {}",
                    if status.is_some() {
                        "refused"
                    } else {
                        "released"
                    },
                    released["released"]
                ));
                let manual: Vec<u16> = match vf {
                    Some(vf) => self.manual.iter().copied().filter(|m| m == vf).collect(),
                    None => self.manual.iter().copied().collect(),
                };
                for vf in manual {
                    self.wait_heard(vf)?;
                }
                Ok(())
            }
            Action::PfEvent { vf, kind } => {
                self.control(&json!({"cmd": "event", "vf": vf, "kind": kind.as_str()}))?;
                if self.manual.contains(vf) {
                    self.wait_heard(*vf)?;
                }
                Ok(())
            }
            Action::Watchdog { vf, mode } => {
                let reply = self.watchdog(*vf, mode.as_str())?;
                if reply["mode"] != mode.as_str() {
                    return Err(format!(
                        "`vfrig-driver watchdog --vf {vf} {}` answered {reply}",
                        mode.as_str()
                    )
                    .into());
                }
                match mode {
                    WatchdogMode::Manual => self.manual.insert(*vf),
                    WatchdogMode::Auto => self.manual.remove(vf),
                };
                Ok(())
            }
            Action::WatchdogStep { vf, expect } => {
                let reply = self.watchdog(*vf, "step")?;
                let sent = pass_sent(&reply)
                    .map_err(|e| format!("`vfrig-driver watchdog --vf {vf} step`: {e}"))?;
                self.say(format!("  the pass sent {sent}"));
                match expect {
                    Some(want) if *want != sent => Err(format!(
                        "the watchdog pass sent {sent}, the scenario expects {want}: vf{vf}'s \
                         driver diverged from the sequence the scenario replays"
                    )
                    .into()),
                    _ => Ok(()),
                }
            }
            Action::Hotplug { vf } => {
                self.rig.vm.hotplug_vf(*vf).map_err(|e| e.to_string())?;
                if self.scenario.roles.contains_key(vf) {
                    return Ok(());
                }
                self.start_driver(*vf)
            }
            Action::Primary { plug: false } => self
                .rig
                .vm
                .unplug_primary()
                .map_err(|e| e.to_string().into()),
            Action::Primary { plug: true } => {
                self.rig.vm.plug_primary().map_err(|e| e.to_string())?;
                self.wait_for_primary()
            }
            Action::Unplug { vf } => {
                // The driver lets go of the device first, as a kernel driver's
                // remove() would before the slot powers off.
                if self.plugged.contains(vf) {
                    self.stop_driver(*vf);
                }
                self.rig.vm.unplug_vf(*vf).map_err(|e| e.to_string().into())
            }
            Action::Settle { timeout_ms } => self.settle(*timeout_ms).map(|_| ()),
            Action::Expect(e) => {
                let table = self
                    .tables()
                    .vf(e.vf)
                    .cloned()
                    .ok_or_else(|| format!("the PF has no vf{}", e.vf))?;
                let transcript = self.transcript();
                let mine: Vec<&Entry> = transcript.iter().filter(|t| t.vf == VfId(e.vf)).collect();
                let problems = check::expect(e, &table, &mine);
                met(problems)
            }
            Action::Consistent => {
                let obs = self.settle(None)?;
                self.consistent(&obs)
            }
            Action::Snapshot { label } => {
                let obs = self.settle(None)?;
                if !self.snapshots {
                    self.say(format!(
                        "  snapshot `{label}` skipped: --vlan-fsm overrides the scenario's driver"
                    ));
                    return Ok(());
                }
                let value = snapshot::view(&self.tables(), &obs.drivers);
                snapshot::assert(
                    &self.scenario.name,
                    label,
                    &self.scenario.description,
                    &value,
                )
                .map_err(Into::into)
            }
            Action::Record(Recorder::Links) => {
                self.recorded.clear();
                self.agent()
                    .record_start()
                    .map_err(|e| e.to_string().into())
            }
            Action::Record(Recorder::Uevents) => {
                self.uevents = Some(Vec::new());
                self.agent()
                    .uevent_start(UEVENT_GIVE_UP)
                    .map_err(|e| e.to_string().into())
            }
            Action::ExpectUevents(e) => {
                let adds = self.agent().uevent_take().map_err(|e| e.to_string())?;
                let seen = self.uevents.get_or_insert_with(Vec::new);
                seen.extend(adds);
                let problems = uevents::expect_uevents(e, seen);
                if self.verbose {
                    let s = uevents::summary(seen);
                    self.say(format!(
                        "  uevents: {} add(s), {} without a master at first look, {} never \
                         enslaved; time to master {}",
                        s.adds,
                        s.without_master,
                        s.never_enslaved,
                        s.time_to_master_us.map_or("-".into(), |d| format!(
                            "{}..{} us (median {})",
                            d.min, d.max, d.p50
                        ))
                    ));
                }
                met(problems)
            }
            Action::Sample { label } => {
                let sample = self.sample()?;
                self.samples.insert(label.clone(), sample);
                Ok(())
            }
            Action::ExpectGrew(e) => {
                let now = self.sample()?;
                let before = self
                    .samples
                    .get(&e.since)
                    .ok_or_else(|| format!("no sample `{}` was taken", e.since))?;
                let (deltas, problems) = counters::expect_grew(e, before, &now);
                for d in &deltas {
                    self.say(format!(
                        "  {}: {} -> {}",
                        d.name,
                        d.before.map_or("-".into(), |v| v.to_string()),
                        d.after.map_or("-".into(), |v| v.to_string())
                    ));
                }
                self.counters.extend(deltas);
                met(problems)
            }
            Action::ExpectLinks(e) => {
                let events = self.agent().record_take().map_err(|e| e.to_string())?;
                self.recorded.extend(events);
                let problems = check::expect_links(e, &self.recorded);
                met(problems)
            }
            Action::Repeat { .. } => unreachable!("repeat is expanded by steps()"),
        }
    }

    /// Counters of the guest's interfaces and of the PF, now.
    fn sample(&self) -> Result<Sample, String> {
        let out = self
            .agent()
            .run(GUEST_COUNTERS_CMD, scaled(T))
            .map_err(|e| e.to_string())?;
        Ok(Sample {
            guest: Sample::parse_guest(&out.stdout),
            pf: serde_json::to_value(&self.tables().vfs).unwrap_or(Value::Null),
        })
    }

    /// Waits until the guest has a netdev on the failover primary again.
    fn wait_for_primary(&self) -> Result<(), StepError> {
        let model = self
            .scenario
            .failover
            .as_ref()
            .map_or("e1000e", |f| f.primary.as_str());
        let cmd = format!("ls /sys/bus/pci/drivers/{model}/*/net/ 2>/dev/null");
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        loop {
            let out = self
                .agent()
                .run(&cmd, scaled(T))
                .map_err(|e| e.to_string())?;
            if out.success() && !out.stdout.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the guest has no {model} netdev {:?} after plugging the primary",
                    scaled(Duration::from_secs(20))
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `vfrig-driver watchdog --vf VF WHAT` in the guest and returns
    /// its JSON reply.
    fn watchdog(&self, vf: u16, what: &str) -> Result<Value, StepError> {
        let cmd = format!("vfrig-driver watchdog --vf {vf} {what}");
        let out = self
            .agent()
            .run(&cmd, scaled(T))
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!(
                "`{cmd}` failed ({}): {}{}",
                describe_exit(&out),
                out.stderr.trim(),
                out.stdout.trim()
            )
            .into());
        }
        serde_json::from_str(out.stdout.trim())
            .map_err(|e| format!("`{cmd}` did not print JSON ({e}): {}", out.stdout).into())
    }

    /// Waits until `vf`'s driver, whose watchdog is manual, has handled
    /// every mailbox frame the PF sent it (see [`heard_everything`]), so the
    /// next step starts from the state those messages left.
    fn wait_heard(&self, vf: u16) -> Result<(), StepError> {
        let limit = scaled(Duration::from_secs(10));
        let deadline = Instant::now() + limit;
        loop {
            let pf = self.control(&json!({"cmd": "mailbox", "vf": vf}))?;
            let out = self
                .agent()
                .run(&format!("vfrig-driver status --vf {vf}"), scaled(T))
                .map_err(|e| e.to_string())?;
            let status: Value = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
            match heard_everything(&pf, &status) {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() < deadline => {}
                Ok(false) => {
                    return Err(format!(
                        "vf{vf}'s driver did not take every mailbox message the PF sent it \
                         within {limit:?} (PF: {pf}; driver received {}): is it stuck? {}",
                        status["driver"]["mailbox_received"],
                        self.driver_log(vf)
                    )
                    .into())
                }
                Err(why) => {
                    return Err(format!(
                        "cannot tell whether vf{vf}'s driver heard the PF: {why}{}\n{}",
                        out.stderr.trim(),
                        self.driver_log(vf)
                    )
                    .into())
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the PF holds a request of `vf` (any VF when `None`).
    fn holds(&self, vf: Option<u16>) -> bool {
        self.rig.daemon.device().with(|engine, _| {
            engine.transcript().iter().any(|e| {
                vf.is_none_or(|vf| e.vf == VfId(vf))
                    && e.outcome == Outcome::Pending
                    && e.fault.as_deref() == Some("hold")
            })
        })
    }

    /// One look at the drivers and the guest's links.
    fn observe(&self) -> Result<Observation, String> {
        let mut script = String::new();
        for vf in &self.plugged {
            let _ = write!(
                script,
                "echo '== driver {vf}'; vfrig-driver status --vf {vf} 2>&1; "
            );
        }
        script.push_str("echo '== kernel'; ");
        script.push_str(KERNEL_VIEW_CMD);
        let out = self
            .agent()
            .run(&script, scaled(T))
            .map_err(|e| e.to_string())?;
        let (drivers_text, kernel_text) =
            out.stdout.split_once("== kernel\n").ok_or_else(|| {
                format!(
                    "unexpected observation output:\n{}{}",
                    out.stdout, out.stderr
                )
            })?;
        let mut drivers = BTreeMap::new();
        for section in drivers_text.split("== driver ").skip(1) {
            let (vf, body) = section.split_once('\n').unwrap_or((section, ""));
            let vf: u16 = vf
                .trim()
                .parse()
                .map_err(|_| format!("bad driver section `{vf}`"))?;
            let status: Value = serde_json::from_str(body.trim()).map_err(|e| {
                format!("`vfrig-driver status --vf {vf}` did not print JSON ({e}): {body}")
            })?;
            drivers.insert(vf, DriverView::parse(&status)?);
        }
        let kernel = KernelView::parse(kernel_text)?;
        Ok(Observation { drivers, kernel })
    }

    /// Waits until the PF has answered everything, nothing is held, every
    /// driver is idle and two looks in a row at the drivers and the guest's
    /// links agree.
    fn settle(&mut self, timeout_ms: Option<u64>) -> Result<Observation, StepError> {
        let start = Instant::now();
        let limit = scaled(Duration::from_millis(timeout_ms.unwrap_or(20_000)));
        let mut previous: Option<Observation> = None;
        loop {
            let quiesce = self.control(&json!({"cmd": "quiesce"}))?;
            if quiesce["held"].as_u64().unwrap_or(0) > 0 {
                return Err(format!(
                    "cannot settle: the PF holds {} request(s); add a `release` step first",
                    quiesce["held"]
                )
                .into());
            }
            let obs = self.observe()?;
            let busy: Vec<String> = obs
                .drivers
                .iter()
                .filter(|(_, d)| !d.idle() || matches!(d.phase.as_str(), "init" | "resetting"))
                .map(|(vf, d)| {
                    format!(
                        "vf{vf} {} pending {:?} outstanding {:?}{}",
                        d.phase,
                        d.pending,
                        d.outstanding,
                        if self.manual.contains(vf) {
                            format!(
                                " (its watchdog is manual: it sends only in `watchdog = \
                                 {{ vf = {vf} }}` steps, or after `watchdog = {{ vf = {vf}, \
                                 mode = \"auto\" }}`)"
                            )
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            let quiet = quiesce["settled"] == true && busy.is_empty();
            if quiet && previous.as_ref() == Some(&obs) {
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                self.timings.settle_ms.push((ms * 10.0).round() / 10.0);
                return Ok(obs);
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "did not settle within {limit:?}: PF {quiesce}; drivers: {}",
                    if busy.is_empty() {
                        "idle, but the guest's links kept changing".to_owned()
                    } else {
                        busy.join("; ")
                    }
                )
                .into());
            }
            previous = quiet.then_some(obs);
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn consistent(&self, obs: &Observation) -> Result<(), StepError> {
        let tables = self.tables();
        let transcript = self.transcript();
        let mut problems = Vec::new();
        let mut views = serde_json::Map::new();
        for vf in 0..self.scenario.vfs {
            if self.scenario.roles.contains_key(&vf) {
                // No driver of ours: the guest kernel's virtio_net keeps no
                // PF filters to compare.
                continue;
            }
            let Some(table) = tables.vf(vf) else { continue };
            let mine: Vec<&Entry> = transcript.iter().filter(|t| t.vf == VfId(vf)).collect();
            let kernel = obs.kernel.vf(&format!("vf{vf}"));
            let driver = obs.drivers.get(&vf);
            let c: Comparison = check::compare(vf, table, &mine, driver, kernel.as_ref());
            for p in &c.problems {
                problems.push(format!("vf{vf}: {p}"));
            }
            views.insert(
                format!("vf{vf}"),
                json!({
                    "kernel": kernel,
                    "driver": driver,
                    "pf": {"vlans": table.vlans, "macs": table.macs},
                    "refused": c.refused,
                }),
            );
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(StepError {
            message: check::disagreement(&problems),
            views: Some(Value::Object(views)),
        })
    }
}

/// Whether a driver has taken every mailbox frame the PF sent its VF:
/// nothing waits for it at the PF, and it has received at least as many
/// frames as the PF delivered. `pf` is the control protocol's `mailbox`
/// reply, read before `status`, the driver's `vfrig-driver status` line.
///
/// Both counts start at the VF's connection (a hot-plug makes a new one and
/// starts a new driver), and count every frame, replies and events alike,
/// including the replies of reject faults and refused releases, across VF
/// resets. Reading the PF first makes it sound: the driver cannot have
/// received fewer than the PF delivered before the driver was asked. The
/// driver answers `status` at the end of a turn, after handling what it
/// received.
fn heard_everything(pf: &Value, status: &Value) -> Result<bool, String> {
    let delivered = pf["delivered"]
        .as_u64()
        .ok_or_else(|| format!("the PF's mailbox reply has no `delivered`: {pf}"))?;
    let waiting = pf["waiting"]
        .as_u64()
        .ok_or_else(|| format!("the PF's mailbox reply has no `waiting`: {pf}"))?;
    let received = status["driver"]["mailbox_received"]
        .as_u64()
        .ok_or_else(|| format!("`vfrig-driver status` has no driver.mailbox_received: {status}"))?;
    Ok(waiting == 0 && received >= delivered)
}

/// What a watchdog pass sent, from `vfrig-driver watchdog step`'s reply.
fn pass_sent(reply: &Value) -> Result<PassSends, String> {
    match reply.get("sent") {
        Some(Value::Null) => Ok(PassSends::Nothing),
        Some(Value::String(op)) => Ok(PassSends::Op(op.clone())),
        _ => Err(format!("no `sent` in its reply {reply}")),
    }
}

/// An expectation step's verdict: met, or one line per problem.
fn met(problems: Vec<String>) -> Result<(), StepError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("expectation not met:\n  - {}", problems.join("\n  - ")).into())
    }
}

fn describe_exit(out: &vfrig_agent::proto::Output) -> String {
    match (out.status, out.signal, out.timed_out) {
        (_, _, true) => "timed out".into(),
        (Some(code), _, _) => format!("exit status {code}"),
        (None, Some(sig), _) => format!("killed by signal {sig}"),
        _ => "no exit status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(message: &str) -> Failure {
        Failure {
            step: "step 2 (line 9) consistent".into(),
            message: message.into(),
            views: None,
        }
    }

    #[test]
    fn a_guest_that_stopped_answering_is_told_from_a_failed_check() {
        let timeout = crate::agent::AgentError::Timeout {
            what: "run `true`".into(),
            timeout: Duration::from_secs(70),
        };
        assert!(lost_the_guest(&timeout.to_string()));
        assert!(lost_the_guest(
            &crate::agent::AgentError::Closed.to_string()
        ));
        assert!(!lost_the_guest("vf0: VLAN 100 lost"));
        let console = (1..=40)
            .map(|n| format!("line {n}\r\n"))
            .collect::<String>();
        let tail = console_tail(&console, 3);
        assert_eq!(tail, "  | line 38\n  | line 39\n  | line 40");
    }

    #[test]
    fn an_expected_failure_must_show_the_symptom() {
        assert!(verdict(None, None).0);
        assert!(!verdict(None, Some(&failure("x"))).0);
        let lost = failure("vf0: VLAN 100 lost: ...");
        assert!(verdict(Some("VLAN 100 lost"), Some(&lost)).0);
        let (passed, why) = verdict(Some("leaked"), Some(&lost));
        assert!(!passed && why.contains("something else"), "{why}");
        let (passed, why) = verdict(Some("leaked"), None);
        assert!(!passed && why.contains("did not catch"), "{why}");
    }

    #[test]
    fn a_driver_heard_everything_once_it_took_what_the_pf_delivered() {
        let pf = |delivered: u64, waiting: u64| json!({"delivered": delivered, "waiting": waiting, "reordered": 0});
        let driver =
            |received: u64| json!({"driver": {"mailbox_received": received, "watchdog": "manual"}});
        assert_eq!(heard_everything(&pf(5, 0), &driver(5)), Ok(true));
        assert_eq!(
            heard_everything(&pf(5, 0), &driver(4)),
            Ok(false),
            "one in its ring"
        );
        assert_eq!(
            heard_everything(&pf(5, 1), &driver(5)),
            Ok(false),
            "one still at the PF"
        );
        assert_eq!(
            heard_everything(&pf(5, 0), &driver(6)),
            Ok(true),
            "an event the PF sent after it was asked"
        );
        let e = heard_everything(&pf(5, 0), &json!({"adapter": {}})).unwrap_err();
        assert!(e.contains("mailbox_received"), "{e}");
        let e = heard_everything(&json!({"error": "x"}), &driver(0)).unwrap_err();
        assert!(e.contains("delivered"), "{e}");
    }

    #[test]
    fn a_pass_sent_an_opcode_or_nothing() {
        assert_eq!(
            pass_sent(&json!({"sent": "ADD_VLAN_V2"})),
            Ok(PassSends::Op("ADD_VLAN_V2".into()))
        );
        assert_eq!(pass_sent(&json!({"sent": null})), Ok(PassSends::Nothing));
        assert!(pass_sent(&json!({"mode": "manual"})).is_err());
    }

    #[test]
    fn the_expected_failure_follows_the_machine_run() {
        let s = super::super::format::parse(
            "name = \"x\"\nexpect_fail_on = { legacy = \"driver-matches-intent\" }\n",
            std::path::Path::new("x.toml"),
        )
        .expect("valid");
        let broke = failure("vf0: driver-matches-intent: VLAN 100 leaked in the driver: ...");
        let fixed = s.expected_failure(VlanFsm::Fixed);
        let legacy = s.expected_failure(VlanFsm::Legacy);
        assert!(verdict(fixed, None).0, "fixed must pass");
        assert!(!verdict(fixed, Some(&broke)).0);
        assert!(verdict(legacy, Some(&broke)).0, "legacy must fail so");
        assert!(!verdict(legacy, None).0);
    }

    #[test]
    fn the_policy_file_has_only_what_the_scenario_set() {
        let s = super::super::format::parse(
            "name = \"p\"\nvfs = 2\n[pf.vf1]\nspoofchk = true\nvlan_v2 = false\n",
            std::path::Path::new("p.toml"),
        )
        .expect("valid");
        let text = policy_file(&s);
        assert_eq!(text, "[vf1]\nspoofchk = true\nvlan_v2 = false\n");
        let config =
            vfrig_device::daemon::policy_file::parse(&text, 2).expect("the daemon reads it");
        assert!(!config.policies[1].vlan_v2);
    }
}
