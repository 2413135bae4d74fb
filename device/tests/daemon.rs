//! The daemon in-process: its control socket, its files, its errors.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use vfrig_device::daemon::{Daemon, DaemonConfig, DaemonError};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vfrig-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(dir: &TempDir, vfs: u16) -> Daemon {
    Daemon::start(DaemonConfig {
        dir: dir.0.join("pf"),
        vfs,
        policy: None,
        pcap: None,
        tap: None,
        seed: 1,
        kernel_vfs: Default::default(),
    })
    .expect("daemon starts")
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(daemon: &Daemon) -> Self {
        let stream = UnixStream::connect(daemon.control_socket()).expect("control socket accepts");
        Client {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn call(&mut self, line: &str) -> Value {
        self.writer.write_all(line.as_bytes()).expect("write");
        self.writer.write_all(b"\n").expect("write");
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("read");
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?} is not JSON: {e}"))
    }
}

#[test]
fn the_control_socket_answers_json_lines_and_survives_garbage() {
    let dir = TempDir::new("ctl");
    let daemon = start(&dir, 2);
    let mut client = Client::connect(&daemon);
    let tables = client.call(r#"{"cmd":"tables"}"#);
    assert_eq!(tables["ok"]["vfs"]["vf1"]["state"], "init");
    assert!(client.call("not json").get("error").is_some());
    assert!(client.call("\u{0}\u{1}").get("error").is_some());
    let set = client.call(r#"{"cmd":"policy","vf":1,"set":{"trust":true}}"#);
    assert_eq!(set["ok"]["trust"], true);
    // A second client sees the same device.
    let mut other = Client::connect(&daemon);
    assert_eq!(
        other.call(r#"{"cmd":"policy","vf":1}"#)["ok"]["trust"],
        true
    );
    assert_eq!(
        client.call(r#"{"cmd":"quiesce"}"#)["ok"]["settled"],
        false,
        "RESET_IMPENDING waits for vf1"
    );
}

#[test]
fn sockets_are_private_and_removed_on_shutdown() {
    let dir = TempDir::new("perm");
    let daemon = start(&dir, 1);
    let control = daemon.control_socket();
    let mode = |p: &PathBuf| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&control), 0o600);
    assert_eq!(mode(&dir.0.join("pf")), 0o700);
    daemon.shutdown();
    assert!(!control.exists(), "control socket removed");
}

#[test]
fn a_stale_socket_is_replaced_but_a_live_daemon_is_not() {
    let dir = TempDir::new("stale");
    let first = start(&dir, 1);
    let err = Daemon::start(DaemonConfig {
        dir: dir.0.join("pf"),
        vfs: 1,
        policy: None,
        pcap: None,
        tap: None,
        seed: 1,
        kernel_vfs: Default::default(),
    })
    .expect_err("the socket is in use");
    assert!(
        err.to_string().contains("another daemon is serving it"),
        "{err}"
    );
    // Leave a socket file behind with nobody listening: the next start replaces it.
    let control = first.control_socket();
    drop(first);
    let _stale = std::os::unix::net::UnixListener::bind(&control).expect("bind");
    drop(_stale);
    let second = start(&dir, 1);
    let mut client = Client::connect(&second);
    assert!(client.call(r#"{"cmd":"tables"}"#).get("ok").is_some());
}

#[test]
fn a_bad_policy_file_names_the_file_and_the_line() {
    let dir = TempDir::new("policy");
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    let policy = dir.0.join("policy.toml");
    std::fs::write(&policy, "[vf0]\ntrust = true\nspoofcheck = false\n").expect("write");
    let err = Daemon::start(DaemonConfig {
        dir: dir.0.join("pf"),
        vfs: 1,
        policy: Some(policy.clone()),
        pcap: None,
        tap: None,
        seed: 1,
        kernel_vfs: Default::default(),
    })
    .expect_err("bad policy");
    assert!(matches!(err, DaemonError::PolicyFile { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("policy.toml") && text.contains("spoofcheck") && text.contains("line 3"),
        "{text}"
    );
    assert!(
        !dir.0.join("pf").exists(),
        "nothing created for a config that does not load"
    );
}

#[test]
fn a_kernel_vf_the_pf_does_not_have_is_refused_before_anything_is_created() {
    let dir = TempDir::new("kvf");
    let err = Daemon::start(DaemonConfig {
        dir: dir.0.join("pf"),
        vfs: 2,
        policy: None,
        pcap: None,
        tap: None,
        seed: 1,
        kernel_vfs: [0, 2].into(),
    })
    .expect_err("there is no vf2");
    assert!(
        matches!(err, DaemonError::NoSuchKernelVf { vf: 2, vfs: 2 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "kernel VF 2 does not exist: the PF has 2 VFs (vf0..vf1); \
         --kernel-vf takes an index below --vfs"
    );
    assert!(!dir.0.join("pf").exists(), "nothing created");
}
