//! Building the rig's own guest binaries as static executables.
//!
//! The guest has no Rust toolchain and only the libraries the image copies
//! for iproute2, so guest binaries are linked statically
//! (`-C target-feature=+crt-static` for `x86_64-unknown-linux-gnu`), and
//! [`ensure_static`] checks the result has no dynamic loader.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use object::read::elf::{ElfFile64, ProgramHeader};
use object::Endianness;

use crate::command::describe;
use crate::{Error, Result};

/// The target guest binaries are built for.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds `bin` of `package` in the cargo workspace at `workspace`, linked
/// statically, into `target_dir`, and returns the executable's path
/// (`target_dir/x86_64-unknown-linux-gnu/release/<bin>`).
///
/// Runs `$CARGO` (or `cargo`) with `RUSTFLAGS=-C target-feature=+crt-static`;
/// cargo's own progress goes to this process's standard error. Use a
/// `target_dir` of its own: the different flags would otherwise rebuild the
/// workspace's normal artefacts each time.
pub fn build_guest_binary(
    workspace: &Path,
    package: &str,
    bin: &str,
    target_dir: &Path,
    progress: impl Fn(&str),
) -> Result<PathBuf> {
    // Static, and without a symbol table: the initramfs is unpacked at every
    // boot, so its size is boot time.
    const RUSTFLAGS: &str = "-C target-feature=+crt-static -C strip=symbols";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args([
            "build",
            "--release",
            "-p",
            package,
            "--bin",
            bin,
            "--target",
            GUEST_TARGET,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace)
        .env("RUSTFLAGS", RUSTFLAGS)
        // It would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let command = format!("RUSTFLAGS='{RUSTFLAGS}' {}", describe(&build));
    progress(&format!(
        "building {bin} ({package}) for the guest: {command}"
    ));
    let status = build.status().map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    if !status.success() {
        return Err(Error::ToolFailed {
            command,
            status,
            stderr: String::new(),
            hint: "see cargo's output above; if the standard library for \
                   x86_64-unknown-linux-gnu is missing, run `rustup target add \
                   x86_64-unknown-linux-gnu`, and static linking needs glibc's static \
                   libraries (`apt-get install libc6-dev`)",
        });
    }
    let path = target_dir.join(GUEST_TARGET).join("release").join(bin);
    ensure_static(&path)?;
    Ok(path)
}

/// Checks that `path` is a 64-bit ELF executable without a PT_INTERP program
/// header, i.e. that it runs without a dynamic loader.
pub fn ensure_static(path: &Path) -> Result<()> {
    let data = std::fs::read(path).map_err(Error::io("read", path))?;
    match has_interpreter(&data) {
        Ok(false) => Ok(()),
        Ok(true) => Err(Error::NotStatic {
            path: path.to_owned(),
        }),
        Err(reason) => Err(Error::BadElf {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// Whether an ELF file names a program interpreter.
fn has_interpreter(data: &[u8]) -> std::result::Result<bool, String> {
    let file =
        ElfFile64::<Endianness>::parse(data).map_err(|e| format!("not a 64-bit ELF file: {e}"))?;
    let endian = file.endian();
    Ok(file
        .elf_program_headers()
        .iter()
        .any(|header| header.p_type(endian) == object::elf::PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::tests::tiny_elf;

    #[test]
    fn an_interpreter_header_means_dynamic() {
        let check = |headers: &[u32], want: bool| {
            assert_eq!(
                has_interpreter(&tiny_elf(&[(".text", b"\xc3")], headers)),
                Ok(want)
            );
        };
        check(&[1, 2], false); // PT_LOAD, PT_DYNAMIC (static-pie)
        check(&[1, 3], true); // PT_LOAD, PT_INTERP
        check(&[], false);
        assert!(has_interpreter(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn host_programs_are_dynamic_and_scripts_are_not_elf() {
        // Debian's /bin/sh is dash, linked against glibc.
        let err = ensure_static(Path::new("/bin/sh")).expect_err("dynamic");
        assert!(matches!(err, Error::NotStatic { .. }), "{err}");
        let scratch = crate::cache::tests::scratch("elf");
        let script = scratch.path().join("script");
        std::fs::write(&script, "#!/bin/sh\n").expect("written");
        assert!(matches!(ensure_static(&script), Err(Error::BadElf { .. })));
    }
}
