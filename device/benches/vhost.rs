//! End-to-end throughput through vhost-user: the test frontend plays QEMU
//! against a running PF daemon, so each figure includes descriptor chains
//! in memfd memory, eventfd kicks and calls, the daemon's lock and the PF.
//!
//! `cargo bench -p vfrig-device --bench vhost`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vfrig_device::daemon::{Daemon, DaemonConfig};
use vfrig_device::test_support::{TestDir, TestFrontend};
use vfrig_device::vhost::Pair;
use virtchnl::{
    EtherAddr, EtherAddrList, EtherAddrType, MacAddr, QueueSelect, Request, VersionInfo, VfCapFlags,
};

const MAILBOX_BUF: usize = 12 + virtchnl::MAX_FRAME_LEN;
const WAIT: Duration = Duration::from_secs(10);

fn daemon(dir: &TestDir, vfs: u16) -> Daemon {
    Daemon::start(DaemonConfig {
        dir: dir.join("pf"),
        vfs,
        policy: None,
        pcap: None,
        tap: None,
        seed: 0,
        kernel_vfs: Default::default(),
    })
    .expect("daemon starts")
}

/// Sends a request and waits for its reply (skipping events).
fn round_trip(fe: &mut TestFrontend, frame: &[u8]) {
    fe.send(Pair::Mailbox, frame).expect("send");
    loop {
        let reply = fe
            .recv(Pair::Mailbox, WAIT)
            .expect("recv")
            .expect("a reply");
        fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).expect("repost");
        if reply.get(..4) != Some(&17u32.to_le_bytes()[..]) {
            return;
        }
    }
}

fn bring_up(fe: &mut TestFrontend, mac: MacAddr) {
    fe.post_rx(Pair::Mailbox, 32, MAILBOX_BUF).expect("post");
    for req in [
        Request::Version(VersionInfo::V1_1),
        Request::GetVfResources {
            caps: Some(VfCapFlags::L2 | VfCapFlags::VLAN_V2),
        },
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
        round_trip(fe, &req.to_frame(0));
    }
}

fn mailbox(c: &mut Criterion) {
    let dir = TestDir::new("bench-mb").expect("temp dir");
    let pf = daemon(&dir, 1);
    let mut fe = TestFrontend::connect(pf.vf_socket(0)).expect("connect");
    bring_up(&mut fe, MacAddr([2, 0, 0, 0, 0, 1]));
    let stats = Request::GetStats(QueueSelect::default()).to_frame(1);
    let mut group = c.benchmark_group("vhost_mailbox");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_stats_round_trip", |b| {
        b.iter(|| round_trip(&mut fe, black_box(&stats)));
    });
    group.finish();
}

fn data(c: &mut Criterion) {
    let dir = TestDir::new("bench-data").expect("temp dir");
    let pf = daemon(&dir, 2);
    let (a, b) = (MacAddr([2, 0, 0, 0, 0, 0xa]), MacAddr([2, 0, 0, 0, 0, 0xb]));
    let mut tx = TestFrontend::connect(pf.vf_socket(0)).expect("connect");
    let mut rx = TestFrontend::connect(pf.vf_socket(1)).expect("connect");
    bring_up(&mut tx, a);
    bring_up(&mut rx, b);
    let mut frame = [0u8; 64];
    frame[..6].copy_from_slice(&b.0);
    frame[6..12].copy_from_slice(&a.0);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    // One frame in flight measures two cross-thread wake-ups per frame; a
    // burst of 64 (kicks only when the device asks) measures the backend.
    rx.post_rx(Pair::Data, 128, 12 + 64).expect("post");
    let mut group = c.benchmark_group("vhost_data");
    for batch in [1usize, 64] {
        let burst: Vec<&[u8]> = vec![&frame[..]; batch];
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("vf_to_vf_64_bytes_burst_{batch}"), |bench| {
            bench.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    tx.send_all(Pair::Data, &burst).expect("send");
                    for _ in 0..batch {
                        black_box(rx.recv(Pair::Data, WAIT).expect("recv").expect("a frame"));
                    }
                    rx.post_rx(Pair::Data, batch, 12 + 64).expect("repost");
                }
                start.elapsed()
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = mailbox, data
}
criterion_main!(benches);
