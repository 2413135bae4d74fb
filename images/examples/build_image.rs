//! Builds (or finds in the cache) an image and prints where it is.
//!
//! ```text
//! cargo run --release -p vfrig-images --example build_image -- \
//!     target/vfrig --agent target/vfrig/guest/x86_64-unknown-linux-gnu/release/vfrig-agent
//! cargo run --release -p vfrig-images --example build_image -- target/vfrig --bare
//! cargo run --release -p vfrig-images --example build_image -- target/vfrig \
//!     --kernel ~/linux/arch/x86/boot/bzImage --modules ~/linux --agent AGENT
//! cargo run --release -p vfrig-images --example build_image -- target/vfrig \
//!     --mutant bond-rr-count-zero --agent AGENT
//! ```
//!
//! Options: `--flavour cloud|generic`, `--kernel BZIMAGE`, `--modules DIR`,
//! `--module NAME` (repeatable; replaces the flavour's defaults),
//! `--mutant NAME` (repeatable; a kernel mutant in place of its stock
//! module), `--agent PATH` (installed as `vfrig-agent` and `/init`), `--bare`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use vfrig_images::{Builder, Flavour, ImageSpec};

const USAGE: &str = "usage: build_image CACHE_ROOT [--flavour cloud|generic] [--kernel BZIMAGE] \
                     [--modules DIR] [--module NAME]... [--mutant NAME]... [--agent PATH] [--bare]";

#[allow(clippy::print_stderr, clippy::print_stdout)]
fn main() -> ExitCode {
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let mut args = std::env::args_os().skip(1);
        let cache_root = PathBuf::from(args.next().ok_or(USAGE)?);
        let mut spec = ImageSpec::new(Flavour::Cloud);
        let mut modules = Vec::new();
        let mut bare = false;
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(USAGE);
            match arg.to_str().ok_or(USAGE)? {
                "--flavour" => {
                    let flavour: Flavour = value()?.to_str().ok_or(USAGE)?.parse()?;
                    spec.flavour = flavour;
                    spec.modules_wanted = flavour.default_modules();
                }
                "--kernel" => spec.kernel = Some(value()?.into()),
                "--modules" => spec.modules = Some(value()?.into()),
                "--module" => modules.push(value()?.to_string_lossy().into_owned()),
                "--mutant" => spec = spec.with_mutant(value()?.to_string_lossy()),
                "--agent" => spec = spec.with_binary("vfrig-agent", PathBuf::from(value()?)),
                "--bare" => bare = true,
                _ => return Err(USAGE.into()),
            }
        }
        if !modules.is_empty() {
            spec.modules_wanted = modules;
        }
        let started = Instant::now();
        let builder = Builder::new(cache_root).progress(|step| eprintln!("build_image: {step}"));
        let image = if bare {
            builder.bare(&spec)?
        } else {
            builder.build(&spec)?
        };
        eprintln!(
            "build_image: {} in {:.2} s",
            if image.cache_hit {
                "cache hit"
            } else {
                "built"
            },
            started.elapsed().as_secs_f64()
        );
        println!("kernel    {}", image.kernel.display());
        println!("initramfs {}", image.initramfs.display());
        println!("release   {}", image.manifest.kernel.release);
        println!("bytes     {}", image.manifest.initramfs_bytes);
        for module in &image.manifest.modules {
            match &module.mutant {
                Some(mutant) => println!("module    {} (mutant {mutant})", module.path_in_image),
                None => println!("module    {}", module.path_in_image),
            }
        }
        for mutant in &image.manifest.mutants {
            println!("mutant    {} key {}", mutant.name, mutant.key);
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("build_image: {err}");
            ExitCode::FAILURE
        }
    }
}
