//! Ethernet II frames.

use crate::{be16, Error, MacAddr};

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Values below this are 802.3 length fields, not EtherTypes.
const MIN_ETHERTYPE: u16 = 0x0600;

/// A checked view of an Ethernet II frame.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    buf: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Check the header is present and carries an EtherType (not an 802.3 length).
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let frame = Frame { buf };
        if frame.ethertype() < MIN_ETHERTYPE {
            return Err(Error::Malformed("802.3 length field instead of an EtherType"));
        }
        Ok(frame)
    }

    #[inline]
    pub fn dst(&self) -> MacAddr {
        MacAddr(self.buf[0..6].try_into().unwrap())
    }

    #[inline]
    pub fn src(&self) -> MacAddr {
        MacAddr(self.buf[6..12].try_into().unwrap())
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf, 12)
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
}

/// Write an Ethernet header at the start of `buf` (at least [`HEADER_LEN`] long).
pub fn write_header(buf: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst.0);
    buf[6..12].copy_from_slice(&src.0);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header() {
        let mut buf = [0u8; 60];
        write_header(&mut buf, MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 1]), ETHERTYPE_ARP);
        let f = Frame::parse(&buf).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload().len(), 46);
    }

    #[test]
    fn refuses_short_and_8023_frames() {
        assert_eq!(Frame::parse(&[0u8; 13]).err(), Some(Error::Truncated));
        let mut buf = [0u8; 60];
        write_header(&mut buf, MacAddr::BROADCAST, MacAddr::ZERO, 46);
        assert!(matches!(Frame::parse(&buf), Err(Error::Malformed(_))));
    }
}
