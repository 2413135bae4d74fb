//! Finding QEMU, choosing an accelerator, and building its command line.
//!
//! The command line is built by a pure function ([`command_line`]) so it can
//! be checked without starting anything; [`crate::Vm`] runs it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The command that installs a QEMU new enough for the rig on Debian 12.
pub const INSTALL_QEMU: &str = "printf 'Types: deb\\nURIs: http://deb.debian.org/debian\\nSuites: bookworm-backports\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' > /etc/apt/sources.list.d/backports.sources && apt-get update && apt-get install -y -t bookworm-backports qemu-system-x86";

/// Oldest QEMU the rig works with: `reconnect-ms` on socket chardevs came in
/// 9.2.
const MIN_QEMU: (u32, u32) = (9, 2);

/// Errors finding or probing QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// No QEMU binary.
    #[error("{binary} not found; install QEMU 10 from bookworm-backports:\n    {INSTALL_QEMU}\n(or point VFRIG_QEMU at a qemu-system-x86_64 binary)")]
    Missing {
        /// The binary looked for.
        binary: String,
    },
    /// A QEMU too old for the rig.
    #[error("{binary} is QEMU {version}; the rig needs {}.{} or newer. Install QEMU 10 from bookworm-backports:\n    {INSTALL_QEMU}", MIN_QEMU.0, MIN_QEMU.1)]
    TooOld {
        /// The binary.
        binary: String,
        /// Its version.
        version: String,
    },
    /// `--version` output we do not understand.
    #[error("cannot tell the version of {binary} from `{output}`")]
    Version {
        /// The binary.
        binary: String,
        /// What it printed.
        output: String,
    },
}

/// A QEMU binary that passed the version check.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// Path or name of `qemu-system-x86_64`.
    pub binary: PathBuf,
    /// Its version, e.g. "10.0.2".
    pub version: String,
}

impl Qemu {
    /// Finds `qemu-system-x86_64` (or `$VFRIG_QEMU`) and checks its version.
    pub fn find() -> Result<Qemu, QemuError> {
        let binary: PathBuf = std::env::var_os("VFRIG_QEMU")
            .map(PathBuf::from)
            .unwrap_or_else(|| "qemu-system-x86_64".into());
        Qemu::at(binary)
    }

    /// Checks the QEMU at `binary` (a path or a name looked up in `PATH`).
    pub fn at(binary: PathBuf) -> Result<Qemu, QemuError> {
        let name = binary.display().to_string();
        let out = Command::new(&binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|_| QemuError::Missing {
                binary: name.clone(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version = parse_version(&text).ok_or_else(|| QemuError::Version {
            binary: name.clone(),
            output: text.trim().to_owned(),
        })?;
        let mut nums = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
        if (major, minor) < MIN_QEMU {
            return Err(QemuError::TooOld {
                binary: name,
                version,
            });
        }
        Ok(Qemu { binary, version })
    }
}

/// Extracts "10.0.2" from "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)".
fn parse_version(text: &str) -> Option<String> {
    let rest = text.split("version ").nth(1)?;
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!version.is_empty()).then_some(version)
}

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM if a probe shows it works, else TCG.
    Auto,
    /// Always TCG.
    Tcg,
    /// Always KVM (fails if it does not work).
    Kvm,
}

/// The accelerator a VM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// QEMU's software emulator.
    Tcg,
    /// Hardware virtualisation.
    Kvm,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        })
    }
}

impl AccelChoice {
    /// The choice from `VFRIG_ACCEL` (auto, tcg, kvm), default auto.
    pub fn from_env() -> AccelChoice {
        match std::env::var("VFRIG_ACCEL").as_deref() {
            Ok("tcg") => AccelChoice::Tcg,
            Ok("kvm") => AccelChoice::Kvm,
            _ => AccelChoice::Auto,
        }
    }
}

/// The probe's result, cached per host boot and QEMU version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct ProbeRecord {
    boot_id: String,
    qemu_version: String,
    kvm_works: bool,
    reason: String,
}

/// How long a KVM probe may take before it counts as hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// Resolves `choice` to an accelerator. `Auto` probes KVM once per host boot
/// (the result is cached under `target/vfrig/`) by booting `kernel` without
/// an initramfs until it panics; a hang or a KVM internal error means TCG.
/// The fallback is announced once per process.
pub fn resolve_accel(qemu: &Qemu, choice: AccelChoice, kernel: &Path) -> Accel {
    match choice {
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Auto => {
            static DECIDED: OnceLock<Accel> = OnceLock::new();
            *DECIDED.get_or_init(|| {
                let (works, reason) = kvm_probe_cached(qemu, kernel);
                if works {
                    crate::ui::say("KVM works here; using it");
                    Accel::Kvm
                } else {
                    crate::ui::say(format!("using TCG: {reason}"));
                    Accel::Tcg
                }
            })
        }
    }
}

fn kvm_probe_cached(qemu: &Qemu, kernel: &Path) -> (bool, String) {
    if let Err(err) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return (false, format!("/dev/kvm is not usable ({err})"));
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cache = crate::paths::rig_dir().join("accel-probe.json");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Ok(rec) = serde_json::from_str::<ProbeRecord>(&text) {
            if rec.boot_id == boot_id && rec.qemu_version == qemu.version {
                return (
                    rec.kvm_works,
                    format!("{} (probed earlier this boot)", rec.reason),
                );
            }
        }
    }
    let (kvm_works, reason) = kvm_probe(qemu, kernel);
    let rec = ProbeRecord {
        boot_id,
        qemu_version: qemu.version.clone(),
        kvm_works,
        reason: reason.clone(),
    };
    if let Some(parent) = cache.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Ok(text) = serde_json::to_string(&rec) {
        let _ = std::fs::write(&cache, text);
    }
    (kvm_works, reason)
}

fn kvm_probe(qemu: &Qemu, kernel: &Path) -> (bool, String) {
    let dir = match crate::rundir::SocketDir::create() {
        Ok(dir) => dir,
        Err(err) => return (false, format!("cannot create a probe directory: {err}")),
    };
    let console = dir.path().join("console.log");
    let stderr_path = dir.path().join("stderr.log");
    let Ok(stderr) = std::fs::File::create(&stderr_path) else {
        return (false, "cannot create the probe's log".into());
    };
    let mut cmd = Command::new(&qemu.binary);
    cmd.args([
        "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "256",
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-kernel")
    .arg(kernel)
    .args([
        "-append",
        "console=ttyS0 panic=-1 rdinit=/nonexistent root=/dev/null",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(stderr);
    let (mut child, _reg) = match crate::process::spawn_tied(&mut cmd) {
        Ok(c) => c,
        Err(err) => return (false, format!("cannot start QEMU for the KVM probe: {err}")),
    };
    let start = Instant::now();
    let verdict = loop {
        let err_text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if err_text.contains("KVM internal error") || err_text.contains("emulation failure") {
            break (
                false,
                "KVM reports an internal error (emulation failure) on this host".to_owned(),
            );
        }
        match child.try_wait() {
            Ok(Some(_)) => {
                let log = std::fs::read_to_string(&console).unwrap_or_default();
                break if log.contains("Linux version") {
                    (true, "KVM booted a kernel in the probe".to_owned())
                } else {
                    let first = err_text.lines().next().unwrap_or("no output").to_owned();
                    (
                        false,
                        format!("QEMU with KVM exited without booting: {first}"),
                    )
                };
            }
            Ok(None) => {}
            Err(err) => break (false, format!("cannot wait for the KVM probe: {err}")),
        }
        if start.elapsed() > PROBE_TIMEOUT {
            break (
                false,
                format!("a KVM boot made no progress in {PROBE_TIMEOUT:?}"),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    crate::process::kill_and_reap(&mut child);
    verdict
}

/// Who binds a VF in the guest, which decides how QEMU presents it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VfKind {
    /// vfrig's own driver: two queue pairs (data and mailbox), `mq=on`.
    #[default]
    Driver,
    /// The guest kernel's virtio_net: one queue pair, `mq=off`.
    Kernel,
    /// Like [`VfKind::Kernel`], and the standby of a net_failover pair
    /// (`failover=on`): QEMU hides the primary until the guest acks it.
    Standby,
}

impl VfKind {
    /// Queue pairs of its vhost-user netdev.
    pub fn queue_pairs(self) -> u16 {
        match self {
            VfKind::Driver => VF_QUEUE_PAIRS,
            VfKind::Kernel | VfKind::Standby => 1,
        }
    }
}

/// A VF plugged in at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfPlug {
    /// VF number.
    pub vf: u16,
    /// The daemon's vhost-user socket for it.
    pub socket: PathBuf,
    /// Who binds it.
    pub kind: VfKind,
}

/// The emulated PCI NIC of a failover pair: the "passthrough VF" a cloud
/// host offers and revokes, paired with a standby VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// QEMU device model (`e1000e`).
    pub model: String,
    /// The standby VF it pairs with (same MAC, `failover_pair_id`).
    pub standby: u16,
    /// Its root port, `rpN`.
    pub root_port: u16,
}

/// QEMU's id of the failover primary.
pub const PRIMARY_ID: &str = "primary";

/// The netdev behind the failover primary: a hub port that goes nowhere
/// (the scenario is about the guest's view, not the primary's frames).
pub const PRIMARY_NETDEV: &str = "primaryn";

impl Primary {
    /// Its `-device` properties, without the driver name (shared by the
    /// command line and QMP `device_add`).
    pub fn device_props(&self) -> Vec<(String, String)> {
        let (_, _, standby_id) = vf_ids(self.standby);
        vec![
            ("id".into(), PRIMARY_ID.into()),
            ("netdev".into(), PRIMARY_NETDEV.into()),
            ("bus".into(), format!("rp{}", self.root_port)),
            ("failover_pair_id".into(), standby_id),
            ("mac".into(), vf_mac(self.standby)),
            ("romfile".into(), String::new()),
        ]
    }
}

/// Everything the QEMU command line depends on.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// Accelerator.
    pub accel: Accel,
    /// vCPUs.
    pub cpus: u32,
    /// Guest RAM in MiB (shared memfd, as vhost-user needs).
    pub memory_mib: u32,
    /// bzImage.
    pub kernel: PathBuf,
    /// initramfs.
    pub initramfs: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Serial console (ttyS0) capture file.
    pub console_log: PathBuf,
    /// Unix socket QEMU connects its QMP monitor to (we listen).
    pub qmp_socket: PathBuf,
    /// Unix socket QEMU connects the agent's virtio-console port to (we
    /// listen).
    pub agent_socket: PathBuf,
    /// Put a second UART (ttyS1) on QEMU's stdio, for an interactive shell.
    pub shell_on_stdio: bool,
    /// PCIe root ports `rp0..rpN`: VF N always goes to `rpN`, at boot or
    /// hot-plugged later.
    pub root_ports: u16,
    /// VFs present at boot.
    pub vfs: Vec<VfPlug>,
    /// A failover primary, present at boot.
    pub primary: Option<Primary>,
}

/// Ids QEMU knows a VF by.
pub fn vf_ids(vf: u16) -> (String, String, String) {
    (format!("vfc{vf}"), format!("vfn{vf}"), format!("vf{vf}"))
}

/// The MAC QEMU shows in the VF's virtio config space.
pub fn vf_mac(vf: u16) -> String {
    format!("02:00:00:00:{:02x}:{:02x}", 0x10 + (vf >> 8), vf & 0xff)
}

/// The `-device` properties of a VF's virtio-net function, without the
/// driver name (shared by the command line and QMP hotplug).
pub fn vf_device_props(vf: u16, kind: VfKind) -> Vec<(String, String)> {
    let (_, netdev, id) = vf_ids(vf);
    let mq = if kind == VfKind::Driver { "on" } else { "off" };
    let mut props: Vec<(String, String)> = vec![
        ("id".into(), id),
        ("netdev".into(), netdev),
        ("bus".into(), format!("rp{vf}")),
        ("mq".into(), mq.into()),
        ("vectors".into(), "6".into()),
        ("disable-legacy".into(), "on".into()),
        ("mac".into(), vf_mac(vf)),
        // No iPXE option ROM: nothing boots from a VF, and SeaBIOS would
        // spend boot time initialising it under TCG.
        ("romfile".into(), String::new()),
    ];
    if kind == VfKind::Standby {
        props.push(("failover".into(), "on".into()));
    }
    props
}

/// Queue pairs per VF: data and mailbox.
pub const VF_QUEUE_PAIRS: u16 = 2;

/// Builds QEMU's arguments (without the binary).
pub fn command_line(spec: &MachineSpec) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    match spec.accel {
        Accel::Tcg => push(&[
            "-machine",
            "q35",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
        ]),
        Accel::Kvm => push(&["-machine", "q35", "-accel", "kvm", "-cpu", "host"]),
    }
    let mem = format!("{}M", spec.memory_mib);
    let cpus = spec.cpus.to_string();
    push(&["-smp", &cpus, "-m", &mem]);
    let memfd = format!("memory-backend-memfd,id=mem,size={mem},share=on");
    push(&["-object", &memfd, "-numa", "node,memdev=mem"]);
    let kernel = spec.kernel.display().to_string();
    let initrd = spec.initramfs.display().to_string();
    push(&[
        "-kernel",
        &kernel,
        "-initrd",
        &initrd,
        "-append",
        &spec.cmdline,
    ]);
    let console = format!("file,id=con,path={}", spec.console_log.display());
    push(&["-chardev", &console, "-serial", "chardev:con"]);
    if spec.shell_on_stdio {
        push(&[
            "-chardev",
            "stdio,id=shell,signal=off",
            "-device",
            "isa-serial,chardev=shell",
        ]);
    }
    let qmp = format!("socket,id=qmp,path={}", spec.qmp_socket.display());
    push(&["-chardev", &qmp, "-mon", "chardev=qmp,mode=control"]);
    let agent = format!("socket,id=agent,path={}", spec.agent_socket.display());
    let port = format!(
        "virtserialport,chardev=agent,name={}",
        vfrig_agent::proto::CHANNEL_NAME
    );
    push(&[
        "-device",
        "virtio-serial-pci,id=vser",
        "-chardev",
        &agent,
        "-device",
        &port,
    ]);
    for n in 0..spec.root_ports {
        let rp = format!("pcie-root-port,id=rp{n},chassis={}", n + 1);
        push(&["-device", &rp]);
    }
    for plug in &spec.vfs {
        let (chardev, netdev, _) = vf_ids(plug.vf);
        let c = format!(
            "socket,id={chardev},path={},reconnect-ms=200",
            plug.socket.display()
        );
        let n = format!(
            "vhost-user,id={netdev},chardev={chardev},queues={}",
            plug.kind.queue_pairs()
        );
        let d = format!(
            "virtio-net-pci,{}",
            joined(vf_device_props(plug.vf, plug.kind))
        );
        push(&["-chardev", &c, "-netdev", &n, "-device", &d]);
    }
    if let Some(primary) = &spec.primary {
        let n = format!("hubport,id={PRIMARY_NETDEV},hubid=0");
        let d = format!("{},{}", primary.model, joined(primary.device_props()));
        push(&["-netdev", &n, "-device", &d]);
    }
    a
}

fn joined(props: Vec<(String, String)>) -> String {
    let props: Vec<String> = props.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    props.join(",")
}

/// Renders arguments as a shell command line (for the artifacts and for
/// people re-running it by hand).
pub fn shell_line(binary: &Path, args: &[String]) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=,.:/+@%".contains(c))
        {
            s.to_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut line = quote(&binary.display().to_string());
    for arg in args {
        line.push_str(" \\\n    ");
        line.push_str(&quote(arg));
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MachineSpec {
        MachineSpec {
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            kernel: "/img/vmlinuz".into(),
            initramfs: "/img/initramfs.cpio.gz".into(),
            cmdline: "console=ttyS0 panic=-1".into(),
            console_log: "/run/console.log".into(),
            qmp_socket: "/s/qmp.sock".into(),
            agent_socket: "/s/agent.sock".into(),
            shell_on_stdio: false,
            root_ports: 2,
            vfs: vec![VfPlug {
                vf: 0,
                socket: "/pf/vf0.sock".into(),
                kind: VfKind::Driver,
            }],
            primary: None,
        }
    }

    fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn vfs_are_vhost_user_net_devices_on_their_root_port() {
        let args = command_line(&spec());
        assert!(has_pair(
            &args,
            "-chardev",
            "socket,id=vfc0,path=/pf/vf0.sock,reconnect-ms=200"
        ));
        assert!(has_pair(
            &args,
            "-netdev",
            "vhost-user,id=vfn0,chardev=vfc0,queues=2"
        ));
        assert!(has_pair(
            &args,
            "-device",
            "virtio-net-pci,id=vf0,netdev=vfn0,bus=rp0,mq=on,vectors=6,disable-legacy=on,mac=02:00:00:00:10:00,romfile="
        ));
        assert!(has_pair(
            &args,
            "-device",
            "pcie-root-port,id=rp1,chassis=2"
        ));
        assert!(!args.iter().any(|a| a.contains("rp2")));
    }

    #[test]
    fn a_failover_pair_is_a_kernel_standby_and_an_emulated_primary() {
        let mut spec = spec();
        spec.root_ports = 2;
        spec.vfs[0].kind = VfKind::Standby;
        spec.primary = Some(Primary {
            model: "e1000e".into(),
            standby: 0,
            root_port: 1,
        });
        let args = command_line(&spec);
        assert!(has_pair(
            &args,
            "-netdev",
            "vhost-user,id=vfn0,chardev=vfc0,queues=1"
        ));
        assert!(has_pair(
            &args,
            "-device",
            "virtio-net-pci,id=vf0,netdev=vfn0,bus=rp0,mq=off,vectors=6,disable-legacy=on,mac=02:00:00:00:10:00,romfile=,failover=on"
        ));
        assert!(has_pair(&args, "-netdev", "hubport,id=primaryn,hubid=0"));
        assert!(has_pair(
            &args,
            "-device",
            "e1000e,id=primary,netdev=primaryn,bus=rp1,failover_pair_id=vf0,mac=02:00:00:00:10:00,romfile="
        ));
    }

    #[test]
    fn memory_is_shared_memfd_and_accel_is_explicit() {
        let args = command_line(&spec());
        assert!(has_pair(
            &args,
            "-object",
            "memory-backend-memfd,id=mem,size=1024M,share=on"
        ));
        assert!(has_pair(&args, "-numa", "node,memdev=mem"));
        assert!(has_pair(&args, "-accel", "tcg,thread=multi"));
        let kvm = command_line(&MachineSpec {
            accel: Accel::Kvm,
            ..spec()
        });
        assert!(has_pair(&kvm, "-accel", "kvm"));
        assert!(has_pair(&kvm, "-cpu", "host"));
    }

    #[test]
    fn agent_channel_is_a_named_virtio_console_port() {
        let args = command_line(&spec());
        assert!(has_pair(
            &args,
            "-chardev",
            "socket,id=agent,path=/s/agent.sock"
        ));
        assert!(has_pair(
            &args,
            "-device",
            "virtserialport,chardev=agent,name=org.vfrig.agent.0"
        ));
        assert!(has_pair(&args, "-serial", "chardev:con"));
        assert!(!args.iter().any(|a| a.contains("stdio")));
        let shell = command_line(&MachineSpec {
            shell_on_stdio: true,
            ..spec()
        });
        assert!(has_pair(&shell, "-device", "isa-serial,chardev=shell"));
    }

    #[test]
    fn a_missing_qemu_names_the_install_command() {
        let err = Qemu::at("/nonexistent/qemu-system-x86_64".into()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/nonexistent/qemu-system-x86_64 not found"),
            "{text}"
        );
        assert!(
            text.contains("apt-get install -y -t bookworm-backports qemu-system-x86"),
            "{text}"
        );
    }

    #[test]
    fn version_parsing() {
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)\nCopyright"),
            Some("10.0.2".into())
        );
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn shell_line_quotes_what_needs_it() {
        let line = shell_line(
            Path::new("qemu"),
            &["-append".into(), "console=ttyS0 panic=-1".into()],
        );
        assert_eq!(
            line,
            "qemu \\\n    -append \\\n    'console=ttyS0 panic=-1'\n"
        );
    }
}
