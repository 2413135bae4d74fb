//! The modern virtio-pci transport (virtio 1.x, 4.1): device status, feature
//! negotiation, queue setup through the common configuration structure,
//! notifications and the device-specific configuration.
//!
//! No interrupts: every queue and the config space get MSI-X vector
//! [`NO_VECTOR`] and the driver polls. Register layouts are spec constants
//! below; all register access goes through [`mmio::Bar`](super::mmio::Bar).

use std::time::{Duration, Instant};

use super::mmio::{Bar, Register, Window};
use super::pci::{PciFunction, VirtioCap, VirtioCaps};
use super::{Error, Result};

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is done.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// Feature bits the driver knows (virtio 1.x, 5.1.3 and 6).
pub mod feature {
    /// `VIRTIO_NET_F_MAC`: the device config holds a MAC.
    pub const NET_MAC: u64 = 1 << 5;
    /// `VIRTIO_NET_F_STATUS`: the device config holds a link status.
    pub const NET_STATUS: u64 = 1 << 16;
    /// `VIRTIO_NET_F_CTRL_VQ`: a control queue exists.
    pub const NET_CTRL_VQ: u64 = 1 << 17;
    /// `VIRTIO_NET_F_MQ`: several queue pairs, chosen over the control queue.
    pub const NET_MQ: u64 = 1 << 22;
    /// `VIRTIO_RING_F_EVENT_IDX` (not used: the driver polls).
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// `VIRTIO_F_VERSION_1`: a modern device.
    pub const VERSION_1: u64 = 1 << 32;
}

/// MSI-X vector meaning "no interrupt" (`VIRTIO_MSI_NO_VECTOR`).
pub const NO_VECTOR: u16 = 0xffff;

/// Offsets in `struct virtio_pci_common_cfg`.
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0c;
    pub const CONFIG_MSIX_VECTOR: usize = 0x10;
    pub const NUM_QUEUES: usize = 0x12;
    pub const DEVICE_STATUS: usize = 0x14;
    pub const CONFIG_GENERATION: usize = 0x15;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    pub const QUEUE_ENABLE: usize = 0x1c;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
    /// The structure up to `queue_device`, all the driver uses.
    pub const LEN: usize = 0x38;
}

/// How long a reset may take to read back as done.
const RESET_TIMEOUT: Duration = Duration::from_secs(2);

/// Device addresses of a split ring's three parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAddrs {
    /// Descriptor table.
    pub desc: u64,
    /// Available ring (the "driver area").
    pub driver: u64,
    /// Used ring (the "device area").
    pub device: u64,
}

/// Where to write to notify one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notifier {
    queue: u16,
    /// Offset in the notify BAR.
    offset: usize,
}

impl Notifier {
    /// The queue this notifies.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

/// A structure located by a capability: its BAR and its window in it.
#[derive(Debug, Clone, Copy)]
struct Located {
    bar: u8,
    window: Window,
}

/// The notify area's offset for `notify_off`, checked against the area.
pub fn notify_offset(cap: &VirtioCap, queue: u16, notify_off: u16) -> Result<usize> {
    let within = u64::from(notify_off) * u64::from(cap.notify_off_multiplier);
    if within + 2 > u64::from(cap.length) {
        return Err(Error::NotifyOutOfRange {
            queue,
            offset: within,
            len: cap.length,
        });
    }
    // Both fit in a u32 BAR offset plus a u32 length.
    Ok(cap.offset as usize + within as usize)
}

/// A modern virtio-pci function with its BARs mapped.
#[derive(Debug)]
pub struct VirtioPci {
    bars: [Option<Bar>; 6],
    common: Located,
    notify: VirtioCap,
    device: Located,
}

impl VirtioPci {
    /// Finds the virtio structures in `pci`'s config space and maps the BARs
    /// that hold them.
    pub fn new(pci: &PciFunction) -> Result<VirtioPci> {
        let caps: VirtioCaps = super::pci::virtio_caps(&pci.config()?)?;
        tracing::debug!(?caps, "virtio capabilities");
        let mut bars: [Option<Bar>; 6] = Default::default();
        let mut locate = |name: &'static str, cap: &VirtioCap, need: usize| -> Result<Located> {
            let slot = &mut bars[usize::from(cap.bar)];
            if slot.is_none() {
                *slot = Some(pci.map_bar(cap.bar)?);
            }
            let bar_len = slot.as_ref().map_or(0, Bar::len);
            let end = u64::from(cap.offset) + u64::from(cap.length);
            if end > bar_len as u64 || (cap.length as usize) < need {
                return Err(Error::CapabilityOutsideBar {
                    cap: name,
                    bar: cap.bar,
                    offset: cap.offset,
                    length: cap.length,
                    bar_len,
                });
            }
            Ok(Located {
                bar: cap.bar,
                window: Window {
                    offset: cap.offset as usize,
                    len: cap.length as usize,
                },
            })
        };
        let common = locate("common config", &caps.common, common::LEN)?;
        locate("notify", &caps.notify, 2)?;
        let device = locate("device config", &caps.device, 0)?;
        Ok(VirtioPci {
            bars,
            common,
            notify: caps.notify,
            device,
        })
    }

    fn bar(&self, index: u8) -> &Bar {
        self.bars[usize::from(index)]
            .as_ref()
            .expect("every BAR a capability names is mapped in `new`")
    }

    fn read<T: Register>(&self, at: Located, offset: usize) -> Result<T> {
        let offset = at.window.locate(offset, std::mem::size_of::<T>())?;
        self.bar(at.bar).read(offset)
    }

    fn write<T: Register>(&self, at: Located, offset: usize, value: T) -> Result<()> {
        let offset = at.window.locate(offset, std::mem::size_of::<T>())?;
        self.bar(at.bar).write(offset, value)
    }

    fn write64(&self, offset: usize, value: u64) -> Result<()> {
        // 64-bit fields may be written as two 32-bit halves, low first.
        self.write::<u32>(self.common, offset, value as u32)?;
        self.write::<u32>(self.common, offset + 4, (value >> 32) as u32)
    }

    /// The device status byte.
    pub fn status(&self) -> Result<u8> {
        self.read(self.common, common::DEVICE_STATUS)
    }

    /// Sets `bits` in the device status, keeping those already set.
    pub fn add_status(&self, bits: u8) -> Result<()> {
        let now = self.status()?;
        self.write(self.common, common::DEVICE_STATUS, now | bits)
    }

    /// Fails if the device asks to be reset.
    pub fn check_status(&self) -> Result<()> {
        let status = self.status()?;
        if status & status::DEVICE_NEEDS_RESET != 0 {
            return Err(Error::DeviceNeedsReset { status });
        }
        Ok(())
    }

    /// Resets the device and waits until it reads back as reset: it no
    /// longer touches any ring or buffer.
    pub fn reset(&self) -> Result<()> {
        self.write::<u8>(self.common, common::DEVICE_STATUS, 0)?;
        let start = Instant::now();
        loop {
            let status = self.status()?;
            if status == 0 {
                return Ok(());
            }
            if start.elapsed() > RESET_TIMEOUT {
                return Err(Error::ResetTimeout {
                    status,
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The 64 feature bits the device offers.
    pub fn device_features(&self) -> Result<u64> {
        let mut features = 0u64;
        for half in 0..2u32 {
            self.write(self.common, common::DEVICE_FEATURE_SELECT, half)?;
            let bits: u32 = self.read(self.common, common::DEVICE_FEATURE)?;
            features |= u64::from(bits) << (32 * half);
        }
        Ok(features)
    }

    /// Negotiates features: takes `required` (all must be offered) and
    /// whatever of `optional` is offered, writes them and sets FEATURES_OK.
    /// Call after ACKNOWLEDGE and DRIVER; returns the features in force.
    pub fn negotiate(&self, required: u64, optional: u64) -> Result<u64> {
        let offered = self.device_features()?;
        let features = negotiated(offered, required, optional)?;
        for half in 0..2u32 {
            self.write(self.common, common::DRIVER_FEATURE_SELECT, half)?;
            self.write(
                self.common,
                common::DRIVER_FEATURE,
                (features >> (32 * half)) as u32,
            )?;
        }
        self.add_status(status::FEATURES_OK)?;
        if self.status()? & status::FEATURES_OK == 0 {
            return Err(Error::FeaturesRejected { features });
        }
        tracing::debug!(
            offered = format_args!("{offered:#x}"),
            negotiated = format_args!("{features:#x}"),
            "features"
        );
        Ok(features)
    }

    /// How many queues the device has.
    pub fn num_queues(&self) -> Result<u16> {
        self.read(self.common, common::NUM_QUEUES)
    }

    /// The largest size queue `queue` may have; 0 if it does not exist.
    pub fn queue_max_size(&self, queue: u16) -> Result<u16> {
        self.write(self.common, common::QUEUE_SELECT, queue)?;
        self.read(self.common, common::QUEUE_SIZE)
    }

    /// Sets queue `queue` up with `size` entries at `addrs`, without an
    /// interrupt, and enables it. Returns where to notify it.
    pub fn setup_queue(&self, queue: u16, size: u16, addrs: QueueAddrs) -> Result<Notifier> {
        let max = self.queue_max_size(queue)?;
        if max == 0 || size > max {
            return Err(Error::QueueUnavailable { queue, max });
        }
        self.write(self.common, common::QUEUE_SIZE, size)?;
        self.write(self.common, common::QUEUE_MSIX_VECTOR, NO_VECTOR)?;
        self.write64(common::QUEUE_DESC, addrs.desc)?;
        self.write64(common::QUEUE_DRIVER, addrs.driver)?;
        self.write64(common::QUEUE_DEVICE, addrs.device)?;
        let notify_off: u16 = self.read(self.common, common::QUEUE_NOTIFY_OFF)?;
        let offset = notify_offset(&self.notify, queue, notify_off)?;
        self.write(self.common, common::QUEUE_ENABLE, 1u16)?;
        tracing::debug!(queue, size, ?addrs, notify_off, "queue enabled");
        Ok(Notifier { queue, offset })
    }

    /// Turns configuration-change interrupts off.
    pub fn disable_config_interrupt(&self) -> Result<()> {
        self.write(self.common, common::CONFIG_MSIX_VECTOR, NO_VECTOR)
    }

    /// Tells the device that queue `notifier.queue()` has new buffers.
    pub fn notify(&self, notifier: &Notifier) -> Result<()> {
        self.bar(self.notify.bar)
            .write(notifier.offset, notifier.queue)
    }

    /// Reads `len` bytes of the device-specific config, retrying while the
    /// device changes it underneath (`config_generation`).
    pub fn device_config(&self, len: usize) -> Result<Vec<u8>> {
        loop {
            let before: u8 = self.read(self.common, common::CONFIG_GENERATION)?;
            let bytes = (0..len)
                .map(|i| self.read::<u8>(self.device, i))
                .collect::<Result<Vec<u8>>>()?;
            let after: u8 = self.read(self.common, common::CONFIG_GENERATION)?;
            if before == after {
                return Ok(bytes);
            }
        }
    }
}

impl Drop for VirtioPci {
    /// Resets the device so it stops using rings and buffers before their
    /// memory goes away.
    fn drop(&mut self) {
        if let Err(err) = self.reset() {
            tracing::warn!(%err, "cannot reset the device on close");
        }
    }
}

/// The features to write: all of `required` (else an error naming what is
/// missing) plus what the device offers of `optional`.
pub fn negotiated(offered: u64, required: u64, optional: u64) -> Result<u64> {
    let missing = required & !offered;
    if missing != 0 {
        return Err(Error::FeaturesMissing { offered, missing });
    }
    Ok(required | (optional & offered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::pci::CfgType;

    #[test]
    fn negotiation_takes_required_and_offered_optional_bits() {
        let offered = feature::VERSION_1 | feature::NET_MQ | feature::NET_CTRL_VQ;
        let required = feature::VERSION_1 | feature::NET_CTRL_VQ;
        assert_eq!(
            negotiated(offered, required, feature::NET_MQ | feature::NET_MAC).unwrap(),
            offered
        );
        assert!(matches!(
            negotiated(feature::VERSION_1, required, 0),
            Err(Error::FeaturesMissing { missing, .. }) if missing == feature::NET_CTRL_VQ
        ));
    }

    #[test]
    fn notify_offsets_scale_and_stay_in_the_area() {
        let cap = VirtioCap {
            cfg_type: CfgType::Notify,
            bar: 4,
            offset: 0x3000,
            length: 0x1000,
            notify_off_multiplier: 4,
        };
        assert_eq!(notify_offset(&cap, 4, 4).unwrap(), 0x3010);
        assert_eq!(notify_offset(&cap, 0, 0x3ff).unwrap(), 0x3ffc);
        assert!(matches!(
            notify_offset(&cap, 9, 0x400),
            Err(Error::NotifyOutOfRange {
                queue: 9,
                offset: 0x1000,
                len: 0x1000
            })
        ));
        // A multiplier of 0 puts every queue on the same address.
        let shared = VirtioCap {
            notify_off_multiplier: 0,
            ..cap
        };
        assert_eq!(notify_offset(&shared, 3, 0xffff).unwrap(), 0x3000);
    }
}
