//! The netdev shell: the interface the guest kernel sees for the VF, and
//! what the kernel does to it.
//!
//! - [`tap`]: the TAP `vfN` (frames both ways, MAC, carrier);
//! - [`netlink`]: [`netlink::enslave`], and an rtnetlink listener whose pure half,
//!   [`LinkTracker`], turns link messages into the
//!   adapter core's [`NetdevEvent`](crate::core::NetdevEvent)s: up and
//!   down, MAC, promiscuous and allmulti, enslaved and released, VLAN
//!   uppers (on the interface or on its master), netns moves;
//! - `sys`: the three TAP ioctls, the shell's only `unsafe`.
//!
//! **Invariant:** nothing here holds protocol state; the tracker knows only
//! what the kernel last said about the interface, so that it can report
//! changes. The adapter core decides what a change means for the PF.

pub mod netlink;
mod sys;
pub mod tap;

pub use netlink::{LinkChange, LinkId, LinkListener, LinkTracker};
pub use tap::Tap;

use nix::errno::Errno;
use virtchnl::MacAddr;

/// What went wrong in the netdev shell.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface name is not one the kernel accepts (`dev_valid_name`).
    #[error(
        "interface name {name:?} must be 1 to 15 bytes long, not `.` or `..`, \
         and without `/`, `:` or whitespace"
    )]
    BadName {
        /// The name asked for.
        name: String,
    },
    /// `/dev/net/tun` could not be opened.
    #[error(
        "cannot open {}; is the tun module loaded (`modprobe tun`)?",
        tap::TUN_PATH
    )]
    OpenTun {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TUNSETIFF failed.
    #[error("cannot create TAP {name}: {errno}")]
    CreateTap {
        /// The name asked for.
        name: String,
        /// The ioctl's error.
        errno: Errno,
    },
    /// The interface's index could not be read.
    #[error("cannot find the index of {name}: {errno}")]
    Ifindex {
        /// The interface.
        name: String,
        /// The error.
        errno: Errno,
    },
    /// TUNSETCARRIER failed.
    #[error("cannot turn the carrier of {name} {}: {errno}", if *on { "on" } else { "off" })]
    SetCarrier {
        /// The interface.
        name: String,
        /// The state asked for.
        on: bool,
        /// The ioctl's error.
        errno: Errno,
    },
    /// SIOCSIFHWADDR failed.
    #[error("cannot set the MAC of {name} to {mac}: {errno}")]
    SetMac {
        /// The interface.
        name: String,
        /// The address.
        mac: MacAddr,
        /// The ioctl's error.
        errno: Errno,
    },
    /// Reading or writing the TAP failed.
    #[error("cannot {what} TAP {name}")]
    TapIo {
        /// The interface.
        name: String,
        /// "read from" or "write to".
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The master to enslave the interface to does not exist.
    #[error(
        "master device {master} does not exist in the driver's network namespace; \
         create it first (`ip link add {master} type bond`)"
    )]
    NoMaster {
        /// The master's name.
        master: String,
    },
    /// The kernel refused to enslave the interface (or could not be asked).
    #[error("cannot enslave {name} to {master}")]
    Enslave {
        /// The interface.
        name: String,
        /// The master's name.
        master: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// An rtnetlink socket operation failed.
    #[error("rtnetlink: cannot {what}")]
    Netlink {
        /// The step.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The netdev shell's result.
pub type Result<T> = std::result::Result<T, Error>;

/// Checks `name` as the kernel's `dev_valid_name` does: 1 to 15 bytes
/// (`IFNAMSIZ` with its NUL), not `.` or `..`, no `/`, `:` or whitespace.
pub fn check_ifname(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() < sys::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(Error::BadName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_ifname;

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        for good in ["bond0", "vf3", "a", "failover-0.10", "fifteen_bytes_x"] {
            assert!(check_ifname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "bond/0",
            "eth0:1",
            "bond 0",
            "sixteen_bytes_xx",
        ] {
            let err = check_ifname(bad).expect_err(bad);
            assert!(err.to_string().contains("1 to 15 bytes"), "{err}");
        }
    }
}
