//! The transport's one error type.
//!
//! Variants name what failed and carry the data; the underlying OS error, if
//! any, is the [`source`](std::error::Error::source), not part of the message.

use std::path::PathBuf;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sysfs or procfs file could not be read or written.
    #[error("cannot {what} {}", path.display())]
    Sysfs {
        /// What was being done ("read", "unbind the driver through", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PCI address that is not `dddd:bb:dd.f` (or `bb:dd.f`).
    #[error("`{0}` is not a PCI address; write it as 0000:01:00.0")]
    BadBdf(String),
    /// No function at the address given.
    #[error("no PCI function {bdf} in /sys/bus/pci/devices; `ls /sys/bus/pci/devices` lists the functions")]
    NoSuchFunction {
        /// The address.
        bdf: String,
    },
    /// No function with the wanted ids that nobody else holds.
    #[error(
        "no unused {vendor:04x}:{device:04x} PCI function under /sys/bus/pci/devices; \
         is a VF plugged in, and not already held by another vfrig-driver?"
    )]
    NoDevice {
        /// PCI vendor id.
        vendor: u16,
        /// PCI device id.
        device: u16,
    },
    /// The function exists but is not a modern virtio-net function.
    #[error(
        "{bdf} is {vendor:04x}:{device:04x}, not a modern virtio-net function (1af4:1041); \
         start QEMU's virtio-net-pci with disable-legacy=on"
    )]
    NotVirtioNet {
        /// The function.
        bdf: String,
        /// Its vendor id.
        vendor: u16,
        /// Its device id.
        device: u16,
    },
    /// Another process holds the function (its sysfs `config` is locked).
    #[error("{bdf} is held by another process (its sysfs config file is locked)")]
    Busy {
        /// The function.
        bdf: String,
    },
    /// The kernel driver is still bound after writing to `unbind`.
    #[error("{bdf} is still bound to {driver} after unbinding it")]
    StillBound {
        /// The function.
        bdf: String,
        /// The driver's name.
        driver: String,
    },
    /// The config space is shorter than the standard header.
    #[error("PCI config space holds {len} bytes, fewer than the {need}-byte header")]
    ConfigTooShort {
        /// Bytes read.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A virtio capability the driver needs is missing.
    #[error("the function has no usable virtio {0} capability")]
    MissingCapability(&'static str),
    /// A capability points outside its BAR.
    #[error(
        "virtio {cap} capability ({offset:#x}+{length:#x} in BAR {bar}) lies outside the \
         {bar_len:#x}-byte BAR"
    )]
    CapabilityOutsideBar {
        /// Which capability.
        cap: &'static str,
        /// The BAR.
        bar: u8,
        /// Offset in the BAR.
        offset: u32,
        /// Length.
        length: u32,
        /// Size of the BAR.
        bar_len: usize,
    },
    /// Mapping a BAR failed.
    #[error("cannot map {}", path.display())]
    MapBar {
        /// The sysfs resource file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A register access outside its window, or misaligned.
    #[error("register access of {width} bytes at {offset:#x} is outside the {len:#x}-byte window or misaligned")]
    Register {
        /// Offset of the access.
        offset: usize,
        /// Width in bytes.
        width: usize,
        /// Size of the window.
        len: usize,
    },
    /// No hugepage could be mapped for the DMA arena.
    #[error(
        "cannot map a 2 MiB hugepage for DMA; boot the guest with hugepages=N \
         (N at least 1 per driver) on the kernel command line"
    )]
    Hugepage(#[source] std::io::Error),
    /// The DMA arena could not be locked in memory.
    #[error("cannot mlock the DMA arena")]
    Mlock(#[source] std::io::Error),
    /// `/proc/self/pagemap` gave no physical address.
    #[error(
        "/proc/self/pagemap shows no physical address for the DMA arena (entry {entry:#x}); \
         run as root (CAP_SYS_ADMIN is needed to read page frame numbers)"
    )]
    NoPhysicalAddress {
        /// The pagemap entry.
        entry: u64,
    },
    /// The hugepage is not physically contiguous (it always is; a kernel
    /// without hugetlb would show this).
    #[error("DMA arena page {page} is at pfn {pfn:#x}, expected {expected:#x}: not physically contiguous")]
    NotContiguous {
        /// Index of the 4 KiB page.
        page: usize,
        /// Its page frame number.
        pfn: u64,
        /// The frame number contiguity needs.
        expected: u64,
    },
    /// The DMA arena has no room left.
    #[error("DMA arena full: {need} bytes (aligned to {align}) asked for, {free} free; use smaller queues or buffers")]
    ArenaFull {
        /// Bytes asked for.
        need: usize,
        /// Alignment asked for.
        align: usize,
        /// Bytes left.
        free: usize,
    },
    /// An access outside shared memory or one of its regions.
    #[error(
        "shared-memory access of {len} bytes at {offset:#x} is outside the {size:#x}-byte region"
    )]
    OutOfBounds {
        /// Offset of the access.
        offset: usize,
        /// Its length.
        len: usize,
        /// Size of the region.
        size: usize,
    },
    /// The device did not finish a reset.
    #[error("device status still {status:#04x} {waited_ms} ms after a reset")]
    ResetTimeout {
        /// The status last read.
        status: u8,
        /// How long we waited.
        waited_ms: u64,
    },
    /// The device lacks features the driver needs.
    #[error("device offers features {offered:#x}, which lack {missing:#x}; the VF must be a vhost-user virtio-net with mq=on")]
    FeaturesMissing {
        /// What the device offers.
        offered: u64,
        /// Required bits it does not offer.
        missing: u64,
    },
    /// The device cleared FEATURES_OK.
    #[error("device refused features {features:#x} (FEATURES_OK did not stick)")]
    FeaturesRejected {
        /// What the driver wrote.
        features: u64,
    },
    /// The device set DEVICE_NEEDS_RESET.
    #[error("device status {status:#04x} says it needs a reset")]
    DeviceNeedsReset {
        /// The status read.
        status: u8,
    },
    /// Fewer queue pairs than the data and mailbox pairs need.
    #[error("device has {have} queue pairs (max_virtqueue_pairs) and {queues} queues; the VF needs 2 pairs and a control queue")]
    TooFewQueues {
        /// `max_virtqueue_pairs` from the device config.
        have: u16,
        /// `num_queues` from the common config.
        queues: u16,
    },
    /// A queue the device reports as unavailable.
    #[error("queue {queue} is not available (maximum size {max})")]
    QueueUnavailable {
        /// Queue index.
        queue: u16,
        /// The size the device reports.
        max: u16,
    },
    /// A ring size that is not a power of two in 1..=32768.
    #[error("queue size {0} is not a power of two between 1 and 32768")]
    BadQueueSize(u16),
    /// The queue's notify address lies outside the notify capability.
    #[error(
        "queue {queue} notify offset {offset:#x} lies outside the {len:#x}-byte notify region"
    )]
    NotifyOutOfRange {
        /// Queue index.
        queue: u16,
        /// Offset in the notify region.
        offset: u64,
        /// Size of the notify region.
        len: u32,
    },
    /// Every descriptor of a queue is in flight.
    #[error("queue {queue} is full ({size} descriptors in flight)")]
    QueueFull {
        /// Queue index.
        queue: u16,
        /// Ring size.
        size: u16,
    },
    /// The device returned a descriptor id that is not in flight.
    #[error("queue {queue}: device returned descriptor {id}, which is not in flight")]
    BadUsedId {
        /// Queue index.
        queue: u16,
        /// The id.
        id: u32,
    },
    /// The device's used index ran ahead of what is in flight.
    #[error("queue {queue}: used index says {pending} buffers are done but only {in_flight} are in flight")]
    UsedOverrun {
        /// Queue index.
        queue: u16,
        /// Entries the used index announces.
        pending: u16,
        /// Chains in flight.
        in_flight: u16,
    },
    /// A frame longer than a transmit buffer.
    #[error("frame of {len} bytes is longer than the {max} a transmit buffer takes")]
    FrameTooLong {
        /// Frame length.
        len: usize,
        /// Largest frame a buffer takes.
        max: usize,
    },
    /// A control-queue command got no answer.
    #[error("no answer to control command class {class} command {command} within {waited_ms} ms")]
    CtrlTimeout {
        /// `virtio_net_ctrl` class.
        class: u8,
        /// Command within the class.
        command: u8,
        /// How long we waited.
        waited_ms: u64,
    },
    /// A control-queue command was refused.
    #[error(
        "control command class {class} command {command} answered {ack:#04x}, not VIRTIO_NET_OK"
    )]
    CtrlRejected {
        /// `virtio_net_ctrl` class.
        class: u8,
        /// Command within the class.
        command: u8,
        /// The ack byte.
        ack: u8,
    },
}

/// Results of the transport.
pub type Result<T> = std::result::Result<T, Error>;
