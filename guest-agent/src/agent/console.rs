//! Human-readable log lines, prefixed `vfrig-agent: `.
//!
//! As PID 1 they go to `/dev/console` (the kernel console, which the harness
//! captures); with `--stdio` to stderr, because stdout carries the protocol.
//! Keep them few: start, module summary, channel found, ready, power-off and
//! errors.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::OnceLock;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/dev/console`, falling back to stderr when it cannot be opened.
    Console,
    /// stderr.
    Stderr,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// Chooses where log lines go; the first call wins. Before any call they go
/// to stderr.
pub fn init(target: Target) {
    let _ = TARGET.set(target);
}

/// Writes one log line. Never fails: a line that cannot be written anywhere
/// is dropped.
pub fn log(args: std::fmt::Arguments<'_>) {
    let line = format!("vfrig-agent: {args}\n");
    if TARGET.get() == Some(&Target::Console) {
        let console = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/console");
        if let Ok(mut console) = console {
            if console.write_all(line.as_bytes()).is_ok() {
                return;
            }
        }
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Logs panics as a log line, so a panicking request thread is visible on
/// the console. The thread still unwinds; callers catch it.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        log(format_args!("panic in thread {name}: {info}"));
    }));
}

/// `agent_log!("fmt", args..)`: one line to the agent's log target.
macro_rules! agent_log {
    ($($arg:tt)*) => {
        $crate::agent::console::log(format_args!($($arg)*))
    };
}
