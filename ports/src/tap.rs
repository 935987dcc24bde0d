//! TAP devices: the switch side of a container's interface. Frames the
//! container sends come out of `recv`; frames given to `send` arrive in the
//! container as if received from a wire.

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::netlink::context;
use crate::{FrameIo, Offload};
use proto::offload::VIRTIO_NET_HDR_LEN;

// Offloads we can take from the kernel (linux/if_tun.h): partial checksums
// and TCP segmentation offload. UDP GSO (USO) is left off: nothing here
// would gain from it yet, and the software fallback cuts only TCP.
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;

/// One open queue of a TAP device.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Open (creating if absent) TAP `name` in the calling thread's network
    /// namespace. An existing persistent TAP is re-attached, which is how
    /// ports survive a daemon restart. TAPs are multi-queue: each open
    /// attaches one more queue, and the kernel spreads the namespace's
    /// flows over the queues by hash.
    ///
    /// The TAP exchanges a `virtio_net_hdr` with every frame and has
    /// checksum and TCP segmentation offloads on: the namespace's stack
    /// hands over 64 KiB super-frames with partial checksums, and takes them
    /// back the same way, with no `ethtool` step inside the namespace.
    pub fn open(name: &str) -> io::Result<Tap> {
        let what = format!("tap {name}");
        let mut req = ifreq(name).map_err(|e| context(e, what.clone()))?;
        // SAFETY: writing the flags member of the union that TUNSETIFF reads.
        req.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE) as libc::c_short;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| context(e, format!("{what}: open /dev/net/tun")))?;
        let fd = OwnedFd::from(file);
        // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
            return Err(tunsetiff_error(name, io::Error::last_os_error()));
        }
        // The kernel may have filled in a name (it never renames ours, but
        // keep what it says the device is called).
        // SAFETY: the kernel NUL-terminates ifr_name.
        let name = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) };
        let name = name.to_string_lossy().into_owned();
        let tap = Tap { fd, name };
        tap.set_offloads()?;
        Ok(tap)
    }

    fn set_offloads(&self) -> io::Result<()> {
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETOFFLOAD, offloads as libc::c_ulong) } != 0 {
            let msg = format!("tap {}: TUNSETOFFLOAD", self.name);
            return Err(context(io::Error::last_os_error(), msg));
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keep the device when the last fd closes (on), or let the last close
    /// remove it (off).
    pub fn set_persist(&self, on: bool) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST takes its argument by value.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETPERSIST, on as libc::c_ulong) };
        if rc != 0 {
            let msg = format!("tap {}: TUNSETPERSIST {on}", self.name);
            return Err(context(io::Error::last_os_error(), msg));
        }
        Ok(())
    }
}

impl FrameIo for Tap {
    fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Offload)> {
        let mut header = [0u8; VIRTIO_NET_HDR_LEN];
        let iov = [
            libc::iovec { iov_base: header.as_mut_ptr().cast(), iov_len: header.len() },
            libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() },
        ];
        loop {
            // SAFETY: both iovecs point to writable buffers of their lengths.
            let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
            if n >= VIRTIO_NET_HDR_LEN as isize {
                return Ok((n as usize - VIRTIO_NET_HDR_LEN, Offload::from_virtio(&header)));
            }
            if n >= 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TAP read shorter than its vnet header"));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn send(&self, frame: &[u8], offload: &Offload) -> io::Result<()> {
        crate::vnet::write_frame(self.fd.as_raw_fd(), frame, offload)
    }

    fn takes_offloads(&self) -> bool {
        true
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An ifreq carrying interface name `name`.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) || bytes.contains(&b'/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {name:?}")));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// Explain the TUNSETIFF errors that have a usual cause.
fn tunsetiff_error(name: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EBUSY) => " (the TAP is already open elsewhere)",
        Some(libc::EINVAL) => " (a device of that name exists and is not a multi-queue TAP)",
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
        _ => "",
    };
    context(e, format!("tap {name}: TUNSETIFF{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink;
    use crate::netns::{self, testutil::*};

    #[test]
    fn interface_names() {
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq(&"a".repeat(15)).is_ok());
        for bad in ["", "a/b", "a\0", &"a".repeat(16)] {
            let e = ifreq(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        let e = tunsetiff_error("eth0", io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(netlink::os_error(&e), Some(libc::EBUSY));
        assert!(e.to_string().starts_with("tap eth0: TUNSETIFF (the TAP is already open"), "{e}");
    }

    #[test]
    fn lab_persist_reattach_remove() {
        require_root();
        let name = unique_name();
        let _guard = NetnsGuard::create(&name);
        netns::run_in(&name, || {
            let tap = Tap::open("tap0").unwrap();
            assert_eq!(tap.name(), "tap0");
            let mut buf = [0u8; 2048];
            let err = tap.recv(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
            assert!(tap.poll_fd().is_some());

            // A second open attaches a second queue of the same device.
            let second = Tap::open("tap0").unwrap();
            assert_eq!(netlink::link_index("tap0").unwrap(), netlink::link_index(second.name()).unwrap());

            tap.set_persist(true).unwrap();
            drop((tap, second));
            let again = Tap::open("tap0").expect("re-attach a persistent tap");
            again.set_persist(false).unwrap();
            drop(again);
            assert_eq!(netlink::link_index("tap0").unwrap(), None);

            // Not persistent: gone with its fd.
            drop(Tap::open("tap1").unwrap());
            assert_eq!(netlink::link_index("tap1").unwrap(), None);
        })
        .unwrap();
    }
}
