//! Raw Ethernet frames, and AF_PACKET sockets to send them on.
//!
//! [`build_frame`] is pure. A [`PacketSocket`] is an AF_PACKET SOCK_RAW
//! socket bound to one interface. It is bound with the `sockaddr_ll` that
//! `getifaddrs(3)` reports for the interface, because nix offers no safe way
//! to build one; that address has protocol 0, and so has the socket, so the
//! kernel binds it to the interface for sending without ever queueing
//! received traffic on it.

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::str::FromStr;
use std::time::Duration;

use nix::errno::Errno;
use nix::ifaddrs::getifaddrs;
use nix::sys::socket::{
    bind, send, setsockopt, socket, sockopt, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::TimeVal;

use super::error::{Error, Result};

/// The "local experimental" EtherType of IEEE 802 (nobody parses it).
pub const ETHERTYPE_EXPERIMENTAL: u16 = 0x88b5;

/// The 802.1Q tag protocol identifier.
pub const ETHERTYPE_VLAN: u16 = 0x8100;

/// Destination, source and EtherType.
pub const ETH_HEADER: usize = 14;

/// An 802.1Q tag: TPID and TCI.
pub const VLAN_TAG: usize = 4;

/// Largest frame a packet socket is asked to send.
pub const MAX_FRAME: usize = 65_535;

/// How long a send may block on a full socket buffer before it fails with
/// EAGAIN, so a sender notices when to stop.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);
}

impl FromStr for MacAddr {
    type Err = String;

    /// Six `:`-separated groups of one or two hex digits (`02:0:5e:a:b:c`).
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{text:?} is not a MAC address like 02:00:5e:10:00:01");
        let mut mac = [0u8; 6];
        let mut groups = text.split(':');
        for byte in &mut mac {
            let group = groups.next().ok_or_else(bad)?;
            if group.is_empty() || group.len() > 2 || !group.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(bad());
            }
            *byte = u8::from_str_radix(group, 16).map_err(|_| bad())?;
        }
        if groups.next().is_some() {
            return Err(bad());
        }
        Ok(Self(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// What a frame of [`build_frame`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    /// Destination address.
    pub dst: MacAddr,
    /// Source address.
    pub src: MacAddr,
    /// An 802.1Q tag with this VLAN id (priority 0), if any.
    pub vlan: Option<u16>,
    /// Frame length without the FCS; at least [`header_len`].
    pub size: usize,
}

/// Length of the Ethernet header, with or without an 802.1Q tag.
pub fn header_len(tagged: bool) -> usize {
    if tagged {
        ETH_HEADER + VLAN_TAG
    } else {
        ETH_HEADER
    }
}

/// Builds the frame `dst, src, [8100 vid], 88b5, zeros`, `spec.size` bytes
/// long (never shorter than its header).
pub fn build_frame(spec: &FrameSpec) -> Vec<u8> {
    let header = header_len(spec.vlan.is_some());
    let mut frame = Vec::with_capacity(spec.size.max(header));
    frame.extend_from_slice(&spec.dst.0);
    frame.extend_from_slice(&spec.src.0);
    if let Some(vid) = spec.vlan {
        frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        frame.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    frame.extend_from_slice(&ETHERTYPE_EXPERIMENTAL.to_be_bytes());
    frame.resize(spec.size.max(header), 0);
    frame
}

/// The MAC address of interface `ifname`, from sysfs.
pub fn read_mac(ifname: &str) -> Result<MacAddr> {
    let path = format!("/sys/class/net/{ifname}/address");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoSuchInterface {
                name: ifname.to_owned(),
            })
        }
        Err(error) => return Err(Error::ReadFile { path, error }),
    };
    text.trim().parse().map_err(|_| Error::BadSysfs {
        path,
        text: text.trim().to_owned(),
    })
}

/// The link-layer address `getifaddrs(3)` reports for `ifname` (its
/// `sockaddr_ll`, with the ifindex); `None` when no such interface exists.
fn link_addr(ifname: &str) -> Result<Option<LinkAddr>> {
    let addrs = getifaddrs().map_err(|e| Error::PacketSocket {
        ifname: ifname.to_owned(),
        what: "list interfaces (getifaddrs)",
        error: e.into(),
    })?;
    Ok(addrs
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| a.address.as_ref()?.as_link_addr().copied()))
}

/// An AF_PACKET SOCK_RAW socket bound to one interface, for sending.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a socket bound to `ifname`. [`Error::NoSuchInterface`] when
    /// the interface does not exist (now).
    pub fn open(ifname: &str) -> Result<Self> {
        let step = |what| {
            move |e: Errno| Error::PacketSocket {
                ifname: ifname.to_owned(),
                what,
                error: e.into(),
            }
        };
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(step("open (needs CAP_NET_RAW)"))?;
        let no_such = || Error::NoSuchInterface {
            name: ifname.to_owned(),
        };
        let addr = link_addr(ifname)?.ok_or_else(no_such)?;
        match bind(fd.as_raw_fd(), &addr) {
            Ok(()) => {}
            // It went away between the listing and the bind.
            Err(Errno::ENODEV) => return Err(no_such()),
            Err(e) => return Err(step("bind")(e)),
        }
        let timeout = TimeVal::new(0, SEND_TIMEOUT.as_micros().try_into().unwrap_or(100_000));
        setsockopt(&fd, sockopt::SendTimeout, &timeout).map_err(step("set SO_SNDTIMEO"))?;
        Ok(Self { fd })
    }

    /// Sends one frame as is (the kernel adds no header).
    pub fn send(&self, frame: &[u8]) -> nix::Result<usize> {
        send(self.fd.as_raw_fd(), frame, MsgFlags::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: FrameSpec, want_hex: &str) {
        let frame = build_frame(&spec);
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want_hex, "{spec:?}");
    }

    #[test]
    fn frames_are_laid_out_as_802_3_wants() {
        let src = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
        check(
            FrameSpec {
                dst: MacAddr::BROADCAST,
                src,
                vlan: None,
                size: 20,
            },
            "ffffffffffff02000000000188b5000000000000",
        );
        check(
            FrameSpec {
                dst: MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                src,
                vlan: Some(100),
                size: 22,
            },
            "52540012345602000000000181000064\
             88b500000000",
        );
        // The VLAN id keeps to its 12 bits; a short size yields the header.
        check(
            FrameSpec {
                dst: MacAddr::BROADCAST,
                src,
                vlan: Some(0xf00a),
                size: 0,
            },
            "ffffffffffff0200000000018100000a88b5",
        );
        let frame = build_frame(&FrameSpec {
            dst: MacAddr::BROADCAST,
            src,
            vlan: None,
            size: 60,
        });
        assert_eq!(frame.len(), 60);
        assert!(frame[ETH_HEADER..].iter().all(|&b| b == 0));
    }

    #[test]
    fn mac_addresses_parse_and_print() {
        let mac: MacAddr = "02:0:5E:a:b:c".parse().unwrap();
        assert_eq!(mac, MacAddr([2, 0, 0x5e, 0xa, 0xb, 0xc]));
        assert_eq!(mac.to_string(), "02:00:5e:0a:0b:0c");
        assert_eq!("ff:ff:ff:ff:ff:ff".parse(), Ok(MacAddr::BROADCAST));
        for bad in [
            "",
            "02:00:5e:10:00",
            "02:00:5e:10:00:01:02",
            "02:00:5e:10:00:",
            "02:00:5e:10:00:001",
            "02-00-5e-10-00-01",
            "0g:00:5e:10:00:01",
            "+2:00:5e:10:00:01",
        ] {
            let err = bad.parse::<MacAddr>().unwrap_err();
            assert!(err.contains("is not a MAC address"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_missing_interface_is_named() {
        let err = PacketSocket::open("vfrig-nope0").unwrap_err();
        // Without CAP_NET_RAW the socket itself is refused first.
        assert!(
            matches!(
                err,
                Error::NoSuchInterface { ref name } if name == "vfrig-nope0"
            ) || matches!(err, Error::PacketSocket { .. }),
            "{err}"
        );
        assert!(matches!(
            read_mac("vfrig-nope0"),
            Err(Error::NoSuchInterface { .. })
        ));
    }
}
