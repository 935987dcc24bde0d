//! In-memory ports: frames pushed by a test come out of `recv`, frames the
//! switch sends are collected for the test to take. Used by pipeline tests
//! and benches, where no kernel device is wanted.

use crate::FrameIo;
use crossbeam_queue::ArrayQueue;
use std::io;
use std::os::fd::RawFd;

/// A port backed by two bounded lock-free queues.
pub struct MemPort {
    to_switch: ArrayQueue<Vec<u8>>,
    from_switch: ArrayQueue<Vec<u8>>,
    /// Spent buffers handed back by the consumer, reused by `send`.
    spare: ArrayQueue<Vec<u8>>,
}

impl MemPort {
    pub fn new(capacity: usize) -> MemPort {
        MemPort {
            to_switch: ArrayQueue::new(capacity),
            from_switch: ArrayQueue::new(capacity),
            spare: ArrayQueue::new(capacity),
        }
    }

    /// Queue a frame for the switch to receive; false when the queue is full.
    pub fn inject(&self, frame: Vec<u8>) -> bool {
        self.to_switch.push(frame).is_ok()
    }

    /// Take the next frame the switch sent on this port.
    pub fn take(&self) -> Option<Vec<u8>> {
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
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let frame = self.to_switch.pop().ok_or(io::ErrorKind::WouldBlock)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        self.recycle(frame);
        Ok(n)
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        self.from_switch.push(buf).map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "in-memory port full"))
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
        assert_eq!(port.recv(&mut buf).unwrap(), 3);
        assert_eq!(port.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        port.send(&[9, 9]).unwrap();
        assert_eq!(port.take_all(), vec![vec![9, 9]]);
    }
}
