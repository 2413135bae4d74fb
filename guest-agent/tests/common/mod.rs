//! Drives a real `vfrig-agent --stdio` over its stdin/stdout.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use vfrig_agent::proto::{Message, Op, Outcome, Output, Ready, Reply, Request};

/// How long any single reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running agent.
pub struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    early: HashMap<u64, Outcome>,
    next_id: u64,
    /// The agent's start-up message.
    pub ready: Ready,
}

impl Agent {
    /// `vfrig-agent --stdio`.
    pub fn start() -> Self {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_vfrig-agent")).arg("--stdio"))
    }

    /// `vfrig-agent --stdio` in a network namespace of its own
    /// (`unshare -n`), or why that is impossible here.
    pub fn start_in_new_netns() -> Result<Self, String> {
        let probe = Command::new("unshare")
            .args(["-n", "true"])
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("run unshare: {e}"))?;
        if !probe.status.success() {
            return Err(format!(
                "unshare -n failed: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
        }
        Ok(Self::spawn(
            Command::new("unshare")
                .arg("-n")
                .arg(env!("CARGO_BIN_EXE_vfrig-agent"))
                .arg("--stdio"),
        ))
    }

    /// `vfrig-agent --stdio` in a network and a mount namespace of its
    /// own, with sysfs mounted afresh so that `/sys/class/net` shows the
    /// new network namespace; or why that is impossible here.
    pub fn start_in_new_netns_with_sysfs() -> Result<Self, String> {
        let mut probe = in_new_netns_with_sysfs("true");
        let probe = probe
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("run unshare: {e}"))?;
        if !probe.status.success() {
            return Err(format!(
                "unshare -n -m with a sysfs mount failed: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
        }
        Ok(Self::spawn(&mut in_new_netns_with_sysfs(&format!(
            "exec {} --stdio",
            env!("CARGO_BIN_EXE_vfrig-agent")
        ))))
    }

    fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start vfrig-agent");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut agent = Self {
            child,
            stdin,
            lines,
            early: HashMap::new(),
            next_id: 1,
            ready: Ready {
                agent_version: String::new(),
                kernel_release: String::new(),
                uptime_ms: 0,
                started_ms: 0,
                modules: Vec::new(),
                modules_ms: 0,
            },
        };
        match agent.next_message() {
            Message::Ready(ready) => agent.ready = ready,
            other => panic!("first message is not ready: {other:?}"),
        }
        agent
    }

    fn next_message(&mut self) -> Message {
        let line = match self.lines.recv_timeout(REPLY_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no message within {REPLY_TIMEOUT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the agent closed stdout"),
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
    }

    /// Writes `line` and a newline as is.
    pub fn send_raw(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends `op` with a fresh id and returns the id.
    pub fn send(&mut self, op: Op) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let line = serde_json::to_vec(&Request { id, op }).unwrap();
        self.send_raw(&line);
        id
    }

    /// The next reply, whichever request it answers.
    pub fn next_reply(&mut self) -> (u64, Outcome) {
        if let Some(&id) = self.early.keys().next() {
            let outcome = self.early.remove(&id).unwrap();
            return (id, outcome);
        }
        match self.next_message() {
            Message::Reply { id, outcome } => (id, outcome),
            other => panic!("unexpected message: {other:?}"),
        }
    }

    /// The reply to request `id`, keeping others for later.
    pub fn reply(&mut self, id: u64) -> Outcome {
        if let Some(outcome) = self.early.remove(&id) {
            return outcome;
        }
        loop {
            match self.next_message() {
                Message::Reply { id: got, outcome } if got == id => return outcome,
                Message::Reply { id: got, outcome } => {
                    self.early.insert(got, outcome);
                }
                other => panic!("unexpected message: {other:?}"),
            }
        }
    }

    /// Sends `op` and waits for its outcome.
    pub fn call(&mut self, op: Op) -> Result<Reply, String> {
        let id = self.send(op);
        match self.reply(id) {
            Outcome::Ok(reply) => Ok(reply),
            Outcome::Error(e) => Err(e),
        }
    }

    /// Sends `op`, which must succeed.
    pub fn ok(&mut self, op: Op) -> Reply {
        let what = format!("{op:?}");
        self.call(op)
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    /// Runs `cmd` and returns its output.
    pub fn run(&mut self, cmd: &str, timeout_ms: Option<u64>) -> Output {
        match self.ok(Op::Run {
            cmd: cmd.into(),
            timeout_ms,
            stdin: None,
        }) {
            Reply::Output(output) => output,
            other => panic!("run replied {other:?}"),
        }
    }

    /// Runs `cmd`, which must exit 0; returns its stdout.
    pub fn sh(&mut self, cmd: &str) -> String {
        let out = self.run(cmd, Some(REPLY_TIMEOUT.as_millis() as u64));
        assert!(out.success(), "`{cmd}` failed: {out:?}");
        out.stdout
    }

    /// Closes the agent's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the agent to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the agent did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sh -c SCRIPT` in a network and a mount namespace of its own (`unshare
/// -n -m`), after mounting sysfs there so that `/sys/class/net` lists the
/// new namespace's links.
pub fn in_new_netns_with_sysfs(script: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "-m", "sh", "-c"])
        .arg(format!("mount -t sysfs sysfs /sys || exit 1\n{script}"));
    cmd
}

/// Polls `cond` every 20 ms until it holds; fails with `what` after 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    /// Creates the directory for test `test`.
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vfrig-agent-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
