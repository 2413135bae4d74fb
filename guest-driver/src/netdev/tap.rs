//! The TAP interface the guest kernel sees as the VF's netdev.
//!
//! Frames the kernel transmits on the interface are read from the TAP's
//! file and go to the PF switch; frames the VF receives are written to it.
//! The file is non-blocking: the event loop polls it like the queues.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

use virtchnl::MacAddr;

use super::sys::{self, IfReq};
use super::{Error, Result};

/// Where the TUN/TAP character device lives.
pub const TUN_PATH: &str = "/dev/net/tun";

/// A TAP interface (`IFF_TAP | IFF_NO_PI`): plain Ethernet frames, no
/// packet-information header. Closing it deletes the interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates the TAP `name` (or attaches to it if it exists and is not in
    /// use) with its carrier off.
    pub fn create(name: &str) -> Result<Tap> {
        super::check_ifname(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|source| Error::OpenTun { source })?;
        let mut req = IfReq::with_name(name);
        // IFF_TAP | IFF_NO_PI both fit in a short.
        req.set_flags((libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short);
        sys::tun_set_iff(file.as_fd(), &mut req).map_err(|errno| Error::CreateTap {
            name: name.to_owned(),
            errno,
        })?;
        let tap = Tap {
            file,
            name: req.name(),
        };
        tap.set_carrier(false)?;
        Ok(tap)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index in the caller's network namespace (only
    /// meaningful before the interface is moved elsewhere).
    pub fn ifindex(&self) -> Result<u32> {
        nix::net::if_::if_nametoindex(self.name.as_str()).map_err(|errno| Error::Ifindex {
            name: self.name.clone(),
            errno,
        })
    }

    /// Turns the carrier on or off.
    pub fn set_carrier(&self, on: bool) -> Result<()> {
        sys::tun_set_carrier(self.file.as_fd(), on).map_err(|errno| Error::SetCarrier {
            name: self.name.clone(),
            on,
            errno,
        })
    }

    /// Gives the interface `mac`.
    pub fn set_mac(&self, mac: MacAddr) -> Result<()> {
        sys::tun_set_hwaddr(self.file.as_fd(), mac.0).map_err(|errno| Error::SetMac {
            name: self.name.clone(),
            mac,
            errno,
        })
    }

    /// The next frame the kernel transmitted, into `buf`; `None` when there
    /// is none.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        match (&self.file).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(source) => Err(Error::TapIo {
                name: self.name.clone(),
                what: "read from",
                source,
            }),
        }
    }

    /// Hands `frame` to the kernel as received on the interface. Returns
    /// false when the kernel did not take it (the interface is down, or
    /// its queue is full).
    pub fn send(&self, frame: &[u8]) -> Result<bool> {
        match (&self.file).write(frame) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) || e.raw_os_error() == Some(libc::EIO) =>
            {
                Ok(false)
            }
            Err(source) => Err(Error::TapIo {
                name: self.name.clone(),
                what: "write to",
                source,
            }),
        }
    }
}
