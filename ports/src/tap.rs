//! TAP devices: the switch side of a container's interface. Frames the
//! container sends come out of `recv`; frames given to `send` arrive in the
//! container as if received from a wire.

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::netlink::context;
use crate::FrameIo;

/// One open queue of a TAP device.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Open (creating if absent) TAP `name` in the calling thread's network
    /// namespace. An existing persistent TAP is re-attached, which is how
    /// ports survive a daemon restart.
    pub fn open(name: &str) -> io::Result<Tap> {
        let what = format!("tap {name}");
        let mut req = ifreq(name).map_err(|e| context(e, what.clone()))?;
        // SAFETY: writing the flags member of the union that TUNSETIFF reads.
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
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
        Ok(Tap { fd, name })
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
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is valid for buf.len() bytes of writes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: frame is valid for frame.len() bytes of reads.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                // A TAP takes a frame whole or not at all.
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
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
        Some(libc::EINVAL) => " (a device of that name exists and is not a plain TAP)",
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

            // A second open of a single-queue TAP is refused while attached.
            let err = Tap::open("tap0").unwrap_err();
            assert_eq!(netlink::os_error(&err), Some(libc::EBUSY), "{err}");

            tap.set_persist(true).unwrap();
            drop(tap);
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
