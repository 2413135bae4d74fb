//! The harness side of the guest agent protocol ([`vfrig_agent::proto`]).
//!
//! One [`AgentClient`] per VM. Requests may be issued from several threads
//! at once; a reader thread matches replies to requests by id. Every line in
//! both directions is appended to the run's `agent.log` with the time since
//! the client was created.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use vfrig_agent::proto::{
    LinkEvent, Message, NetAdd, Op, Outcome, Output, Ready, Reply, Request, Status,
};

/// What can go wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The channel closed (the VM went down or the agent died).
    #[error("the guest agent's channel closed (the VM stopped or the agent died)")]
    Closed,
    /// No reply in time.
    #[error("the guest agent did not answer {what} within {timeout:?}")]
    Timeout {
        /// The request, shortly.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The agent refused or failed the request.
    #[error("the guest agent could not {what}: {message}")]
    Failed {
        /// The request, shortly.
        what: String,
        /// The agent's message.
        message: String,
    },
    /// A reply of the wrong kind.
    #[error("the guest agent answered {what} with an unexpected reply: {reply:?}")]
    Unexpected {
        /// The request, shortly.
        what: String,
        /// What came back.
        reply: Box<Reply>,
    },
    /// A command exited non-zero (from [`AgentClient::sh`]).
    #[error("guest command `{cmd}` failed ({}):\n{}", describe_exit(.output), output_text(.output))]
    Command {
        /// The command.
        cmd: String,
        /// Its result.
        output: Box<Output>,
    },
    /// Writing to the channel failed.
    #[error("cannot write to the guest agent's channel")]
    Io(#[source] std::io::Error),
}

fn describe_exit(out: &Output) -> String {
    match (out.status, out.signal, out.timed_out) {
        (_, _, true) => format!("timed out after {} ms", out.duration_ms),
        (Some(code), _, _) => format!("exit status {code}"),
        (None, Some(sig), _) => format!("killed by signal {sig}"),
        _ => "no exit status".into(),
    }
}

fn output_text(out: &Output) -> String {
    let mut text = String::new();
    if !out.stdout.is_empty() {
        text.push_str("stdout:\n");
        text.push_str(out.stdout.trim_end());
        text.push('\n');
    }
    if !out.stderr.is_empty() {
        text.push_str("stderr:\n");
        text.push_str(out.stderr.trim_end());
        text.push('\n');
    }
    text
}

type Pending = Arc<Mutex<HashMap<u64, Sender<Outcome>>>>;
type Closed = Arc<std::sync::atomic::AtomicBool>;

/// A connection to the guest agent.
#[derive(Debug)]
pub struct AgentClient {
    writer: Mutex<UnixStream>,
    pending: Pending,
    closed: Closed,
    next_id: AtomicU64,
    log: Arc<Mutex<AgentLog>>,
    ready: Mutex<Option<Receiver<Ready>>>,
    reader: Option<JoinHandle<()>>,
    stream: UnixStream,
}

#[derive(Debug)]
struct AgentLog {
    file: Option<File>,
    start: Instant,
}

impl AgentLog {
    fn line(&mut self, dir: &str, text: &str) {
        if let Some(file) = &mut self.file {
            let t = self.start.elapsed().as_secs_f64();
            let _ = writeln!(file, "{t:10.3} {dir} {text}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentClient {
    /// Wraps a connected channel; `log` is the transcript file.
    pub fn new(stream: UnixStream, log: &Path) -> std::io::Result<AgentClient> {
        let log = Arc::new(Mutex::new(AgentLog {
            file: File::create(log).ok(),
            start: Instant::now(),
        }));
        let pending: Pending = Arc::default();
        let closed: Closed = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader_stream = stream.try_clone()?;
        let reader = {
            let pending = Arc::clone(&pending);
            let closed = Arc::clone(&closed);
            let log = Arc::clone(&log);
            std::thread::Builder::new()
                .name("vfrig-agent-rx".into())
                .spawn(move || read_loop(reader_stream, pending, closed, log, ready_tx))?
        };
        Ok(AgentClient {
            writer: Mutex::new(stream.try_clone()?),
            pending,
            closed,
            next_id: AtomicU64::new(1),
            log,
            ready: Mutex::new(Some(ready_rx)),
            reader: Some(reader),
            stream,
        })
    }

    /// Waits for the agent's start-up message. `alive` is polled while
    /// waiting and aborts the wait with its error (QEMU exited, say).
    pub fn wait_ready<E>(
        &self,
        timeout: Duration,
        mut alive: impl FnMut() -> Result<(), E>,
    ) -> Result<Result<Ready, AgentError>, E> {
        let Some(rx) = lock(&self.ready).take() else {
            return Ok(Err(AgentError::Failed {
                what: "report ready".into(),
                message: "wait_ready was already called".into(),
            }));
        };
        let deadline = Instant::now() + timeout;
        loop {
            alive()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Err(AgentError::Timeout {
                    what: "the start-up message".into(),
                    timeout,
                }));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(ready) => return Ok(Ok(ready)),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(Err(AgentError::Closed)),
            }
        }
    }

    /// Sends one request and waits for its reply.
    pub fn request(&self, op: Op, timeout: Duration) -> Result<Reply, AgentError> {
        let what = describe(&op);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        lock(&self.pending).insert(id, tx);
        // The reader sets `closed` before it drops the pending senders; a
        // request registered after that would wait for nothing.
        if self.closed.load(Ordering::Acquire) {
            lock(&self.pending).remove(&id);
            return Err(AgentError::Closed);
        }
        let line = match serde_json::to_string(&Request { id, op }) {
            Ok(line) => line,
            Err(err) => {
                lock(&self.pending).remove(&id);
                return Err(AgentError::Failed {
                    what,
                    message: format!("cannot encode the request: {err}"),
                });
            }
        };
        lock(&self.log).line(">", &line);
        let written = {
            let mut w = lock(&self.writer);
            w.write_all(line.as_bytes())
                .and_then(|()| w.write_all(b"\n"))
                .and_then(|()| w.flush())
        };
        if let Err(err) = written {
            lock(&self.pending).remove(&id);
            return Err(AgentError::Io(err));
        }
        let outcome = rx.recv_timeout(timeout);
        lock(&self.pending).remove(&id);
        match outcome {
            Ok(Outcome::Ok(reply)) => Ok(reply),
            Ok(Outcome::Error(message)) => Err(AgentError::Failed { what, message }),
            Err(RecvTimeoutError::Timeout) => Err(AgentError::Timeout { what, timeout }),
            Err(RecvTimeoutError::Disconnected) => Err(AgentError::Closed),
        }
    }

    /// Runs `sh -c cmd` in the guest and returns its result, whatever its
    /// exit status. The agent kills it after `timeout`; the reply is awaited
    /// a little longer.
    pub fn run(&self, cmd: &str, timeout: Duration) -> Result<Output, AgentError> {
        let op = Op::Run {
            cmd: cmd.to_owned(),
            timeout_ms: Some(millis(timeout)),
            stdin: None,
        };
        let what = describe(&op);
        match self.request(op, timeout + Duration::from_secs(10))? {
            Reply::Output(out) => Ok(out),
            other => Err(unexpected(what, other)),
        }
    }

    /// Runs `sh -c cmd` with no time limit (an interactive shell, say).
    pub fn run_unbounded(&self, cmd: &str) -> Result<Output, AgentError> {
        let op = Op::Run {
            cmd: cmd.to_owned(),
            timeout_ms: None,
            stdin: None,
        };
        let what = describe(&op);
        match self.request(op, Duration::from_secs(u32::MAX.into()))? {
            Reply::Output(out) => Ok(out),
            other => Err(unexpected(what, other)),
        }
    }

    /// Runs `sh -c cmd` and fails unless it exits 0.
    pub fn sh(&self, cmd: &str, timeout: Duration) -> Result<Output, AgentError> {
        let out = self.run(cmd, timeout)?;
        if out.success() {
            Ok(out)
        } else {
            Err(AgentError::Command {
                cmd: cmd.to_owned(),
                output: Box::new(out),
            })
        }
    }

    /// Starts a named background command.
    pub fn spawn(&self, name: &str, cmd: &str) -> Result<(), AgentError> {
        self.expect_done(Op::Spawn {
            name: name.to_owned(),
            cmd: cmd.to_owned(),
        })
    }

    /// Stops a named background command and returns what it printed.
    pub fn stop(&self, name: &str) -> Result<Output, AgentError> {
        let op = Op::Stop {
            name: name.to_owned(),
            timeout_ms: None,
        };
        let what = describe(&op);
        match self.request(op, Duration::from_secs(30))? {
            Reply::Output(out) => Ok(out),
            other => Err(unexpected(what, other)),
        }
    }

    /// Reads a guest file.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, AgentError> {
        let op = Op::ReadFile {
            path: path.to_owned(),
        };
        let what = describe(&op);
        match self.request(op, Duration::from_secs(30))? {
            Reply::File { data } => base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|err| AgentError::Failed {
                    what,
                    message: format!("the reply is not valid base64: {err}"),
                }),
            other => Err(unexpected(what, other)),
        }
    }

    /// Writes a guest file (created with mode 0644, or appended to).
    pub fn write_file(&self, path: &str, data: &[u8], append: bool) -> Result<(), AgentError> {
        self.expect_done(Op::WriteFile {
            path: path.to_owned(),
            data: base64::engine::general_purpose::STANDARD.encode(data),
            mode: None,
            append,
        })
    }

    /// Starts the rtnetlink link-event recorder.
    pub fn record_start(&self) -> Result<(), AgentError> {
        self.expect_done(Op::RecordStart)
    }

    /// Takes the link events recorded so far; recording goes on.
    pub fn record_take(&self) -> Result<Vec<LinkEvent>, AgentError> {
        self.events(Op::RecordTake)
    }

    /// Stops recording and takes the remaining events.
    pub fn record_stop(&self) -> Result<Vec<LinkEvent>, AgentError> {
        self.events(Op::RecordStop)
    }

    /// Starts the kernel uevent observer: for every network device added
    /// from now on, the agent looks at its sysfs `master` and `flags` as
    /// soon as the uevent arrives, then waits up to `give_up` for `master`
    /// to appear. Discards an earlier uevent recording.
    pub fn uevent_start(&self, give_up: Duration) -> Result<(), AgentError> {
        self.expect_done(Op::UeventStart {
            give_up_ms: Some(millis(give_up)),
        })
    }

    /// Takes the device adds observed so far, in `seq` order; observing goes
    /// on. Every uevent sent before the call is in the answer (the agent
    /// waits for devices it is still following, up to the give-up time).
    pub fn uevent_take(&self) -> Result<Vec<NetAdd>, AgentError> {
        self.net_adds(Op::UeventTake)
    }

    /// Stops the uevent observer and takes the remaining device adds.
    pub fn uevent_stop(&self) -> Result<Vec<NetAdd>, AgentError> {
        self.net_adds(Op::UeventStop)
    }

    /// The agent's health report.
    pub fn status(&self) -> Result<Status, AgentError> {
        match self.request(Op::Status, Duration::from_secs(30))? {
            Reply::Status(status) => Ok(status),
            other => Err(unexpected("report status".into(), other)),
        }
    }

    /// Asks the guest to power off. Returns once the agent acknowledged.
    pub fn poweroff(&self) -> Result<(), AgentError> {
        self.expect_done(Op::Poweroff)
    }

    fn events(&self, op: Op) -> Result<Vec<LinkEvent>, AgentError> {
        let what = describe(&op);
        match self.request(op, Duration::from_secs(30))? {
            Reply::Events(events) => Ok(events),
            other => Err(unexpected(what, other)),
        }
    }

    fn net_adds(&self, op: Op) -> Result<Vec<NetAdd>, AgentError> {
        let what = describe(&op);
        match self.request(op, Duration::from_secs(30))? {
            Reply::NetAdds(adds) => Ok(adds),
            other => Err(unexpected(what, other)),
        }
    }

    fn expect_done(&self, op: Op) -> Result<(), AgentError> {
        let what = describe(&op);
        match self.request(op, Duration::from_secs(30))? {
            Reply::Done => Ok(()),
            other => Err(unexpected(what, other)),
        }
    }
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unexpected(what: String, reply: Reply) -> AgentError {
    AgentError::Unexpected {
        what,
        reply: Box::new(reply),
    }
}

/// A short description of a request for error messages.
fn describe(op: &Op) -> String {
    match op {
        Op::Run { cmd, .. } => format!("run `{cmd}`"),
        Op::Spawn { name, .. } => format!("start background command {name:?}"),
        Op::Stop { name, .. } => format!("stop background command {name:?}"),
        Op::ReadFile { path } => format!("read {path}"),
        Op::WriteFile { path, .. } => format!("write {path}"),
        Op::RecordStart => "start the link recorder".into(),
        Op::RecordTake => "return recorded link events".into(),
        Op::RecordStop => "stop the link recorder".into(),
        Op::UeventStart { .. } => "start the uevent observer".into(),
        Op::UeventTake => "return observed network device adds".into(),
        Op::UeventStop => "stop the uevent observer".into(),
        Op::Status => "report status".into(),
        Op::Poweroff => "power off".into(),
    }
}

fn read_loop(
    stream: UnixStream,
    pending: Pending,
    closed: Closed,
    log: Arc<Mutex<AgentLog>>,
    ready: Sender<Ready>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        lock(&log).line("<", text);
        match serde_json::from_str::<Message>(text) {
            Ok(Message::Ready(r)) => {
                let _ = ready.send(r);
            }
            Ok(Message::Reply { id, outcome }) => {
                if let Some(tx) = lock(&pending).remove(&id) {
                    let _ = tx.send(outcome);
                } else {
                    lock(&log).line("!", &format!("reply for unknown request id {id}"));
                }
            }
            Err(err) => lock(&log).line("!", &format!("unparsable line from the agent: {err}")),
        }
    }
    lock(&log).line("!", "channel closed");
    closed.store(true, Ordering::Release);
    // Dropping the senders wakes every waiter with Disconnected.
    lock(&pending).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake agent on the other end of a socket pair, answering with a
    /// closure.
    fn fake_agent(
        answer: impl Fn(Request) -> Option<Outcome> + Send + 'static,
    ) -> (AgentClient, tempdir::Dir) {
        let dir = tempdir::Dir::new();
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            let ready = Message::Ready(Ready {
                agent_version: "test".into(),
                kernel_release: "6.12.0-test".into(),
                uptime_ms: 1,
                started_ms: 0,
                modules: vec![],
                modules_ms: 0,
            });
            writeln!(w, "{}", serde_json::to_string(&ready).unwrap()).unwrap();
            for line in BufReader::new(theirs).lines() {
                let Ok(line) = line else { break };
                let req: Request = serde_json::from_str(&line).unwrap();
                let id = req.id;
                if let Some(outcome) = answer(req) {
                    let msg = Message::Reply { id, outcome };
                    writeln!(w, "{}", serde_json::to_string(&msg).unwrap()).unwrap();
                }
            }
        });
        let client = AgentClient::new(ours, &dir.path().join("agent.log")).unwrap();
        (client, dir)
    }

    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let d = std::env::temp_dir().join(format!(
                    "vfrig-agent-test-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&d).unwrap();
                Dir(d)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn ok_output(stdout: &str, status: i32) -> Outcome {
        Outcome::Ok(Reply::Output(Output {
            status: Some(status),
            signal: None,
            timed_out: false,
            stdout: stdout.into(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 1,
        }))
    }

    #[test]
    fn ready_then_run_round_trip_and_transcript() {
        let (client, dir) = fake_agent(|req| match req.op {
            Op::Run { cmd, .. } => Some(ok_output(&format!("ran {cmd}"), 0)),
            _ => None,
        });
        let ready = client
            .wait_ready(Duration::from_secs(5), || Ok::<(), ()>(()))
            .unwrap()
            .unwrap();
        assert_eq!(ready.kernel_release, "6.12.0-test");
        let out = client.sh("uname -r", Duration::from_secs(5)).unwrap();
        assert_eq!(out.stdout, "ran uname -r");
        let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
        assert!(
            log.contains(r#"> {"id":1,"op":"run","cmd":"uname -r""#),
            "{log}"
        );
        assert!(
            log.contains(r#"< {"reply":{"id":1,"ok":{"output""#),
            "{log}"
        );
    }

    #[test]
    fn sh_reports_a_failed_command_with_its_output() {
        let (client, _dir) = fake_agent(|_| Some(ok_output("boom", 3)));
        let err = client.sh("false", Duration::from_secs(5)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`false` failed (exit status 3)"), "{text}");
        assert!(text.contains("boom"), "{text}");
    }

    #[test]
    fn agent_errors_and_silence_are_distinct() {
        let (client, _dir) = fake_agent(|req| match req.op {
            Op::ReadFile { .. } => Some(Outcome::Error("read /x: No such file".into())),
            _ => None,
        });
        let err = client.read_file("/x").unwrap_err();
        assert!(
            matches!(err, AgentError::Failed { ref message, .. } if message.contains("No such file"))
        );
        let err = client
            .request(Op::Status, Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, AgentError::Timeout { .. }), "{err}");
    }

    #[test]
    fn uevent_requests_round_trip() {
        let add = NetAdd {
            seq: 0,
            t_ms: 3,
            ifname: "eth1".into(),
            devpath: "/devices/pci0000:00/0000:00:1c.1/0000:02:00.0/net/eth1".into(),
            master_at_first_look: None,
            flags_at_first_look: Some(0x1002),
            us_to_master: Some(2100),
            master: Some("eth0".into()),
            flags_when_enslaved: Some(0x1002),
        };
        let reply = add.clone();
        let (client, dir) = fake_agent(move |req| match req.op {
            Op::UeventStart {
                give_up_ms: Some(250),
            } => Some(Outcome::Ok(Reply::Done)),
            Op::UeventTake => Some(Outcome::Ok(Reply::NetAdds(vec![reply.clone()]))),
            Op::UeventStop => Some(Outcome::Error(
                "no uevent recording is running; send uevent_start first".into(),
            )),
            _ => None,
        });
        client.uevent_start(Duration::from_millis(250)).unwrap();
        assert_eq!(client.uevent_take().unwrap(), vec![add]);
        let err = client.uevent_stop().unwrap_err();
        assert!(
            err.to_string()
                .contains("could not stop the uevent observer: no uevent recording"),
            "{err}"
        );
        let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
        assert!(
            log.contains(r#"> {"id":1,"op":"uevent_start","give_up_ms":250}"#),
            "{log}"
        );
    }

    #[test]
    fn a_closed_channel_wakes_waiters() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let dir = tempdir::Dir::new();
        let client = AgentClient::new(ours, &dir.path().join("agent.log")).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(theirs);
        });
        let err = client
            .request(Op::Status, Duration::from_secs(10))
            .unwrap_err();
        assert!(
            matches!(err, AgentError::Closed | AgentError::Io(_)),
            "{err}"
        );
        closer.join().unwrap();
    }
}
