//! Writes the smallest useful initramfs: busybox and an `/init` that prints a
//! line and powers the machine off. Handy to check a kernel boots at all.
//!
//! ```text
//! cargo run -p vfrig-images --example minimal_initramfs -- /bin/busybox out.cpio.gz
//! qemu-system-x86_64 -kernel vmlinuz -initrd out.cpio.gz -append console=ttyS0 \
//!     -nographic -no-reboot
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use vfrig_images::Initramfs;

const INIT: &str = "#!/bin/sh\n\
/bin/busybox mount -t proc proc /proc\n\
echo \"vfrig-initramfs: init running on $(/bin/busybox uname -r)\"\n\
/bin/busybox poweroff -f\n";

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [busybox, out] = args.as_slice() else {
        eprintln!("usage: minimal_initramfs BUSYBOX OUT.cpio.gz");
        return ExitCode::from(2);
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let mut fs = Initramfs::new();
        fs.file("bin/busybox", 0o755, std::fs::read(busybox)?)?
            .symlink("bin/sh", "busybox")?
            .file("init", 0o755, INIT)?
            .char_dev("dev/console", 0o600, 5, 1)?
            .dir("proc", 0o555)?;
        let file = std::fs::File::create(out)?;
        fs.write_gzip(file)?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("minimal_initramfs: {err}");
            ExitCode::FAILURE
        }
    }
}
