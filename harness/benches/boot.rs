//! Boot-time benchmark: QEMU start to guest-agent-ready, next to the floor
//! (the same kernel and machine booting a busybox `init` that powers off at
//! once). Prints medians and where the rig's time goes.
//!
//! `cargo bench -p vfrig-harness --bench boot` (`VFRIG_BENCH_RUNS=N` for
//! another run count; 5 by default).

use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Instant;

use vfrig_harness::image::{self, ImageOptions};
use vfrig_harness::qemu::{self, MachineSpec, Qemu};
use vfrig_harness::rundir::SocketDir;
use vfrig_harness::vm::BASE_CMDLINE;
use vfrig_harness::{Rig, RigConfig, VmConfig};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The printk timestamp (seconds) of the first console line containing
/// `what`.
fn stamp(console: &str, what: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains(what))?;
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inner.trim().parse().ok()
}

/// Boots the bare image. Returns the time from spawning QEMU to its exit,
/// and the guest uptime at `/init` and at power-off.
fn bare_boot(qemu: &Qemu, accel: qemu::Accel, img: &vfrig_images::Image) -> (f64, f64, f64) {
    let dir = SocketDir::create().unwrap();
    let qmp = dir.path().join("qmp.sock");
    let agent = dir.path().join("agent.sock");
    // QEMU connects to both sockets at start; nobody needs to answer.
    let _l1 = UnixListener::bind(&qmp).unwrap();
    let _l2 = UnixListener::bind(&agent).unwrap();
    let spec = MachineSpec {
        accel,
        cpus: 2,
        memory_mib: 1024,
        kernel: img.kernel.clone(),
        initramfs: img.initramfs.clone(),
        cmdline: BASE_CMDLINE.to_owned(),
        console_log: dir.path().join("console.log"),
        qmp_socket: qmp,
        agent_socket: agent,
        shell_on_stdio: false,
        root_ports: 1,
        vfs: Vec::new(),
        primary: None,
    };
    let start = Instant::now();
    let status = Command::new(&qemu.binary)
        .args(qemu::command_line(&spec))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(status.success(), "bare boot failed: {status}");
    let console = std::fs::read_to_string(dir.path().join("console.log")).unwrap_or_default();
    assert!(
        console.contains("Power down"),
        "bare boot did not power off:\n{console}"
    );
    let init = stamp(&console, "Run /init").unwrap_or(f64::NAN);
    let off = stamp(&console, "Power down").unwrap_or(f64::NAN);
    (secs, init, off)
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
        .unwrap_or(5);
    let opts = ImageOptions::default();
    let img = image::prepare(&opts).unwrap_or_else(|e| panic!("{e}"));
    let bare = image::prepare_bare(&opts).unwrap_or_else(|e| panic!("{e}"));
    let qemu = Qemu::find().unwrap_or_else(|e| panic!("{e}"));
    let accel = qemu::resolve_accel(&qemu, qemu::AccelChoice::from_env(), &img.kernel);
    println!(
        "boot benchmark: {} ({}), QEMU {}, {accel}, {runs} runs each",
        img.manifest.kernel.release,
        img.initramfs.display(),
        qemu.version
    );

    // Bare and rig boots alternate, so a machine that slows down or speeds
    // up during the run affects both alike.
    let mut floor = Vec::new();
    let (mut floor_init, mut floor_off) = (Vec::new(), Vec::new());
    let mut ready = Vec::new();
    let (mut kernel, mut modules, mut agent) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let (s, init, off) = bare_boot(&qemu, accel, &bare);
        println!(
            "  bare boot to power-off   run {i}: {s:.2} s (/init at guest uptime {init:.2} s, power-off at {off:.2} s)"
        );
        floor.push(s);
        floor_init.push(init);
        floor_off.push(off);

        let mut vm = VmConfig::new("bench-boot", &img.kernel, &img.initramfs);
        vm.vfs_at_boot = vec![0];
        vm.accel = match accel {
            qemu::Accel::Tcg => qemu::AccelChoice::Tcg,
            qemu::Accel::Kvm => qemu::AccelChoice::Kvm,
        };
        let rig = Rig::start(&RigConfig {
            vfs: 1,
            kernel_vfs: Default::default(),
            policy: None,
            seed: 0,
            vm,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let boot = rig.vm.boot().clone();
        rig.shutdown().unwrap_or_else(|e| panic!("{e}"));
        let r = &boot.ready;
        let mods = r.modules_ms;
        let s = boot.ready_after.as_secs_f64();
        println!(
            "  rig boot to agent ready  run {i}: {s:.2} s (/init at guest uptime {:.2} s, modules {:.2} s, ready at {:.2} s)",
            r.started_ms as f64 / 1e3,
            mods as f64 / 1e3,
            r.uptime_ms as f64 / 1e3
        );
        ready.push(s);
        kernel.push(r.started_ms as f64 / 1e3);
        modules.push(mods as f64 / 1e3);
        agent.push((r.uptime_ms - r.started_ms - mods) as f64 / 1e3);
    }
    let (f, r) = (median(&mut floor), median(&mut ready));
    let (fi, fo) = (median(&mut floor_init), median(&mut floor_off));
    println!(
        "floor (bare boot to power-off), median: {f:.2} s: kernel to /init {fi:.2} s, /init to power-off {:.2} s, \
         QEMU start + firmware + exit {:.2} s",
        fo - fi,
        f - fo
    );
    println!(
        "rig (QEMU start to agent ready), median: {r:.2} s = {:.2}x the floor",
        r / f
    );
    println!(
        "rig breakdown (medians): kernel to /init {:.2} s, module loading {:.2} s, rest of agent start-up {:.2} s, \
         QEMU start + firmware + channel {:.2} s",
        median(&mut kernel),
        median(&mut modules),
        median(&mut agent),
        r - (median(&mut kernel) + median(&mut modules) + median(&mut agent))
    );
}
