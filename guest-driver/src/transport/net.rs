//! [`VfDevice`]: one VF as a virtio-net device with a data pair, a mailbox
//! pair and the control queue, driven from userspace by polling.
//!
//! Queue layout (the device side's contract): queue 0 receives and queue 1
//! transmits Ethernet frames through the PF switch; queue 2 receives PF
//! replies and events and queue 3 transmits VF requests (one virtchnl frame
//! per buffer); queue 4 is the control queue, which QEMU serves itself. Every
//! buffer starts with a 12-byte `virtio_net_hdr_v1`, added and stripped here.

use std::time::{Duration, Instant};

use virtchnl::MacAddr;

use super::backoff::Backoff;
use super::dma::DmaArena;
use super::pci::{Bdf, PciFunction};
use super::queues::{
    CtrlQueue, RxQueue, RxStats, TxQueue, CTRL_BUFFER_LEN, CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, CTRL_OK,
    NET_HDR_LEN,
};
use super::ring::{RingLayout, RingRegions, SplitQueue};
use super::shared::{Region, SharedMemory};
use super::virtio::{feature, status, Notifier, VirtioPci};
use super::{Error, Result};

/// Features the VF cannot work without.
const REQUIRED: u64 = feature::VERSION_1 | feature::NET_CTRL_VQ | feature::NET_MQ;
/// Features taken when offered.
const OPTIONAL: u64 = feature::NET_MAC | feature::NET_STATUS;

/// Queue pairs the VF uses: data and mailbox.
pub const QUEUE_PAIRS: u16 = 2;

/// Bytes of `virtio_net_config` read: mac, status, max_virtqueue_pairs.
const NET_CONFIG_LEN: usize = 10;

/// `VIRTIO_NET_S_LINK_UP`.
const NET_S_LINK_UP: u16 = 1;

/// Which function to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The one at this address.
    Bdf(Bdf),
    /// The first 1af4:1041 function no other process holds.
    FirstUnused,
}

/// Sizes of the queues and buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfConfig {
    /// Entries of each data ring (capped by the device's maximum).
    pub data_queue_size: u16,
    /// Bytes of a data buffer, header included: the largest frame is 12
    /// bytes less.
    pub data_buffer: usize,
    /// Entries of each mailbox ring.
    pub mailbox_queue_size: u16,
    /// How long the control queue may take to answer.
    pub ctrl_timeout: Duration,
}

impl Default for VfConfig {
    /// 64 data buffers of 2 KiB each way (frames up to 2036 bytes: a
    /// 1500-byte MTU with two VLAN tags fits), 16 mailbox buffers each way.
    fn default() -> Self {
        VfConfig {
            data_queue_size: 64,
            data_buffer: 2048,
            mailbox_queue_size: 16,
            ctrl_timeout: Duration::from_secs(5),
        }
    }
}

/// A mailbox buffer: the header, vfrig's frame header and a 4096-byte
/// message, rounded up to a cache line.
const MAILBOX_BUFFER: usize = (NET_HDR_LEN + virtchnl::MAX_FRAME_LEN).next_multiple_of(64);

/// What the device told us at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// PCI address.
    pub bdf: Bdf,
    /// The kernel driver that was bound before we took the function.
    pub unbound_driver: Option<String>,
    /// Negotiated features.
    pub features: u64,
    /// MAC from the device config (zero without VIRTIO_NET_F_MAC).
    pub mac: MacAddr,
    /// `max_virtqueue_pairs`.
    pub max_queue_pairs: u16,
    /// Queue sizes, by queue index 0..=4.
    pub queue_sizes: [u16; 5],
    /// Device address of the DMA arena.
    pub dma_base: u64,
}

/// One `buf`-byte buffer per entry of `ring`, cache-line aligned.
fn alloc_slots(arena: &mut DmaArena, ring: &SplitQueue, buf: usize) -> Result<Region> {
    let need = usize::from(ring.size())
        .checked_mul(buf)
        .ok_or(Error::ArenaFull {
            need: usize::MAX,
            align: 64,
            free: arena.size() - arena.used(),
        })?;
    arena.alloc(need, 64)
}

/// One direction pair of queues.
#[derive(Debug)]
struct Pair {
    rx: RxQueue,
    rx_notify: Notifier,
    tx: TxQueue,
    tx_notify: Notifier,
}

/// A queue pair of the VF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairId {
    /// Queues 0 and 1: Ethernet frames.
    Data,
    /// Queues 2 and 3: virtchnl frames.
    Mailbox,
}

/// A VF opened from userspace. Drop resets the device.
///
/// Methods never block except [`VfDevice::open`], which waits for the
/// control queue.
#[derive(Debug)]
pub struct VfDevice {
    // Drop order matters: the device is reset (VirtioPci's drop) before the
    // arena its rings live in is unmapped, and the PCI lock goes after both.
    virtio: VirtioPci,
    data: Pair,
    mailbox: Pair,
    ctrl: CtrlQueue,
    ctrl_notify: Notifier,
    info: DeviceInfo,
    arena: DmaArena,
    pci: PciFunction,
}

impl VfDevice {
    /// Opens the VF with the default sizes.
    pub fn open(selector: &Selector) -> Result<VfDevice> {
        VfDevice::open_with(selector, &VfConfig::default())
    }

    /// Takes the function from its kernel driver, negotiates features, sets
    /// up all five queues, stocks the receive queues, sets DRIVER_OK and
    /// enables the mailbox pair over the control queue.
    pub fn open_with(selector: &Selector, config: &VfConfig) -> Result<VfDevice> {
        let pci = match selector {
            Selector::Bdf(bdf) => PciFunction::open(bdf)?,
            Selector::FirstUnused => PciFunction::open_first()?,
        };
        let bdf = pci.bdf().clone();
        let _span = tracing::info_span!("vf_device", %bdf).entered();
        let unbound_driver = pci.unbound_driver().map(str::to_owned);
        // The arena before the device: locals drop in reverse order, so on
        // any error below the device is reset before its memory goes away.
        let mut arena = DmaArena::new()?;
        pci.enable_dma()?;
        let virtio = VirtioPci::new(&pci)?;
        virtio.reset()?;
        virtio.add_status(status::ACKNOWLEDGE)?;
        virtio.add_status(status::DRIVER)?;
        let features = virtio.negotiate(REQUIRED, OPTIONAL)?;
        let cfg = virtio.device_config(NET_CONFIG_LEN)?;
        let mac = if features & feature::NET_MAC != 0 {
            MacAddr(cfg[0..6].try_into().expect("6 of 10 bytes"))
        } else {
            MacAddr::ZERO
        };
        let max_queue_pairs = u16::from_le_bytes([cfg[8], cfg[9]]);
        let num_queues = virtio.num_queues()?;
        let ctrl_index = 2 * max_queue_pairs;
        if max_queue_pairs < QUEUE_PAIRS || num_queues <= ctrl_index {
            return Err(Error::TooFewQueues {
                have: max_queue_pairs,
                queues: num_queues,
            });
        }

        let mut sizes = [0u16; 5];
        let wanted = [
            config.data_queue_size,
            config.data_queue_size,
            config.mailbox_queue_size,
            config.mailbox_queue_size,
            // One command at a time; two descriptors each.
            2,
        ];
        let indices = [0, 1, 2, 3, ctrl_index];
        let mut rings = Vec::with_capacity(5);
        for (i, (&queue, &want)) in indices.iter().zip(&wanted).enumerate() {
            let max = virtio.queue_max_size(queue)?;
            if max == 0 {
                return Err(Error::QueueUnavailable { queue, max });
            }
            let layout = RingLayout::new(want.min(max))?;
            sizes[i] = layout.size();
            let regions = RingRegions {
                desc: arena.alloc(layout.desc_bytes(), RingLayout::DESC_ALIGN)?,
                avail: arena.alloc(layout.avail_bytes(), RingLayout::AVAIL_ALIGN)?,
                used: arena.alloc(layout.used_bytes(), RingLayout::USED_ALIGN)?,
            };
            let ring = SplitQueue::new(&arena, queue, layout, regions)?;
            let notifier = virtio.setup_queue(queue, layout.size(), ring.addrs(&arena)?)?;
            rings.push((ring, notifier));
        }
        virtio.disable_config_interrupt()?;

        let mut rings = rings.into_iter();
        let mut next_ring = || rings.next().expect("five rings were set up");
        let rx = |arena: &mut DmaArena, (ring, notify): (SplitQueue, Notifier), buf| {
            let buffers = alloc_slots(arena, &ring, buf)?;
            let mut q = RxQueue::new(ring, buffers, buf)?;
            q.fill(&*arena)?;
            Ok::<_, Error>((q, notify))
        };
        let tx = |arena: &mut DmaArena, (ring, notify): (SplitQueue, Notifier), buf| {
            let buffers = alloc_slots(arena, &ring, buf)?;
            Ok::<_, Error>((TxQueue::new(ring, buffers, buf)?, notify))
        };
        let (data_rx, data_rx_notify) = rx(&mut arena, next_ring(), config.data_buffer)?;
        let (data_tx, data_tx_notify) = tx(&mut arena, next_ring(), config.data_buffer)?;
        let (mb_rx, mb_rx_notify) = rx(&mut arena, next_ring(), MAILBOX_BUFFER)?;
        let (mb_tx, mb_tx_notify) = tx(&mut arena, next_ring(), MAILBOX_BUFFER)?;
        let (ctrl_ring, ctrl_notify) = next_ring();
        let ctrl = CtrlQueue::new(ctrl_ring, arena.alloc(CTRL_BUFFER_LEN, 64)?)?;
        tracing::debug!(
            used = arena.used(),
            size = arena.size(),
            "DMA arena laid out"
        );

        let info = DeviceInfo {
            bdf,
            unbound_driver,
            features,
            mac,
            max_queue_pairs,
            queue_sizes: sizes,
            dma_base: arena.iova(),
        };
        let mut dev = VfDevice {
            virtio,
            data: Pair {
                rx: data_rx,
                rx_notify: data_rx_notify,
                tx: data_tx,
                tx_notify: data_tx_notify,
            },
            mailbox: Pair {
                rx: mb_rx,
                rx_notify: mb_rx_notify,
                tx: mb_tx,
                tx_notify: mb_tx_notify,
            },
            ctrl,
            ctrl_notify,
            info,
            arena,
            pci,
        };
        dev.virtio.add_status(status::DRIVER_OK)?;
        dev.virtio.check_status()?;
        for pair in [PairId::Data, PairId::Mailbox] {
            dev.publish_rx(pair, true)?;
        }
        // QEMU starts with one pair; the mailbox pair needs the second.
        dev.ctrl_command(
            CTRL_MQ,
            CTRL_MQ_VQ_PAIRS_SET,
            &QUEUE_PAIRS.to_le_bytes(),
            config.ctrl_timeout,
        )?;
        // The backend looks at a ring when it is enabled, but kick anyway:
        // buffers posted while a ring was disabled must not wait.
        dev.publish_rx(PairId::Mailbox, true)?;
        tracing::info!(
            mac = %dev.info.mac,
            features = format_args!("{:#x}", dev.info.features),
            queue_sizes = ?dev.info.queue_sizes,
            "VF device ready"
        );
        Ok(dev)
    }

    /// What the device reported at open.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The MAC in the device config.
    pub fn mac(&self) -> MacAddr {
        self.info.mac
    }

    /// The PCI function.
    pub fn bdf(&self) -> &Bdf {
        self.pci.bdf()
    }

    /// Whether the device config says the link is up (always true without
    /// VIRTIO_NET_F_STATUS).
    pub fn link_up(&self) -> Result<bool> {
        if self.info.features & feature::NET_STATUS == 0 {
            return Ok(true);
        }
        let cfg = self.virtio.device_config(NET_CONFIG_LEN)?;
        Ok(u16::from_le_bytes([cfg[6], cfg[7]]) & NET_S_LINK_UP != 0)
    }

    fn pair(&self, id: PairId) -> &Pair {
        match id {
            PairId::Data => &self.data,
            PairId::Mailbox => &self.mailbox,
        }
    }

    /// The arena, the device and one pair, borrowed apart.
    fn split(&mut self, id: PairId) -> (&DmaArena, &VirtioPci, &mut Pair) {
        let pair = match id {
            PairId::Data => &mut self.data,
            PairId::Mailbox => &mut self.mailbox,
        };
        (&self.arena, &self.virtio, pair)
    }

    /// Publishes reposted receive buffers and notifies if the device wants
    /// it (or always, with `force`).
    fn publish_rx(&mut self, id: PairId, force: bool) -> Result<()> {
        let (arena, virtio, pair) = self.split(id);
        if pair.rx.publish(arena)? || force {
            virtio.notify(&pair.rx_notify)?;
        }
        Ok(())
    }

    fn send(&mut self, id: PairId, frame: &[u8]) -> Result<()> {
        let (arena, virtio, pair) = self.split(id);
        pair.tx.send(arena, frame)?;
        if pair.tx.publish(arena)? {
            virtio.notify(&pair.tx_notify)?;
        }
        Ok(())
    }

    fn recv(&mut self, id: PairId) -> Result<Option<Vec<u8>>> {
        let (arena, _, pair) = self.split(id);
        let frame = pair.rx.poll(arena)?;
        if frame.is_some() {
            self.publish_rx(id, false)?;
        }
        Ok(frame)
    }

    /// Sends an Ethernet frame (without FCS) through the PF switch.
    pub fn send_frame(&mut self, frame: &[u8]) -> Result<()> {
        self.send(PairId::Data, frame)
    }

    /// The next Ethernet frame the PF switch delivered, if any.
    pub fn recv_frame(&mut self) -> Result<Option<Vec<u8>>> {
        self.recv(PairId::Data)
    }

    /// Sends one virtchnl frame (header and message) to the PF.
    pub fn send_mailbox(&mut self, frame: &[u8]) -> Result<()> {
        self.send(PairId::Mailbox, frame)
    }

    /// The next virtchnl frame (reply or event) from the PF, if any.
    pub fn recv_mailbox(&mut self) -> Result<Option<Vec<u8>>> {
        self.recv(PairId::Mailbox)
    }

    /// Takes back transmit buffers the device has finished with; returns how
    /// many frames of `pair` are still in flight.
    pub fn reclaim_tx(&mut self, id: PairId) -> Result<u16> {
        let (arena, _, pair) = self.split(id);
        pair.tx.reclaim(arena)?;
        Ok(pair.tx.in_flight())
    }

    /// Receive counters of `pair`.
    pub fn rx_stats(&self, id: PairId) -> RxStats {
        self.pair(id).rx.stats()
    }

    /// Frames sent on `pair` so far.
    pub fn tx_sent(&self, id: PairId) -> u64 {
        self.pair(id).tx.sent()
    }

    /// Runs one control command and waits for its ack.
    fn ctrl_command(
        &mut self,
        class: u8,
        command: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<()> {
        self.ctrl.submit(&self.arena, class, command, data)?;
        // Always notify: QEMU serves the control queue only when kicked.
        let _ = self.ctrl.publish(&self.arena)?;
        self.virtio.notify(&self.ctrl_notify)?;
        let start = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            if let Some(ack) = self.ctrl.poll(&self.arena)? {
                if ack != CTRL_OK {
                    return Err(Error::CtrlRejected {
                        class,
                        command,
                        ack,
                    });
                }
                tracing::debug!(class, command, elapsed = ?start.elapsed(), "control command done");
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::CtrlTimeout {
                    class,
                    command,
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            backoff.snooze();
        }
    }
}
