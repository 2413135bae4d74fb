//! Throughput of the sans-IO cores, without virtqueues: what the PF model
//! and engine cost per mailbox round trip and per switched frame.
//!
//! `cargo bench -p vfrig-device --bench core`

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vfrig_device::engine::{Engine, EngineConfig};
use vfrig_device::pf::{PfConfig, VfId};
use vfrig_device::vhost::Pair;
use virtchnl::{
    EtherAddr, EtherAddrList, EtherAddrType, MacAddr, QueueSelect, Request, VersionInfo,
    VfCapFlags, VirtchnlVlan, VlanFilterListV2, VlanFilterV2,
};

fn engine_with_vfs(vfs: u16) -> Engine {
    let now = Instant::now();
    let mut engine = Engine::new(
        EngineConfig {
            pf: PfConfig {
                num_vfs: vfs,
                ..PfConfig::default()
            },
            seed: 0,
        },
        now,
    )
    .expect("valid config");
    for vf in 0..vfs {
        engine.connected(VfId(vf));
        let mac = MacAddr([2, 0, 0, 0, 0, vf as u8]);
        for req in [
            Request::Version(VersionInfo::V1_1),
            Request::GetVfResources {
                caps: Some(VfCapFlags::L2 | VfCapFlags::VLAN_V2),
            },
            Request::GetOffloadVlanV2Caps,
            Request::EnableQueues(QueueSelect {
                vsi_id: 1,
                rx_queues: 1,
                tx_queues: 1,
            }),
            Request::AddEthAddr(EtherAddrList {
                vsi_id: 1,
                addrs: vec![EtherAddr {
                    addr: mac,
                    kind: EtherAddrType::Primary,
                }],
            }),
        ] {
            engine.handle_mailbox(now, VfId(vf), &req.to_frame(0));
        }
        while engine.receive(VfId(vf), Pair::Mailbox, 8192).is_some() {}
    }
    engine
}

fn vlan(vid: u16) -> VlanFilterListV2 {
    VlanFilterListV2 {
        vport_id: 1,
        filters: vec![VlanFilterV2 {
            inner: VirtchnlVlan::dot1q(vid),
            outer: VirtchnlVlan::default(),
        }],
    }
}

fn mailbox(c: &mut Criterion) {
    let mut engine = engine_with_vfs(1);
    let add = Request::AddVlanV2(vlan(100)).to_frame(1);
    let del = Request::DelVlanV2(vlan(100)).to_frame(2);
    let now = Instant::now();
    let mut group = c.benchmark_group("mailbox");
    group.throughput(Throughput::Elements(2));
    group.bench_function("add_del_vlan_v2_round_trips", |b| {
        b.iter(|| {
            for frame in [&add, &del] {
                engine.handle_mailbox(now, VfId(0), frame);
                black_box(engine.receive(VfId(0), Pair::Mailbox, 8192));
            }
        });
    });
    engine.clear_transcript();
    group.finish();
}

fn switch(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch");
    for vfs in [2u16, 8] {
        let mut engine = engine_with_vfs(vfs);
        let mut frame = vec![0u8; 64];
        frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0]);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let now = Instant::now();
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("vf_to_vf_64_bytes_{vfs}_vfs"), |b| {
            b.iter(|| {
                engine.handle_data(now, VfId(0), black_box(&frame));
                black_box(engine.receive(VfId(1), Pair::Data, 2048));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, mailbox, switch);
criterion_main!(benches);
