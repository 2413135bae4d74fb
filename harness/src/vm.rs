//! A QEMU VM with the guest agent running and the PF's VFs plugged in.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vfrig_agent::proto::Ready;
use vfrig_device::daemon::Daemon;

use crate::agent::{AgentClient, AgentError};
use crate::process::{kill_and_reap, spawn_tied, Registration};
use crate::qemu::{
    self, Accel, AccelChoice, MachineSpec, Primary, Qemu, QemuError, VfKind, VfPlug,
};
use crate::qmp::{Qmp, QmpError};
use crate::rundir::{RunDir, SocketDir};
use crate::splat::{self, Splat};

/// Lines of the console shown in boot errors.
const CONSOLE_TAIL: usize = 25;

/// How to start a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Names the run directory.
    pub label: String,
    /// bzImage to boot.
    pub kernel: PathBuf,
    /// initramfs with the agent as `/init`.
    pub initramfs: PathBuf,
    /// Accelerator choice.
    pub accel: AccelChoice,
    /// vCPUs (2 by default: races need two CPUs).
    pub cpus: u32,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// VFs plugged at boot; the others can be hot-plugged later.
    pub vfs_at_boot: Vec<u16>,
    /// Who binds each VF (VFs not listed: vfrig's driver).
    pub vf_kinds: BTreeMap<u16, VfKind>,
    /// The device model of a failover primary (`e1000e`), paired with the
    /// VF of kind [`VfKind::Standby`].
    pub failover_primary: Option<String>,
    /// Extra kernel command line words.
    pub extra_cmdline: Vec<String>,
    /// How long boot may take before the agent must be ready.
    pub boot_timeout: Duration,
    /// Put an extra UART (ttyS1 in the guest) on this process's terminal.
    pub shell_on_stdio: bool,
}

impl VmConfig {
    /// A configuration with the defaults: TCG or probed KVM, 2 vCPUs, 1 GiB,
    /// every VF at boot, a 180 s boot timeout (scaled by
    /// `VFRIG_TIMEOUT_SCALE`).
    pub fn new(label: &str, kernel: impl Into<PathBuf>, initramfs: impl Into<PathBuf>) -> VmConfig {
        VmConfig {
            label: label.to_owned(),
            kernel: kernel.into(),
            initramfs: initramfs.into(),
            accel: AccelChoice::from_env(),
            cpus: 2,
            memory_mib: 1024,
            vfs_at_boot: Vec::new(),
            vf_kinds: BTreeMap::new(),
            failover_primary: None,
            extra_cmdline: Vec::new(),
            boot_timeout: scaled(Duration::from_secs(180)),
            shell_on_stdio: false,
        }
    }
}

/// Multiplies a timeout by `VFRIG_TIMEOUT_SCALE` (a float, default 1) for
/// slow machines.
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var("VFRIG_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    d.mul_f64(scale)
}

/// The kernel command line the rig boots with. `hugepages=16` reserves the
/// 2 MiB pages the guest driver uses as its DMA arena.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 rdinit=/init hugepages=16";

/// What went wrong starting or running a VM. Variants that concern a
/// running VM name its artifact directory.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// QEMU missing or too old.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// A host-side operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What we tried.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited before the agent was ready.
    #[error("QEMU exited ({status}) before the guest agent was ready.\nQEMU said:\n{qemu_log}\nconsole tail:\n{console_tail}\nartifacts: {}", run_dir.display())]
    QemuExited {
        /// Its exit status.
        status: ExitStatus,
        /// QEMU's own output.
        qemu_log: String,
        /// The last console lines.
        console_tail: String,
        /// Artifact directory.
        run_dir: PathBuf,
    },
    /// The agent did not become ready in time.
    #[error("the guest agent was not ready after {timeout:?} (QEMU still running).\nconsole tail:\n{console_tail}\nartifacts: {}", run_dir.display())]
    BootTimeout {
        /// The boot timeout.
        timeout: Duration,
        /// The last console lines.
        console_tail: String,
        /// Artifact directory.
        run_dir: PathBuf,
    },
    /// Modules the image lists failed to load.
    #[error("the guest could not load kernel modules: {failures}\nartifacts: {}", run_dir.display())]
    Modules {
        /// "name: error" list.
        failures: String,
        /// Artifact directory.
        run_dir: PathBuf,
    },
    /// The kernel printed a splat.
    #[error("the guest kernel reported {} problem(s):\n{}\nartifacts: {}", splats.len(), splats.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("\n\n"), run_dir.display())]
    Splat {
        /// The reports.
        splats: Vec<Splat>,
        /// Artifact directory.
        run_dir: PathBuf,
    },
    /// An agent request failed.
    #[error("{source}\nartifacts: {}", run_dir.display())]
    Agent {
        /// The failure.
        #[source]
        source: AgentError,
        /// Artifact directory.
        run_dir: PathBuf,
    },
    /// A QMP command failed.
    #[error("{source}\nartifacts: {}", run_dir.display())]
    Qmp {
        /// The failure.
        #[source]
        source: QmpError,
        /// Artifact directory.
        run_dir: PathBuf,
    },
    /// The PF daemon did not start.
    #[error("cannot start the PF daemon: {0}")]
    Daemon(#[from] vfrig_device::daemon::DaemonError),
    /// The VF is not served by the daemon.
    #[error("VF {vf} does not exist: the daemon serves {vfs} VF(s)")]
    NoSuchVf {
        /// The VF asked for.
        vf: u16,
        /// How many there are.
        vfs: u16,
    },
    /// A failover primary was asked for without a standby VF.
    #[error("a failover primary needs a VF of kind standby to pair with")]
    NoStandby,
    /// The machine has no failover primary.
    #[error("this VM has no failover primary (the scenario needs a [failover] table)")]
    NoPrimary,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// How boot went.
#[derive(Debug, Clone)]
pub struct BootReport {
    /// Accelerator used.
    pub accel: Accel,
    /// From spawning QEMU to the agent's ready message.
    pub ready_after: Duration,
    /// The agent's start-up report (kernel release, guest uptime, modules).
    pub ready: Ready,
}

/// A running VM. Dropping it kills QEMU and removes its sockets; call
/// [`Vm::shutdown`] for an orderly power-off that also checks the console
/// for kernel splats.
///
/// QEMU is tied to the thread that started the VM (it gets SIGKILL if that
/// thread exits), so keep a `Vm` on that thread.
#[derive(Debug)]
pub struct Vm {
    agent: AgentClient,
    qmp: Mutex<Qmp>,
    child: Child,
    run_dir: RunDir,
    vf_sockets: Vec<PathBuf>,
    vf_kinds: BTreeMap<u16, VfKind>,
    primary: Option<Primary>,
    boot: BootReport,
    console: PathBuf,
    _registration: Registration,
    _sockets: SocketDir,
}

fn accept_from(
    listener: &UnixListener,
    child: &mut Child,
    what: &str,
    timeout: Duration,
) -> Result<UnixStream, Result<ExitStatus, std::io::Error>> {
    listener.set_nonblocking(true).map_err(Err)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).map_err(Err)?;
                return Ok(stream);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(Err(err)),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Ok(status));
        }
        if Instant::now() > deadline {
            return Err(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("QEMU did not connect its {what} socket within {timeout:?}"),
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    if out.is_empty() {
        out = "(empty)".into();
    }
    out
}

impl Vm {
    /// Starts QEMU with the VFs of `daemon` listed in `config.vfs_at_boot`
    /// and waits for the guest agent.
    pub fn start(config: &VmConfig, daemon: &Daemon) -> Result<Vm, VmError> {
        crate::process::install_signal_handlers();
        let qemu = Qemu::find()?;
        let accel = qemu::resolve_accel(&qemu, config.accel, &config.kernel);
        let run_dir = RunDir::create(&config.label).map_err(io("create the run directory"))?;
        let sockets = SocketDir::create().map_err(io("create a socket directory"))?;
        let qmp_path = sockets.path().join("qmp.sock");
        let agent_path = sockets.path().join("agent.sock");
        let qmp_listener =
            UnixListener::bind(&qmp_path).map_err(io(format!("bind {}", qmp_path.display())))?;
        let agent_listener = UnixListener::bind(&agent_path)
            .map_err(io(format!("bind {}", agent_path.display())))?;

        let vfs = daemon.vfs();
        let vf_sockets: Vec<PathBuf> = (0..vfs).map(|vf| daemon.vf_socket(vf)).collect();
        let mut plugs = Vec::new();
        for &vf in &config.vfs_at_boot {
            let socket = vf_sockets
                .get(usize::from(vf))
                .ok_or(VmError::NoSuchVf { vf, vfs })?;
            plugs.push(VfPlug {
                vf,
                socket: socket.clone(),
                kind: config.vf_kinds.get(&vf).copied().unwrap_or_default(),
            });
        }
        let primary = match &config.failover_primary {
            None => None,
            Some(model) => {
                let standby = config
                    .vf_kinds
                    .iter()
                    .find(|(_, kind)| **kind == VfKind::Standby)
                    .map(|(vf, _)| *vf)
                    .ok_or(VmError::NoStandby)?;
                Some(Primary {
                    model: model.clone(),
                    standby,
                    root_port: vfs,
                })
            }
        };
        let mut cmdline = BASE_CMDLINE.to_owned();
        for word in &config.extra_cmdline {
            cmdline.push(' ');
            cmdline.push_str(word);
        }
        let console = run_dir.file("console.log");
        let spec = MachineSpec {
            accel,
            cpus: config.cpus,
            memory_mib: config.memory_mib,
            kernel: config.kernel.clone(),
            initramfs: config.initramfs.clone(),
            cmdline,
            console_log: console.clone(),
            qmp_socket: qmp_path,
            agent_socket: agent_path,
            shell_on_stdio: config.shell_on_stdio,
            root_ports: vfs + u16::from(primary.is_some()),
            vfs: plugs,
            primary: primary.clone(),
        };
        let args = qemu::command_line(&spec);
        std::fs::write(
            run_dir.file("qemu.cmdline"),
            qemu::shell_line(&qemu.binary, &args),
        )
        .map_err(io("write qemu.cmdline"))?;
        let qemu_log_path = run_dir.file("qemu.log");
        let qemu_log = File::create(&qemu_log_path).map_err(io("create qemu.log"))?;
        let mut cmd = Command::new(&qemu.binary);
        cmd.args(&args);
        if config.shell_on_stdio {
            cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
        } else {
            cmd.stdin(Stdio::null())
                .stdout(qemu_log.try_clone().map_err(io("open qemu.log"))?);
        }
        cmd.stderr(qemu_log);
        let started = Instant::now();
        let (mut child, registration) = spawn_tied(&mut cmd).map_err(io(format!(
            "start {} (see {})",
            qemu.binary.display(),
            run_dir.path().display()
        )))?;

        // Reaps QEMU and describes how it ended.
        let exited = |child: &mut Child, status: ExitStatus| {
            kill_and_reap(child);
            VmError::QemuExited {
                status,
                qemu_log: tail(&qemu_log_path, CONSOLE_TAIL),
                console_tail: tail(&console, CONSOLE_TAIL),
                run_dir: run_dir.path().to_path_buf(),
            }
        };
        let connect_timeout = scaled(Duration::from_secs(30));
        let qmp_stream = match accept_from(&qmp_listener, &mut child, "QMP", connect_timeout) {
            Ok(s) => s,
            Err(Ok(status)) => return Err(exited(&mut child, status)),
            Err(Err(err)) => {
                kill_and_reap(&mut child);
                return Err(io("connect to QEMU's QMP socket")(err));
            }
        };
        let agent_stream = match accept_from(&agent_listener, &mut child, "agent", connect_timeout)
        {
            Ok(s) => s,
            Err(Ok(status)) => return Err(exited(&mut child, status)),
            Err(Err(err)) => {
                kill_and_reap(&mut child);
                return Err(io("connect to QEMU's agent socket")(err));
            }
        };
        let qmp = match Qmp::handshake(qmp_stream, &run_dir.file("qmp.log")) {
            Ok(q) => q,
            Err(source) => {
                kill_and_reap(&mut child);
                return Err(VmError::Qmp {
                    source,
                    run_dir: run_dir.path().to_path_buf(),
                });
            }
        };
        let agent = match AgentClient::new(agent_stream, &run_dir.file("agent.log")) {
            Ok(a) => a,
            Err(err) => {
                kill_and_reap(&mut child);
                return Err(io("start the agent reader")(err));
            }
        };
        let waited = agent.wait_ready(config.boot_timeout, || match child.try_wait() {
            Ok(Some(status)) => Err(status),
            _ => Ok(()),
        });
        let ready = match waited {
            Ok(Ok(ready)) => ready,
            Ok(Err(AgentError::Timeout { timeout, .. })) => {
                kill_and_reap(&mut child);
                return Err(VmError::BootTimeout {
                    timeout,
                    console_tail: tail(&console, CONSOLE_TAIL),
                    run_dir: run_dir.path().to_path_buf(),
                });
            }
            Ok(Err(_closed)) => {
                // The channel closed: QEMU is going away; report its exit.
                let status = child.wait().map_err(io("wait for QEMU"))?;
                return Err(exited(&mut child, status));
            }
            Err(status) => return Err(exited(&mut child, status)),
        };
        let ready_after = started.elapsed();
        let failures: Vec<String> = ready
            .modules
            .iter()
            .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.name)))
            .collect();
        if !failures.is_empty() {
            kill_and_reap(&mut child);
            return Err(VmError::Modules {
                failures: failures.join("; "),
                run_dir: run_dir.path().to_path_buf(),
            });
        }
        Ok(Vm {
            agent,
            qmp: Mutex::new(qmp),
            child,
            run_dir,
            vf_sockets,
            vf_kinds: config.vf_kinds.clone(),
            primary,
            boot: BootReport {
                accel,
                ready_after,
                ready,
            },
            console,
            _registration: registration,
            _sockets: sockets,
        })
    }

    /// The guest agent.
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    /// How boot went.
    pub fn boot(&self) -> &BootReport {
        &self.boot
    }

    /// This run's artifact directory.
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// The directory holding the QMP and agent sockets (removed on drop).
    pub fn socket_dir(&self) -> &Path {
        self._sockets.path()
    }

    /// QEMU's process id.
    pub fn qemu_pid(&self) -> u32 {
        self.child.id()
    }

    /// The console log so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Kernel splats on the console so far.
    pub fn splats(&self) -> Vec<Splat> {
        splat::find(&self.console())
    }

    /// Fails with the splats if the kernel printed any.
    pub fn check_console(&self) -> Result<(), VmError> {
        let splats = self.splats();
        if splats.is_empty() {
            Ok(())
        } else {
            Err(VmError::Splat {
                splats,
                run_dir: self.run_dir().to_path_buf(),
            })
        }
    }

    /// Wraps an agent error with this run's artifact directory.
    pub fn agent_error(&self, source: AgentError) -> VmError {
        VmError::Agent {
            source,
            run_dir: self.run_dir().to_path_buf(),
        }
    }

    fn qmp(&self) -> MutexGuard<'_, Qmp> {
        self.qmp.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn qmp_error(&self, source: QmpError) -> VmError {
        VmError::Qmp {
            source,
            run_dir: self.run_dir().to_path_buf(),
        }
    }

    /// Hot-plugs VF `vf` into its root port.
    pub fn hotplug_vf(&self, vf: u16) -> Result<(), VmError> {
        let socket = self.vf_socket(vf)?;
        let kind = self.vf_kinds.get(&vf).copied().unwrap_or_default();
        self.qmp()
            .add_vf(vf, kind, &socket)
            .map_err(|e| self.qmp_error(e))
    }

    /// Plugs the failover primary back in (QMP `device_add`).
    pub fn plug_primary(&self) -> Result<(), VmError> {
        let primary = self.primary.as_ref().ok_or(VmError::NoPrimary)?;
        self.qmp()
            .add_primary(primary)
            .map_err(|e| self.qmp_error(e))
    }

    /// Unplugs the failover primary (QMP `device_del`) and waits until the
    /// guest has let go of it.
    pub fn unplug_primary(&self) -> Result<(), VmError> {
        if self.primary.is_none() {
            return Err(VmError::NoPrimary);
        }
        self.qmp()
            .remove_primary(scaled(Duration::from_secs(30)))
            .map_err(|e| self.qmp_error(e))
    }

    /// Hot-unplugs VF `vf` and waits until QEMU has removed it.
    pub fn unplug_vf(&self, vf: u16) -> Result<(), VmError> {
        self.vf_socket(vf)?;
        self.qmp()
            .remove_vf(vf, scaled(Duration::from_secs(30)))
            .map_err(|e| self.qmp_error(e))
    }

    /// Resets the machine (the agent starts again; its channel reconnects).
    pub fn system_reset(&self) -> Result<(), VmError> {
        self.qmp().system_reset().map_err(|e| self.qmp_error(e))
    }

    fn vf_socket(&self, vf: u16) -> Result<PathBuf, VmError> {
        self.vf_sockets
            .get(usize::from(vf))
            .cloned()
            .ok_or(VmError::NoSuchVf {
                vf,
                vfs: self.vf_sockets.len() as u16,
            })
    }

    /// Powers the guest off through the agent, waits for QEMU to exit
    /// (killing it after a grace period), and fails if the console shows a
    /// kernel splat.
    pub fn shutdown(mut self) -> Result<(), VmError> {
        let asked = self.agent.poweroff();
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            // Ask QEMU itself before killing it.
            let _ = self.qmp().quit();
            std::thread::sleep(Duration::from_millis(200));
        }
        kill_and_reap(&mut self.child);
        self.check_console()?;
        asked.map_err(|e| self.agent_error(e))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}
