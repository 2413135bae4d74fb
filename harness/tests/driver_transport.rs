//! VM test of the guest driver's virtio-pci transport: `vfrig-driver
//! selftest` takes VF 0 from the guest kernel, talks to the in-process PF
//! over the mailbox queue pair and sends one broadcast frame on the data
//! pair. What the driver reports must match what the PF recorded.
//!
//! Needs QEMU 10 and the guest image (built on first use), like `vm.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vfrig_device::engine::Outcome;
use vfrig_device::pf::{DropCounters, VfPhase};
use vfrig_harness::image::{self, ImageOptions};
use vfrig_harness::qemu::vf_mac;
use vfrig_harness::vm::scaled;
use vfrig_harness::{Rig, RigConfig, VmConfig};

const T: Duration = Duration::from_secs(60);

/// A directory for the policy file, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("vfrig-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn vm_driver_transport_selftest_reaches_the_pf_and_its_switch() {
    // The host gives VF 0 the MAC QEMU shows in its config space, as an
    // administrator would with `ip link set PF vf 0 mac ...`.
    let mac = vf_mac(0);
    let dir = TempDir::new("driver-transport");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, format!("[vf0]\nadmin_mac = \"{mac}\"\n")).unwrap();

    let img = image::prepare(&ImageOptions::default()).expect("image build failed");
    let mut vm = VmConfig::new("test-driver-transport", &img.kernel, &img.initramfs);
    vm.vfs_at_boot = vec![0];
    let rig = Rig::start(&RigConfig {
        vfs: 1,
        kernel_vfs: Default::default(),
        policy: Some(policy),
        seed: 0,
        vm,
    })
    .unwrap_or_else(|err| panic!("{err}"));

    let out = rig
        .vm
        .agent()
        .sh("vfrig-driver selftest", scaled(T))
        .unwrap_or_else(|err| panic!("{err}"));
    let report: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "selftest printed no JSON report ({err}):\n{}\n{}",
            out.stdout, out.stderr
        )
    });
    let (tables, transcript) = rig.daemon.device().with(|engine, _| {
        let ops: Vec<(String, Outcome)> = engine
            .transcript()
            .iter()
            .map(|e| (e.op.clone(), e.outcome.clone()))
            .collect();
        (engine.tables(), ops)
    });
    let vf0 = tables.vf(0).expect("vf0 in the PF tables");

    // The driver took the function from the kernel and set it up.
    assert_eq!(
        report["device"]["unbound_driver"], "virtio-pci",
        "{report:#}"
    );
    assert_eq!(report["device"]["mac"], mac.as_str());
    assert_eq!(
        report["device"]["queue_sizes"].as_array().map(Vec::len),
        Some(5)
    );

    // VERSION and GET_VF_RESOURCES, seen from both ends.
    assert_eq!(report["version"]["pf"], "1.1");
    assert_eq!(vf0.version.as_deref(), Some("1.1"));
    assert_eq!(report["resources"]["vsi_id"], 1);
    assert_eq!(report["resources"]["mac"], vf0.mac.to_string().as_str());
    assert_eq!(vf0.mac.to_string(), mac);
    assert_eq!(report["mac"]["source"], "pf");
    let caps: Vec<&str> = report["resources"]["caps"]
        .as_array()
        .expect("caps is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(caps, vf0.caps, "granted caps differ from the PF's view");
    assert!(caps.contains(&"L2"), "{caps:?}");

    // Every request was answered with SUCCESS, in order, and nothing else
    // reached the mailbox.
    let ok = |op: &str| (op.to_owned(), Outcome::Replied("SUCCESS".into()));
    assert_eq!(
        transcript,
        [ok("VERSION"), ok("GET_VF_RESOURCES"), ok("ENABLE_QUEUES")]
    );
    assert_eq!(vf0.mailbox.malformed, 0);
    assert_eq!(report["stray_frames"], 0);
    assert_eq!(vf0.state, VfPhase::Active);
    assert_eq!((vf0.queues.rx, vf0.queues.tx), (1, 1));

    // The frame went through the switch: counted once as a broadcast from
    // vf0, dropped nowhere, and sent to the uplink (rule S5).
    assert_eq!(report["frames_sent"], 1);
    let t = vf0.traffic;
    assert_eq!((t.tx_frames, t.tx_broadcast, t.tx_bytes), (1, 1, 60));
    assert_eq!(t.drops, DropCounters::default());
    assert_eq!(tables.uplink.tx_frames, 1);

    rig.shutdown().unwrap_or_else(|err| panic!("{err}"));
}
