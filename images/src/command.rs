//! Running host tools: a missing tool becomes [`Error::ToolMissing`] naming
//! the Debian package to install, a failing one [`Error::ToolFailed`] with
//! the command line and the end of its standard error.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use crate::{Error, Result};

/// A program the builder runs, and the Debian package that has it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub(crate) program: &'static str,
    pub(crate) package: &'static str,
}

pub(crate) const APT_CACHE: Tool = Tool {
    program: "apt-cache",
    package: "apt",
};
pub(crate) const APT_GET: Tool = Tool {
    program: "apt-get",
    package: "apt",
};
pub(crate) const DPKG_DEB: Tool = Tool {
    program: "dpkg-deb",
    package: "dpkg",
};
pub(crate) const DPKG: Tool = Tool {
    program: "dpkg",
    package: "dpkg",
};
pub(crate) const DPKG_QUERY: Tool = Tool {
    program: "dpkg-query",
    package: "dpkg",
};
pub(crate) const LDD: Tool = Tool {
    program: "ldd",
    package: "libc-bin",
};
pub(crate) const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};
pub(crate) const PATCH: Tool = Tool {
    program: "patch",
    package: "patch",
};
pub(crate) const STRIP: Tool = Tool {
    program: "strip",
    package: "binutils",
};
pub(crate) const MAKE: Tool = Tool {
    program: "make",
    package: "make",
};

/// How much of a failed command's standard error goes into the error.
const STDERR_TAIL: usize = 2000;

/// A command line for messages: `prog arg 'arg with space'`.
pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+:,^%@".contains(c))
    {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The last `STDERR_TAIL` bytes of `stderr`, trimmed, on one line per line.
pub(crate) fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let mut start = text.len().saturating_sub(STDERR_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

fn spawn_error(tool: Tool, command: &Command) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::ToolMissing {
                tool: tool.program,
                package: tool.package,
            }
        } else {
            Error::Spawn {
                command: describe(command),
                source,
            }
        }
    }
}

/// A command for `tool` with `args`, standard input closed.
pub(crate) fn command<I, S>(tool: Tool, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(tool.program);
    command.args(args).stdin(Stdio::null());
    command
}

/// Runs `command` with its output captured, whatever its exit status.
pub(crate) fn output(tool: Tool, command: &mut Command) -> Result<Output> {
    command.output().map_err(spawn_error(tool, command))
}

/// Runs `command` and returns its standard output; a failure is an error
/// carrying `hint`.
pub(crate) fn stdout(tool: Tool, command: &mut Command, hint: &'static str) -> Result<String> {
    let out = output(tool, command)?;
    if !out.status.success() {
        return Err(Error::ToolFailed {
            command: describe(command),
            status: out.status,
            stderr: stderr_tail(&out.stderr),
            hint,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `command` with standard output and error passed through, so its
/// progress shows; a failure is an error carrying `hint`.
pub(crate) fn passthrough(tool: Tool, command: &mut Command, hint: &'static str) -> Result<()> {
    let status = command
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(spawn_error(tool, command))?;
    if !status.success() {
        return Err(Error::ToolFailed {
            command: describe(command),
            status,
            stderr: String::new(),
            hint,
        });
    }
    Ok(())
}

/// Runs `command` with its standard output and error appended to `log`
/// (after a `$ command line` header), and returns how it exited. Only a
/// failure to start it or to write the log is an error.
pub(crate) fn logged(
    tool: Tool,
    command: &mut Command,
    log: &std::path::Path,
) -> Result<std::process::ExitStatus> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(Error::io("open", log))?;
    writeln!(file, "$ {}", describe(command)).map_err(Error::io("write", log))?;
    let stderr = file.try_clone().map_err(Error::io("open", log))?;
    command
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr))
        .status()
        .map_err(spawn_error(tool, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let cmd = command(
            APT_CACHE,
            [
                "search",
                "--names-only",
                r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
                "it's",
            ],
        );
        assert_eq!(
            describe(&cmd),
            r"apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' 'it'\''s'"
        );
    }

    #[test]
    fn missing_tools_name_their_package() {
        let tool = Tool {
            program: "vfrig-no-such-tool",
            package: "vfrig-tools",
        };
        let err = stdout(tool, &mut command(tool, ["-x"]), "").expect_err("absent");
        assert_eq!(
            err.to_string(),
            "`vfrig-no-such-tool` not found; install it with `apt-get install vfrig-tools`"
        );
    }

    #[test]
    fn failures_carry_the_command_status_and_stderr() {
        let sh = Tool {
            program: "sh",
            package: "dash",
        };
        let err = stdout(
            sh,
            &mut command(sh, ["-c", "echo oops >&2; exit 3"]),
            "check it",
        )
        .expect_err("fails");
        assert_eq!(
            err.to_string(),
            "`sh -c 'echo oops >&2; exit 3'` failed (exit status: 3): oops; check it"
        );
        assert_eq!(
            stderr_tail("é".repeat(STDERR_TAIL).as_bytes()).len(),
            STDERR_TAIL
        );
    }

    #[test]
    fn logged_commands_append_a_header_and_both_streams() {
        let scratch = crate::cache::tests::scratch("logged");
        let log = scratch.path().join("build.log");
        let sh = Tool {
            program: "sh",
            package: "dash",
        };
        let ok =
            logged(sh, &mut command(sh, ["-c", "echo out; echo err >&2"]), &log).expect("runs");
        assert!(ok.success());
        let failed = logged(sh, &mut command(sh, ["-c", "exit 2"]), &log).expect("runs");
        assert_eq!(failed.code(), Some(2));
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            "$ sh -c 'echo out; echo err >&2'\nout\nerr\n$ sh -c 'exit 2'\n"
        );
    }
}
