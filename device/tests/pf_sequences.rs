//! Random sequences of VF requests, malformed frames, host operations and
//! data-path frames through the PF switch, from a fixed seed (override with
//! `VFRIG_SEED`), checked against the PF's invariants after every step.
//!
//! A failure found here is kept as a `regression_*` test below with its
//! steps written out.

use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use vfrig_device::pf::{Delivery, Effect, Pf, PfConfig, Port, VfId, VfPhase};
use virtchnl::{
    EtherAddr, EtherAddrList, EtherAddrType, MacAddr, PfMessage, PromiscFlags, PromiscInfo,
    QueueSelect, Request, VersionInfo, VfCapFlags, VirtchnlVlan, VlanFilterList, VlanFilterListV2,
    VlanFilterV2,
};

const VFS: u16 = 2;

#[derive(Debug, Clone)]
enum Step {
    /// VERSION, GET_VF_RESOURCES, GET_OFFLOAD_VLAN_V2_CAPS, ENABLE_QUEUES: iavf's init.
    BringUp(u16),
    Request(u16, Request),
    Garbage(u16, Vec<u8>),
    Reset(u16, bool),
    BeginReset(u16),
    FinishReset(u16),
    Trust(u16, bool),
    Spoofchk(u16, bool),
    AdminMac(u16, Option<MacAddr>),
    PortVlan(u16, Option<u16>),
    PfLink(bool),
    PfReset,
    Wait(u64),
    /// A data-path frame from a VF (or the uplink, `None`).
    Frame(Option<u16>, Vec<u8>),
}

fn mac_pool() -> impl Strategy<Value = MacAddr> {
    prop_oneof![
        (0u8..40).prop_map(|i| MacAddr([2, 0, 0, 0, 0, i])),
        Just(MacAddr::BROADCAST),
        Just(MacAddr::ZERO),
        Just(MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e])),
        (0u8..4).prop_map(|i| MacAddr([0x33, 0x33, 0, 0, 0, i])),
    ]
}

fn mac_list() -> impl Strategy<Value = EtherAddrList> {
    let entry = (mac_pool(), 0u8..4).prop_map(|(addr, k)| EtherAddr {
        addr,
        kind: EtherAddrType::from(k),
    });
    vec(entry, 1..12).prop_map(|addrs| EtherAddrList { vsi_id: 1, addrs })
}

fn vid() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..12, Just(4095), Just(4096)]
}

fn v2_list() -> impl Strategy<Value = VlanFilterListV2> {
    vec(
        (
            vid(),
            prop_oneof![Just(0x8100u16), Just(0x88a8)],
            any::<bool>(),
        ),
        1..5,
    )
    .prop_map(|tags| VlanFilterListV2 {
        vport_id: 1,
        filters: tags
            .into_iter()
            .map(|(vid, tpid, outer)| VlanFilterV2::single(VirtchnlVlan::new(tpid, vid), outer))
            .collect(),
    })
}

/// Ethernet frames from the MAC pool, untagged or with a 0x8100/0x88a8 tag,
/// truncated now and then.
fn ethernet() -> impl Strategy<Value = Vec<u8>> {
    let tag = proptest::option::of((prop_oneof![Just(0x8100u16), Just(0x88a8)], vid()));
    (mac_pool(), mac_pool(), tag, 0usize..70, 0u8..8).prop_map(|(dst, src, tag, body, cut)| {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        if let Some((tpid, tci)) = tag {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(f.len() + body, 0xa5);
        if cut == 0 {
            f.truncate(body % 18);
        }
        f
    })
}

fn request() -> impl Strategy<Value = Request> {
    let caps = prop_oneof![
        Just(VfCapFlags(0xffff_ffff)),
        Just(VfCapFlags::L2 | VfCapFlags::VLAN),
        Just(VfCapFlags::L2),
    ];
    let queues = (0u32..4, 0u16..3).prop_map(|(bits, vsi_id)| QueueSelect {
        vsi_id,
        rx_queues: bits,
        tx_queues: bits,
    });
    prop_oneof![
        prop_oneof![Just(VersionInfo::V1_1), Just(VersionInfo::V1_0)].prop_map(Request::Version),
        proptest::option::of(caps).prop_map(|caps| Request::GetVfResources { caps }),
        queues.clone().prop_map(Request::EnableQueues),
        queues.prop_map(Request::DisableQueues),
        mac_list().prop_map(Request::AddEthAddr),
        mac_list().prop_map(Request::DelEthAddr),
        vec(vid(), 1..10).prop_map(|vids| Request::AddVlan(VlanFilterList { vsi_id: 1, vids })),
        vec(vid(), 1..4).prop_map(|vids| Request::DelVlan(VlanFilterList { vsi_id: 1, vids })),
        v2_list().prop_map(Request::AddVlanV2),
        v2_list().prop_map(Request::DelVlanV2),
        (0u16..4).prop_map(|f| Request::ConfigPromiscuousMode(PromiscInfo {
            vsi_id: 1,
            flags: PromiscFlags(f)
        })),
        Just(Request::GetOffloadVlanV2Caps),
        Just(Request::ResetVf),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let vf = 0..VFS + 1; // includes one VF that does not exist
    prop_oneof![
        3 => (0..VFS).prop_map(Step::BringUp),
        6 => (vf.clone(), mac_list()).prop_map(|(vf, l)| Step::Request(vf, Request::AddEthAddr(l))),
        12 => (vf.clone(), request()).prop_map(|(vf, r)| Step::Request(vf, r)),
        1 => (vf.clone(), vec(any::<u8>(), 0..40)).prop_map(|(vf, b)| Step::Garbage(vf, b)),
        1 => (vf.clone(), any::<bool>()).prop_map(|(vf, n)| Step::Reset(vf, n)),
        1 => vf.clone().prop_map(Step::BeginReset),
        1 => vf.clone().prop_map(Step::FinishReset),
        1 => (vf.clone(), any::<bool>()).prop_map(|(vf, t)| Step::Trust(vf, t)),
        1 => (vf.clone(), any::<bool>()).prop_map(|(vf, s)| Step::Spoofchk(vf, s)),
        1 => (vf.clone(), proptest::option::of(mac_pool())).prop_map(|(vf, m)| Step::AdminMac(vf, m)),
        1 => (vf.clone(), proptest::option::of(0u16..4100)).prop_map(|(vf, v)| Step::PortVlan(vf, v)),
        1 => any::<bool>().prop_map(Step::PfLink),
        1 => Just(Step::PfReset),
        1 => (0u64..5000).prop_map(Step::Wait),
        5 => (proptest::option::of(vf), ethernet()).prop_map(|(vf, f)| Step::Frame(vf, f)),
    ]
}

/// Runs `steps` on a fresh PF, checking every invariant after each step.
fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut pf = Pf::new(PfConfig {
        num_vfs: VFS,
        ..PfConfig::default()
    })
    .expect("valid config");
    let mut now = Instant::now();
    let mut traffic = Traffic::default();
    for (n, step) in steps.iter().enumerate() {
        let mut expected_replies = None;
        match step {
            Step::BringUp(vf) => {
                let vf = VfId(*vf);
                let all = VfCapFlags(0xffff_ffff);
                let queues = QueueSelect {
                    vsi_id: 1,
                    rx_queues: 1,
                    tx_queues: 1,
                };
                for req in [
                    Request::Version(VersionInfo::V1_1),
                    Request::GetVfResources { caps: Some(all) },
                    Request::GetOffloadVlanV2Caps,
                    Request::EnableQueues(queues),
                ] {
                    pf.handle_mailbox(now, vf, &req.to_frame(n as u32));
                }
            }
            Step::Request(vf, req) => {
                let cookie = n as u32;
                pf.handle_mailbox(now, VfId(*vf), &req.to_frame(cookie));
                let exists = *vf < VFS;
                expected_replies = Some((*vf, usize::from(exists && *req != Request::ResetVf)));
                if *req == Request::ResetVf && exists {
                    // A reset request during a reset is refused, so it is answered.
                    if pf.phase(VfId(*vf)) == Ok(VfPhase::Resetting) {
                        expected_replies = Some((*vf, 1));
                    }
                }
            }
            Step::Garbage(vf, bytes) => {
                pf.handle_mailbox(now, VfId(*vf), bytes);
            }
            Step::Reset(vf, notify) => drop(pf.reset_vf(VfId(*vf), *notify)),
            Step::BeginReset(vf) => drop(pf.begin_reset(VfId(*vf), false)),
            Step::FinishReset(vf) => drop(pf.finish_reset(VfId(*vf))),
            Step::Trust(vf, t) => drop(pf.set_trust(VfId(*vf), *t)),
            Step::Spoofchk(vf, s) => drop(pf.set_spoofchk(VfId(*vf), *s)),
            Step::AdminMac(vf, m) => drop(pf.set_admin_mac(VfId(*vf), *m)),
            Step::PortVlan(vf, v) => drop(pf.set_port_vlan(VfId(*vf), *v)),
            Step::PfLink(up) => pf.set_pf_link(*up),
            Step::PfReset => pf.pf_reset(),
            Step::Wait(ms) => now += Duration::from_millis(*ms),
            Step::Frame(from, frame) => traffic.switch(&mut pf, *from, frame, n)?,
        }
        let mut replies = 0;
        while let Some(effect) = pf.poll_effect() {
            prop_assert!(effect.vf().0 < VFS, "step {n}: effect for a missing VF");
            let (_, msg) = PfMessage::from_frame(&effect.to_frame())
                .map_err(|e| TestCaseError::fail(format!("step {n}: PF frame: {e}")))?;
            if let Effect::Reply { vf, cookie, reply } = &effect {
                replies += 1;
                if let Step::Request(rvf, req) = step {
                    prop_assert_eq!(vf.0, *rvf);
                    prop_assert_eq!(*cookie, n as u32);
                    prop_assert_eq!(reply.op, req.op());
                }
                prop_assert_eq!(msg, PfMessage::Reply(reply.clone()));
            }
        }
        if let Some((vf, want)) = expected_replies {
            prop_assert_eq!(
                replies,
                want,
                "step {}: replies to {:?} on vf{}",
                n,
                step,
                vf
            );
        }
        check_invariants(&pf, n)?;
        traffic.check(&pf, n)?;
    }
    Ok(())
}

/// What the test fed the switch and saw come out, per VF.
#[derive(Default)]
struct Traffic {
    sent: [u64; VFS as usize],
    received: [u64; VFS as usize],
    received_bytes: [u64; VFS as usize],
}

impl Traffic {
    fn switch(
        &mut self,
        pf: &mut Pf,
        from: Option<u16>,
        frame: &[u8],
        n: usize,
    ) -> Result<(), TestCaseError> {
        let deliveries = match from {
            Some(vf) if vf >= VFS => {
                prop_assert!(pf.switch_from_vf(VfId(vf), frame).is_err());
                return Ok(());
            }
            Some(vf) => {
                self.sent[usize::from(vf)] += 1;
                let before = pf.traffic(VfId(vf)).expect("VF exists").tx_frames;
                let out = pf.switch_from_vf(VfId(vf), frame).expect("VF exists");
                let accepted = pf.traffic(VfId(vf)).expect("VF exists").tx_frames > before;
                prop_assert!(
                    accepted || out.is_empty(),
                    "step {n}: a dropped frame was delivered"
                );
                out
            }
            None => {
                let out = pf.switch_from_uplink(frame);
                prop_assert!(
                    !out.iter().any(|d| d.to == Port::Uplink),
                    "step {n}: uplink frame sent back to the uplink"
                );
                out
            }
        };
        let tables = pf.tables();
        let uplinks = deliveries.iter().filter(|d| d.to == Port::Uplink).count();
        prop_assert!(uplinks <= 1, "step {n}: {uplinks} copies to the uplink");
        for Delivery { to, frame: out } in &deliveries {
            let Port::Vf(to) = *to else { continue };
            prop_assert!(
                Some(to.0) != from,
                "step {n}: frame delivered back to its sender"
            );
            let t = tables.vf(to.0).expect("delivery to an existing VF");
            prop_assert!(
                t.state == VfPhase::Active && t.queues.rx != 0,
                "step {n}: delivery to {to} without receive queues: {t:#?}"
            );
            if let Some(pvid) = t.policy.port_vlan {
                let tagged = out.get(12..14) == Some(&[0x81, 0x00][..]);
                let vid = out
                    .get(14..16)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) & 0xfff);
                prop_assert!(
                    !(tagged && vid == Some(pvid)),
                    "step {n}: port VLAN {pvid} not stripped for {to}"
                );
            }
            self.received[usize::from(to.0)] += 1;
            self.received_bytes[usize::from(to.0)] += out.len() as u64;
        }
        Ok(())
    }

    /// Every frame a VF sent is accepted or dropped for one reason; every
    /// delivery is counted; and both survive resets.
    fn check(&self, pf: &Pf, n: usize) -> Result<(), TestCaseError> {
        for vf in 0..VFS {
            let c = pf.traffic(VfId(vf)).expect("VF exists");
            let d = c.drops;
            let i = usize::from(vf);
            let tx_outcomes = c.tx_frames
                + d.anti_spoof_mac
                + d.anti_spoof_vlan
                + d.malformed
                + d.tx_queues_disabled;
            prop_assert_eq!(
                tx_outcomes,
                self.sent[i],
                "step {}: vf{} tx accounting",
                n,
                vf
            );
            prop_assert_eq!(
                c.rx_frames,
                self.received[i],
                "step {}: vf{} rx frames",
                n,
                vf
            );
            prop_assert_eq!(
                c.rx_bytes,
                self.received_bytes[i],
                "step {}: vf{} rx bytes",
                n,
                vf
            );
            prop_assert!(c.tx_multicast + c.tx_broadcast <= c.tx_frames);
            prop_assert!(c.rx_multicast + c.rx_broadcast <= c.rx_frames);
        }
        Ok(())
    }
}

fn check_invariants(pf: &Pf, n: usize) -> Result<(), TestCaseError> {
    for (key, t) in &pf.tables().vfs {
        let ctx = format!("step {n}, {key:?}: {t:#?}");
        if !t.policy.trust {
            prop_assert!(
                t.mac_filters <= usize::from(t.policy.max_macs),
                "MAC limit: {}",
                ctx
            );
            prop_assert!(
                t.vlans.len() + t.vlans_other_tpid.len() <= usize::from(t.vlan_limit),
                "VLAN limit: {}",
                ctx
            );
        }
        if t.state != VfPhase::Active {
            prop_assert!(
                t.queues.rx == 0 && t.queues.tx == 0,
                "queues while not ACTIVE: {}",
                ctx
            );
            prop_assert!(t.caps.is_empty(), "caps while not ACTIVE: {}", ctx);
        }
        // While resetting, the old filters are still in hardware until the
        // rebuild; once rebuilt (INIT) only host configuration is left.
        if t.state == VfPhase::Init {
            prop_assert!(
                t.vlans.is_empty() && t.vlans_other_tpid.is_empty(),
                "VLANs after rebuild: {}",
                ctx
            );
            prop_assert!(
                t.macs.iter().all(|m| *m == t.host_mac),
                "VF MACs after rebuild: {}",
                ctx
            );
        }
        if t.policy.admin_mac.is_some() && !t.policy.trust {
            prop_assert_eq!(t.mac, t.host_mac, "bound VF changed its MAC: {}", ctx);
        }
        if t.policy.port_vlan.is_some() {
            prop_assert!(t.vlans.is_empty(), "VF VLANs under a port VLAN: {}", ctx);
        }
        prop_assert!(
            !t.antispoof.vlan || t.policy.spoofchk,
            "VLAN anti-spoof without spoofchk: {}",
            ctx
        );
        prop_assert!(
            !t.link_up || t.queues.rx | t.queues.tx != 0,
            "link up without queues: {}",
            ctx
        );
        prop_assert!(
            !t.macs.contains(&MacAddr::BROADCAST),
            "broadcast listed: {}",
            ctx
        );
        prop_assert!(
            t.mac_filters == t.macs.len() + 1,
            "broadcast filter missing: {}",
            ctx
        );
    }
    Ok(())
}

fn seed() -> u64 {
    std::env::var("VFRIG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        rng_seed: RngSeed::Fixed(seed()),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sequences_keep_every_invariant(steps in vec(step(), 1..200)) {
        run(&steps)?;
    }
}

/// Found by the sequence test: a trusted VF replaced its admin MAC, then lost
/// trust. ice keeps the VF's choice as `hw_lan_addr` and binds the VF to it.
#[test]
fn regression_trusted_vf_mac_change_survives_trust_revocation() {
    let chosen = MacAddr([2, 0, 0, 0, 0, 0]);
    let steps = [
        Step::AdminMac(0, Some(MacAddr([2, 0, 0, 0, 0, 2]))),
        Step::Trust(0, true),
        Step::BringUp(0),
        Step::Request(
            0,
            Request::AddEthAddr(EtherAddrList {
                vsi_id: 1,
                addrs: vec![EtherAddr {
                    addr: chosen,
                    kind: EtherAddrType::Primary,
                }],
            }),
        ),
        Step::Trust(0, false),
        Step::BringUp(0),
        Step::Request(
            0,
            Request::AddEthAddr(EtherAddrList {
                vsi_id: 1,
                addrs: vec![EtherAddr {
                    addr: MacAddr([2, 0, 0, 0, 0, 9]),
                    kind: EtherAddrType::Primary,
                }],
            }),
        ),
    ];
    run(&steps).expect("invariants hold");
}
