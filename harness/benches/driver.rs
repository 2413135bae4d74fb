//! Guest driver benchmark: how fast what the guest kernel does to `vf0`
//! reaches the PF's tables, how many down/up cycles a second the driver
//! follows, ping and TCP bulk transfer between two VFs through the PF
//! switch, and the drivers' idle CPU. One boot with two VFs. Prints
//! medians (with min and max) next to the goals; asserts nothing on timing.
//!
//! `cargo bench -p vfrig-harness --bench driver` (`VFRIG_BENCH_RUNS=N` for
//! another sample count; 20 by default).
//!
//! Busybox's `nc` in the guest image has no UDP mode, so the bulk transfer
//! is TCP (`dd | nc` to `nc -l` in the other VF's namespace).

use std::time::{Duration, Instant};

use serde_json::Value;
use vfrig_device::pf::Tables;
use vfrig_harness::agent::AgentClient;
use vfrig_harness::image::{self, ImageOptions};
use vfrig_harness::qemu;
use vfrig_harness::vm::scaled;
use vfrig_harness::{Rig, RigConfig, VmConfig};

const T: Duration = Duration::from_secs(60);

/// Goal: a VLAN reaches the PF in under this, median, under TCG.
const GOAL_VLAN_MS: f64 = 50.0;
/// Goal: an idle driver uses under this share of one vCPU.
const GOAL_IDLE_CPU_PCT: f64 = 10.0;
/// Kernel clock ticks per second (`CLK_TCK` on x86-64 Linux).
const CLK_TCK: f64 = 100.0;

/// Min, median and max, in the samples' unit.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[allow(clippy::print_stdout)]
fn print_ms(what: &str, v: &[f64], goal: Option<f64>) {
    let (min, med, max) = stats(v);
    let goal = goal.map_or(String::new(), |g| {
        format!(
            " (goal: median < {g:.0} ms: {})",
            if med < g { "met" } else { "NOT met" }
        )
    });
    println!(
        "  {what}: median {med:.2} ms, min {min:.2} ms, max {max:.2} ms ({} samples){goal}",
        v.len()
    );
}

/// Polls `probe` every 5 ms until it gives `Some`; panics after `T`.
fn wait_for<R>(what: &str, mut probe: impl FnMut() -> Option<R>) -> (R, Duration) {
    let start = Instant::now();
    loop {
        if let Some(r) = probe() {
            return (r, start.elapsed());
        }
        assert!(start.elapsed() < scaled(T), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `cmd` through the agent while another thread polls the PF tables
/// every millisecond until `done` holds. Returns the time from just before
/// the request to `done` (the agent's trip to the guest included) and the
/// request's full round trip.
fn race(
    agent: &AgentClient,
    tables: &(dyn Fn() -> Tables + Sync),
    cmd: &str,
    done: &(dyn Fn(&Tables) -> bool + Sync),
) -> (Duration, Duration) {
    assert!(!done(&tables()), "already true before `{cmd}`");
    std::thread::scope(|s| {
        let start = Instant::now();
        let poller = s.spawn(move || loop {
            if done(&tables()) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < scaled(T),
                "timed out waiting for the PF after `{cmd}`"
            );
            std::thread::sleep(Duration::from_millis(1));
        });
        agent
            .sh(cmd, scaled(T))
            .unwrap_or_else(|err| panic!("{err}"));
        let round_trip = start.elapsed();
        (poller.join().expect("poller panicked"), round_trip)
    })
}

fn status(agent: &AgentClient, vf: u16) -> Value {
    let text = agent
        .run(&format!("vfrig-driver status --vf {vf}"), scaled(T))
        .map(|o| o.stdout)
        .unwrap_or_default();
    serde_json::from_str(text.trim()).unwrap_or(Value::Null)
}

/// The adapter is running, with nothing pending and nothing in flight.
fn settled(s: &Value) -> bool {
    s["adapter"]["phase"] == "running"
        && s["adapter"]["carrier"] == Value::Bool(true)
        && s["adapter"]["pending"]
            .as_array()
            .is_some_and(Vec::is_empty)
        && s["adapter"]["outstanding"].is_null()
}

/// CPU ticks of every `vfrig-driver` over 5 s of guest time: the guest
/// seconds measured and, per PID, the ticks used.
fn idle_cpu(agent: &AgentClient) -> (f64, Vec<(u64, u64)>) {
    let out = agent
        .sh(
            "u0=$(cut -d' ' -f1 /proc/uptime); \
             for p in $(pidof vfrig-driver); do echo \"$p $(cut -d' ' -f14,15 /proc/$p/stat)\"; done; \
             sleep 5; u1=$(cut -d' ' -f1 /proc/uptime); \
             for p in $(pidof vfrig-driver); do echo \"$p $(cut -d' ' -f14,15 /proc/$p/stat)\"; done; \
             echo \"uptime $u0 $u1\"",
            scaled(T),
        )
        .unwrap_or_else(|err| panic!("{err}"))
        .stdout;
    let mut samples: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    let mut window = f64::NAN;
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["uptime", a, b] => {
                window = b.parse::<f64>().unwrap_or(f64::NAN) - a.parse::<f64>().unwrap_or(0.0);
            }
            [pid, u, s] => {
                let ticks = u.parse::<u64>().unwrap_or(0) + s.parse::<u64>().unwrap_or(0);
                samples
                    .entry(pid.parse().unwrap_or(0))
                    .or_default()
                    .push(ticks);
            }
            _ => {}
        }
    }
    let used = samples
        .into_iter()
        .filter_map(|(pid, t)| match t.as_slice() {
            [t0, t1] => Some((pid, t1.saturating_sub(*t0))),
            _ => None,
        })
        .collect();
    (window, used)
}

#[allow(clippy::print_stdout)]
fn print_idle(when: &str, (window, used): &(f64, Vec<(u64, u64)>)) {
    println!("idle CPU ({when}; {window:.2} s guest time):");
    for (pid, ticks) in used {
        let pct = *ticks as f64 / CLK_TCK / window * 100.0;
        println!(
            "  vfrig-driver pid {pid}: {ticks} ticks (1/100 s) = {pct:.1}% of one vCPU (goal: < {GOAL_IDLE_CPU_PCT:.0}%: {})",
            if pct < GOAL_IDLE_CPU_PCT { "met" } else { "NOT met" }
        );
    }
}

#[allow(clippy::print_stdout)]
fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and only wants to know that the benchmark builds and starts.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = std::env::var("VFRIG_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(20);
    let img = image::prepare(&ImageOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut vm = VmConfig::new("bench-driver", &img.kernel, &img.initramfs);
    vm.vfs_at_boot = vec![0, 1];
    let rig = Rig::start(&RigConfig {
        vfs: 2,
        kernel_vfs: Default::default(),
        policy: None,
        seed: 0,
        vm,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let accel = rig.vm.boot().accel;
    println!(
        "driver benchmark: {} ({accel}), one boot, two VFs, {runs} samples per latency; \
         host clock; latencies to the PF include the agent's trip to the guest",
        img.manifest.kernel.release,
    );
    if accel != qemu::Accel::Tcg {
        println!("  (the goals are for TCG; this run is not under TCG)");
    }
    let agent = rig.vm.agent();
    let sh = |cmd: &str| {
        agent
            .sh(cmd, scaled(T))
            .unwrap_or_else(|err| panic!("{err}"))
            .stdout
    };
    let device = rig.daemon.device();
    let tables = || device.with(|engine, _| engine.tables());
    let vlans0 = |t: &Tables| t.vf(0).map(|v| v.vlans.clone()).unwrap_or_default();

    for vf in 0..2 {
        agent
            .spawn(
                &format!("driver{vf}"),
                &format!("exec vfrig-driver run --vf {vf}"),
            )
            .unwrap_or_else(|err| panic!("{err}"));
    }
    wait_for("both drivers to negotiate with the PF", || {
        (0..2)
            .all(|vf| status(agent, vf)["adapter"]["phase"] == "down")
            .then_some(())
    });

    // Baseline: an agent round trip running `true`.
    let rtt: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            sh("true");
            ms(t.elapsed())
        })
        .collect();

    // `ip link set vf0 up` -> queues enabled on the PF, then down again.
    let queues_on = |t: &Tables| {
        t.vf(0)
            .is_some_and(|v| v.queues.rx != 0 && v.queues.tx != 0)
    };
    let queues_off = |t: &Tables| {
        t.vf(0)
            .is_some_and(|v| v.queues.rx == 0 && v.queues.tx == 0)
    };
    let (mut up, mut up_rtt, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (pf, round_trip) = race(agent, &tables, "ip link set vf0 up", &queues_on);
        up.push(ms(pf));
        up_rtt.push(ms(round_trip));
        let (pf, _) = race(agent, &tables, "ip link set vf0 down", &queues_off);
        down.push(ms(pf));
    }
    sh("ip link set vf0 up");
    wait_for("vf0 running", || settled(&status(agent, 0)).then_some(()));

    // `ip link add ... type vlan id N` -> VLAN N on the PF, then deleted.
    let (mut add, mut add_rtt, mut del) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let vid = 100 + u16::try_from(i).unwrap_or(0);
        let has = move |t: &Tables| vlans0(t).contains(&vid);
        let (pf, round_trip) = race(
            agent,
            &tables,
            &format!("ip link add link vf0 name vf0.{vid} type vlan id {vid}"),
            &has,
        );
        add.push(ms(pf));
        add_rtt.push(ms(round_trip));
        let gone = move |t: &Tables| !vlans0(t).contains(&vid);
        let (pf, _) = race(agent, &tables, &format!("ip link del vf0.{vid}"), &gone);
        del.push(ms(pf));
    }

    // 50 down/up cycles with four VLANs, timed in the guest.
    let vids = [10u16, 11, 12, 13];
    for vid in vids {
        sh(&format!(
            "ip link add link vf0 name vf0.{vid} type vlan id {vid}"
        ));
    }
    wait_for("the four VLANs on the PF", || {
        (vlans0(&tables()) == vids).then_some(())
    });
    let cycles = 50;
    let enables_before = rig.daemon.device().with(|engine, _| {
        engine
            .transcript()
            .iter()
            .filter(|e| e.op == "ENABLE_QUEUES")
            .count()
    });
    let loop_start = Instant::now();
    let out = sh(&format!(
        "a=$(cut -d' ' -f1 /proc/uptime); for i in $(seq {cycles}); do \
         ip link set vf0 down; ip link set vf0 up; done; cut -d' ' -f1 /proc/uptime; echo $a"
    ));
    let loop_host = loop_start.elapsed();
    let times: Vec<f64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let guest_secs = match times.as_slice() {
        [end, start] => end - start,
        _ => panic!("cannot parse the guest's loop time: {out:?}"),
    };
    let settle_start = Instant::now();
    wait_for("the driver and the PF to settle after the loop", || {
        let s = status(agent, 0);
        let t = tables();
        (settled(&s) && queues_on(&t)).then_some(())
    });
    let settle = settle_start.elapsed();
    let after = tables();
    let enables = rig.daemon.device().with(|engine, _| {
        engine
            .transcript()
            .iter()
            .filter(|e| e.op == "ENABLE_QUEUES")
            .count()
    }) - enables_before;
    let vlans_kept = vlans0(&after) == vids;

    // Idle CPU: vf0 up with four VLANs, vf1's driver negotiated but down.
    sh("sleep 1");
    let idle_before = idle_cpu(agent);

    // Two VFs: vf1 in ns1.
    sh("ip netns add ns1 && ip link set vf1 netns ns1 \
        && ip addr add 10.9.0.1/24 dev vf0 \
        && ip -n ns1 addr add 10.9.0.2/24 dev vf1 && ip -n ns1 link set vf1 up");
    wait_for("both drivers running with carrier", || {
        (0..2).all(|vf| settled(&status(agent, vf))).then_some(())
    });
    sh("ping -c 2 -W 5 10.9.0.2");
    let ping = sh("ping -c 20 -i 0.2 10.9.0.2");
    let rtt_line = ping
        .lines()
        .find(|l| l.contains("round-trip") || l.contains("rtt"))
        .unwrap_or_else(|| panic!("no round-trip line: {ping}"));
    let ping_ms: Vec<f64> = rtt_line
        .split('=')
        .nth(1)
        .unwrap_or("")
        .trim()
        .trim_end_matches("ms")
        .split('/')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let loss = ping
        .lines()
        .find(|l| l.contains("packet loss"))
        .unwrap_or("")
        .to_owned();

    // Back-to-back pings (`-A`: the next as soon as the reply is back).
    let flood_start = Instant::now();
    let flood = sh("ping -A -q -c 200 -s 1400 10.9.0.2");
    let flood_secs = flood_start.elapsed().as_secs_f64();
    let flood_loss = flood
        .lines()
        .find(|l| l.contains("packet loss"))
        .unwrap_or("")
        .to_owned();

    // TCP bulk: vf0 -> vf1 (ns1).
    let (bs, count) = (1400u64, 6000u64);
    agent
        .spawn(
            "sink",
            // busybox `nc` half-closes when its stdin ends, which makes
            // the sender quit: keep the sink's stdin open.
            "exec ip netns exec ns1 sh -c 'sleep 600 | nc -l -p 5000 | wc -c > /tmp/sink.count'",
        )
        .unwrap_or_else(|err| panic!("{err}"));
    wait_for("the sink to listen", || {
        agent
            .run(
                "ip netns exec ns1 netstat -ltn | grep -q ':5000 '",
                scaled(T),
            )
            .is_ok_and(|o| o.success())
            .then_some(())
    });
    let before = tables();
    let bulk_start = Instant::now();
    sh(&format!(
        "dd if=/dev/zero bs={bs} count={count} 2>/dev/null | timeout 120 nc 10.9.0.2 5000"
    ));
    let bulk_secs = bulk_start.elapsed().as_secs_f64();
    let (received, _) = wait_for("the sink's byte count", || {
        agent
            .run("cat /tmp/sink.count", scaled(T))
            .ok()
            .and_then(|o| o.stdout.trim().parse::<u64>().ok())
    });
    let _ = agent.stop("sink");
    let bulk_after = tables();
    let traffic = |t: &Tables, vf| t.vf(vf).map(|v| v.traffic).unwrap_or_default();
    let data_frames = traffic(&bulk_after, 0).tx_frames - traffic(&before, 0).tx_frames;
    let ack_frames = traffic(&bulk_after, 1).tx_frames - traffic(&before, 1).tx_frames;
    let wire_bytes = traffic(&bulk_after, 0).tx_bytes - traffic(&before, 0).tx_bytes;

    // Idle CPU again, both drivers up after the traffic.
    sh("sleep 1");
    let idle_after = idle_cpu(agent);

    for vf in 0..2 {
        let stopped = agent
            .stop(&format!("driver{vf}"))
            .unwrap_or_else(|err| panic!("{err}"));
        if stopped.status != Some(0) {
            println!("note: driver{vf} did not exit 0 on SIGTERM: {stopped:?}");
        }
    }
    rig.shutdown().unwrap_or_else(|e| panic!("{e}"));

    println!("agent round trip:");
    print_ms("`true` (baseline)", &rtt, None);
    println!("link:");
    print_ms(
        "`ip link set vf0 up` -> PF has vf0's queues enabled (agent trip included)",
        &up,
        None,
    );
    print_ms(
        "`ip link set vf0 up` agent round trip (for comparison)",
        &up_rtt,
        None,
    );
    print_ms(
        "`ip link set vf0 down` -> PF has vf0's queues disabled",
        &down,
        None,
    );
    println!("VLAN filters:");
    print_ms(
        "`ip link add ... type vlan id N` -> PF has VLAN N (agent trip included)",
        &add,
        Some(GOAL_VLAN_MS),
    );
    print_ms(
        "`ip link add ... type vlan id N` agent round trip (for comparison)",
        &add_rtt,
        None,
    );
    print_ms("`ip link del vf0.N` -> PF has dropped VLAN N", &del, None);
    println!("down/up with 4 VLANs:");
    println!(
        "  {cycles} cycles in {guest_secs:.2} s guest time (/proc/uptime, 10 ms resolution) = {:.1} cycles/s \
         ({:.2} s host time, agent trip included = {:.1} cycles/s); settled {:.0} ms after the loop; \
         PF saw {enables} ENABLE_QUEUES; 4 VLANs kept on the PF: {vlans_kept} ({:?})",
        f64::from(cycles) / guest_secs,
        loop_host.as_secs_f64(),
        f64::from(cycles) / loop_host.as_secs_f64(),
        ms(settle),
        vlans0(&after)
    );
    println!("vf0 -> vf1 (ns1) through the PF switch:");
    match ping_ms.as_slice() {
        [min, avg, max] => println!(
            "  ping -c 20 -i 0.2: min {min:.3} ms, avg {avg:.3} ms, max {max:.3} ms ({})",
            loss.trim()
        ),
        _ => println!("  ping -c 20 -i 0.2: {rtt_line}"),
    }
    println!(
        "  ping -A -c 200 -s 1400: {:.0} echoes/s, {:.0} frames/s through the switch ({flood_secs:.2} s host time; {})",
        200.0 / flood_secs,
        400.0 / flood_secs,
        flood_loss.trim()
    );
    println!(
        "  TCP bulk (dd bs={bs} count={count} | nc): {received} of {} bytes received in {bulk_secs:.2} s \
         (host time, agent trip included) = {:.2} MB/s; {data_frames} frames vf0 -> vf1 ({:.0} frames/s, \
         {:.0} B/frame), {ack_frames} frames vf1 -> vf0 ({:.0} frames/s)",
        bs * count,
        received as f64 / bulk_secs / 1e6,
        data_frames as f64 / bulk_secs,
        wire_bytes as f64 / data_frames.max(1) as f64,
        ack_frames as f64 / bulk_secs,
    );
    print_idle(
        "vf0 up with 4 VLANs, vf1 down, before any traffic",
        &idle_before,
    );
    print_idle(
        "both up, vf0 with 4 VLANs, after the ping and bulk traffic",
        &idle_after,
    );
}
