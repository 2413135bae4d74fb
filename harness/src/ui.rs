//! Messages for the person running the rig.
//!
//! The harness is a command-line tool first: progress on long work and
//! one-time notices go to stderr, prefixed `vfrig:`. Library users (tests)
//! see the same lines in their captured output. Set `VFRIG_QUIET=1` to
//! silence them.

use std::io::Write;
use std::sync::OnceLock;

fn quiet() -> bool {
    static QUIET: OnceLock<bool> = OnceLock::new();
    *QUIET.get_or_init(|| std::env::var_os("VFRIG_QUIET").is_some_and(|v| v != "0"))
}

/// Prints one progress or notice line to stderr.
pub fn say(msg: impl AsRef<str>) {
    if quiet() {
        return;
    }
    let mut err = std::io::stderr().lock();
    // A closed stderr is not worth failing a run for.
    let _ = writeln!(err, "vfrig: {}", msg.as_ref());
}
