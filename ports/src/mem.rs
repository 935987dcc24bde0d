//! In-memory ports: frames pushed by a test come out of `recv`, frames the
//! switch sends are collected for the test to take. Used by pipeline tests
//! and benches, where no kernel device is wanted.

use crate::{FrameIo, Offload};
use crossbeam_queue::ArrayQueue;
use std::io;
use std::os::fd::RawFd;

/// A port backed by two bounded lock-free queues.
pub struct MemPort {
    to_switch: ArrayQueue<(Vec<u8>, Offload)>,
    from_switch: ArrayQueue<(Vec<u8>, Offload)>,
    /// Spent buffers handed back by the consumer, reused by `send`.
    spare: ArrayQueue<Vec<u8>>,
    /// Behave like a TAP with offloads on (true) or like a plain wire.
    offloads: bool,
}

impl MemPort {
    /// A port that takes only finished frames, like a wire.
    pub fn new(capacity: usize) -> MemPort {
        Self::build(capacity, false)
    }

    /// A port that takes GSO super-frames and partial checksums, like a TAP
    /// with offloads on.
    pub fn with_offloads(capacity: usize) -> MemPort {
        Self::build(capacity, true)
    }

    fn build(capacity: usize, offloads: bool) -> MemPort {
        MemPort {
            to_switch: ArrayQueue::new(capacity),
            from_switch: ArrayQueue::new(capacity),
            spare: ArrayQueue::new(capacity),
            offloads,
        }
    }

    /// Queue a finished frame for the switch to receive; false when full.
    pub fn inject(&self, frame: Vec<u8>) -> bool {
        self.inject_offloaded(frame, Offload::NONE)
    }

    /// Queue a frame with offload metadata, as a TAP with vnet headers hands over.
    pub fn inject_offloaded(&self, frame: Vec<u8>, offload: Offload) -> bool {
        self.to_switch.push((frame, offload)).is_ok()
    }

    /// Take the next frame the switch sent on this port.
    pub fn take(&self) -> Option<Vec<u8>> {
        self.take_offloaded().map(|(frame, _)| frame)
    }

    /// Take the next frame the switch sent, with its offload metadata.
    pub fn take_offloaded(&self) -> Option<(Vec<u8>, Offload)> {
        self.from_switch.pop()
    }

    /// Take every frame the switch sent on this port.
    pub fn take_all(&self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.take()).collect()
    }

    /// Give a taken frame's buffer back so `send` can reuse it.
    pub fn recycle(&self, buf: Vec<u8>) {
        let _ = self.spare.push(buf);
    }
}

impl FrameIo for MemPort {
    fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Offload)> {
        let (frame, offload) = self.to_switch.pop().ok_or(io::ErrorKind::WouldBlock)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        self.recycle(frame);
        Ok((n, offload))
    }

    fn send(&self, frame: &[u8], offload: &Offload) -> io::Result<()> {
        if !self.offloads && !offload.is_plain() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "offloaded frame to a port without offloads"));
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        self.from_switch
            .push((buf, *offload))
            .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "in-memory port full"))
    }

    fn takes_offloads(&self) -> bool {
        self.offloads
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pass_both_ways() {
        let port = MemPort::new(4);
        assert!(port.inject(vec![1, 2, 3]));
        let mut buf = [0u8; 16];
        assert_eq!(port.recv(&mut buf).unwrap(), (3, Offload::NONE));
        assert_eq!(port.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        port.send(&[9, 9], &Offload::NONE).unwrap();
        assert_eq!(port.take_all(), vec![vec![9, 9]]);
    }

    #[test]
    fn a_plain_port_refuses_offloaded_frames() {
        let partial = Offload { flags: proto::offload::F_NEEDS_CSUM, ..Offload::NONE };
        assert!(MemPort::new(4).send(&[1], &partial).is_err());
        let tap_like = MemPort::with_offloads(4);
        tap_like.send(&[1], &partial).unwrap();
        assert_eq!(tap_like.take_offloaded(), Some((vec![1], partial)));
    }
}
