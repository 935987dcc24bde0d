//! Writing a frame behind its `virtio_net_hdr` to a descriptor that takes
//! one (a TAP with IFF_VNET_HDR, a packet socket with PACKET_VNET_HDR).

use crate::Offload;
use std::io;
use std::os::fd::RawFd;

/// Write `frame` with `offload`'s header in front, in one `writev`
/// (retried on EINTR). Both kinds of descriptor take a frame whole or not
/// at all.
pub(crate) fn write_frame(fd: RawFd, frame: &[u8], offload: &Offload) -> io::Result<()> {
    let header = offload.to_virtio();
    let iov = [
        libc::iovec { iov_base: header.as_ptr() as *mut _, iov_len: header.len() },
        libc::iovec { iov_base: frame.as_ptr() as *mut _, iov_len: frame.len() },
    ];
    loop {
        // SAFETY: both iovecs point to readable buffers of their lengths;
        // writev does not write through them.
        if unsafe { libc::writev(fd, iov.as_ptr(), 2) } >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
