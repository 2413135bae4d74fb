//! `vfrig-agent blast` end to end on a veth pair in network and mount
//! namespaces of its own.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{in_new_netns_with_sysfs, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_vfrig-agent");

/// Creates veth pair vb0/vb1, both up, then runs `rest`.
fn with_veth(rest: &str) -> Command {
    in_new_netns_with_sysfs(&format!(
        "ip link add vb0 type veth peer name vb1 && ip link set vb0 up && \
         ip link set vb1 up || exit 1\n{rest}"
    ))
}

/// Whether namespaces and veth work here.
#[allow(clippy::print_stderr)]
fn supported() -> bool {
    match with_veth("true").stderr(Stdio::piped()).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "skipping: no veth in a new netns here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("skipping: run unshare: {e}");
            false
        }
    }
}

/// `(sent, errors)` from the summary line, which must name `dev` and
/// `threads`.
fn summary(stdout: &str, dev: &str, threads: usize) -> (u64, u64) {
    let line = stdout.trim();
    let prefix = format!("blast: dev={dev} threads={threads} sent=");
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected summary {line:?}"));
    let (sent, errors) = rest
        .split_once(" errors=")
        .unwrap_or_else(|| panic!("unexpected summary {line:?}"));
    (sent.parse().unwrap(), errors.parse().unwrap())
}

#[test]
fn sends_for_the_given_time() {
    if !supported() {
        return;
    }
    let out = with_veth(&format!(
        "exec {BIN} blast --dev vb0 --threads 2 --vlan 7 --size 100 --duration-ms 300"
    ))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (sent, _) = summary(&stdout, "vb0", 2);
    assert!(sent > 0, "{stdout}");
}

#[test]
fn stops_on_sigterm_and_reports() {
    if !supported() {
        return;
    }
    let child = with_veth(&format!("exec {BIN} blast --dev vb0 --threads 2"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Signals are blocked before the senders start; wait for both.
    wait_until("blast's senders", || {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let blocked = u64::from_str_radix(&field("SigBlk:"), 16).unwrap_or(0);
        let sigterm = 1 << (libc::SIGTERM - 1);
        field("Name:") == "vfrig-agent"
            && blocked & sigterm != 0
            && field("Threads:").parse::<u32>().unwrap_or(0) >= 3
    });
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (sent, _) = summary(&stdout, "vb0", 2);
    assert!(sent > 0, "{stdout}");
}

#[test]
fn finds_the_interface_again_after_it_is_recreated() {
    if !supported() {
        return;
    }
    // Delete vb0 under the sender, create it again, and wait until the new
    // vb0 has sent frames: only a sender that looked it up again sends there.
    let script = format!(
        "{BIN} blast --dev vb0 --threads 1 --duration-ms 20000 >blast.out 2>blast.err & \
         while [ \"$(cat /sys/class/net/vb0/statistics/tx_packets)\" -lt 100 ]; do sleep 0.01; done; \
         ip link del vb0; \
         ip link add vb0 type veth peer name vb1 && ip link set vb0 up && ip link set vb1 up; \
         i=0; while [ \"$(cat /sys/class/net/vb0/statistics/tx_packets)\" -lt 100 ] && [ $i -lt 1000 ]; \
         do i=$((i+1)); sleep 0.01; done; \
         cat /sys/class/net/vb0/statistics/tx_packets; kill -TERM $!; wait $!; echo \"exit $?\"; \
         cat blast.out; cat blast.err >&2"
    );
    let dir = common::Scratch::new("blast-recreate");
    let out = with_veth(&script)
        .current_dir(dir.path())
        .timeout_output(Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut lines = stdout.lines();
    let tx: u64 = lines.next().unwrap_or_default().trim().parse().unwrap_or(0);
    assert!(tx >= 100, "the new vb0 sent {tx} frames: {stdout} {stderr}");
    assert_eq!(lines.next(), Some("exit 0"), "{stdout} {stderr}");
    let (sent, errors) = summary(lines.next().unwrap_or_default(), "vb0", 1);
    assert!(sent >= 200, "{stdout}");
    assert!(
        errors > 0,
        "the deleted vb0 must have failed sends: {stdout} {stderr}"
    );
    assert!(
        stderr.contains("ENXIO") || stderr.contains("ENODEV"),
        "{stderr}"
    );
}

/// `Command::output` with a deadline, so a hung script fails the test.
trait TimeoutOutput {
    fn timeout_output(&mut self, timeout: Duration) -> std::process::Output;
}

impl TimeoutOutput for Command {
    fn timeout_output(&mut self, timeout: Duration) -> std::process::Output {
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + timeout;
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the script did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    let out = Command::new(BIN)
        .args(["blast", "--dev", "x", "--threads", "zero"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad argument --threads"), "{stderr}");
    assert!(stderr.contains("usage: vfrig-agent blast"), "{stderr}");
    let out = Command::new(BIN)
        .args(["blast", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--duration-ms"));
}

#[test]
fn a_missing_interface_exits_1() {
    let out = Command::new(BIN)
        .args(["blast", "--dev", "vfrignope0", "--duration-ms", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no network interface named \"vfrignope0\""),
        "{stderr}"
    );
}
