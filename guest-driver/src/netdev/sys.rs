//! The three TAP ioctls the netdev shell needs, and nothing else.
//!
//! This is the netdev shell's only module with `unsafe`. Each call passes
//! the kernel a pointer to a value borrowed for the length of the call
//! (an [`IfReq`] or a `c_int`) whose layout matches what the ioctl reads or
//! writes, and checks the return value; no pointer outlives its call.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// `IFNAMSIZ`: interface names are at most 15 bytes and a NUL.
pub const IFNAMSIZ: usize = 16;

/// `SIOCSIFHWADDR`; the TAP's character device accepts it directly, so the
/// MAC can be set wherever the interface lives (in any network namespace).
const SIOCSIFHWADDR: libc::Ioctl = 0x8924;

/// `ARPHRD_ETHER`.
const ARPHRD_ETHER: u16 = 1;

/// `struct ifreq` (40 bytes on 64-bit Linux): the name, then a 24-byte union
/// of which the shell uses `ifr_flags` (a `short` at offset 0) and
/// `ifr_hwaddr` (a `struct sockaddr`: family, then the address).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IfReq {
    /// `ifr_name`, NUL-terminated.
    pub name: [u8; IFNAMSIZ],
    /// `ifr_ifru`.
    pub data: [u8; 24],
}

impl IfReq {
    /// A request for `name` (the caller checked it is shorter than
    /// [`IFNAMSIZ`]).
    pub fn with_name(name: &str) -> IfReq {
        let mut req = IfReq::default();
        for (dst, src) in req.name.iter_mut().zip(name.bytes().take(IFNAMSIZ - 1)) {
            *dst = src;
        }
        req
    }

    /// The name the kernel wrote back, up to the first NUL.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// Sets `ifr_flags`.
    pub fn set_flags(&mut self, flags: libc::c_short) {
        self.data[..2].copy_from_slice(&flags.to_ne_bytes());
    }

    /// Sets `ifr_hwaddr` to an Ethernet address.
    pub fn set_hwaddr(&mut self, mac: [u8; 6]) {
        self.data[..2].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        self.data[2..8].copy_from_slice(&mac);
    }
}

/// `TUNSETIFF`: attaches the open `/dev/net/tun` file to the interface
/// named in `req` (creating it), with the flags in `req`. The kernel writes
/// the interface's name back into `req`.
pub fn tun_set_iff(fd: BorrowedFd<'_>, req: &mut IfReq) -> Result<(), Errno> {
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is a
    // 40-byte `repr(C)` ifreq, exclusively borrowed for the call. The return
    // value is checked below.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, std::ptr::from_mut(req)) };
    Errno::result(rc).map(drop)
}

/// `TUNSETCARRIER`: turns the TAP's carrier on or off.
pub fn tun_set_carrier(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    let value = libc::c_int::from(on);
    // SAFETY: TUNSETCARRIER reads one `int` through the pointer; `value`
    // lives on this frame for the whole call. The return value is checked.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETCARRIER,
            std::ptr::from_ref(&value),
        )
    };
    Errno::result(rc).map(drop)
}

/// `SIOCSIFHWADDR` on the TAP's file: sets the interface's MAC.
pub fn tun_set_hwaddr(fd: BorrowedFd<'_>, mac: [u8; 6]) -> Result<(), Errno> {
    let mut req = IfReq::default();
    req.set_hwaddr(mac);
    // SAFETY: the tun driver copies one `struct ifreq` in for socket-type
    // ioctls; `req` is a 40-byte `repr(C)` ifreq on this frame, borrowed
    // for the call. The return value is checked.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCSIFHWADDR, std::ptr::from_mut(&mut req)) };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        let mut req = IfReq::with_name("vf0");
        req.set_hwaddr([2, 0, 0, 0, 0x10, 0]);
        assert_eq!(req.name(), "vf0");
        assert_eq!(&req.data[..8], &[1, 0, 2, 0, 0, 0, 0x10, 0]);
        let long = IfReq::with_name("a-name-longer-than-fifteen");
        assert_eq!(long.name().len(), IFNAMSIZ - 1);
    }
}
