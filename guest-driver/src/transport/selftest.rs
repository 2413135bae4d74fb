//! `vfrig-driver selftest`: proves the transport end to end against the PF.
//!
//! Opens the VF, negotiates VERSION 1.1, asks for resources, makes sure the
//! PF knows a unicast MAC for the VF (the PF's default MAC if it gave one,
//! else the device config's, added with ADD_ETH_ADDR as PRIMARY), enables
//! queue pair 0, sends one broadcast ARP probe on the data queue and waits
//! until the device has taken it; then, if asked, it listens for data
//! frames for a while (another VF's broadcast, say). The [`Report`] says
//! what was exchanged and how long each step took.
//!
//! This is a straight-line exchange with one request in flight, not the
//! driver's state machine (that is `core`); it exists to check the transport
//! and the PF's switch in a real VM.

use std::time::{Duration, Instant};

use serde::Serialize;
use virtchnl::{
    EtherAddr, EtherAddrList, EtherAddrType, EventKind, MacAddr, PfMessage, QueueSelect, Reply,
    ReplyBody, Request, VersionInfo, VfCapFlags, VirtchnlOp, VirtchnlStatus, VsiType,
};

use super::backoff::Backoff;
use super::{Error, PairId, Selector, VfDevice};

/// Capabilities the selftest asks for: what vfrig's PF models.
pub const CAPS_ASKED: VfCapFlags = VfCapFlags(
    VfCapFlags::L2.0 | VfCapFlags::VLAN.0 | VfCapFlags::VLAN_V2.0 | VfCapFlags::ADV_LINK_SPEED.0,
);

/// The address the ARP probe asks about (TEST-NET-1, RFC 5737).
pub const PROBE_TARGET: [u8; 4] = [192, 0, 2, 1];

/// What to run against.
#[derive(Debug, Clone)]
pub struct SelftestOptions {
    /// Which VF.
    pub selector: Selector,
    /// How long each reply (and the frame's completion) may take.
    pub timeout: Duration,
    /// How long to keep receiving data frames after sending one (0: not at
    /// all).
    pub listen: Duration,
}

/// Why the selftest failed.
#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    /// The VF could not be opened.
    #[error("cannot open the VF")]
    Open(#[source] Error),
    /// A queue operation failed.
    #[error("queue operation failed while {step}")]
    Transport {
        /// What the selftest was doing.
        step: &'static str,
        /// The transport error.
        #[source]
        source: Error,
    },
    /// No reply came.
    #[error(
        "no reply to {op} within {waited_ms} ms; is the PF daemon serving this VF? \
         (RUST_LOG=debug on the host shows its mailbox)"
    )]
    Timeout {
        /// The request.
        op: VirtchnlOp,
        /// How long we waited.
        waited_ms: u64,
    },
    /// The PF refused a request.
    #[error("the PF answered {op} with {status}")]
    Refused {
        /// The request.
        op: VirtchnlOp,
        /// Its status.
        status: VirtchnlStatus,
    },
    /// A successful reply without the body its opcode returns.
    #[error("the reply to {op} carries {got}")]
    UnexpectedBody {
        /// The request.
        op: VirtchnlOp,
        /// What the body was.
        got: String,
    },
    /// GET_VF_RESOURCES named no SR-IOV VSI.
    #[error("GET_VF_RESOURCES granted no SR-IOV VSI ({vsis} VSIs)")]
    NoVsi {
        /// VSIs in the reply.
        vsis: usize,
    },
    /// Neither the PF nor the device config gave a unicast MAC.
    #[error("the PF's default MAC is {pf} and the device config's is {device}: no unicast MAC to send from")]
    NoMac {
        /// From GET_VF_RESOURCES.
        pf: MacAddr,
        /// From the virtio config.
        device: MacAddr,
    },
    /// The device did not take the frame.
    #[error("the device did not take the data frame within {waited_ms} ms")]
    TxTimeout {
        /// How long we waited.
        waited_ms: u64,
    },
}

/// Everything the selftest saw, serialised as the command's output.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// PCI address of the VF.
    pub bdf: String,
    /// The virtio device.
    pub device: DeviceReport,
    /// VERSION.
    pub version: VersionReport,
    /// GET_VF_RESOURCES.
    pub resources: ResourcesReport,
    /// The MAC frames are sent from.
    pub mac: MacReport,
    /// ENABLE_QUEUES: the bitmaps enabled.
    pub queues_enabled: QueuesReport,
    /// Data frames sent (and taken by the device).
    pub frames_sent: u64,
    /// Data frames received while listening, in order.
    pub frames_received: Vec<FrameSummary>,
    /// PF events received while waiting for replies, in order.
    pub events: Vec<EventReport>,
    /// Mailbox frames that were not the awaited reply or an event.
    pub stray_frames: u64,
    /// Time per step, in milliseconds.
    pub elapsed_ms: Timings,
}

/// The virtio side.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// The kernel driver it was taken from.
    pub unbound_driver: Option<String>,
    /// Negotiated features, hex.
    pub features: String,
    /// MAC in the device config.
    pub mac: MacAddr,
    /// `max_virtqueue_pairs`.
    pub max_queue_pairs: u16,
    /// Sizes of queues 0..=4.
    pub queue_sizes: [u16; 5],
    /// Device address of the DMA arena, hex.
    pub dma_base: String,
}

/// The VERSION exchange.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    /// What the VF sent.
    pub sent: String,
    /// What the PF answered.
    pub pf: String,
}

/// The GET_VF_RESOURCES reply.
#[derive(Debug, Clone, Serialize)]
pub struct ResourcesReport {
    /// Capabilities asked for.
    pub caps_asked: Vec<&'static str>,
    /// Capabilities granted.
    pub caps: Vec<&'static str>,
    /// Granted bits, hex.
    pub caps_raw: String,
    /// `num_queue_pairs`.
    pub num_queue_pairs: u16,
    /// `max_vectors`.
    pub max_vectors: u16,
    /// `max_mtu`.
    pub max_mtu: u16,
    /// The SR-IOV VSI's id.
    pub vsi_id: u16,
    /// Its queue pairs.
    pub vsi_queue_pairs: u16,
    /// Its default MAC.
    pub mac: MacAddr,
}

/// Where the sending MAC came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MacSource {
    /// The PF's default MAC (GET_VF_RESOURCES).
    Pf,
    /// The virtio device config, registered with ADD_ETH_ADDR.
    DeviceConfig,
}

/// The MAC in use.
#[derive(Debug, Clone, Serialize)]
pub struct MacReport {
    /// The address.
    pub address: MacAddr,
    /// Where it came from.
    pub source: MacSource,
}

/// Queue bitmaps.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueuesReport {
    /// Receive queues.
    pub rx: u32,
    /// Transmit queues.
    pub tx: u32,
}

/// A received Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrameSummary {
    /// Length without the virtio_net_hdr.
    pub len: usize,
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The (outer) ethertype, hex.
    pub ethertype: String,
}

impl FrameSummary {
    /// Summarises `frame`; `None` if it is shorter than an Ethernet header.
    pub fn of(frame: &[u8]) -> Option<FrameSummary> {
        let mac = |at: usize| -> Option<MacAddr> {
            Some(MacAddr(frame.get(at..at + 6)?.try_into().ok()?))
        };
        let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
        Some(FrameSummary {
            len: frame.len(),
            dst: mac(0)?,
            src: mac(6)?,
            ethertype: format!("{ethertype:#06x}"),
        })
    }
}

/// A PF event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventReport {
    /// VIRTCHNL_EVENT_LINK_CHANGE.
    LinkChange {
        /// Link state.
        link_up: bool,
        /// Speed field as sent.
        link_speed: u32,
    },
    /// VIRTCHNL_EVENT_RESET_IMPENDING.
    ResetImpending,
    /// VIRTCHNL_EVENT_PF_DRIVER_CLOSE.
    PfDriverClose,
    /// Any other event code.
    Unknown {
        /// The code.
        code: i32,
    },
}

impl From<EventKind> for EventReport {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::LinkChange {
                link_speed,
                link_up,
            } => EventReport::LinkChange {
                link_up,
                link_speed,
            },
            EventKind::ResetImpending => EventReport::ResetImpending,
            EventKind::PfDriverClose => EventReport::PfDriverClose,
            EventKind::Unknown(code) => EventReport::Unknown { code },
        }
    }
}

/// Milliseconds per step.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Opening the VF (unbind, virtio setup, control queue).
    pub open: f64,
    /// VERSION round trip.
    pub version: f64,
    /// GET_VF_RESOURCES round trip.
    pub resources: f64,
    /// ADD_ETH_ADDR round trip (0 when the PF gave a MAC).
    pub add_mac: f64,
    /// ENABLE_QUEUES round trip.
    pub enable_queues: f64,
    /// Sending the frame until the device took it.
    pub frame: f64,
    /// Listening for frames.
    pub listen: f64,
    /// Everything.
    pub total: f64,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// A broadcast ARP probe from `src` (sender IP 0.0.0.0, RFC 5227) asking for
/// `target`, padded to the 60-byte Ethernet minimum.
pub fn arp_probe(src: MacAddr, target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&MacAddr::BROADCAST.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0806u16.to_be_bytes()); // ARP
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

/// One request at a time over the mailbox, collecting events on the way.
struct Mailbox<'a> {
    dev: &'a mut VfDevice,
    timeout: Duration,
    cookie: u32,
    events: Vec<EventReport>,
    stray: u64,
}

impl Mailbox<'_> {
    /// Handles one frame from the PF; returns the reply if it is the one
    /// awaited (`cookie` and `op`).
    fn take(&mut self, frame: &[u8], awaited: Option<(u32, VirtchnlOp)>) -> Option<Reply> {
        match PfMessage::from_frame(frame) {
            Ok((_, PfMessage::Event(event))) => {
                tracing::debug!(?event, "PF event");
                self.events.push(event.kind.into());
            }
            Ok((header, PfMessage::Reply(reply))) if awaited == Some((header.cookie, reply.op)) => {
                return Some(reply);
            }
            Ok((header, PfMessage::Reply(reply))) => {
                tracing::warn!(op = %reply.op, cookie = header.cookie, "reply to no request in flight");
                self.stray += 1;
            }
            Err(err) => {
                tracing::warn!(%err, len = frame.len(), "malformed mailbox frame from the PF");
                self.stray += 1;
            }
        }
        None
    }

    /// Handles every frame already received, without waiting.
    fn drain_events(&mut self) -> Result<(), SelftestError> {
        let step = "draining the mailbox";
        while let Some(frame) = self
            .dev
            .recv_mailbox()
            .map_err(|source| SelftestError::Transport { step, source })?
        {
            self.take(&frame, None);
        }
        Ok(())
    }

    /// Sends `req` and waits for the reply with its cookie; a refusal is an
    /// error.
    fn request(&mut self, req: &Request) -> Result<Reply, SelftestError> {
        let op = req.op();
        self.cookie += 1;
        let cookie = self.cookie;
        let step = "exchanging mailbox frames";
        let transport = |source| SelftestError::Transport { step, source };
        self.dev
            .send_mailbox(&req.to_frame(cookie))
            .map_err(transport)?;
        tracing::debug!(%op, cookie, "request sent");
        let start = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            while let Some(frame) = self.dev.recv_mailbox().map_err(transport)? {
                backoff.reset();
                let Some(reply) = self.take(&frame, Some((cookie, op))) else {
                    continue;
                };
                tracing::debug!(%op, status = %reply.status, elapsed = ?start.elapsed(), "reply");
                if !reply.status.is_success() {
                    return Err(SelftestError::Refused {
                        op,
                        status: reply.status,
                    });
                }
                return Ok(reply);
            }
            if start.elapsed() > self.timeout {
                return Err(SelftestError::Timeout {
                    op,
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            backoff.snooze();
        }
    }
}

/// Runs the selftest.
pub fn run(opts: &SelftestOptions) -> Result<Report, SelftestError> {
    let start = Instant::now();
    let mut timings = Timings::default();
    let mut dev = VfDevice::open(&opts.selector).map_err(SelftestError::Open)?;
    timings.open = millis(start.elapsed());
    let info = dev.info().clone();
    let config_mac = dev.mac();
    let mut mb = Mailbox {
        dev: &mut dev,
        timeout: opts.timeout,
        cookie: 0,
        events: Vec::new(),
        stray: 0,
    };

    let t = Instant::now();
    let sent = VersionInfo::V1_1;
    let reply = mb.request(&Request::Version(sent))?;
    let ReplyBody::Version(pf_version) = reply.body else {
        return Err(unexpected(&reply));
    };
    timings.version = millis(t.elapsed());

    let t = Instant::now();
    let reply = mb.request(&Request::GetVfResources {
        caps: Some(CAPS_ASKED),
    })?;
    let ReplyBody::VfResource(res) = &reply.body else {
        return Err(unexpected(&reply));
    };
    let vsi = res
        .vsi_res
        .iter()
        .find(|v| v.vsi_type == VsiType::Sriov)
        .copied()
        .ok_or(SelftestError::NoVsi {
            vsis: res.vsi_res.len(),
        })?;
    timings.resources = millis(t.elapsed());
    let resources = ResourcesReport {
        caps_asked: CAPS_ASKED.names().collect(),
        caps: res.vf_cap_flags.names().collect(),
        caps_raw: format!("{:#x}", res.vf_cap_flags.0),
        num_queue_pairs: res.num_queue_pairs,
        max_vectors: res.max_vectors,
        max_mtu: res.max_mtu,
        vsi_id: vsi.vsi_id,
        vsi_queue_pairs: vsi.num_queue_pairs,
        mac: vsi.default_mac_addr,
    };

    let t = Instant::now();
    let mac = if vsi.default_mac_addr.is_valid_unicast() {
        MacReport {
            address: vsi.default_mac_addr,
            source: MacSource::Pf,
        }
    } else if config_mac.is_valid_unicast() {
        mb.request(&Request::AddEthAddr(EtherAddrList {
            vsi_id: vsi.vsi_id,
            addrs: vec![EtherAddr {
                addr: config_mac,
                kind: EtherAddrType::Primary,
            }],
        }))?;
        timings.add_mac = millis(t.elapsed());
        MacReport {
            address: config_mac,
            source: MacSource::DeviceConfig,
        }
    } else {
        return Err(SelftestError::NoMac {
            pf: vsi.default_mac_addr,
            device: config_mac,
        });
    };

    // The PF switch drops frames from a VF without an enabled transmit queue
    // (and delivers none to it without a receive queue): enable pair 0.
    let t = Instant::now();
    let queues = QueueSelect {
        vsi_id: vsi.vsi_id,
        rx_queues: 1,
        tx_queues: 1,
    };
    mb.request(&Request::EnableQueues(queues))?;
    timings.enable_queues = millis(t.elapsed());

    let t = Instant::now();
    let frame = arp_probe(mac.address, PROBE_TARGET);
    let step = "sending the data frame";
    mb.dev
        .send_frame(&frame)
        .map_err(|source| SelftestError::Transport { step, source })?;
    let mut backoff = Backoff::default();
    while mb
        .dev
        .reclaim_tx(PairId::Data)
        .map_err(|source| SelftestError::Transport { step, source })?
        > 0
    {
        if t.elapsed() > opts.timeout {
            return Err(SelftestError::TxTimeout {
                waited_ms: t.elapsed().as_millis() as u64,
            });
        }
        backoff.snooze();
    }
    timings.frame = millis(t.elapsed());
    // The PF follows GET_VF_RESOURCES and ENABLE_QUEUES with a link event;
    // collect what has arrived, without waiting for more.
    mb.drain_events()?;

    let t = Instant::now();
    let mut received = Vec::new();
    let step = "receiving data frames";
    let mut backoff = Backoff::default();
    while t.elapsed() < opts.listen {
        let frame = mb
            .dev
            .recv_frame()
            .map_err(|source| SelftestError::Transport { step, source })?;
        match frame {
            Some(frame) => {
                backoff.reset();
                tracing::debug!(len = frame.len(), "data frame received");
                received.extend(FrameSummary::of(&frame));
            }
            None => {
                mb.drain_events()?;
                backoff.snooze();
            }
        }
    }
    timings.listen = millis(t.elapsed());
    timings.total = millis(start.elapsed());

    Ok(Report {
        bdf: info.bdf.to_string(),
        device: DeviceReport {
            unbound_driver: info.unbound_driver,
            features: format!("{:#x}", info.features),
            mac: info.mac,
            max_queue_pairs: info.max_queue_pairs,
            queue_sizes: info.queue_sizes,
            dma_base: format!("{:#x}", info.dma_base),
        },
        version: VersionReport {
            sent: format!("{}.{}", sent.major, sent.minor),
            pf: format!("{}.{}", pf_version.major, pf_version.minor),
        },
        resources,
        mac,
        queues_enabled: QueuesReport {
            rx: queues.rx_queues,
            tx: queues.tx_queues,
        },
        frames_sent: mb.dev.tx_sent(PairId::Data),
        frames_received: received,
        events: mb.events,
        stray_frames: mb.stray,
        elapsed_ms: timings,
    })
}

fn unexpected(reply: &Reply) -> SelftestError {
    SelftestError::UnexpectedBody {
        op: reply.op,
        got: format!("{:?}", reply.body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_padded_broadcast_arp_request() {
        let src = MacAddr([2, 0, 0, 0, 0x10, 0]);
        let f = arp_probe(src, PROBE_TARGET);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &src.0);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &src.0, "sender hardware address");
        assert_eq!(&f[28..32], &[0; 4], "probe: no sender IP");
        assert_eq!(&f[38..42], &PROBE_TARGET);
        assert!(f[42..].iter().all(|&b| b == 0));
    }

    #[test]
    fn received_frames_are_summarised_by_their_header() {
        let f = arp_probe(MacAddr([2, 0, 0, 0, 0x10, 1]), PROBE_TARGET);
        let s = FrameSummary::of(&f).unwrap();
        assert_eq!(
            (s.len, s.dst, s.src, s.ethertype.as_str()),
            (
                60,
                MacAddr::BROADCAST,
                MacAddr([2, 0, 0, 0, 0x10, 1]),
                "0x0806"
            )
        );
        assert_eq!(FrameSummary::of(&f[..13]), None);
    }

    #[test]
    fn milliseconds_keep_two_decimals() {
        assert_eq!(millis(Duration::from_micros(1234)), 1.23);
        assert_eq!(millis(Duration::from_micros(1236)), 1.24);
    }

    #[test]
    fn events_report_their_kind() {
        let json = serde_json::to_value(EventReport::from(EventKind::LinkChange {
            link_speed: 25_000,
            link_up: true,
        }))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "link_change", "link_up": true, "link_speed": 25000})
        );
    }
}
