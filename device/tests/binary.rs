//! The `vfrig-pf` binary as a user runs it: starts, serves, stops on a
//! signal, cleans up, and explains bad arguments.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vfrig_device::test_support::{scaled, TestDir};

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vfrig-pf"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vfrig-pf starts")
}

/// Polls until `what` holds, failing with `describe` after the timeout.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("vfrig-pf to exit", || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status.expect("exited")
}

#[test]
fn the_daemon_serves_until_a_signal_and_removes_its_sockets() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = TestDir::new("bin").expect("temp dir");
        let pf = dir.join("pf");
        let arg = pf.to_str().expect("utf-8 path");
        let mut child = spawn(&["--dir", arg, "--vfs", "2"]);
        let sockets = ["vf0.sock", "vf1.sock", "control.sock"].map(|s| pf.join(s));
        wait_until("the sockets", || sockets.iter().all(|s| s.exists()));
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        kill(pid, signal).expect("signal sent");
        let status = wait_exit(&mut child);
        assert!(status.success(), "{signal}: exit status {status}");
        for socket in &sockets {
            assert!(
                !socket.exists(),
                "{signal}: {} left behind",
                socket.display()
            );
        }
    }
}

#[test]
fn bad_arguments_and_policy_files_fail_with_a_message() {
    let dir = TestDir::new("bin-bad").expect("temp dir");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "[vf0]\ntrust = maybe\n").expect("write");
    let pf = dir.join("pf");
    let child = spawn(&[
        "--dir",
        pf.to_str().expect("utf-8"),
        "--policy",
        policy.to_str().expect("utf-8"),
    ]);
    let out = child.wait_with_output().expect("exits");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policy.toml") && stderr.contains("line 2"),
        "{stderr}"
    );

    let out = spawn(&["--vfs", "2"]).wait_with_output().expect("exits");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));

    let pf = pf.to_str().expect("utf-8");
    let args = [
        "--dir",
        pf,
        "--vfs",
        "2",
        "--kernel-vf",
        "1",
        "--kernel-vf",
        "2",
    ];
    let out = spawn(&args).wait_with_output().expect("exits");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kernel VF 2 does not exist") && stderr.contains("--vfs"),
        "{stderr}"
    );
}

#[test]
fn a_kernel_vf_is_served_and_named_in_the_log() {
    let dir = TestDir::new("bin-kvf").expect("temp dir");
    let pf = dir.join("pf");
    let arg = pf.to_str().expect("utf-8 path");
    let mut child = spawn(&["--dir", arg, "--vfs", "2", "--kernel-vf", "1"]);
    let sockets = ["vf0.sock", "vf1.sock", "control.sock"].map(|s| pf.join(s));
    wait_until("the sockets", || sockets.iter().all(|s| s.exists()));
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("signal sent");
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status {status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains("kernel VF: one queue pair, no mailbox"),
        "{stderr}"
    );
}
