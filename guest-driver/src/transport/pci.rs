//! PCI functions through sysfs: finding one, taking it from its kernel
//! driver, config space, the virtio capability list and BAR mappings.
//!
//! A function is held through an exclusive `flock` on its sysfs `config`
//! file, so two driver processes never drive the same VF; the lock goes with
//! the [`PciFunction`]. Parsing (ids, addresses, capabilities) is pure and
//! takes byte arrays, so it is tested on the host.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::mmio::Bar;
use super::{Error, Result};

/// The virtio PCI vendor id (Red Hat, Inc.).
pub const VIRTIO_VENDOR: u16 = 0x1af4;

/// A modern-only virtio-net function (`0x1040 + VIRTIO_ID_NET`).
pub const VIRTIO_NET_MODERN: u16 = 0x1041;

/// Where the kernel lists PCI functions.
const SYSFS_PCI: &str = "/sys/bus/pci/devices";

/// Config space the driver reads: the standard 256 bytes.
const CONFIG_LEN: usize = 256;

/// Config-space offsets of the standard header.
const PCI_COMMAND: u64 = 0x04;
const PCI_STATUS: usize = 0x06;
const PCI_CAPABILITY_LIST: usize = 0x34;

/// Command register bits: memory decoding, bus mastering, INTx disable.
const CMD_MEMORY: u16 = 1 << 1;
const CMD_BUS_MASTER: u16 = 1 << 2;
const CMD_INTX_DISABLE: u16 = 1 << 10;

/// Status register: the function has a capability list.
const STATUS_CAP_LIST: u16 = 1 << 4;

/// Capability id of vendor-specific capabilities (which virtio uses).
const CAP_ID_VENDOR: u8 = 0x09;

/// A PCI address, `dddd:bb:dd.f`, as sysfs names functions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf(String);

impl Bdf {
    /// Parses `dddd:bb:dd.f` or `bb:dd.f` (domain 0000), hex digits.
    pub fn parse(text: &str) -> Result<Bdf> {
        let bad = || Error::BadBdf(text.to_owned());
        let full = match text.matches(':').count() {
            1 => format!("0000:{text}"),
            2 => text.to_owned(),
            _ => return Err(bad()),
        };
        let (domain, rest) = full.split_once(':').ok_or_else(bad)?;
        let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
        let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
        let dev_ok = hex(dev, 2) && u8::from_str_radix(dev, 16).is_ok_and(|d| d < 32);
        let func_ok = func.len() == 1 && matches!(func.as_bytes()[0], b'0'..=b'7');
        if !(hex(domain, 4) && hex(bus, 2) && dev_ok && func_ok) {
            return Err(bad());
        }
        Ok(Bdf(full.to_ascii_lowercase()))
    }

    /// The address as sysfs writes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Bdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a sysfs id file (`0x1af4\n`).
pub fn parse_id(text: &str) -> Option<u16> {
    let hex = text.trim().strip_prefix("0x")?;
    u16::from_str_radix(hex, 16).ok()
}

fn sysfs_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Sysfs {
        what,
        path: path.to_owned(),
        source,
    }
}

fn read_id(path: &Path) -> Result<u16> {
    let text = std::fs::read_to_string(path).map_err(sysfs_err("read", path))?;
    parse_id(&text).ok_or_else(|| Error::Sysfs {
        what: "parse the id in",
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, text.trim().to_owned()),
    })
}

/// Functions with `vendor:device`, in address order.
pub fn list(vendor: u16, device: u16) -> Result<Vec<Bdf>> {
    let root = Path::new(SYSFS_PCI);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).map_err(sysfs_err("list", root))? {
        let entry = entry.map_err(sysfs_err("list", root))?;
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(bdf) = Bdf::parse(&name) else {
            continue;
        };
        if read_id(&dir.join("vendor"))? == vendor && read_id(&dir.join("device"))? == device {
            found.push(bdf);
        }
    }
    found.sort();
    Ok(found)
}

/// A PCI function this process holds: its config file is locked, and it is
/// unbound from any kernel driver.
#[derive(Debug)]
pub struct PciFunction {
    bdf: Bdf,
    dir: PathBuf,
    config: Flock<File>,
    unbound: Option<String>,
}

impl PciFunction {
    /// Takes the modern virtio-net function at `bdf`: checks its ids, locks
    /// it and unbinds its kernel driver.
    pub fn open(bdf: &Bdf) -> Result<PciFunction> {
        let dir = Path::new(SYSFS_PCI).join(bdf.as_str());
        if !dir.exists() {
            return Err(Error::NoSuchFunction {
                bdf: bdf.to_string(),
            });
        }
        let vendor = read_id(&dir.join("vendor"))?;
        let device = read_id(&dir.join("device"))?;
        if (vendor, device) != (VIRTIO_VENDOR, VIRTIO_NET_MODERN) {
            return Err(Error::NotVirtioNet {
                bdf: bdf.to_string(),
                vendor,
                device,
            });
        }
        let path = dir.join("config");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(sysfs_err("open", &path))?;
        let config = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(Error::Busy {
                    bdf: bdf.to_string(),
                })
            }
            Err((_, errno)) => return Err(sysfs_err("lock", &path)(errno.into())),
        };
        let mut function = PciFunction {
            bdf: bdf.clone(),
            dir,
            config,
            unbound: None,
        };
        function.unbound = function.unbind()?;
        Ok(function)
    }

    /// Takes the first modern virtio-net function no other process holds.
    pub fn open_first() -> Result<PciFunction> {
        for bdf in list(VIRTIO_VENDOR, VIRTIO_NET_MODERN)? {
            match PciFunction::open(&bdf) {
                Ok(function) => return Ok(function),
                Err(Error::Busy { .. }) => {
                    tracing::debug!(%bdf, "held by another process; trying the next function");
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::NoDevice {
            vendor: VIRTIO_VENDOR,
            device: VIRTIO_NET_MODERN,
        })
    }

    /// The function's address.
    pub fn bdf(&self) -> &Bdf {
        &self.bdf
    }

    /// The kernel driver bound to the function, if any.
    pub fn driver(&self) -> Option<String> {
        let link = std::fs::read_link(self.dir.join("driver")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// The kernel driver [`open`](Self::open) unbound, if there was one.
    pub fn unbound_driver(&self) -> Option<&str> {
        self.unbound.as_deref()
    }

    /// Unbinds the kernel driver (virtio-pci at boot), if one is bound, and
    /// returns its name.
    fn unbind(&self) -> Result<Option<String>> {
        let Some(driver) = self.driver() else {
            return Ok(None);
        };
        let path = self.dir.join("driver").join("unbind");
        std::fs::write(&path, self.bdf.as_str())
            .map_err(sysfs_err("unbind the driver through", &path))?;
        if let Some(driver) = self.driver() {
            return Err(Error::StillBound {
                bdf: self.bdf.to_string(),
                driver,
            });
        }
        tracing::info!(bdf = %self.bdf, %driver, "unbound the kernel driver");
        Ok(Some(driver))
    }

    /// The standard 256 bytes of config space (fewer if sysfs shows fewer).
    pub fn config(&self) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; CONFIG_LEN];
        let mut len = 0;
        while len < CONFIG_LEN {
            let n = self
                .config
                .read_at(&mut bytes[len..], len as u64)
                .map_err(sysfs_err("read", &self.dir.join("config")))?;
            if n == 0 {
                break;
            }
            len += n;
        }
        bytes.truncate(len);
        Ok(bytes)
    }

    fn read_config_u16(&self, offset: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.config
            .read_exact_at(&mut b, offset)
            .map_err(sysfs_err("read", &self.dir.join("config")))?;
        Ok(u16::from_le_bytes(b))
    }

    fn write_config_u16(&self, offset: u64, value: u16) -> Result<()> {
        self.config
            .write_all_at(&value.to_le_bytes(), offset)
            .map_err(sysfs_err("write", &self.dir.join("config")))
    }

    /// Turns on memory decoding and bus mastering (so the device may DMA),
    /// and turns INTx off: the driver polls, and an interrupt nobody handles
    /// would make the kernel disable the line with a warning.
    pub fn enable_dma(&self) -> Result<()> {
        let cmd = self.read_config_u16(PCI_COMMAND)?;
        let want = cmd | CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE;
        if want != cmd {
            self.write_config_u16(PCI_COMMAND, want)?;
        }
        tracing::debug!(
            bdf = %self.bdf,
            command = format_args!("{cmd:#06x} -> {want:#06x}"),
            "PCI command register"
        );
        Ok(())
    }

    /// Maps memory BAR `index` through sysfs `resourceN`.
    pub fn map_bar(&self, index: u8) -> Result<Bar> {
        let path = self.dir.join(format!("resource{index}"));
        let map_err = |source| Error::MapBar {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_SYNC)
            .open(&path)
            .map_err(map_err)?;
        let len = file.metadata().map_err(map_err)?.len();
        let len = usize::try_from(len).map_err(|_| {
            map_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "BAR larger than the address space",
            ))
        })?;
        Bar::map(&file, len).map_err(map_err)
    }
}

/// `cfg_type` of a virtio PCI capability (virtio 1.x, 4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfgType {
    /// `VIRTIO_PCI_CAP_COMMON_CFG`.
    Common,
    /// `VIRTIO_PCI_CAP_NOTIFY_CFG`.
    Notify,
    /// `VIRTIO_PCI_CAP_ISR_CFG`.
    Isr,
    /// `VIRTIO_PCI_CAP_DEVICE_CFG`.
    Device,
    /// `VIRTIO_PCI_CAP_PCI_CFG`.
    PciCfg,
    /// Any other value (shared memory, vendor, reserved).
    Unknown(u8),
}

impl From<u8> for CfgType {
    fn from(v: u8) -> Self {
        match v {
            1 => CfgType::Common,
            2 => CfgType::Notify,
            3 => CfgType::Isr,
            4 => CfgType::Device,
            5 => CfgType::PciCfg,
            other => CfgType::Unknown(other),
        }
    }
}

/// One `struct virtio_pci_cap` (plus the notify multiplier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioCap {
    /// Which structure it locates.
    pub cfg_type: CfgType,
    /// The BAR holding it.
    pub bar: u8,
    /// Offset within the BAR.
    pub offset: u32,
    /// Length of the structure.
    pub length: u32,
    /// `notify_off_multiplier`, for [`CfgType::Notify`] only.
    pub notify_off_multiplier: u32,
}

/// The structures a modern virtio-pci driver uses, first of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioCaps {
    /// `virtio_pci_common_cfg`.
    pub common: VirtioCap,
    /// The notification area.
    pub notify: VirtioCap,
    /// The ISR status byte (unused by a polling driver).
    pub isr: Option<VirtioCap>,
    /// The device-specific config (`virtio_net_config`).
    pub device: VirtioCap,
}

/// Walks the standard capability list: `(offset, id)` of each capability.
/// Stops at a pointer into the header or off the end, and after 48 entries
/// (a loop).
pub fn capability_list(config: &[u8]) -> Result<Vec<(usize, u8)>> {
    if config.len() < 0x40 {
        return Err(Error::ConfigTooShort {
            len: config.len(),
            need: 0x40,
        });
    }
    let status = u16::from_le_bytes([config[PCI_STATUS], config[PCI_STATUS + 1]]);
    let mut caps = Vec::new();
    if status & STATUS_CAP_LIST == 0 {
        return Ok(caps);
    }
    let mut ptr = usize::from(config[PCI_CAPABILITY_LIST] & 0xfc);
    while ptr >= 0x40 && caps.len() < 48 {
        let (Some(&id), Some(&next)) = (config.get(ptr), config.get(ptr + 1)) else {
            break;
        };
        caps.push((ptr, id));
        ptr = usize::from(next & 0xfc);
    }
    Ok(caps)
}

/// Decodes the virtio vendor capability at `at`, if it is well-formed and
/// names a BAR (0-5).
fn virtio_cap(config: &[u8], at: usize) -> Option<VirtioCap> {
    let b = |i: usize| config.get(at + i).copied();
    let le32 = |i: usize| -> Option<u32> {
        let bytes = config.get(at + i..at + i + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    };
    let cap_len = b(2)?;
    if cap_len < 16 {
        return None;
    }
    let cfg_type = CfgType::from(b(3)?);
    let bar = b(4)?;
    if bar > 5 {
        return None;
    }
    let notify_off_multiplier = if cfg_type == CfgType::Notify {
        if cap_len < 20 {
            return None;
        }
        le32(16)?
    } else {
        0
    };
    Some(VirtioCap {
        cfg_type,
        bar,
        offset: le32(8)?,
        length: le32(12)?,
        notify_off_multiplier,
    })
}

/// Finds the virtio structures in a config space; the first capability of
/// each kind wins, as the virtio spec asks of drivers.
pub fn virtio_caps(config: &[u8]) -> Result<VirtioCaps> {
    let mut common = None;
    let mut notify = None;
    let mut isr = None;
    let mut device = None;
    for (at, id) in capability_list(config)? {
        if id != CAP_ID_VENDOR {
            continue;
        }
        let Some(cap) = virtio_cap(config, at) else {
            continue;
        };
        let slot = match cap.cfg_type {
            CfgType::Common => &mut common,
            CfgType::Notify => &mut notify,
            CfgType::Isr => &mut isr,
            CfgType::Device => &mut device,
            CfgType::PciCfg | CfgType::Unknown(_) => continue,
        };
        slot.get_or_insert(cap);
    }
    Ok(VirtioCaps {
        common: common.ok_or(Error::MissingCapability("common config"))?,
        notify: notify.ok_or(Error::MissingCapability("notify"))?,
        isr,
        device: device.ok_or(Error::MissingCapability("device config"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Config space of QEMU 10's `virtio-net-pci,disable-legacy=on,vectors=6`
    /// behind a PCIe root port, as the guest read it from sysfs (`od -tx1`).
    /// Capabilities: MSI-X at 0xdc, then virtio PCI cfg (0xc8), notify
    /// (0xb4), device (0xa4), ISR (0x94), common (0x84), power management
    /// (0x7c) and PCI Express (0x40); all virtio structures in BAR 4.
    const QEMU_VIRTIO_NET: &str = "
        f4 1a 41 10 07 05 10 00 01 00 00 02 00 00 00 00
        00 00 00 00 00 00 40 fe 00 00 00 00 00 00 00 00
        0c 00 80 fe 00 00 00 00 00 00 00 00 f4 1a 00 11
        00 00 00 00 dc 00 00 00 00 00 00 00 0b 01 00 00
        10 00 02 00 20 80 00 10 00 00 00 00 11 04 00 00
        00 00 11 00 00 00 00 00 00 00 00 00 00 00 00 00
        00 00 00 00 00 00 30 00 00 00 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 00 00 00 00 01 40 03 00
        00 00 00 00 09 7c 10 01 04 00 00 00 00 00 00 00
        00 10 00 00 09 84 10 03 04 00 00 00 00 10 00 00
        00 10 00 00 09 94 10 04 04 00 00 00 00 20 00 00
        00 10 00 00 09 a4 14 02 04 00 00 00 00 30 00 00
        00 10 00 00 04 00 00 00 09 b4 14 05 00 00 00 00
        00 00 00 00 00 00 00 00 00 00 00 00 11 c8 05 80
        01 00 00 00 01 08 00 00 00 00 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";

    fn qemu_config() -> Vec<u8> {
        QEMU_VIRTIO_NET
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn cap(cfg_type: CfgType, offset: u32, mult: u32) -> VirtioCap {
        VirtioCap {
            cfg_type,
            bar: 4,
            offset,
            length: 0x1000,
            notify_off_multiplier: mult,
        }
    }

    #[test]
    fn finds_the_four_structures_of_a_qemu_virtio_net() {
        let caps = virtio_caps(&qemu_config()).unwrap();
        assert_eq!(
            caps,
            VirtioCaps {
                common: cap(CfgType::Common, 0, 0),
                notify: cap(CfgType::Notify, 0x3000, 4),
                isr: Some(cap(CfgType::Isr, 0x1000, 0)),
                device: cap(CfgType::Device, 0x2000, 0),
            }
        );
    }

    #[test]
    fn the_list_is_walked_in_order_and_ends() {
        let list = capability_list(&qemu_config()).unwrap();
        assert_eq!(
            list,
            [
                (0xdc, 0x11),
                (0xc8, 9),
                (0xb4, 9),
                (0xa4, 9),
                (0x94, 9),
                (0x84, 9),
                (0x7c, 0x01),
                (0x40, 0x10)
            ]
        );
    }

    #[test]
    fn a_looping_list_stops() {
        let mut c = qemu_config();
        c[0x41] = 0xdc; // PCI Express points back to MSI-X
        assert_eq!(capability_list(&c).unwrap().len(), 48);
        assert!(virtio_caps(&c).is_ok());
    }

    #[test]
    fn no_capability_list_means_no_common_config() {
        let mut c = qemu_config();
        c[PCI_STATUS] &= !0x10;
        assert!(matches!(
            virtio_caps(&c),
            Err(Error::MissingCapability("common config"))
        ));
        assert!(matches!(
            virtio_caps(&c[..32]),
            Err(Error::ConfigTooShort { len: 32, .. })
        ));
    }

    #[test]
    fn malformed_caps_are_skipped_and_the_first_good_one_wins() {
        // A notify cap too short to hold its multiplier is ignored...
        let mut c = qemu_config();
        c[0xb4 + 2] = 16;
        assert!(matches!(
            virtio_caps(&c),
            Err(Error::MissingCapability("notify"))
        ));
        // ...and so is one naming BAR 7.
        let mut c = qemu_config();
        c[0x84 + 4] = 7;
        assert!(matches!(
            virtio_caps(&c),
            Err(Error::MissingCapability("common config"))
        ));
        // A second device cap later in the list does not replace the first.
        let mut c = qemu_config();
        c[0x41] = 0xe8;
        c[0xe8..0xf8].copy_from_slice(&[9, 0, 16, 4, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(virtio_caps(&c).unwrap().device.bar, 4);
        // A cap running off the end of config space is ignored, not a panic.
        let mut c = qemu_config();
        c[0x41] = 0xfc;
        c[0xfc..].copy_from_slice(&[9, 0, 16, 4]);
        assert!(virtio_caps(&c).is_ok());
        assert!(virtio_caps(&c[..0xfe]).is_ok());
    }

    #[test]
    fn bdfs_parse_with_or_without_a_domain() {
        assert_eq!(Bdf::parse("0000:01:00.0").unwrap().as_str(), "0000:01:00.0");
        assert_eq!(Bdf::parse("01:1F.7").unwrap().as_str(), "0000:01:1f.7");
        for bad in [
            "",
            "01:00",
            "0000:01:00.8",
            "0000:01:20.0",
            "x0000:01:00.0",
            "1:00.0",
        ] {
            assert!(matches!(Bdf::parse(bad), Err(Error::BadBdf(_))), "{bad}");
        }
    }

    #[test]
    fn sysfs_ids_are_hex_with_a_prefix() {
        assert_eq!(parse_id("0x1af4\n"), Some(0x1af4));
        assert_eq!(parse_id("1af4"), None);
        assert_eq!(parse_id("0x12345"), None);
    }
}
