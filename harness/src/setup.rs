//! What `cargo rig test` and `cargo rig demo` set up before they start on a
//! fresh machine: QEMU 10 from bookworm-backports and the host tools the
//! image builder copies (installed with apt when running as root, otherwise
//! named with the command to run), and cargo-nextest from crates.io.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::qemu::{Qemu, INSTALL_QEMU};
use crate::ui::say;

/// Host packages the image builder needs besides QEMU: `ip` (iproute2) and
/// dash are copied into the image, `unshare` (util-linux) runs host tests.
const HOST_PACKAGES: [&str; 3] = ["iproute2", "dash", "util-linux"];

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn apt_install(args: &[&str]) -> anyhow::Result<()> {
    run(
        &format!("apt-get install {}", args.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null()),
    )
}

/// Makes sure QEMU 10 and the image builder's host tools are there.
pub fn host() -> anyhow::Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    let qemu = Qemu::find();
    if missing.is_empty() && qemu.is_ok() {
        return Ok(());
    }
    if !is_root() {
        let mut msg = String::from("missing system packages; as root, run:\n");
        if let Err(err) = &qemu {
            msg.push_str(&format!("    {INSTALL_QEMU}\n    ({err})\n"));
        }
        if !missing.is_empty() {
            msg.push_str(&format!("    apt-get install -y {}\n", missing.join(" ")));
        }
        bail!(msg);
    }
    if qemu.is_err() {
        say("installing QEMU 10 from bookworm-backports (apt)");
        let listed = ["/etc/apt/sources.list", "/etc/apt/sources.list.d"]
            .iter()
            .any(|p| mentions_backports(Path::new(p)));
        if !listed {
            std::fs::write(
                "/etc/apt/sources.list.d/backports.sources",
                "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            )
            .context("cannot add the bookworm-backports apt source")?;
        }
    }
    run(
        "apt-get update",
        Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null()),
    )?;
    if qemu.is_err() {
        apt_install(&["-t", "bookworm-backports", "qemu-system-x86"])?;
        Qemu::find()?;
    }
    if !missing.is_empty() {
        say(format!("installing {} (apt)", missing.join(", ")));
        apt_install(&missing)?;
    }
    Ok(())
}

fn mentions_backports(path: &Path) -> bool {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    } else {
        vec![path.to_owned()]
    };
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("bookworm-backports"))
        })
    })
}

/// Makes sure `cargo nextest` works, installing it from crates.io if not.
pub fn nextest() -> anyhow::Result<()> {
    let present = Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    say("installing cargo-nextest from crates.io (cargo install --locked cargo-nextest)");
    run(
        "cargo install --locked cargo-nextest",
        Command::new("cargo").args(["install", "--locked", "cargo-nextest"]),
    )
}
