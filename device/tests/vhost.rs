//! The vhost-user shell end to end: a `VfServer` on a real socket, the test
//! frontend playing QEMU, and a loopback port behind the backend.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use vfrig_device::pf::VfId;
use vfrig_device::test_support::{
    scaled, FrontendError, FrontendOptions, LoopbackPort, LoopbackStats, RawDesc, TestDir,
    TestFrontend, GUEST_BASE, GUEST_SIZE,
};
use vfrig_device::vhost::virtio_net::{self, MAX_DATA_FRAME, MAX_MAILBOX_FRAME, NET_HDR_LEN};
use vfrig_device::vhost::{Pair, QueueLayout, StopHandle, VfServer};
use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;
use virtchnl::{Request, VersionInfo};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_STATUS,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Queue indices, as virtio-net numbers them.
const DATA_RX: usize = 0;
const MAILBOX_RX: usize = 2;
const MAILBOX_TX: usize = 3;

/// A mailbox receive buffer that takes any virtchnl frame.
const MAILBOX_BUF: usize = NET_HDR_LEN + MAX_MAILBOX_FRAME;
/// A data receive buffer for ordinary frames.
const DATA_BUF: usize = 2048;

fn timeout() -> Duration {
    scaled(Duration::from_secs(10))
}

/// Long enough for a frame that should not come to show up if it were
/// wrongly delivered; only ever used to check that nothing arrives.
fn quiet() -> Duration {
    scaled(Duration::from_millis(100))
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A `VfServer` for vf0 on a loopback port, serving on its own thread.
struct Rig {
    socket: PathBuf,
    port: Arc<LoopbackPort>,
    stop: StopHandle,
    done: mpsc::Receiver<vfrig_device::vhost::Result<()>>,
    thread: Option<JoinHandle<()>>,
    // Last: removed after the server has stopped.
    dir: TestDir,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_layout(QueueLayout::DataAndMailbox)
    }

    fn with_layout(layout: QueueLayout) -> Rig {
        init_tracing();
        let dir = TestDir::new("vhost").expect("create a test directory");
        let socket = dir.join("vf0.sock");
        let port = LoopbackPort::new();
        let server = VfServer::bind_with_layout(&socket, VfId(0), port.clone(), layout)
            .expect("bind the VF socket");
        let stop = server.stop_handle();
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("serve-vf0".into())
            .spawn(move || {
                let _ = tx.send(server.serve());
            })
            .expect("spawn the serve thread");
        Rig {
            socket,
            port,
            stop,
            done,
            thread: Some(thread),
            dir,
        }
    }

    fn connect(&self) -> TestFrontend {
        TestFrontend::connect(&self.socket).expect("connect the test frontend")
    }

    fn stats(&self) -> LoopbackStats {
        self.port.stats()
    }

    fn wait(&self, what: &str, done: impl FnMut(&LoopbackStats) -> bool) -> LoopbackStats {
        self.port
            .wait_until(timeout(), what, done)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Whether the serve loop is still running on its original thread.
    fn serving(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the loop and waits for `serve` to return.
    fn stop(&mut self) -> vfrig_device::vhost::Result<()> {
        self.stop.stop();
        let result = self
            .done
            .recv_timeout(timeout())
            .expect("serve did not return after stop");
        if let Some(thread) = self.thread.take() {
            thread.join().expect("serve thread panicked");
        }
        result
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.stop();
        if self.done.recv_timeout(timeout()).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Polls `probe` until it gives `true`; on timeout fails with `what`.
fn poll_until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout();
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A recognisable Ethernet frame of `len` bytes.
fn ethernet(len: usize, seed: u8) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    frame.extend((0..len.saturating_sub(frame.len())).map(|i| (i as u8).wrapping_add(seed)));
    frame.truncate(len);
    frame
}

fn version_request(cookie: u32) -> Vec<u8> {
    Request::Version(VersionInfo::V1_1).to_frame(cookie)
}

fn recv(fe: &mut TestFrontend, pair: Pair) -> Vec<u8> {
    fe.recv(pair, timeout())
        .expect("receive")
        .unwrap_or_else(|| panic!("no frame arrived on {pair:?}"))
}

#[test]
fn negotiation_gives_the_vf_features_and_four_queues() {
    let rig = Rig::new();
    let fe = rig.connect();
    let n = fe.negotiated();

    assert_eq!(n.offered_features, virtio_net::FEATURES);
    for bit in [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_NET_F_MQ,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
    ] {
        assert_ne!(
            n.features & (1 << bit),
            0,
            "feature bit {bit} not negotiated"
        );
    }
    assert_ne!(
        n.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
        0
    );
    let proto = VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
    assert_eq!(n.offered_protocol_features, proto);
    assert_eq!(n.protocol_features, proto);
    assert_eq!(n.queue_num, 4);
}

#[test]
fn a_frame_sent_on_each_pair_comes_back_on_the_same_pair() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    fe.post_rx(Pair::Data, 2, DATA_BUF).unwrap();
    fe.post_rx(Pair::Mailbox, 2, MAILBOX_BUF).unwrap();
    let data = ethernet(1514, 7);
    let mailbox = version_request(7);

    fe.send(Pair::Data, &data).unwrap();
    fe.send(Pair::Mailbox, &mailbox).unwrap();

    assert_eq!(recv(&mut fe, Pair::Mailbox), mailbox);
    assert_eq!(recv(&mut fe, Pair::Data), data);
    assert_eq!(
        rig.stats().transmitted,
        vec![(Pair::Data, data), (Pair::Mailbox, mailbox)]
    );
    assert_eq!(fe.recv(Pair::Data, quiet()).unwrap(), None);
    assert_eq!(fe.recv(Pair::Mailbox, quiet()).unwrap(), None);
}

/// A VF the guest kernel drives: QEMU starts it with `queues=1`, `mq=off`.
#[test]
fn a_data_only_vf_has_one_queue_pair_and_nothing_of_multiqueue() {
    let rig = Rig::with_layout(QueueLayout::DataOnly);
    let options = FrontendOptions {
        layout: QueueLayout::DataOnly,
        ..FrontendOptions::default()
    };
    let mut fe = TestFrontend::connect_with(&rig.socket, options).expect("connect");
    let n = fe.negotiated();
    assert_eq!(n.offered_features, QueueLayout::DataOnly.features());
    assert_eq!(n.offered_features & (1 << VIRTIO_NET_F_MQ), 0);
    for bit in [VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS] {
        assert_ne!(n.features & (1 << bit), 0, "feature bit {bit}");
    }
    assert_eq!(
        n.offered_protocol_features,
        VhostUserProtocolFeatures::REPLY_ACK
    );
    assert_eq!(n.queue_num, 0, "no MQ, so no GET_QUEUE_NUM");

    fe.post_rx(Pair::Data, 2, DATA_BUF).unwrap();
    let data = ethernet(1514, 3);
    fe.send(Pair::Data, &data).unwrap();
    assert_eq!(recv(&mut fe, Pair::Data), data);
    assert!(matches!(
        fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF),
        Err(FrontendError::NoQueue { queue: 2, last: 1 })
    ));

    // A mailbox frame the device produces anyway wakes the backend, which
    // has no mailbox queue to look for it in; the data pair still works.
    rig.port.inject(Pair::Mailbox, &version_request(3));
    rig.port.inject(Pair::Data, &ethernet(60, 4));
    assert_eq!(recv(&mut fe, Pair::Data), ethernet(60, 4));
    let stats = rig.stats();
    assert_eq!((stats.polls_mailbox, stats.waiting_mailbox), (0, 1));
    assert!(stats
        .transmitted
        .iter()
        .all(|(pair, _)| *pair == Pair::Data));
}

#[test]
fn a_data_only_vf_refuses_a_frontend_that_wants_the_mailbox_pair() {
    let rig = Rig::with_layout(QueueLayout::DataOnly);
    let err = TestFrontend::connect(&rig.socket).expect_err("no MQ, no 4 queues");
    assert!(
        matches!(
            err,
            FrontendError::Missing {
                what: "VHOST_USER_PROTOCOL_F_MQ",
                ..
            }
        ),
        "{err}"
    );
    // The frontend's GET_QUEUE_NUM would be refused too: a fresh raw connection.
    let stream = UnixStream::connect(&rig.socket).expect("connect");
    let mut raw = Frontend::from_stream(stream, virtio_net::NUM_QUEUES as u64);
    raw.set_owner().unwrap();
    raw.get_features().unwrap();
    let offered = raw.get_protocol_features().unwrap();
    assert!(!offered.contains(VhostUserProtocolFeatures::MQ));
    raw.set_protocol_features(offered).unwrap();
    assert!(raw.get_queue_num().is_err(), "GET_QUEUE_NUM needs MQ");
    assert!(
        rig.serving(),
        "a refused frontend only ends its own connection"
    );
}

#[test]
fn the_largest_frames_fit_and_one_byte_more_is_an_empty_frame() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    fe.post_rx(Pair::Data, 1, NET_HDR_LEN + MAX_DATA_FRAME)
        .unwrap();
    fe.post_rx(Pair::Mailbox, 2, MAILBOX_BUF).unwrap();

    let data = ethernet(MAX_DATA_FRAME, 1);
    fe.send(Pair::Data, &data).unwrap();
    assert_eq!(recv(&mut fe, Pair::Data), data);

    let mailbox = vec![0xa5; MAX_MAILBOX_FRAME];
    fe.send(Pair::Mailbox, &mailbox).unwrap();
    assert_eq!(recv(&mut fe, Pair::Mailbox), mailbox);

    fe.send(Pair::Mailbox, &vec![0xa5; MAX_MAILBOX_FRAME + 1])
        .unwrap();
    assert_eq!(
        rig.stats().transmitted.last(),
        Some(&(Pair::Mailbox, vec![]))
    );
    assert_eq!(recv(&mut fe, Pair::Mailbox), Vec::<u8>::new());
}

#[test]
fn frames_sent_before_receive_buffers_are_posted_arrive_once_they_are() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    let frames: Vec<_> = (1..=3).map(version_request).collect();
    for frame in &frames {
        fe.send(Pair::Mailbox, frame).unwrap();
    }
    rig.wait("three mailbox frames waiting", |s| s.waiting_mailbox == 3);

    fe.post_rx(Pair::Mailbox, 3, MAILBOX_BUF).unwrap();

    for frame in &frames {
        assert_eq!(&recv(&mut fe, Pair::Mailbox), frame);
    }
    rig.wait("nothing waiting", |s| s.waiting_mailbox == 0);
}

#[test]
fn frames_the_device_produces_later_wake_the_backend() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    // Once the backend has looked for a frame on both pairs and found none,
    // the kicks for these buffers are spent: only the waker brings the
    // frames injected below.
    fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();
    fe.post_rx(Pair::Data, 1, DATA_BUF).unwrap();
    rig.wait("the backend to look for frames on both pairs", |s| {
        s.polls_mailbox >= 1 && s.polls_data >= 1
    });

    rig.port.inject(Pair::Mailbox, b"link up");
    assert_eq!(recv(&mut fe, Pair::Mailbox), b"link up");
    rig.port.inject(Pair::Data, &ethernet(60, 3));
    assert_eq!(recv(&mut fe, Pair::Data), ethernet(60, 3));

    let polls = rig.stats().polls_mailbox;
    fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();
    rig.wait("the backend to look at the new buffer", |s| {
        s.polls_mailbox > polls
    });
    rig.port.inject(Pair::Mailbox, b"reset pending");
    assert_eq!(recv(&mut fe, Pair::Mailbox), b"reset pending");
}

#[test]
fn with_event_idx_the_backend_asks_for_the_next_kick() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    assert_ne!(fe.negotiated().features & (1 << VIRTIO_RING_F_EVENT_IDX), 0);
    fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();

    fe.send(Pair::Mailbox, &version_request(1)).unwrap();
    assert_eq!(recv(&mut fe, Pair::Mailbox), version_request(1));

    // avail_event = the next chain the VF will offer: the backend wants a
    // kick for it, not for the ones it has already taken.
    for queue in [MAILBOX_TX, MAILBOX_RX] {
        poll_until("avail_event to reach avail_idx", || {
            fe.avail_event(queue).unwrap() == fe.avail_idx(queue).unwrap()
        });
    }
    fe.send(Pair::Mailbox, &version_request(2)).unwrap();
    fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();
    assert_eq!(recv(&mut fe, Pair::Mailbox), version_request(2));
}

#[test]
fn without_event_idx_frames_flow_the_same() {
    let rig = Rig::new();
    let options = FrontendOptions {
        event_idx: false,
        ..FrontendOptions::default()
    };
    let mut fe = TestFrontend::connect_with(&rig.socket, options).unwrap();
    assert_eq!(fe.negotiated().features & (1 << VIRTIO_RING_F_EVENT_IDX), 0);

    for round in 0..3u32 {
        fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();
        fe.post_rx(Pair::Data, 1, DATA_BUF).unwrap();
        fe.send(Pair::Mailbox, &version_request(round)).unwrap();
        fe.send(Pair::Data, &ethernet(100, round as u8)).unwrap();
        assert_eq!(recv(&mut fe, Pair::Mailbox), version_request(round));
        assert_eq!(recv(&mut fe, Pair::Data), ethernet(100, round as u8));
    }
}

#[test]
fn a_mailbox_chain_at_a_bad_address_reaches_the_port_as_an_empty_frame() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    fe.post_rx(Pair::Mailbox, 2, MAILBOX_BUF).unwrap();

    let bad = RawDesc {
        addr: 0xdead_0000_0000,
        len: 64,
        device_writes: false,
    };
    assert_eq!(fe.send_raw_chain(MAILBOX_TX, &[bad]).unwrap(), 0);
    assert_eq!(rig.stats().transmitted, vec![(Pair::Mailbox, vec![])]);
    // The loopback answers it like any frame.
    assert_eq!(recv(&mut fe, Pair::Mailbox), Vec::<u8>::new());

    // The backend keeps serving.
    fe.send(Pair::Mailbox, &version_request(9)).unwrap();
    assert_eq!(recv(&mut fe, Pair::Mailbox), version_request(9));
}

#[test]
fn every_kind_of_broken_chain_comes_back_with_length_zero() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    let header = fe.alloc(NET_HDR_LEN, &[]).unwrap();
    let frame = fe.alloc(64, &version_request(1)).unwrap();
    let small = fe.alloc(8, &[]).unwrap();
    let big = fe.alloc(MAX_MAILBOX_FRAME + 1, &[]).unwrap();
    let end = GUEST_BASE + GUEST_SIZE as u64;
    let read = |addr, len| RawDesc {
        addr,
        len,
        device_writes: false,
    };
    let write = |addr, len| RawDesc {
        addr,
        len,
        device_writes: true,
    };

    let broken_tx: [(&str, Vec<RawDesc>); 6] = [
        (
            "write-only descriptor",
            vec![read(header, 12), write(frame, 64)],
        ),
        ("shorter than the header", vec![read(small, 8)]),
        (
            "longer than a mailbox frame",
            vec![read(header, 12), read(big, 4113)],
        ),
        (
            "second descriptor outside memory",
            vec![read(header, 12), read(0x10, 64)],
        ),
        (
            "descriptor across the end of memory",
            vec![read(header, 12), read(end - 8, 64)],
        ),
        ("address overflowing", vec![read(u64::MAX - 4, 64)]),
    ];
    for (what, descs) in &broken_tx {
        assert_eq!(fe.send_raw_chain(MAILBOX_TX, descs).unwrap(), 0, "{what}");
    }
    let empties = broken_tx.len();
    let stats = rig.stats();
    assert_eq!(stats.transmitted, vec![(Pair::Mailbox, vec![]); empties]);
    fe.post_rx(Pair::Mailbox, empties, MAILBOX_BUF).unwrap();
    for _ in 0..empties {
        assert_eq!(recv(&mut fe, Pair::Mailbox), Vec::<u8>::new());
    }

    // Receive side: a frame waits while broken buffers come and go.
    rig.port.inject(Pair::Data, &ethernet(60, 5));
    let rx_buf = fe.alloc(DATA_BUF, &[]).unwrap();
    let broken_rx: [(&str, Vec<RawDesc>); 3] = [
        ("readable descriptor", vec![read(rx_buf, DATA_BUF as u32)]),
        ("smaller than the header", vec![write(rx_buf, 8)]),
        (
            "outside memory",
            vec![write(0xdead_0000_0000, DATA_BUF as u32)],
        ),
    ];
    for (what, descs) in &broken_rx {
        assert_eq!(fe.send_raw_chain(DATA_RX, descs).unwrap(), 0, "{what}");
    }
    fe.post_rx(Pair::Data, 1, DATA_BUF).unwrap();
    assert_eq!(recv(&mut fe, Pair::Data), ethernet(60, 5));

    // And the mailbox still works.
    fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();
    fe.send(Pair::Mailbox, &version_request(2)).unwrap();
    assert_eq!(recv(&mut fe, Pair::Mailbox), version_request(2));
}

#[test]
fn an_available_index_running_ahead_of_the_ring_does_not_stall_the_vf() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    fe.post_rx(Pair::Data, 1, DATA_BUF).unwrap();
    // The mailbox queues claim 1000 chains on 256-entry rings.
    for queue in [MAILBOX_RX, MAILBOX_TX] {
        let ring = fe.ring(queue).unwrap();
        fe.write_guest(ring.avail + 2, &1000u16.to_le_bytes())
            .unwrap();
        fe.kick(queue).unwrap();
    }

    // The one vring worker still serves the data pair.
    fe.send(Pair::Data, &ethernet(60, 1)).unwrap();
    assert_eq!(recv(&mut fe, Pair::Data), ethernet(60, 1));
}

#[test]
fn a_receive_chain_split_over_descriptors_takes_a_frame() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    let a = fe.alloc(5, &[]).unwrap();
    let b = fe.alloc(200, &[]).unwrap();
    let frame = ethernet(100, 9);
    rig.port.inject(Pair::Data, &frame);

    let descs = [
        RawDesc {
            addr: a,
            len: 5,
            device_writes: true,
        },
        RawDesc {
            addr: b,
            len: 200,
            device_writes: true,
        },
    ];
    let len = fe.send_raw_chain(DATA_RX, &descs).unwrap();

    assert_eq!(len as usize, NET_HDR_LEN + frame.len());
    let mut written = fe.read(a, 5).unwrap();
    written.extend(fe.read(b, len as usize - 5).unwrap());
    assert_eq!(&written[NET_HDR_LEN..], frame.as_slice());
    assert_eq!(
        &written[..NET_HDR_LEN],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    );
}

#[test]
fn a_new_frontend_is_served_after_a_disconnect_by_the_same_loop() {
    let rig = Rig::new();
    for round in 1..=3 {
        let mut fe = rig.connect();
        fe.post_rx(Pair::Data, 1, DATA_BUF).unwrap();
        fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();
        fe.send(Pair::Mailbox, &version_request(round)).unwrap();
        fe.send(Pair::Data, &ethernet(80, round as u8)).unwrap();
        assert_eq!(recv(&mut fe, Pair::Mailbox), version_request(round));
        assert_eq!(recv(&mut fe, Pair::Data), ethernet(80, round as u8));
        fe.disconnect();

        let round = round as usize;
        let stats = rig.wait("the loop to get ready for the next frontend", |s| {
            s.disconnects == round && s.connects == round + 1
        });
        assert_eq!((stats.connects, stats.disconnects), (round + 1, round));
        assert!(rig.serving(), "the original serve thread ended");
    }
}

#[test]
fn a_frontend_that_breaks_the_protocol_only_ends_its_own_connection() {
    let rig = Rig::new();
    let mut fe = rig.connect();
    // A second SET_OWNER is refused and ends the connection.
    assert!(fe.vhost().set_owner().is_err());
    rig.wait("the broken connection to end", |s| {
        s.disconnects == 1 && s.connects == 2
    });
    drop(fe);

    let mut fe = rig.connect();
    fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();
    fe.send(Pair::Mailbox, &version_request(3)).unwrap();
    assert_eq!(recv(&mut fe, Pair::Mailbox), version_request(3));
    assert!(rig.serving());
}

#[test]
fn stopping_with_a_frontend_connected_ends_the_loop_and_removes_the_socket() {
    let mut rig = Rig::new();
    let mut fe = rig.connect();
    fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();
    fe.send(Pair::Mailbox, &version_request(1)).unwrap();
    assert_eq!(recv(&mut fe, Pair::Mailbox), version_request(1));

    rig.stop().expect("serve returns Ok when stopped");

    assert!(!rig.socket.exists(), "socket file left behind");
    let stats = rig.stats();
    assert_eq!((stats.connects, stats.disconnects), (1, 1));
    assert!(fe.vhost().get_features().is_err(), "connection still open");
}

#[test]
fn stopping_an_idle_server_ends_the_loop_and_removes_the_socket() {
    let mut rig = Rig::new();
    rig.wait("the loop to wait for a frontend", |s| s.connects == 1);

    rig.stop().expect("serve returns Ok when stopped");

    assert!(!rig.socket.exists(), "socket file left behind");
    let stats = rig.stats();
    assert_eq!(stats.connects, stats.disconnects);
}

#[test]
fn stopping_before_serving_returns_at_once() {
    init_tracing();
    let dir = TestDir::new("vhost").unwrap();
    let socket = dir.join("vf1.sock");
    let port = LoopbackPort::new();
    let server = VfServer::bind(&socket, VfId(1), port.clone()).unwrap();
    assert!(socket.exists());
    server.stop_handle().stop();

    server.serve().unwrap();

    assert!(!socket.exists());
    assert_eq!(port.stats().connects, 0);
}

#[test]
fn binding_refuses_a_live_socket_and_replaces_a_stale_one() {
    let rig = Rig::new();
    let port = LoopbackPort::new();
    let err = VfServer::bind(&rig.socket, VfId(0), port.clone()).unwrap_err();
    assert!(
        matches!(err, vfrig_device::vhost::Error::InUse { .. }),
        "{err}"
    );
    assert!(rig.serving(), "the first server was disturbed");

    let stale = rig.dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let server = VfServer::bind(&stale, VfId(1), port.clone()).unwrap();
    drop(server);
    assert!(
        !stale.exists(),
        "dropping an unserved server leaves its socket"
    );

    let file = rig.dir.join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let err = VfServer::bind(&file, VfId(2), port).unwrap_err();
    assert!(
        matches!(err, vfrig_device::vhost::Error::Listen { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn the_socket_is_private_to_its_owner() {
    let rig = Rig::new();
    let mode = std::fs::metadata(&rig.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn connecting_to_a_socket_nobody_serves_fails_with_the_path() {
    let dir = TestDir::new("vhost").unwrap();
    let socket = dir.join("missing.sock");
    let options = FrontendOptions {
        timeout: Duration::from_millis(50),
        ..FrontendOptions::default()
    };
    let err = TestFrontend::connect_with(&socket, options).unwrap_err();
    assert!(err.to_string().contains("missing.sock"), "{err}");
}

/// The daemon's stop once hung because the socket file had been removed
/// (a test's temp dir went first) and the wake-up connected by path.
#[test]
fn stop_ends_a_waiting_loop_even_if_the_socket_file_is_gone() {
    let dir = TestDir::new("stop-gone").expect("temp dir");
    let path = dir.join("vf0.sock");
    let port = LoopbackPort::new();
    let server = VfServer::bind(&path, VfId(0), port.clone()).expect("bind");
    let stop = server.stop_handle();
    let thread = std::thread::spawn(move || server.serve());
    // `connected` comes just before accept: wait for it, then pull the file away.
    port.wait_until(
        scaled(Duration::from_secs(5)),
        "the loop to wait for a frontend",
        |s| s.connects == 1,
    )
    .expect("loop started");
    std::fs::remove_file(&path).expect("socket file removed");
    stop.stop();
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "the serve loop did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        thread.join().expect("no panic").is_ok(),
        "a stop is not an error"
    );
}

// Ring enables before SET_FEATURES, as QEMU's vhost-user net sends them on
// every reconnect. The `vhost` crate refuses them there, so the server's
// relay holds them back until SET_FEATURES.

const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
const VERSION_1: u32 = 0x1;
const REPLY: u32 = 0x4;
const NEED_REPLY: u32 = 0x8;

/// A whole vhost-user message: header (native byte order) and payload.
fn raw_message(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = request.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&(VERSION_1 | flags).to_ne_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// SET_VRING_ENABLE of ring `index` to `num`.
fn ring_enable(index: u32, num: u32, flags: u32) -> Vec<u8> {
    let mut payload = index.to_ne_bytes().to_vec();
    payload.extend_from_slice(&num.to_ne_bytes());
    raw_message(SET_VRING_ENABLE, flags, &payload)
}

#[test]
fn ring_enables_before_set_features_are_answered_and_the_connection_survives() {
    let rig = Rig::new();
    let stream = UnixStream::connect(&rig.socket).expect("connect");
    stream.set_read_timeout(Some(timeout())).unwrap();
    // Raw messages go through a second handle between the library's requests.
    let mut raw = stream.try_clone().unwrap();
    let mut fe = Frontend::from_stream(stream, virtio_net::NUM_QUEUES as u64);
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    fe.set_owner().unwrap();
    let offered = fe.get_features().unwrap();
    fe.get_protocol_features().unwrap();
    fe.set_protocol_features(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK)
        .unwrap();

    // QEMU's order: enable the first pair, disable the second, before
    // SET_FEATURES. The one with NEED_REPLY gets a "success" reply.
    raw.write_all(&ring_enable(0, 1, NEED_REPLY)).unwrap();
    let mut reply = [0u8; 20];
    raw.read_exact(&mut reply)
        .expect("a reply to SET_VRING_ENABLE, not a closed connection");
    assert_eq!(
        reply.to_vec(),
        raw_message(SET_VRING_ENABLE, REPLY, &[0; 8])
    );
    raw.write_all(&ring_enable(1, 1, 0)).unwrap();
    raw.write_all(&ring_enable(2, 0, 0)).unwrap();
    raw.write_all(&ring_enable(3, 0, NEED_REPLY)).unwrap();
    raw.read_exact(&mut reply).expect("a second reply");
    assert_eq!(
        reply.to_vec(),
        raw_message(SET_VRING_ENABLE, REPLY, &[0; 8])
    );

    // The same connection goes on: features, then more requests.
    fe.set_features(offered & virtio_net::FEATURES)
        .expect("SET_FEATURES on the same connection");
    assert_eq!(fe.get_queue_num().unwrap(), virtio_net::NUM_QUEUES as u64);
    // After SET_FEATURES enables go straight to the backend.
    fe.set_vring_enable(2, true).unwrap();
    let stats = rig.stats();
    assert_eq!((stats.connects, stats.disconnects), (1, 0), "reconnected");
}

#[test]
fn frames_flow_on_a_connection_that_enabled_rings_before_set_features() {
    let rig = Rig::new();
    let early = vec![(0, 1), (1, 1), (2, 0), (3, 0)];
    let proxy = EarlyEnabler::spawn(&rig, early);
    let mut fe = TestFrontend::connect(&proxy.socket).expect("connect through the proxy");
    fe.post_rx(Pair::Data, 1, DATA_BUF).unwrap();
    fe.post_rx(Pair::Mailbox, 1, MAILBOX_BUF).unwrap();
    fe.send(Pair::Data, &ethernet(60, 9)).unwrap();
    fe.send(Pair::Mailbox, &version_request(9)).unwrap();

    assert_eq!(recv(&mut fe, Pair::Data), ethernet(60, 9));
    assert_eq!(recv(&mut fe, Pair::Mailbox), version_request(9));
    assert_eq!(proxy.injected(), 4, "the early enables were not sent");
    let stats = rig.stats();
    assert_eq!((stats.connects, stats.disconnects), (1, 0), "reconnected");
    drop(fe);
    proxy.join();
}

/// Sits between a [`TestFrontend`] and the VF socket and behaves like
/// QEMU's vhost-user net on a reconnect: right before SET_FEATURES it sends
/// SET_VRING_ENABLE (index, num) for each of `early`, without NEED_REPLY.
/// Everything else is copied both ways, file descriptors included.
struct EarlyEnabler {
    socket: PathBuf,
    injected: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl EarlyEnabler {
    fn spawn(rig: &Rig, early: Vec<(u32, u32)>) -> EarlyEnabler {
        let socket = rig.dir.join("qemu.sock");
        let listener = UnixListener::bind(&socket).expect("bind the proxy socket");
        let vf_socket = rig.socket.clone();
        let injected = Arc::new(AtomicUsize::new(0));
        let count = injected.clone();
        let thread = std::thread::spawn(move || {
            let (front, _) = listener.accept().expect("accept the test frontend");
            let back = UnixStream::connect(&vf_socket).expect("connect the VF socket");
            let (front_tx, back_rx) = (front.try_clone().unwrap(), back.try_clone().unwrap());
            let replies = std::thread::spawn(move || {
                while let Some((message, fds)) = read_message(&back_rx) {
                    write_message(&front_tx, &message, &fds);
                }
                let _ = front_tx.shutdown(Shutdown::Both);
            });
            let mut early = early;
            while let Some((message, fds)) = read_message(&front) {
                let request = u32::from_ne_bytes(message[..4].try_into().unwrap());
                if request == SET_FEATURES {
                    for (index, num) in early.drain(..) {
                        write_message(&back, &ring_enable(index, num, 0), &[]);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
                write_message(&back, &message, &fds);
            }
            let _ = back.shutdown(Shutdown::Both);
            replies.join().expect("proxy reply thread");
        });
        EarlyEnabler {
            socket,
            injected,
            thread,
        }
    }

    fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    fn join(self) {
        self.thread.join().expect("proxy thread");
    }
}

/// One whole message and the descriptors that came with its header, or
/// `None` at a close.
fn read_message(stream: &UnixStream) -> Option<(Vec<u8>, Vec<RawFd>)> {
    let mut header = [0u8; 12];
    let mut control = nix::cmsg_space!([RawFd; 8]);
    let mut fds = Vec::new();
    let mut got = 0;
    while got < header.len() {
        let mut iov = [IoSliceMut::new(&mut header[got..])];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        for cmsg in msg.cmsgs().expect("at most 8 descriptors") {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        if msg.bytes == 0 {
            return None;
        }
        got += msg.bytes;
    }
    let size = u32::from_ne_bytes(header[8..].try_into().unwrap()) as usize;
    let mut message = header.to_vec();
    message.resize(12 + size, 0);
    (&*stream).read_exact(&mut message[12..]).ok()?;
    Some((message, fds))
}

/// Writes `message` with `fds`, then closes the descriptors.
fn write_message(stream: &UnixStream, message: &[u8], fds: &[RawFd]) {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(message)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
    if let Ok(sent) = sent {
        let _ = (&*stream).write_all(&message[sent..]);
    }
    for &fd in fds {
        let _ = nix::unistd::close(fd);
    }
}
