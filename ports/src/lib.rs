//! Getting frames in and out of the switch: TAP devices, in-memory ports for
//! tests, and the netns / netlink plumbing that puts a TAP into a namespace.

pub mod endpoint;
pub mod kernel_bridge;
pub mod mem;
pub mod netlink;
pub mod netns;
pub mod tap;
pub mod uplink;
mod vnet;

pub use proto::offload::Offload;
use std::io;
use std::os::fd::RawFd;

/// A port the switch can receive frames from and send frames to.
///
/// `recv` never blocks: it returns `Err(WouldBlock)` when nothing is queued.
/// Implementations are shared between worker threads, so `send` takes `&self`.
pub trait FrameIo: Send + Sync {
    /// Copy the next frame into `buf`; return its length and its offload
    /// metadata (partial checksum, GSO), `Offload::NONE` for a finished frame.
    fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Offload)>;
    /// Send one whole frame. A port that does not [`takes_offloads`] is only
    /// ever given finished frames (`offload.is_plain()`).
    ///
    /// [`takes_offloads`]: FrameIo::takes_offloads
    fn send(&self, frame: &[u8], offload: &Offload) -> io::Result<()>;
    /// Whether the port takes GSO super-frames and partial checksums as they are.
    fn takes_offloads(&self) -> bool;
    /// A file descriptor that polls readable when frames are queued, if any.
    fn poll_fd(&self) -> Option<RawFd>;
}
