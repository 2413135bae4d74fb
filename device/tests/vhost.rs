//! The vhost-user shell end to end: a `VfServer` on a real socket, the test
//! frontend playing QEMU, and a loopback port behind the backend.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vfrig_device::pf::VfId;
use vfrig_device::test_support::{
    scaled, FrontendOptions, LoopbackPort, LoopbackStats, RawDesc, TestDir, TestFrontend,
    GUEST_BASE, GUEST_SIZE,
};
use vfrig_device::vhost::virtio_net::{self, MAX_DATA_FRAME, MAX_MAILBOX_FRAME, NET_HDR_LEN};
use vfrig_device::vhost::{Pair, StopHandle, VfServer};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
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
        init_tracing();
        let dir = TestDir::new("vhost").expect("create a test directory");
        let socket = dir.join("vf0.sock");
        let port = LoopbackPort::new();
        let server = VfServer::bind(&socket, VfId(0), port.clone()).expect("bind the VF socket");
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
