//! VM tests: boot the real guest image under QEMU (TCG unless KVM works),
//! talk to the agent, hot-plug a VF, detect a real kernel splat, and prove
//! that nothing is left running afterwards.
//!
//! These need QEMU 10 (`qemu-system-x86_64`); without it they fail and say
//! how to install it. The first run builds the image (downloads the Debian
//! kernel and busybox-static, builds the agent statically).

use std::path::Path;
use std::time::{Duration, Instant};

use vfrig_harness::image::{self, ImageOptions};
use vfrig_harness::vm::scaled;
use vfrig_harness::{Rig, RigConfig, VmConfig, VmError};

const T: Duration = Duration::from_secs(60);

fn rig(label: &str, vfs: u16, at_boot: &[u16]) -> (Rig, String) {
    let img = image::prepare(&ImageOptions::default()).expect("image build failed");
    let mut vm = VmConfig::new(label, &img.kernel, &img.initramfs);
    vm.vfs_at_boot = at_boot.to_vec();
    let rig = Rig::start(&RigConfig {
        vfs,
        kernel_vfs: Default::default(),
        policy: None,
        seed: 0,
        vm,
    })
    .unwrap_or_else(|err| panic!("{err}"));
    (rig, img.manifest.kernel.release)
}

/// Number of modern virtio-net PCI functions (1af4:1041) the guest sees.
fn virtio_net_functions(rig: &Rig) -> usize {
    let out = rig
        .vm
        .agent()
        .sh(
            "grep -l 0x1041 /sys/bus/pci/devices/*/device 2>/dev/null | wc -l",
            T,
        )
        .unwrap_or_else(|err| panic!("{err}"));
    out.stdout.trim().parse().expect("a count")
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn vm_boots_runs_commands_hotplugs_a_vf_and_reports_a_splat() {
    let (rig, release) = rig("test-boot", 2, &[0]);
    let agent = rig.vm.agent();
    let boot = rig.vm.boot();
    assert_eq!(boot.ready.kernel_release, release);
    assert!(boot.ready.modules.iter().any(|m| m.name == "bonding"));

    // Commands: output, exit status, the real iproute2 `ip`.
    let out = agent.sh("uname -r", T).unwrap();
    assert_eq!(out.stdout.trim(), release);
    let out = agent.run("echo oops >&2; exit 7", T).unwrap();
    assert_eq!((out.status, out.stderr.as_str()), (Some(7), "oops\n"));
    let out = agent.sh("ip -V", T).unwrap();
    assert!(out.stdout.contains("iproute2"), "{}", out.stdout);
    agent
        .sh(
            "ip link add bond1 type bond && ip link add link bond1 name bond1.100 type vlan id 100",
            T,
        )
        .unwrap();

    // VF 0 is there from boot; VF 1 arrives over QMP and leaves again.
    assert_eq!(virtio_net_functions(&rig), 1);
    rig.vm.hotplug_vf(1).unwrap();
    wait_for("the hot-plugged VF in the guest", scaled(T), || {
        virtio_net_functions(&rig) == 2
    });
    rig.vm.unplug_vf(1).unwrap();
    wait_for("the VF to go away", scaled(T), || {
        virtio_net_functions(&rig) == 1
    });
    rig.vm.check_console().unwrap();

    // A real kernel crash is reported with its excerpt.
    let _ = agent.run("echo c > /proc/sysrq-trigger", Duration::from_secs(5));
    let err = rig.shutdown().unwrap_err();
    let VmError::Splat { splats, .. } = &err else {
        panic!("expected a splat, got {err}");
    };
    assert!(
        splats
            .iter()
            .any(|s| s.excerpt.contains("sysrq triggered crash")),
        "{err}"
    );
}

#[test]
fn dropping_a_rig_leaves_no_process_or_socket_behind() {
    let (rig, _) = rig("test-drop", 1, &[0]);
    let qemu = rig.vm.qemu_pid();
    let dirs = [
        rig.vm.socket_dir().to_path_buf(),
        rig.socket_dir().to_path_buf(),
    ];
    assert!(process_alive(qemu));
    assert!(dirs.iter().all(|d| d.exists()));
    drop(rig);
    assert!(!process_alive(qemu), "QEMU {qemu} outlived the rig");
    for dir in &dirs {
        assert!(!dir.exists(), "{} outlived the rig", dir.display());
    }
}

/// Child processes of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
            kids.push(child);
        }
    }
    kids
}

#[test]
fn ctrl_c_on_the_command_line_stops_qemu_and_removes_sockets() {
    // Build the image here so the CLI does not spend the wait building it.
    image::prepare(&ImageOptions::default()).expect("image build failed");
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_vfrig"))
        .args(["vm", "--exec", "sleep 600"])
        .env("VFRIG_QUIET", "1")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = cli.id();
    let mut qemu = None;
    wait_for("QEMU to start under the CLI", scaled(T), || {
        qemu = children(pid).into_iter().find(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm"))
                .is_ok_and(|comm| comm.starts_with("qemu-system"))
        });
        qemu.is_some()
    });
    let qemu = qemu.unwrap();
    let tmp = std::env::temp_dir();
    let ours = |name: &str| name.starts_with("vfrig-") && name.contains(&format!("-{pid}-"));
    let socket_dirs = || -> Vec<String> {
        std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| ours(n))
            .collect()
    };
    assert!(
        !socket_dirs().is_empty(),
        "the CLI made no socket directory"
    );
    // Let the guest get somewhere, then interrupt.
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = cli.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(!process_alive(qemu), "QEMU {qemu} outlived the CLI");
    assert!(socket_dirs().is_empty(), "left behind: {:?}", socket_dirs());
}
