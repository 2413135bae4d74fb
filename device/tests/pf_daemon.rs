//! The PF daemon end to end, without QEMU: the test frontend plays QEMU on
//! each VF's vhost-user socket (memfd memory, split rings) and the test
//! drives faults, events and policy through the control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vfrig_device::daemon::{Daemon, DaemonConfig};
use vfrig_device::pf::VfRole;
use vfrig_device::test_support::{scaled, FrontendOptions, RawDesc, TestDir, TestFrontend};
use vfrig_device::vhost::{Pair, QueueLayout};
use virtchnl::{
    EtherAddr, EtherAddrList, EtherAddrType, EventKind, MacAddr, PfMessage, PromiscFlags,
    PromiscInfo, QueueSelect, Reply, ReplyBody, Request, VersionInfo, VfCapFlags, VirtchnlOp,
    VirtchnlStatus, VirtchnlVlan, VlanFilterList, VlanFilterListV2, VlanFilterV2,
};

const MAILBOX_BUF: usize = 12 + virtchnl::MAX_FRAME_LEN;

// Fields drop in order: the daemon goes before the directory holding its sockets.
struct Rig {
    daemon: Daemon,
    control: Control,
    pcap: PathBuf,
    _dir: TestDir,
}

fn rig(vfs: u16, policy: Option<&str>) -> Rig {
    rig_with(vfs, policy, &[])
}

/// A rig whose `kernel_vfs` are served to the guest kernel (`--kernel-vf`).
fn rig_with(vfs: u16, policy: Option<&str>, kernel_vfs: &[u16]) -> Rig {
    let dir = TestDir::new("pfd").expect("temp dir");
    let policy = policy.map(|text| {
        let path = dir.join("policy.toml");
        std::fs::write(&path, text).expect("write policy");
        path
    });
    let pcap = dir.join("uplink.pcap");
    let daemon = Daemon::start(DaemonConfig {
        dir: dir.join("pf"),
        vfs,
        policy,
        pcap: Some(pcap.clone()),
        tap: None,
        seed: 3,
        kernel_vfs: kernel_vfs.iter().copied().collect(),
    })
    .expect("daemon starts");
    let control = Control::connect(&daemon);
    Rig {
        _dir: dir,
        daemon,
        control,
        pcap,
    }
}

struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    fn connect(daemon: &Daemon) -> Self {
        let stream = UnixStream::connect(daemon.control_socket()).expect("control socket");
        Control {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn call(&mut self, line: &str) -> Value {
        writeln!(self.writer, "{line}").expect("write");
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("read");
        let reply: Value = serde_json::from_str(&reply).expect("JSON reply");
        assert!(reply.get("error").is_none(), "{line} -> {reply}");
        reply["ok"].clone()
    }

    fn vf(&mut self, vf: u16) -> Value {
        self.call(r#"{"cmd":"tables"}"#)["vfs"][format!("vf{vf}")].clone()
    }
}

/// A VF as its driver would see it: a frontend plus a cookie counter.
struct Vf {
    fe: TestFrontend,
    cookie: u32,
    events: Vec<virtchnl::PfEvent>,
}

impl Vf {
    fn connect(rig: &Rig, vf: u16) -> Self {
        let mut fe = TestFrontend::connect(rig.daemon.vf_socket(vf)).expect("frontend connects");
        fe.post_rx(Pair::Mailbox, 16, MAILBOX_BUF)
            .expect("post mailbox buffers");
        fe.post_rx(Pair::Data, 64, 12 + 1600)
            .expect("post data buffers");
        Vf {
            fe,
            cookie: 0,
            events: Vec::new(),
        }
    }

    /// The next mailbox message, if one comes within `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<(u32, PfMessage)> {
        let frame = self.fe.recv(Pair::Mailbox, timeout).expect("recv")?;
        self.fe
            .post_rx(Pair::Mailbox, 1, MAILBOX_BUF)
            .expect("repost");
        let (header, msg) = PfMessage::from_frame(&frame).expect("PF frames decode");
        Some((header.cookie, msg))
    }

    /// The next reply, collecting events that come before it.
    fn reply(&mut self, timeout: Duration) -> Option<(u32, Reply)> {
        loop {
            match self.next(timeout)? {
                (_, PfMessage::Event(e)) => self.events.push(e),
                (cookie, PfMessage::Reply(r)) => return Some((cookie, r)),
            }
        }
    }

    fn send(&mut self, req: &Request) -> u32 {
        self.cookie += 1;
        self.fe
            .send(Pair::Mailbox, &req.to_frame(self.cookie))
            .expect("send");
        self.cookie
    }

    fn call(&mut self, req: Request) -> Reply {
        let cookie = self.send(&req);
        let (got, reply) = self.reply(scaled(Duration::from_secs(5))).expect("a reply");
        assert_eq!(got, cookie, "{}: reply for this request", req.op());
        assert_eq!(reply.op, req.op());
        reply
    }

    fn ok(&mut self, req: Request) -> Reply {
        let reply = self.call(req.clone());
        assert_eq!(reply.status, VirtchnlStatus::Success, "{req:?}");
        reply
    }

    fn bring_up(&mut self, caps: VfCapFlags) -> VfCapFlags {
        self.ok(Request::Version(VersionInfo::V1_1));
        let res = self.ok(Request::GetVfResources { caps: Some(caps) });
        let ReplyBody::VfResource(res) = res.body else {
            panic!("resources expected")
        };
        if res.vf_cap_flags.contains(VfCapFlags::VLAN_V2) {
            self.ok(Request::GetOffloadVlanV2Caps);
        }
        self.ok(Request::EnableQueues(queues()));
        res.vf_cap_flags
    }
}

fn queues() -> QueueSelect {
    QueueSelect {
        vsi_id: 1,
        rx_queues: 1,
        tx_queues: 1,
    }
}

fn macs(list: &[[u8; 6]]) -> EtherAddrList {
    EtherAddrList {
        vsi_id: 1,
        addrs: list
            .iter()
            .map(|m| EtherAddr {
                addr: MacAddr(*m),
                kind: EtherAddrType::Primary,
            })
            .collect(),
    }
}

fn v2(vids: &[u16]) -> VlanFilterListV2 {
    VlanFilterListV2 {
        vport_id: 1,
        filters: vids
            .iter()
            .map(|&v| VlanFilterV2::single(VirtchnlVlan::dot1q(v), false))
            .collect(),
    }
}

fn vlans(table: &Value) -> Vec<u64> {
    table["vlans"]
        .as_array()
        .expect("vlans")
        .iter()
        .filter_map(Value::as_u64)
        .collect()
}

fn eth(dst: [u8; 6], src: [u8; 6], vid: Option<u16>) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(vid) = vid {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(64, 0x5a);
    f
}

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

/// vf0 and vf1 brought up with MACs [`MAC_A`] and [`MAC_B`] and the VLANs `vids`.
fn two_vfs(rig: &Rig, vids: &[u16]) -> (Vf, Vf) {
    let mut vf0 = Vf::connect(rig, 0);
    let mut vf1 = Vf::connect(rig, 1);
    for (vf, mac) in [(&mut vf0, MAC_A), (&mut vf1, MAC_B)] {
        vf.bring_up(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
        vf.ok(Request::AddEthAddr(macs(&[mac])));
        if !vids.is_empty() {
            vf.ok(Request::AddVlanV2(v2(vids)));
        }
    }
    (vf0, vf1)
}

const SHORT: Duration = Duration::from_millis(200);

#[test]
fn every_modelled_opcode_round_trips_through_the_mailbox_queues() {
    let mut rig = rig(1, None);
    let mut vf = Vf::connect(&rig, 0);
    let caps = vf.bring_up(VfCapFlags::L2 | VfCapFlags::VLAN_V2 | VfCapFlags::ADV_LINK_SPEED);
    assert!(caps.contains(VfCapFlags::VLAN_V2));
    let mac = [2, 0, 0, 0, 0, 0x10];
    vf.ok(Request::AddEthAddr(macs(&[mac, [0x33, 0x33, 0, 0, 0, 1]])));
    vf.ok(Request::DelEthAddr(macs(&[[0x33, 0x33, 0, 0, 0, 1]])));
    vf.ok(Request::AddVlanV2(v2(&[100, 200])));
    vf.ok(Request::DelVlanV2(v2(&[200])));
    vf.ok(Request::ConfigPromiscuousMode(PromiscInfo {
        vsi_id: 1,
        flags: PromiscFlags::MULTICAST,
    }));
    let stats = vf.ok(Request::GetStats(queues()));
    assert!(matches!(stats.body, ReplyBody::Stats(_)));
    // Link went up after ENABLE_QUEUES, in Mbps (ADV_LINK_SPEED).
    assert!(vf.events.iter().any(|e| matches!(
        e.kind,
        EventKind::LinkChange {
            link_up: true,
            link_speed: 25_000
        }
    )));
    let t = rig.control.vf(0);
    assert_eq!(t["state"], "active");
    assert_eq!(vlans(&t), vec![100]);
    assert_eq!(t["mac"], "02:00:00:00:00:10");
    vf.ok(Request::DisableQueues(queues()));
    // RESET_VF is never answered; the table shows the reset.
    vf.send(&Request::ResetVf);
    assert!(vf.reply(SHORT).is_none(), "RESET_VF gets no reply");
    let t = rig.control.vf(0);
    assert_eq!((t["state"].clone(), vlans(&t)), ("init".into(), vec![]));

    // The V1 opcodes, on a PF that offers no VLAN V2.
    let mut rig = self::rig(1, Some("[vf0]\nvlan_v2 = false\n"));
    let mut vf = Vf::connect(&rig, 0);
    assert!(vf.bring_up(VfCapFlags(u32::MAX)).contains(VfCapFlags::VLAN));
    vf.ok(Request::AddVlan(VlanFilterList {
        vsi_id: 1,
        vids: vec![5, 6],
    }));
    vf.ok(Request::DelVlan(VlanFilterList {
        vsi_id: 1,
        vids: vec![5],
    }));
    vf.ok(Request::DisableVlanStripping);
    vf.ok(Request::EnableVlanStripping);
    assert_eq!(vlans(&rig.control.vf(0)), vec![6]);
}

#[test]
fn malformed_frames_and_chains_get_err_param_and_the_daemon_keeps_serving() {
    let mut rig = rig(1, None);
    let mut vf = Vf::connect(&rig, 0);
    vf.bring_up(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
    // A frame whose header lies about its length.
    let mut frame = Request::AddVlanV2(v2(&[7])).to_frame(99);
    frame.truncate(frame.len() - 3);
    vf.fe.send(Pair::Mailbox, &frame).expect("send");
    let (cookie, reply) = vf
        .reply(scaled(Duration::from_secs(5)))
        .expect("an error reply");
    assert_eq!(
        (cookie, reply.op, reply.status),
        (99, VirtchnlOp::AddVlanV2, VirtchnlStatus::ErrParam)
    );
    // A chain pointing outside guest memory on the mailbox transmit queue.
    let used = vf
        .fe
        .send_raw_chain(
            Pair::Mailbox.tx_queue(),
            &[RawDesc {
                addr: 1 << 40,
                len: 64,
                device_writes: false,
            }],
        )
        .expect("the chain comes back");
    assert_eq!(used, 0);
    let (_, reply) = vf
        .reply(scaled(Duration::from_secs(5)))
        .expect("an error reply");
    assert_eq!(
        (reply.op, reply.status),
        (VirtchnlOp::Unspecified, VirtchnlStatus::ErrParam)
    );
    // Still serving.
    vf.ok(Request::AddVlanV2(v2(&[8])));
    let t = rig.control.vf(0);
    assert_eq!(vlans(&t), vec![8]);
    assert_eq!(t["mailbox"]["malformed"], 2);
}

#[test]
fn every_fault_kind_works_through_the_control_socket() {
    let mut rig = rig(1, None);
    let mut vf = Vf::connect(&rig, 0);
    vf.bring_up(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
    vf.ok(Request::AddVlanV2(v2(&[100])));

    // reject: the PF refuses the DEL with the given status and keeps the VLAN.
    rig.control.call(r#"{"cmd":"fault","vf":0,"op":"DEL_VLAN_V2","action":"reject","status":"ERR_ADMIN_QUEUE_ERROR"}"#);
    let reply = vf.call(Request::DelVlanV2(v2(&[100])));
    assert_eq!(reply.status, VirtchnlStatus::ErrAdminQueueError);
    assert_eq!(vlans(&rig.control.vf(0)), vec![100]);

    // drop: no reply ever, the transcript says so.
    rig.control
        .call(r#"{"cmd":"fault","op":"ADD_VLAN_V2","action":"drop"}"#);
    vf.send(&Request::AddVlanV2(v2(&[101])));
    assert!(vf.reply(SHORT).is_none());
    let transcript = rig.control.call(r#"{"cmd":"transcript"}"#);
    let last = transcript
        .as_array()
        .and_then(|t| t.last())
        .expect("entries")
        .clone();
    assert_eq!(
        (last["op"].clone(), last["outcome"].clone()),
        ("ADD_VLAN_V2".into(), "dropped".into())
    );

    // delay: the PF handles it later; meanwhile the mailbox is not settled.
    rig.control
        .call(r#"{"cmd":"fault","op":"ADD_VLAN_V2","action":"delay","delay_ms":150}"#);
    let cookie = vf.send(&Request::AddVlanV2(v2(&[102])));
    assert_eq!(rig.control.call(r#"{"cmd":"quiesce"}"#)["delayed"], 1);
    let (got, reply) = vf
        .reply(scaled(Duration::from_secs(5)))
        .expect("the delayed reply");
    assert_eq!((got, reply.status), (cookie, VirtchnlStatus::Success));
    assert_eq!(vlans(&rig.control.vf(0)), vec![100, 102]);

    // hold: nothing until released.
    rig.control
        .call(r#"{"cmd":"fault","op":"DEL_VLAN_V2","action":"hold"}"#);
    let cookie = vf.send(&Request::DelVlanV2(v2(&[102])));
    assert!(vf.reply(SHORT).is_none());
    assert_eq!(rig.control.call(r#"{"cmd":"quiesce"}"#)["held"], 1);
    assert_eq!(
        vlans(&rig.control.vf(0)),
        vec![100, 102],
        "not applied while held"
    );
    assert_eq!(
        rig.control.call(r#"{"cmd":"release","vf":0}"#)["released"],
        1
    );
    let (got, _) = vf
        .reply(scaled(Duration::from_secs(5)))
        .expect("the released reply");
    assert_eq!(got, cookie);
    assert_eq!(vlans(&rig.control.vf(0)), vec![100]);

    // reorder: the reply comes after the next message, here a link event.
    rig.control
        .call(r#"{"cmd":"fault","op":"ADD_VLAN_V2","action":"reorder"}"#);
    let cookie = vf.send(&Request::AddVlanV2(v2(&[103])));
    assert!(vf.next(SHORT).is_none(), "reply held back");
    rig.control
        .call(r#"{"cmd":"event","vf":0,"kind":"link_down"}"#);
    let first = vf.next(scaled(Duration::from_secs(5))).expect("event");
    assert!(
        matches!(first.1, PfMessage::Event(e) if matches!(e.kind, EventKind::LinkChange { link_up: false, .. }))
    );
    let second = vf.next(scaled(Duration::from_secs(5))).expect("reply");
    assert!(matches!(second, (c, PfMessage::Reply(_)) if c == cookie));
    assert_eq!(rig.control.call(r#"{"cmd":"quiesce"}"#)["settled"], true);

    // A PF-initiated reset: RESET_IMPENDING, then the VF starts over.
    rig.control.call(r#"{"cmd":"event","vf":0,"kind":"reset"}"#);
    let (_, msg) = vf.next(scaled(Duration::from_secs(5))).expect("event");
    assert_eq!(msg, PfMessage::Event(virtchnl::PfEvent::reset_impending()));
    assert_eq!(rig.control.vf(0)["state"], "init");
}

#[test]
fn frames_are_switched_between_vfs_and_to_the_uplink_with_drops_counted() {
    let mut rig = rig(2, None);
    let (a, b) = (MAC_A, MAC_B);
    let (mut vf0, mut vf1) = two_vfs(&rig, &[100]);
    let timeout = scaled(Duration::from_secs(5));
    // VF to VF, tagged with a VLAN both have.
    let frame = eth(b, a, Some(100));
    vf0.fe.send(Pair::Data, &frame).expect("send");
    assert_eq!(vf1.fe.recv(Pair::Data, timeout).expect("recv"), Some(frame));
    // Unknown unicast goes to the uplink capture.
    let unknown = eth([2, 0, 0, 0, 0, 0xee], a, None);
    vf0.fe.send(Pair::Data, &unknown).expect("send");
    // A VLAN vf0 does not have: dropped by VLAN anti-spoof.
    vf0.fe
        .send(Pair::Data, &eth(b, a, Some(300)))
        .expect("send");
    // A spoofed source MAC.
    vf0.fe
        .send(Pair::Data, &eth(b, [2, 0, 0, 0, 0, 0x66], None))
        .expect("send");
    assert_eq!(vf1.fe.recv(Pair::Data, SHORT).expect("recv"), None);
    let t = rig.control.vf(0);
    let drops = &t["traffic"]["drops"];
    assert_eq!(
        (
            drops["anti_spoof_vlan"].clone(),
            drops["anti_spoof_mac"].clone()
        ),
        (1.into(), 1.into()),
        "{t}"
    );
    assert_eq!(rig.control.vf(1)["traffic"]["rx_frames"], 1);

    let captured = std::fs::read(&rig.pcap).expect("pcap exists");
    let mut reader = pcap_file::pcap::PcapReader::new(&captured[..]).expect("a pcap file");
    let packet = reader
        .next_packet()
        .expect("one packet")
        .expect("valid packet");
    assert_eq!(packet.data.as_ref(), unknown.as_slice());
}

#[test]
fn a_kernel_vf_has_only_the_data_pair_and_switches_frames_without_a_mailbox() {
    // vf1 from --kernel-vf; vf2 from the policy file.
    let policy = "[vf1]\nadmin_mac = \"02:00:00:00:00:0b\"\n\n\
                  [vf2]\nrole = \"kernel\"\nadmin_mac = \"02:00:00:00:00:0c\"\n";
    let mut rig = rig_with(3, Some(policy), &[1]);
    let roles: Vec<_> = (0..4).map(|vf| rig.daemon.role(vf)).collect();
    assert_eq!(
        roles,
        [
            Some(VfRole::Driver),
            Some(VfRole::Kernel),
            Some(VfRole::Kernel),
            None
        ]
    );
    let t = rig.control.vf(1);
    assert_eq!(
        (t["role"].clone(), t["state"].clone()),
        ("kernel".into(), "active".into())
    );
    assert!(rig.control.vf(0).get("role").is_none());

    let mut vf0 = Vf::connect(&rig, 0);
    vf0.bring_up(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
    vf0.ok(Request::AddEthAddr(macs(&[MAC_A])));
    let options = FrontendOptions {
        layout: QueueLayout::DataOnly,
        ..FrontendOptions::default()
    };
    let kernel = |vf| {
        let mut fe = TestFrontend::connect_with(rig.daemon.vf_socket(vf), options.clone())
            .expect("a queues=1 frontend connects");
        fe.post_rx(Pair::Data, 8, 12 + 1600)
            .expect("post data buffers");
        fe
    };
    let (mut vf1, mut vf2) = (kernel(1), kernel(2));
    let timeout = scaled(Duration::from_secs(5));
    let (c, b) = ([2, 0, 0, 0, 0, 0xc], MAC_B);

    let to_vf0 = eth(MAC_A, b, None);
    vf1.send(Pair::Data, &to_vf0).expect("send");
    assert_eq!(
        vf0.fe.recv(Pair::Data, timeout).expect("recv"),
        Some(to_vf0)
    );
    let to_vf1 = eth(b, MAC_A, None);
    vf0.fe.send(Pair::Data, &to_vf1).expect("send");
    assert_eq!(vf1.recv(Pair::Data, timeout).expect("recv"), Some(to_vf1));
    let to_vf2 = eth(c, b, None);
    vf1.send(Pair::Data, &to_vf2).expect("send");
    assert_eq!(vf2.recv(Pair::Data, timeout).expect("recv"), Some(to_vf2));

    // Link changes reach the driver VF only: nothing waits for a mailbox
    // the kernel VFs do not have, so the device settles.
    rig.control.call(r#"{"cmd":"pf_link","up":false}"#);
    rig.control.call(r#"{"cmd":"pf_link","up":true}"#);
    while vf0.next(SHORT).is_some() {}
    assert_eq!(rig.control.call(r#"{"cmd":"quiesce"}"#)["settled"], true);
    let t = rig.control.vf(1);
    assert_eq!(t["mailbox"]["requests"], 0);
    assert_eq!(t["mailbox"]["events"], 0);
    assert_eq!(
        (
            t["traffic"]["tx_frames"].clone(),
            t["traffic"]["rx_frames"].clone()
        ),
        (2.into(), 1.into())
    );

    // A reconnect resets the kernel VF, which comes straight back configured.
    drop(vf1);
    let mut vf1 = kernel(1);
    let again = eth(b, MAC_A, None);
    vf0.fe.send(Pair::Data, &again).expect("send");
    assert_eq!(vf1.recv(Pair::Data, timeout).expect("recv"), Some(again));
    assert_eq!(rig.control.vf(1)["state"], "active");
}

#[test]
fn a_reconnect_is_a_fresh_vf_and_is_served_again() {
    let mut rig = rig(1, None);
    let mut vf = Vf::connect(&rig, 0);
    vf.bring_up(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
    vf.ok(Request::AddVlanV2(v2(&[42])));
    assert_eq!(vlans(&rig.control.vf(0)), vec![42]);
    vf.fe.disconnect();
    // The PF resets the VF when its frontend goes away.
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(5));
    while rig.control.vf(0)["state"] != "init" {
        assert!(
            std::time::Instant::now() < deadline,
            "VF not reset after disconnect: {}",
            rig.control.vf(0)
        );
        std::thread::yield_now();
    }
    assert!(vlans(&rig.control.vf(0)).is_empty());
    let mut again = Vf::connect(&rig, 0);
    again.bring_up(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
    again.ok(Request::AddVlanV2(v2(&[43])));
    assert_eq!(vlans(&rig.control.vf(0)), vec![43]);
    let sockets = [rig.daemon.vf_socket(0), rig.daemon.control_socket()];
    rig.daemon.shutdown();
    assert!(
        sockets.iter().all(|s| !s.exists()),
        "sockets removed on shutdown"
    );
}

/// Needs root (or CAP_NET_ADMIN) and /dev/net/tun: creating the TAP fails
/// with a message that says so otherwise.
#[test]
fn a_host_tap_is_an_uplink_in_both_directions() {
    let dir = TestDir::new("pftap").expect("temp dir");
    let name = format!("vfrigt{}", std::process::id() % 100_000);
    let daemon = Daemon::start(DaemonConfig {
        dir: dir.join("pf"),
        vfs: 1,
        policy: None,
        pcap: None,
        tap: Some(name.clone()),
        seed: 3,
        kernel_vfs: Default::default(),
    })
    .unwrap_or_else(|e| panic!("{e}: run this test as root on a host with /dev/net/tun"));
    let mut rig = Rig {
        control: Control::connect(&daemon),
        daemon,
        pcap: dir.join("unused.pcap"),
        _dir: dir,
    };
    let mac = [2, 0, 0, 0, 0, 0x31];
    let mut vf = Vf::connect(&rig, 0);
    vf.bring_up(VfCapFlags::L2 | VfCapFlags::VLAN_V2);
    vf.ok(Request::AddEthAddr(macs(&[mac])));

    // VF to host: a broadcast leaves through the TAP (the host counts it as received).
    let rx_packets = || -> u64 {
        let out = std::process::Command::new("ip")
            .args(["-s", "-j", "link", "show", "dev", &name])
            .output()
            .expect("ip runs (install iproute2)");
        let json: Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
        json[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0)
    };
    let before = rx_packets();
    vf.fe
        .send(Pair::Data, &eth([0xff; 6], mac, None))
        .expect("send");
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(5));
    while rx_packets() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no frame reached the TAP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Host to VF: a UDP broadcast sent out of the TAP reaches the VF.
    let subnet = 200 + (std::process::id() % 50) as u8;
    let status = std::process::Command::new("ip")
        .args([
            "addr",
            "add",
            &format!("10.231.{subnet}.1/24"),
            "dev",
            &name,
        ])
        .status()
        .expect("ip runs");
    assert!(status.success(), "could not address {name}");
    let socket = std::net::UdpSocket::bind(format!("10.231.{subnet}.1:0")).expect("bind");
    socket.set_broadcast(true).expect("SO_BROADCAST");
    socket
        .send_to(b"vfrig", format!("10.231.{subnet}.255:9"))
        .expect("send");
    let deadline = std::time::Instant::now() + scaled(Duration::from_secs(5));
    loop {
        let frame = vf
            .fe
            .recv(Pair::Data, scaled(Duration::from_secs(5)))
            .expect("recv")
            .expect("the host's broadcast reaches the VF");
        // Skip anything else the host sends (router solicitations, ...).
        if frame.get(12..14) == Some(&[0x08, 0x00]) && frame.ends_with(b"vfrig") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the UDP broadcast never arrived"
        );
    }
    assert!(rig.control.vf(0)["traffic"]["rx_frames"].as_u64() >= Some(1));
}

#[test]
fn a_burst_of_frames_arrives_complete_and_in_order() {
    let mut rig = rig(2, None);
    let (a, b) = (MAC_A, MAC_B);
    let (mut vf0, mut vf1) = two_vfs(&rig, &[]);
    let frames: Vec<Vec<u8>> = (0..64u8)
        .map(|i| {
            let mut f = eth(b, a, None);
            f[20] = i;
            f
        })
        .collect();
    let burst: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    vf0.fe.send_all(Pair::Data, &burst).expect("burst sent");
    for expected in &frames {
        let got = vf1
            .fe
            .recv(Pair::Data, scaled(Duration::from_secs(5)))
            .expect("recv")
            .expect("every frame of the burst");
        assert_eq!(&got, expected);
    }
    assert_eq!(rig.control.vf(1)["traffic"]["rx_frames"], 64);
}
