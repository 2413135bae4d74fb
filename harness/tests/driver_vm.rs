//! VM test of the guest driver end to end: `vfrig-driver run` takes VF 0,
//! creates the TAP `vf0`, and what the guest kernel does to `vf0` (up,
//! a VLAN upper, down/up, a move to another netns) must reach the PF's
//! tables through the adapter core, with the fixed VLAN state machine's
//! promises kept: the VLAN survives down/up without a DEL, survives a move
//! to another netns (the kernel keeps the upper, linked across), and leaves
//! the PF with exactly one DEL when the upper is deleted.
//!
//! Prints the latencies it measures (`ip link set up` → queues enabled on
//! the PF, `ip link add ... type vlan` → VLAN in the PF table) and the
//! driver's idle CPU use; it asserts on behaviour only, never on timing.
//!
//! Needs QEMU 10 and the guest image (built on first use), like `vm.rs`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use vfrig_device::engine::Outcome;
use vfrig_device::pf::Tables;
use vfrig_harness::image::{self, ImageOptions};
use vfrig_harness::qemu::vf_mac;
use vfrig_harness::vm::scaled;
use vfrig_harness::{AgentClient, Rig, RigConfig, VmConfig};

const T: Duration = Duration::from_secs(60);

/// The driver's background job in the guest.
const DRIVER: &str = "driver";

/// Polls `probe` until it returns `Some`, failing with `what` and the
/// last value seen (`busywait`). Returns the value and how long it took.
fn wait_until<T, L: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, L>,
    context: impl Fn() -> String,
) -> (T, Duration) {
    let start = Instant::now();
    let timeout = scaled(timeout);
    loop {
        match probe() {
            Ok(value) => return (value, start.elapsed()),
            Err(last) if start.elapsed() > timeout => {
                panic!(
                    "timed out after {:?} waiting for {what}; last seen: {last:?}\n{}",
                    start.elapsed(),
                    context()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// Boots a VM with `vfs` VFs, all plugged at boot, served by an in-process
/// PF daemon with `policy`.
fn boot(label: &str, vfs: u16, policy: Option<PathBuf>) -> Rig {
    let img = image::prepare(&ImageOptions::default()).expect("image build failed");
    let mut vm = VmConfig::new(label, &img.kernel, &img.initramfs);
    vm.vfs_at_boot = (0..vfs).collect();
    Rig::start(&RigConfig {
        vfs,
        kernel_vfs: Default::default(),
        policy,
        seed: 0,
        vm,
    })
    .unwrap_or_else(|err| panic!("{err}"))
}

/// Runs a guest command that must succeed and returns its stdout.
fn sh(agent: &AgentClient, cmd: &str) -> String {
    agent
        .sh(cmd, scaled(T))
        .unwrap_or_else(|err| panic!("{err}"))
        .stdout
}

/// Starts `vfrig-driver run --vf N` in the guest as background job `name`.
fn start_driver(agent: &AgentClient, name: &str, vf: u16) {
    agent
        .spawn(
            name,
            &format!("RUST_LOG=info exec vfrig-driver run --vf {vf}"),
        )
        .unwrap_or_else(|err| panic!("{err}"));
}

/// Stops the background driver `name` and returns its stderr, for failure
/// messages.
fn driver_log(agent: &AgentClient, name: &str) -> String {
    match agent.stop(name) {
        Ok(out) => format!("{name} stderr:\n{}", out.stderr),
        Err(err) => format!("({name} output unavailable: {err})"),
    }
}

#[test]
fn vm_driver_follows_up_vlan_downup_and_netns_move() {
    let rig = boot("test-driver-vm", 1, None);
    let agent = rig.vm.agent();
    let sh = |cmd: &str| sh(agent, cmd);
    let tables = || rig.daemon.device().with(|engine, _| engine.tables());
    let ops = || -> Vec<(String, Outcome)> {
        rig.daemon.device().with(|engine, _| {
            engine
                .transcript()
                .iter()
                .map(|e| (e.op.clone(), e.outcome.clone()))
                .collect()
        })
    };
    let driver_log = || driver_log(agent, DRIVER);
    let vlans_of_vf0 = |t: &Tables| t.vf(0).map(|v| v.vlans.clone()).unwrap_or_default();

    start_driver(agent, DRIVER, 0);
    let (_, start_time) = wait_until(
        T,
        "vf0 to exist and the driver to negotiate with the PF",
        || {
            let out = agent
                .run("ip link show vf0 && vfrig-driver status --vf 0", scaled(T))
                .map_err(|e| e.to_string())?;
            let ready = out.success() && out.stdout.contains(r#""phase":"down""#);
            if ready {
                Ok(out.stdout)
            } else {
                Err(format!("{}{}", out.stdout, out.stderr))
            }
        },
        driver_log,
    );
    let link = sh("ip link show vf0");
    assert!(link.contains(&vf_mac(0)), "vf0 has the VF's MAC: {link}");
    assert!(!link.contains("LOWER_UP"), "no carrier while down: {link}");

    // Up: the adapter adds its MAC filter and enables the queues.
    let t = Instant::now();
    sh("ip link set vf0 up");
    let (_, _) = wait_until(
        T,
        "the PF to enable vf0's queues",
        || {
            let q = tables().vf(0).map(|v| v.queues);
            match q {
                Some(q) if q.rx != 0 && q.tx != 0 => Ok(()),
                other => Err(other),
            }
        },
        driver_log,
    );
    let up_to_queues = t.elapsed();
    let (_, _) = wait_until(
        T,
        "carrier on vf0",
        || {
            let out = sh("ip link show vf0");
            if out.contains("LOWER_UP") {
                Ok(())
            } else {
                Err(out)
            }
        },
        driver_log,
    );
    assert!(
        tables()
            .vf(0)
            .is_some_and(|v| v.macs.iter().any(|m| m.to_string() == vf_mac(0))),
        "the PF has vf0's MAC filter: {:?}",
        tables().vf(0).map(|v| v.macs.clone())
    );

    // A VLAN upper becomes a PF VLAN filter.
    let t = Instant::now();
    sh("ip link add link vf0 name vf0.100 type vlan id 100");
    wait_until(
        T,
        "VLAN 100 in the PF table of vf0",
        || {
            let vlans = vlans_of_vf0(&tables());
            if vlans.contains(&100) {
                Ok(())
            } else {
                Err(vlans)
            }
        },
        driver_log,
    );
    let vlan_to_pf = t.elapsed();

    // Down and up: the fixed state machine keeps the filter on the PF.
    sh("ip link set vf0 down && ip link set vf0 up");
    let (_, _) = wait_until(
        T,
        "the queues enabled again after down/up",
        || {
            let adds = ops().iter().filter(|(op, _)| op == "ENABLE_QUEUES").count();
            let q = tables().vf(0).map(|v| v.queues);
            match q {
                Some(q) if adds >= 2 && q.rx != 0 => Ok(()),
                other => Err((adds, other)),
            }
        },
        driver_log,
    );
    let dels = |ops: &[(String, Outcome)]| -> usize {
        ops.iter()
            .filter(|(op, _)| op.starts_with("DEL_VLAN"))
            .count()
    };
    let after_downup = ops();
    assert!(
        vlans_of_vf0(&tables()).contains(&100),
        "VLAN 100 survives down/up"
    );
    assert_eq!(
        dels(&after_downup),
        0,
        "no DEL_VLAN on down/up: {after_downup:?}"
    );

    // Idle CPU of the driver, over three seconds of nothing to do.
    let cpu = sh(
        "p=$(pidof vfrig-driver); t0=$(cut -d' ' -f14,15 /proc/$p/stat); \
         sleep 3; t1=$(cut -d' ' -f14,15 /proc/$p/stat); echo $t0 $t1",
    );
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let idle_cpu_ticks = match ticks.as_slice() {
        [u0, s0, u1, s1] => (u1 + s1).saturating_sub(u0 + s0),
        _ => panic!("cannot parse the driver's CPU times: {cpu:?}"),
    };

    // A move to another netns closes vf0, but the kernel leaves the VLAN
    // upper behind in this namespace, linked across, with VID 100 still
    // registered on vf0: the filter stays. Deleting the upper is the
    // kill_vid, which must reach the PF exactly once.
    sh("ip netns add ns1 && ip link set vf0 netns ns1");
    wait_until(
        T,
        "the driver to see vf0 move to ns1",
        || {
            let text = sh("vfrig-driver status --vf 0");
            let status: Value = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
            if status["link"]["nsid"].is_i64() {
                Ok(())
            } else {
                Err(text)
            }
        },
        driver_log,
    );
    assert_eq!(vlans_of_vf0(&tables()), vec![100], "the upper still exists");
    assert_eq!(dels(&ops()), 0, "no DEL_VLAN for a move: {:?}", ops());
    sh("ip link del vf0.100");
    wait_until(
        T,
        "VLAN 100 to leave the PF table once its upper is deleted",
        || {
            let vlans = vlans_of_vf0(&tables());
            if vlans.is_empty() {
                Ok(())
            } else {
                Err(vlans)
            }
        },
        driver_log,
    );
    let after_move = ops();
    assert_eq!(
        dels(&after_move),
        1,
        "exactly one DEL_VLAN, for the deleted upper: {after_move:?}"
    );
    assert!(
        after_move
            .iter()
            .all(|(_, outcome)| *outcome == Outcome::Replied("SUCCESS".into())),
        "every request succeeded: {after_move:?}"
    );

    // The interface is followed into ns1: up there is seen.
    sh("ip -n ns1 link set vf0 up");
    let (status, _) = wait_until(
        T,
        "the driver to see vf0 up in ns1",
        || {
            let text = sh("vfrig-driver status --vf 0");
            let status: Value = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
            if status["adapter"]["phase"] == "running" {
                Ok(status)
            } else {
                Err(text)
            }
        },
        driver_log,
    );
    assert_eq!(status["ifname"], "vf0", "{status:#}");
    assert!(
        status["link"]["nsid"].is_i64(),
        "followed into ns1: {status:#}"
    );
    assert_eq!(
        status["adapter"]["vlans"],
        Value::Array(vec![]),
        "{status:#}"
    );
    assert_eq!(status["driver"]["netdev_refused"], 0, "{status:#}");
    assert_eq!(status["adapter"]["counters"]["malformed"], 0, "{status:#}");

    let out = agent.stop(DRIVER).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        out.stderr.contains("stopping"),
        "the driver stops cleanly on SIGTERM:\n{}",
        out.stderr
    );
    let link = sh("ip -n ns1 link show vf0 2>&1 || true");
    assert!(
        link.contains("does not exist") || link.is_empty(),
        "vf0 is gone once the driver exits: {link}"
    );

    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "driver_vm timings (TCG, host clock, including one agent round trip): \
             driver start to negotiated {:.2} ms; ip link set up -> PF queues enabled {:.2} ms; \
             ip link add vlan -> PF has VLAN {:.2} ms; idle CPU {} ticks (1/100 s) in 3 s = {:.1}% of a vCPU",
            millis(start_time),
            millis(up_to_queues),
            millis(vlan_to_pf),
            idle_cpu_ticks,
            idle_cpu_ticks as f64 / 3.0
        );
    }
    rig.shutdown().unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn vm_driver_two_vfs_ping_through_the_pf_switch() {
    let rig = boot("test-driver-ping", 2, None);
    let agent = rig.vm.agent();
    let sh = |cmd: &str| sh(agent, cmd);
    let logs = || {
        ["driver0", "driver1"]
            .map(|name| driver_log(agent, name))
            .join("\n")
    };
    for vf in 0..2 {
        start_driver(agent, &format!("driver{vf}"), vf);
    }
    wait_until(
        T,
        "vf0 and vf1 to exist",
        || {
            let out = agent
                .run("ip link show vf0 && ip link show vf1", scaled(T))
                .map_err(|e| e.to_string())?;
            if out.success() {
                Ok(())
            } else {
                Err(out.stderr)
            }
        },
        logs,
    );
    sh("ip netns add ns1 && ip link set vf1 netns ns1 \
        && ip addr add 10.9.0.1/24 dev vf0 && ip link set vf0 up \
        && ip -n ns1 addr add 10.9.0.2/24 dev vf1 && ip -n ns1 link set vf1 up");
    wait_until(
        T,
        "both drivers running with carrier",
        || {
            let phases: Vec<(Value, Value)> = (0..2)
                .map(|vf| {
                    let text = agent
                        .run(&format!("vfrig-driver status --vf {vf}"), scaled(T))
                        .map(|o| o.stdout)
                        .unwrap_or_default();
                    let status: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
                    (
                        status["adapter"]["phase"].clone(),
                        status["adapter"]["carrier"].clone(),
                    )
                })
                .collect();
            if phases
                .iter()
                .all(|(phase, carrier)| phase == "running" && *carrier == Value::Bool(true))
            {
                Ok(())
            } else {
                Err(phases)
            }
        },
        logs,
    );
    let out = agent
        .run("ping -c 3 -W 5 10.9.0.2", scaled(T))
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        out.success(),
        "ping from vf0 to vf1 in ns1 through the PF switch failed:\n{}\n{}\n{}",
        out.stdout,
        out.stderr,
        logs()
    );
    let tables = rig.daemon.device().with(|engine, _| engine.tables());
    for vf in 0..2 {
        let t = tables
            .vf(vf)
            .map(|v| v.traffic)
            .expect("both VFs in the tables");
        assert!(
            t.tx_frames >= 3,
            "vf{vf} sent at least the three echoes or replies: {t:?}"
        );
    }
    let rtt = out
        .stdout
        .lines()
        .find(|l| l.contains("round-trip") || l.contains("rtt"))
        .unwrap_or("no round-trip line")
        .to_owned();
    for vf in 0..2 {
        let stopped = agent
            .stop(&format!("driver{vf}"))
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(stopped.stderr.contains("stopping"), "{}", stopped.stderr);
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("driver_vm ping vf0 -> vf1 (ns1) through the PF switch, TCG: {rtt}");
    }
    rig.shutdown().unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn vm_driver_vlan_the_pf_refused_is_an_anti_spoof_drop() {
    // The host allows vf0 a single VLAN filter. The driver learns the limit
    // from the PF's VLAN_V2 caps and refuses the second upper itself (as
    // iavf does), but the kernel keeps that upper: what it sends is tagged
    // with a VLAN the PF has no filter for, which the PF's VLAN anti-spoof
    // check drops.
    let dir = vfrig_harness::rundir::SocketDir::create().expect("a temporary directory");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[vf0]\nmax_vlans = 1\nspoofchk = true\n").expect("policy file");
    let rig = boot("test-driver-vlan-spoof", 1, Some(policy));
    let agent = rig.vm.agent();
    let sh = |cmd: &str| sh(agent, cmd);
    let tables = || rig.daemon.device().with(|engine, _| engine.tables());
    let vf0 = || tables().vf(0).cloned().expect("vf0 in the PF tables");
    let driver_log = || driver_log(agent, DRIVER);
    let status = || -> Value {
        let text = sh("vfrig-driver status --vf 0");
        serde_json::from_str(text.trim()).unwrap_or_else(|err| panic!("{err}: {text}"))
    };

    start_driver(agent, DRIVER, 0);
    wait_until(
        T,
        "vf0 to exist and the driver to negotiate with the PF",
        || {
            let out = agent
                .run("ip link show vf0 && vfrig-driver status --vf 0", scaled(T))
                .map_err(|e| e.to_string())?;
            if out.success() && out.stdout.contains(r#""phase":"down""#) {
                Ok(())
            } else {
                Err(format!("{}{}", out.stdout, out.stderr))
            }
        },
        driver_log,
    );
    // IPv6 (if the kernel has it) would send its own frames on every upper
    // at unpredictable times; only the frames this test sends should count.
    sh("for f in /proc/sys/net/ipv6/conf/default/disable_ipv6 \
        /proc/sys/net/ipv6/conf/vf0/disable_ipv6; do [ -e $f ] && echo 1 > $f; done; true");
    sh("ip link set vf0 up");
    wait_until(
        T,
        "the driver running with carrier",
        || {
            let s = status();
            if s["adapter"]["phase"] == "running" && s["adapter"]["carrier"] == Value::Bool(true) {
                Ok(())
            } else {
                Err(s)
            }
        },
        driver_log,
    );
    assert_eq!(vf0().vlan_limit, 1, "the policy holds vf0 to one VLAN");

    sh("ip link add link vf0 name vf0.100 type vlan id 100");
    wait_until(
        T,
        "VLAN 100 in the PF table of vf0",
        || {
            let t = vf0();
            if t.vlans == [100] {
                Ok(())
            } else {
                Err(t.vlans)
            }
        },
        driver_log,
    );
    assert!(
        vf0().antispoof.vlan,
        "VLAN anti-spoof is on from the first VLAN"
    );
    let refused_before = status()["driver"]["netdev_refused"]
        .as_u64()
        .expect("netdev_refused is a number");

    // The kernel creates the upper whatever the driver says; the driver
    // refuses VLAN 200 and never asks the PF for it.
    sh("ip link add link vf0 name vf0.200 type vlan id 200");
    let (after, _) = wait_until(
        T,
        "the driver to refuse VLAN 200",
        || {
            let s = status();
            match s["driver"]["netdev_refused"].as_u64() {
                Some(n) if n > refused_before => Ok(s),
                _ => Err(s),
            }
        },
        driver_log,
    );
    let vids: Vec<u64> = after["adapter"]["vlans"]
        .as_array()
        .map(|v| v.iter().filter_map(|f| f["vid"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(vids, vec![100], "the driver holds VLAN 100 only: {after:#}");
    assert_eq!(
        after["driver"]["netdev_refused"].as_u64(),
        Some(refused_before + 1),
        "exactly one refusal, for VLAN 200: {after:#}"
    );
    assert_eq!(vf0().vlans, vec![100], "the PF has no VLAN 200 for vf0");

    // Traffic on VLAN 100 passes the anti-spoof check.
    sh("ip addr add 10.10.0.1/24 dev vf0.100 && ip link set vf0.100 up");
    let before = vf0().traffic;
    let _ = agent.run("arping -c 3 -I vf0.100 10.10.0.2", scaled(T));
    let mid = vf0().traffic;
    assert_eq!(
        mid.drops.anti_spoof_vlan, 0,
        "nothing on VLAN 100 is an anti-spoof drop: {mid:?}"
    );
    assert!(
        mid.tx_frames >= before.tx_frames + 3,
        "the switch accepted the three ARP requests on VLAN 100: {before:?} -> {mid:?}"
    );

    // Traffic on VLAN 200 is dropped by the PF's VLAN anti-spoof check.
    sh("ip addr add 10.20.0.1/24 dev vf0.200 && ip link set vf0.200 up");
    let _ = agent.run("arping -c 3 -I vf0.200 10.20.0.2", scaled(T));
    let (dropped, _) = wait_until(
        T,
        "the PF to count the frames sent on VLAN 200 as anti-spoof drops",
        || {
            let t = vf0().traffic;
            if t.drops.anti_spoof_vlan >= 3 {
                Ok(t)
            } else {
                Err(t)
            }
        },
        driver_log,
    );
    assert_eq!(
        dropped.tx_frames, mid.tx_frames,
        "the switch accepted nothing sent on VLAN 200: {mid:?} -> {dropped:?}"
    );
    let counted = status()["driver"]["frames_to_pf"].as_u64().unwrap_or(0);
    assert!(
        counted >= 6,
        "the driver passed every frame to the PF: {counted}"
    );

    // With the VLAN 200 upper down, VLAN 100 traffic adds no such drop.
    sh("ip link set vf0.200 down");
    let _ = agent.run("arping -c 3 -I vf0.100 10.10.0.2", scaled(T));
    let last = vf0().traffic;
    assert_eq!(
        last.drops.anti_spoof_vlan, dropped.drops.anti_spoof_vlan,
        "VLAN 100 traffic is never dropped as spoofed: {dropped:?} -> {last:?}"
    );
    assert!(
        last.tx_frames >= dropped.tx_frames + 3,
        "VLAN 100 frames still reach the switch: {dropped:?} -> {last:?}"
    );
    let final_status = status();
    assert_eq!(final_status["adapter"]["counters"]["malformed"], 0);
    assert_eq!(final_status["adapter"]["counters"]["resets"], 0);

    let out = agent.stop(DRIVER).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        out.stderr.contains("stopping"),
        "the driver stops cleanly on SIGTERM:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("VlanLimit") || out.stderr.contains("refused"),
        "the driver logged the refusal:\n{}",
        out.stderr
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "driver_vm VLAN anti-spoof: {} frames sent on the refused VLAN 200 dropped by the PF; \
             vf0 traffic {last:?}",
            last.drops.anti_spoof_vlan
        );
    }
    rig.shutdown().unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn vm_driver_re_adds_its_filters_after_a_pf_initiated_reset() {
    let rig = boot("test-driver-reset", 1, None);
    let agent = rig.vm.agent();
    let sh = |cmd: &str| sh(agent, cmd);
    let control = |line: &str| {
        rig.daemon
            .device()
            .with(|engine, now| vfrig_device::control::handle_line(engine, now, line))
    };
    let tables = || rig.daemon.device().with(|engine, _| engine.tables());
    let ops = || -> Vec<String> {
        rig.daemon
            .device()
            .with(|engine, _| engine.transcript().iter().map(|e| e.op.clone()).collect())
    };
    let driver_log = || driver_log(agent, DRIVER);
    // The VF is configured: up, with two VLANs on the PF.
    let configured = |what: &str| {
        wait_until(
            T,
            what,
            || match tables().vf(0) {
                Some(v) if v.vlans == [100, 200] && v.queues.rx != 0 && v.queues.tx != 0 => Ok(()),
                other => Err(other.map(|v| (v.vlans.clone(), v.queues))),
            },
            driver_log,
        )
    };

    start_driver(agent, DRIVER, 0);
    wait_until(
        T,
        "vf0 to exist",
        || {
            let out = agent
                .run("ip link show vf0", scaled(T))
                .map_err(|e| e.to_string())?;
            if out.success() {
                Ok(())
            } else {
                Err(out.stderr)
            }
        },
        driver_log,
    );
    sh("ip link set vf0 up \
        && ip link add link vf0 name vf0.100 type vlan id 100 \
        && ip link add link vf0 name vf0.200 type vlan id 200");
    configured("vf0 up with VLANs 100 and 200 on the PF");
    let before = ops().len();

    // The host resets the VF with notice: the PF forgets its filters and
    // the driver must negotiate again and re-add every one.
    let reply = control(r#"{"cmd":"event","vf":0,"kind":"reset"}"#);
    assert!(reply.contains(r#""ok""#), "reset refused: {reply}");
    configured("the driver to restore vf0's queues and VLANs after the reset");
    let after: Vec<String> = ops().split_off(before);
    for op in ["VERSION", "GET_VF_RESOURCES", "ENABLE_QUEUES"] {
        assert!(
            after.iter().any(|o| o == op),
            "no {op} after the reset: {after:?}"
        );
    }
    let status: Value = serde_json::from_str(sh("vfrig-driver status --vf 0").trim())
        .unwrap_or_else(|e| panic!("status is not JSON: {e}"));
    assert_eq!(status["adapter"]["phase"], "running", "{status:#}");
    let link = sh("ip link show vf0");
    assert!(
        link.contains("LOWER_UP"),
        "carrier back after the reset: {link}"
    );
    agent.stop(DRIVER).unwrap_or_else(|err| panic!("{err}"));
    rig.shutdown().unwrap_or_else(|err| panic!("{err}"));
}
