//! Wire formats: zero-copy views over received frames and builders for the
//! frames the switch answers with. No I/O and no state.
//!
//! Every view checks lengths before it reads: a constructor returns an
//! [`Error`] for a frame that is too short or whose length fields lie, so code
//! holding a view can read its fields without further checks.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gso;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
mod mac;
pub mod ndp;
pub mod offload;
pub mod vxlan;

pub use mac::MacAddr;

/// Why a frame was refused by a parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header it claims to carry.
    Truncated,
    /// A field holds a value the format forbids (bad version, length that lies...).
    Malformed(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated"),
            Error::Malformed(why) => write!(f, "malformed: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Read a big-endian u16 at `at`; callers have checked the length.
#[inline]
fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}
