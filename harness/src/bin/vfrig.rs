//! `vfrig`: the rig's command line (`cargo rig ...` in the workspace).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use vfrig_harness::image::{self, ImageOptions};
use vfrig_harness::qemu::AccelChoice;
use vfrig_harness::scenario::{self, RunOptions, VlanFsm};
use vfrig_harness::{Rig, RigConfig, VmConfig};
use vfrig_images::Flavour;

/// A QEMU-backed test rig for NIC virtual-function drivers.
#[derive(Debug, Parser)]
#[command(name = "vfrig", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build or inspect the guest image.
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
    /// Boot a VM with the PF's VFs plugged in. With --exec, run one command
    /// in the guest and exit with its status; without, open a shell in the
    /// guest (leave it with `exit` or Ctrl-D).
    Vm(VmArgs),
    /// Run scenario files: boot a VM per scenario, run its steps, check its
    /// expectations and snapshots. Exits non-zero when any scenario failed.
    Run(RunArgs),
    /// The whole test suite: installs what is missing (QEMU, cargo-nextest),
    /// builds the image, then runs every crate's tests and every scenario in
    /// harness/scenarios/ with cargo nextest, and the doc tests.
    Test(TestArgs),
    /// The showcase on a fresh machine: a VM with two VFs, VLANs, down/up
    /// cycles, a bond and a netns move, first with the fixed VLAN state
    /// machine, then with the legacy one, and the difference.
    Demo,
    /// The interleaving explorer: enumerate orderings of kernel operations,
    /// driver watchdog passes and PF answers between the driver core and the
    /// PF model, check the filter invariants in every state, shrink what
    /// breaks them, and write each shrunk trace as a scenario file that a VM
    /// replays. No VM is booted.
    Explore(ExploreArgs),
}

#[derive(Debug, Args)]
struct ExploreArgs {
    /// The driver's VLAN state machine.
    #[arg(long, value_name = "fixed|legacy", default_value = "legacy")]
    vlan_fsm: VlanFsm,
    /// The PF's VLAN opcodes: v2 (VLAN_V2), v1 (VLAN only) or both (two
    /// explorations).
    #[arg(long, value_name = "v2|v1|both", default_value = "both")]
    vlan_ops: String,
    /// The most inputs in one ordering.
    #[arg(long, default_value_t = 12)]
    depth: usize,
    /// The most states to expand per exploration (random walks: inputs applied).
    #[arg(long, default_value_t = 2_000_000)]
    budget: u64,
    /// The search: bfs (shortest traces first), dfs, or random walks.
    #[arg(long, value_name = "bfs|dfs|random", default_value = "bfs")]
    strategy: String,
    /// Seed of the random walks (implies --strategy random).
    #[arg(long)]
    seed: Option<u64>,
    /// The kinds of input, comma-separated: vlans, down-up, netns, mac, link, reset.
    #[arg(long, default_value = "vlans,down-up,netns")]
    alphabet: String,
    /// The VLAN ids the kernel uses, comma-separated.
    #[arg(long, default_value = "10,20", value_delimiter = ',')]
    vids: Vec<u16>,
    /// A request the PF may refuse: OP or OP=STATUS (default ERR_PARAM), by
    /// kernel name; repeatable; `none` for no refusals. Default: the four
    /// VLAN filter requests.
    #[arg(long, value_name = "OP[=STATUS]")]
    reject: Vec<String>,
    /// Where to write the shrunk traces as scenario files.
    #[arg(long, value_name = "DIR", default_value = "target/vfrig/explored")]
    write: PathBuf,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario files (TOML); a directory runs every .toml file in it.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print one JSON object per scenario on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Run the guest driver with this VLAN state machine, whatever the
    /// scenario says (snapshots are then skipped).
    #[arg(long, value_name = "fixed|legacy")]
    vlan_fsm: Option<VlanFsm>,
    /// Boot this bzImage instead of the Debian kernel.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Kernel modules for --kernel: a directory searched for .ko files.
    #[arg(long, value_name = "DIR", requires = "kernel")]
    modules: Option<PathBuf>,
    /// Seed of the PF's probabilistic faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Accelerator: auto probes KVM and falls back to TCG.
    #[arg(long, value_enum)]
    accel: Option<AccelChoice>,
    /// Print each step and the PF tables as they change.
    #[arg(long, short)]
    verbose: bool,
    /// Go on after a failed step and report every failure.
    #[arg(long)]
    keep_going: bool,
    /// Multiply every `repeat` count in the scenarios (soaks).
    #[arg(long, default_value_t = 1, value_name = "N")]
    repeat_scale: u32,
}

#[derive(Debug, Args)]
struct TestArgs {
    /// The nextest profile (`nightly` writes JUnit XML).
    #[arg(long, default_value = "default")]
    profile: String,
    /// More arguments for `cargo nextest run` (a filter, `--partition`, ...).
    #[arg(last = true)]
    nextest_args: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Build the image (a cache hit when nothing changed) and print where it
    /// is.
    Build(ImageArgs),
}

#[derive(Debug, Args)]
struct ImageArgs {
    /// Debian kernel flavour: cloud (small, default) or generic (has e1000e
    /// and other real NIC drivers).
    #[arg(long, default_value = "cloud")]
    flavour: Flavour,
    /// Boot this bzImage instead of the Debian kernel.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Kernel modules for --kernel: a directory searched for .ko files.
    #[arg(long, value_name = "DIR", requires = "kernel")]
    modules: Option<PathBuf>,
    /// Build in a kernel mutant (images/mutants/) instead of the stock
    /// module it replaces, e.g. bond-rr-count-zero. Repeatable.
    #[arg(long = "mutant", value_name = "NAME")]
    mutants: Vec<String>,
}

impl ImageArgs {
    fn options(&self) -> ImageOptions {
        ImageOptions {
            flavour: self.flavour,
            kernel: self.kernel.clone(),
            modules: self.modules.clone(),
            mutants: self.mutants.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct VmArgs {
    /// Run this shell command in the guest, print its output and exit with
    /// its status.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// Number of VFs the PF has (all plugged at boot).
    #[arg(long, default_value_t = 1)]
    vfs: u16,
    /// Accelerator: auto probes KVM and falls back to TCG.
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelChoice,
    /// Time limit for --exec, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[command(flatten)]
    image: ImageArgs,
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    // The explorer drives the cores through millions of states: their
    // warnings (a refused VLAN, ...) are its inputs, not news.
    let default_filter = match cli.command {
        Cmd::Explore(_) => "warn,vfrig_guest_driver=error,vfrig_device=error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vfrig: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Image {
            command: ImageCmd::Build(args),
        } => {
            let start = std::time::Instant::now();
            let img = image::prepare(&args.options())?;
            println!("kernel:    {}", img.kernel.display());
            println!("initramfs: {}", img.initramfs.display());
            println!("release:   {}", img.manifest.kernel.release);
            println!("manifest:  {}", img.dir.join("manifest.json").display());
            eprintln!(
                "vfrig: image {} in {:.2} s",
                if img.cache_hit { "cache hit" } else { "built" },
                start.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Vm(args) => vm(args),
        Cmd::Run(args) => run_scenarios(args),
        Cmd::Test(args) => test(args),
        Cmd::Demo => demo(),
        Cmd::Explore(args) => explore(args),
    }
}

/// Loads every scenario first, so a typo fails before any VM boots.
fn load_all(files: &[PathBuf]) -> anyhow::Result<Vec<scenario::Scenario>> {
    let mut paths = Vec::new();
    for f in files {
        if f.is_dir() {
            paths.extend(scenario::find(f).with_context(|| format!("reading {}", f.display()))?);
        } else {
            paths.push(f.clone());
        }
    }
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for p in &paths {
        match scenario::load(p) {
            Ok(s) => scenarios.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("invalid scenario file(s):\n{}", errors.join("\n"));
    }
    Ok(scenarios)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn run_scenarios(args: RunArgs) -> anyhow::Result<ExitCode> {
    let scenarios = load_all(&args.files)?;
    let opts = RunOptions {
        vlan_fsm: args.vlan_fsm,
        kernel: args.kernel.clone(),
        modules: args.modules.clone(),
        seed: args.seed,
        accel: args.accel,
        verbose: args.verbose,
        keep_going: args.keep_going,
        repeat_scale: args.repeat_scale,
    };
    let mut failed = 0;
    for s in &scenarios {
        if !args.json {
            eprintln!("vfrig: running {} ({})", s.name, s.path.display());
        }
        let result = scenario::run(s, &opts)?;
        if !result.passed {
            failed += 1;
        }
        if args.json {
            println!("{}", serde_json::to_string(&result)?);
        } else {
            print!("{}", scenario::report::text(&result));
        }
    }
    if !args.json {
        eprintln!(
            "vfrig: {} scenario(s): {} passed, {failed} failed",
            scenarios.len(),
            scenarios.len() - failed
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn vm(args: VmArgs) -> anyhow::Result<ExitCode> {
    let img = image::prepare(&args.image.options())?;
    let interactive = args.exec.is_none();
    let mut vm = VmConfig::new(
        if interactive { "vm-shell" } else { "vm-exec" },
        &img.kernel,
        &img.initramfs,
    );
    vm.accel = args.accel;
    vm.vfs_at_boot = (0..args.vfs).collect();
    vm.shell_on_stdio = interactive;
    let rig = Rig::start(&RigConfig {
        vfs: args.vfs,
        kernel_vfs: Default::default(),
        policy: None,
        seed: 0,
        vm,
    })?;
    let boot = rig.vm.boot();
    let boot_line = format!(
        "vfrig: {} ready {:.2} s after QEMU started ({}, guest uptime {:.2} s, {} modules in {} ms); artifacts: {}",
        boot.ready.kernel_release,
        boot.ready_after.as_secs_f64(),
        boot.accel,
        boot.ready.uptime_ms as f64 / 1000.0,
        boot.ready.modules.len(),
        boot.ready.modules_ms,
        rig.vm.run_dir().display(),
    );
    let code = match args.exec {
        Some(cmd) => {
            let out = rig
                .vm
                .agent()
                .run(&cmd, Duration::from_secs(args.timeout))
                .map_err(|e| rig.vm.agent_error(e))?;
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            eprintln!("{boot_line}");
            if out.timed_out {
                eprintln!("vfrig: `{cmd}` timed out after {} s", args.timeout);
            }
            match (out.status, out.signal) {
                (Some(code), _) => u8::try_from(code).unwrap_or(1),
                (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
                _ => 1,
            }
        }
        None => {
            eprintln!("{boot_line}");
            eprintln!("vfrig: shell on the guest's ttyS1; `exit` or Ctrl-D powers the VM off");
            let size = terminal_size()
                .map(|(rows, cols)| format!("stty rows {rows} cols {cols} </dev/ttyS1; "))
                .unwrap_or_default();
            // The agent makes each command a process group leader, and
            // busybox's setsid forks (and returns at once) when called by
            // one: run it from a subshell, which is not a leader, so the
            // command lasts as long as the shell.
            let cmd =
                format!("{size}(exec setsid -c /bin/ash -l </dev/ttyS1 >/dev/ttyS1 2>&1); true");
            rig.vm
                .agent()
                .run_unbounded(&cmd)
                .map_err(|e| rig.vm.agent_error(e))
                .context("the guest shell failed")?;
            0
        }
    };
    rig.shutdown()?;
    Ok(ExitCode::from(code))
}

/// Rows and columns of the controlling terminal, from `stty size`.
fn terminal_size() -> Option<(u16, u16)> {
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// Runs a command, inheriting stdio; true when it exited 0.
fn cargo(args: &[&str], extra: &[String]) -> anyhow::Result<bool> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    vfrig_harness::ui::say(format!("cargo {} {}", args.join(" "), extra.join(" ")));
    let status = std::process::Command::new(cargo)
        .args(args)
        .args(extra)
        .current_dir(vfrig_harness::paths::workspace_root())
        .status()
        .context("cannot run cargo")?;
    Ok(status.success())
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let start = std::time::Instant::now();
    vfrig_harness::setup::host()?;
    vfrig_harness::setup::nextest()?;
    image::prepare(&ImageOptions::default())?;
    let locked = std::env::var_os("CI").is_some();
    let mut nextest = vec!["nextest", "run", "--workspace", "--no-fail-fast"];
    nextest.extend(["--profile", args.profile.as_str()]);
    if locked {
        nextest.push("--locked");
    }
    let units_ok = cargo(&nextest, &args.nextest_args)?;
    let mut doc = vec!["test", "--workspace", "--doc"];
    if locked {
        doc.push("--locked");
    }
    let doc_ok = cargo(&doc, &[])?;
    vfrig_harness::ui::say(format!(
        "test suite {} in {:.1} min",
        if units_ok && doc_ok {
            "passed"
        } else {
            "FAILED"
        },
        start.elapsed().as_secs_f64() / 60.0
    ));
    Ok(if units_ok && doc_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[allow(clippy::print_stdout)]
fn demo() -> anyhow::Result<ExitCode> {
    vfrig_harness::setup::host()?;
    let path = scenario::library_dir().join("showcase.toml");
    let showcase = scenario::load(&path)?;
    println!("vfrig demo: {}\n", showcase.description);
    let mut results = Vec::new();
    for fsm in [VlanFsm::Fixed, VlanFsm::Legacy] {
        println!("== the showcase with the {fsm} VLAN state machine");
        let opts = RunOptions {
            vlan_fsm: Some(fsm),
            verbose: true,
            keep_going: true,
            ..RunOptions::default()
        };
        let result = scenario::run(&showcase, &opts)?;
        print!("{}", scenario::report::text(&result));
        for f in &result.more_failures {
            println!("  also at {}:", f.step);
            for line in f.message.lines() {
                println!("  | {line}");
            }
        }
        println!();
        results.push(result);
    }
    println!("{}", scenario::report::compare(&results[0], &results[1]));
    Ok(if results[0].passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[allow(clippy::print_stdout)]
fn explore(args: ExploreArgs) -> anyhow::Result<ExitCode> {
    use vfrig_explorer::{Alphabet, Bounds, Model, Strategy, VlanOps};
    let ops = match args.vlan_ops.as_str() {
        "v2" => vec![VlanOps::V2],
        "v1" => vec![VlanOps::V1],
        "both" => vec![VlanOps::V2, VlanOps::V1],
        other => anyhow::bail!("--vlan-ops {other}: use v2, v1 or both"),
    };
    let strategy = match (args.strategy.as_str(), args.seed) {
        (_, Some(seed)) => Strategy::Random { seed },
        ("bfs", None) => Strategy::Bfs,
        ("dfs", None) => Strategy::Dfs,
        ("random", None) => Strategy::Random { seed: 0 },
        (other, None) => anyhow::bail!("--strategy {other}: use bfs, dfs or random"),
    };
    let alphabet = Alphabet::parse(&args.alphabet).map_err(anyhow::Error::msg)?;
    if let Some(bad) = args.vids.iter().find(|v| !(1..=4094).contains(*v)) {
        anyhow::bail!("--vids: VLAN id {bad} is out of range; use 1..=4094");
    }
    let reject = parse_rejects(&args.reject)?;
    let models = ops
        .into_iter()
        .map(|vlan_ops| Model {
            fsm: vfrig_harness::explore::core_fsm(args.vlan_fsm),
            vlan_ops,
            vids: args.vids.clone(),
            alphabet,
            reject: reject.clone(),
        })
        .collect();
    let opts = vfrig_harness::explore::ExploreOptions {
        models,
        strategy,
        bounds: Bounds {
            depth: args.depth,
            budget: args.budget,
        },
        write: Some(args.write),
    };
    let explored = vfrig_harness::explore::run(&opts)?;
    if args.json {
        println!("{}", vfrig_harness::explore::json(&explored));
    } else {
        print!("{}", vfrig_harness::explore::text(&explored));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--reject OP[=STATUS]` values; none given: the VLAN filter requests.
fn parse_rejects(
    specs: &[String],
) -> anyhow::Result<std::collections::BTreeMap<virtchnl::VirtchnlOp, virtchnl::VirtchnlStatus>> {
    use virtchnl::{VirtchnlOp, VirtchnlStatus};
    if specs.is_empty() {
        return Ok(vfrig_explorer::default_rejects());
    }
    let mut out = std::collections::BTreeMap::new();
    for spec in specs {
        if spec == "none" {
            continue;
        }
        let (op, status) = spec.split_once('=').unwrap_or((spec.as_str(), "ERR_PARAM"));
        let op = VirtchnlOp::ALL
            .iter()
            .copied()
            .find(|o| o.c_name() == Some(op))
            .with_context(|| format!("--reject {spec}: no virtchnl opcode is called {op}"))?;
        let status = VirtchnlStatus::ALL
            .iter()
            .copied()
            .find(|s| s.c_name() == Some(status) || s.to_string() == status)
            .with_context(|| format!("--reject {spec}: no virtchnl status is called {status}"))?;
        out.insert(op, status);
    }
    Ok(out)
}
