//! The two ways to run the agent and the request loop they share.
//!
//! Each request runs on a thread of its own, so a long `run` does not hold
//! up others; replies go out in completion order through the one
//! [`Writer`]. The reader never stops on a bad line: it answers with an
//! error reply and reads on.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use vfrig_agent::proto::{
    Message, ModuleLoad, Op, Outcome, Ready, Reply, Request, CHANNEL_NAME, MODULES_LIST,
};

use super::channel::{self, LineRead, PortReader, Sink, Writer, MAX_LINE};
use super::console::{self, Target};
use super::error::{Error, Result};
use super::jobs::Jobs;
use super::process::{Shell, Spawner};
use super::reaper::{self, Reaper};
use super::recorder::Recorder;
use super::request::{handle, parse_line};
use super::uevents::UeventObserver;
use super::{boot, clock, Mode};

/// How long PID 1 looks for its virtio-console port.
const PORT_PATIENCE: Duration = Duration::from_secs(10);

/// How long power-off waits for processes to die after each signal.
const KILL_PATIENCE: Duration = Duration::from_secs(1);

/// The agent's shared state; one per process.
#[derive(Debug)]
pub struct Agent {
    mode: Mode,
    spawner: Spawner,
    jobs: Jobs,
    recorder: Recorder,
    uevents: UeventObserver,
    writer: Writer,
}

impl Agent {
    fn new(mode: Mode, spawner: Spawner, writer: Writer) -> Self {
        Self {
            mode,
            spawner,
            jobs: Jobs::default(),
            recorder: Recorder::default(),
            uevents: UeventObserver::default(),
            writer,
        }
    }

    /// Starts commands.
    pub fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    /// Background commands.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The link-event recorder.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// The kernel uevent observer.
    pub fn uevents(&self) -> &UeventObserver {
        &self.uevents
    }

    fn send(&self, message: &Message) {
        if let Err(e) = self.writer.send(message) {
            agent_log!("send to the harness: {e}");
        }
    }

    fn reply(&self, id: u64, result: Result<Reply>) {
        let outcome = match result {
            Ok(reply) => Outcome::Ok(reply),
            Err(error) => Outcome::Error(error.to_string()),
        };
        self.send(&Message::Reply { id, outcome });
    }

    fn send_ready(&self, started_ms: u64, modules: Vec<ModuleLoad>, modules_ms: u64) {
        let kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        self.send(&Message::Ready(Ready {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel_release,
            uptime_ms: clock::boottime_ms(),
            started_ms,
            modules,
            modules_ms,
        }));
    }

    /// Handles one request line.
    fn dispatch(self: &Arc<Self>, line: &[u8]) {
        if line.trim_ascii().is_empty() {
            return;
        }
        match parse_line(line) {
            Err(bad) => self.reply(bad.id, Err(Error::BadRequest { reason: bad.reason })),
            Ok(Request {
                id,
                op: Op::Poweroff,
            }) => self.poweroff(id),
            Ok(Request { id, op }) => {
                let agent = Arc::clone(self);
                let spawned = std::thread::Builder::new()
                    .name(format!("request {id}"))
                    .spawn(move || {
                        let result = catch_unwind(AssertUnwindSafe(|| handle(&agent, op)))
                            .unwrap_or_else(|panic| {
                                let message = panic
                                    .downcast_ref::<&str>()
                                    .map(|s| (*s).to_owned())
                                    .or_else(|| panic.downcast_ref::<String>().cloned())
                                    .unwrap_or_default();
                                Err(Error::Panicked { message })
                            });
                        agent.reply(id, result);
                    });
                if let Err(error) = spawned {
                    self.reply(id, Err(Error::Thread { error }));
                }
            }
        }
    }

    /// Replies, then ends the agent: as PID 1 by powering the machine off,
    /// with `--stdio` by exiting with status 0.
    fn poweroff(&self, id: u64) {
        self.reply(id, Ok(Reply::Done));
        match self.mode {
            Mode::Stdio => {
                self.kill_children();
                self.writer.exit_when_idle(0);
            }
            Mode::Pid1 => {
                agent_log!("powering off");
                nix::unistd::sync();
                // As PID 1, pid -1 means every process but this one.
                for signal in [Signal::SIGTERM, Signal::SIGKILL] {
                    let _ = kill(Pid::from_raw(-1), signal);
                    wait_for_no_children(KILL_PATIENCE);
                }
                nix::unistd::sync();
                let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
                agent_log!("power off failed: {e}");
            }
        }
    }

    /// SIGKILL to every job and running command (with `--stdio`, before
    /// exiting, so nothing the tests started outlives the agent).
    fn kill_children(&self) {
        self.jobs.kill_all();
        self.spawner.reaper().signal_all_groups(Signal::SIGKILL);
    }
}

fn wait_for_no_children(patience: Duration) {
    let deadline = std::time::Instant::now() + patience;
    while reaper::has_children() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads request lines until end of file. With `last_partial`, an
/// unterminated last line is handled too (stdin); on the port it is the
/// remains of a dropped connection and is discarded.
fn serve_lines(
    agent: &Arc<Agent>,
    reader: &mut impl BufRead,
    last_partial: bool,
) -> io::Result<usize> {
    let mut line = Vec::new();
    let mut count = 0;
    loop {
        match channel::read_line(reader, &mut line, MAX_LINE)? {
            LineRead::Line => agent.dispatch(&line),
            LineRead::TooLong => agent.reply(0, Err(Error::LineTooLong { limit: MAX_LINE })),
            LineRead::Eof => {
                if last_partial {
                    agent.dispatch(&line);
                }
                return Ok(count);
            }
        }
        count += 1;
    }
}

/// `vfrig-agent --stdio`: serves on stdin/stdout until end of input or
/// power-off.
pub fn run_stdio(started_ms: u64) -> ExitCode {
    console::init(Target::Stderr);
    console::install_panic_hook();
    // Orphans of the commands we run come back to us, as they would to
    // PID 1, so group kills and orphan counts behave the same.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        agent_log!("PR_SET_CHILD_SUBREAPER: {e}");
    }
    let reaper = match Reaper::start() {
        Ok(reaper) => reaper,
        Err(e) => {
            agent_log!("start the reaper thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spawner = Spawner::new(reaper, Shell::STDIO);
    let agent = Arc::new(Agent::new(
        Mode::Stdio,
        spawner,
        Writer::new(Sink::Stdout(io::stdout())),
    ));
    agent.send_ready(started_ms, Vec::new(), 0);
    let result = serve_lines(&agent, &mut io::stdin().lock(), true);
    // The harness is gone: requests still running are abandoned.
    agent.kill_children();
    let code = match result {
        Ok(_) => 0,
        Err(e) => {
            agent_log!("read stdin: {e}");
            1
        }
    };
    agent.writer.exit_when_idle(code)
}

/// PID 1: boots the VM and serves the harness. Never returns: when serving
/// is impossible it keeps reaping zombies, because PID 1 exiting panics the
/// kernel.
pub fn run_pid1(started_ms: u64) -> ! {
    console::init(Target::Console);
    console::install_panic_hook();
    let reaping = catch_unwind(|| pid1(started_ms)).unwrap_or_else(|_| {
        agent_log!("the agent failed; idling so the kernel keeps running");
        true
    });
    idle_forever(reaping)
}

/// Boots and serves; returns only when serving is impossible, saying
/// whether the reaper thread is running.
fn pid1(started_ms: u64) -> bool {
    agent_log!("starting, version {}", env!("CARGO_PKG_VERSION"));
    boot::mount_all();
    let reaper = match Reaper::start() {
        Ok(reaper) => reaper,
        Err(e) => {
            agent_log!("start the reaper thread: {e}");
            return false;
        }
    };
    let loading = clock::boottime_ms();
    let modules = boot::load_modules(Path::new(MODULES_LIST));
    let modules_ms = clock::boottime_ms().saturating_sub(loading);
    if !modules.is_empty() {
        agent_log!("{}", boot::modules_summary(&modules, modules_ms));
    }
    boot::loopback_up();
    let ports = Path::new(channel::VIRTIO_PORTS);
    let Some(path) = channel::wait_for_port(ports, CHANNEL_NAME, PORT_PATIENCE) else {
        agent_log!(
            "ERROR: no virtio port named {CHANNEL_NAME} after {} s; \
             start QEMU with -device virtserialport,name={CHANNEL_NAME}; idling",
            PORT_PATIENCE.as_secs()
        );
        return true;
    };
    let file = match channel::open_port(&path) {
        Ok(file) => file,
        Err(e) => {
            agent_log!("ERROR: open {}: {e}; idling", path.display());
            return true;
        }
    };
    agent_log!("serving on {}", path.display());
    let spawner = Spawner::new(reaper, Shell::PID1);
    let agent = Arc::new(Agent::new(
        Mode::Pid1,
        spawner,
        Writer::new(Sink::Port(Arc::clone(&file))),
    ));
    // Blocks until the host side connects.
    agent.send_ready(started_ms, modules, modules_ms);
    agent_log!("ready");
    serve_port(&agent, file, path)
}

/// Serves the port for ever.
///
/// End of file means the host closed its side; the port stays open (it
/// allows one opener, and closing it would drop what the host sends on
/// reconnecting) and reads resume every 100 ms until the host is back. A
/// read error (the port was unplugged) closes it and opens the port found
/// under the same name again.
fn serve_port(agent: &Arc<Agent>, mut file: Arc<File>, mut path: PathBuf) -> ! {
    let mut connected = true;
    loop {
        let mut reader = BufReader::with_capacity(64 * 1024, PortReader(Arc::clone(&file)));
        match serve_lines(agent, &mut reader, false) {
            Ok(lines) => {
                if lines > 0 {
                    connected = true;
                }
                if connected {
                    agent_log!(
                        "host closed {}; waiting for it to reconnect",
                        path.display()
                    );
                    connected = false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                agent_log!("read {}: {e}; reopening", path.display());
                drop(reader);
                agent.writer.set_sink(None);
                drop(file);
                (file, path) = reopen_port();
                agent.writer.set_sink(Some(Sink::Port(Arc::clone(&file))));
                connected = true;
            }
        }
    }
}

fn reopen_port() -> (Arc<File>, PathBuf) {
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Some(path) = channel::find_port(Path::new(channel::VIRTIO_PORTS), CHANNEL_NAME) else {
            continue;
        };
        match channel::open_port(&path) {
            Ok(file) => {
                agent_log!("serving on {}", path.display());
                return (file, path);
            }
            Err(e) => agent_log!("open {}: {e}", path.display()),
        }
    }
}

/// Keeps PID 1 alive for ever. Without a reaper thread it reaps zombies
/// itself.
fn idle_forever(reaper_running: bool) -> ! {
    loop {
        if reaper_running {
            std::thread::sleep(Duration::from_secs(3600));
            continue;
        }
        match waitpid(Pid::from_raw(-1), None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}
