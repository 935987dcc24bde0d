//! IPv6 fixed headers (RFC 8200): enough to refuse frames whose lengths lie.

use crate::{be16, Error};

pub const HEADER_LEN: usize = 40;

/// A checked view of an IPv6 packet.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Packet<'a> {
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if buf[0] >> 4 != 6 {
            return Err(Error::Malformed("IPv6 version"));
        }
        let payload_len = be16(buf, 4) as usize;
        if HEADER_LEN + payload_len > buf.len() {
            return Err(Error::Malformed("IPv6 payload length"));
        }
        Ok(Packet { buf: &buf[..HEADER_LEN + payload_len] })
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf[6]
    }

    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_version_and_length() {
        let mut buf = [0u8; 48];
        buf[0] = 0x60;
        buf[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(Packet::parse(&buf).unwrap().payload().len(), 8);
        buf[4..6].copy_from_slice(&9u16.to_be_bytes());
        assert!(Packet::parse(&buf).is_err());
        buf[0] = 0x40;
        assert!(Packet::parse(&buf).is_err());
        assert_eq!(Packet::parse(&buf[..39]).err(), Some(Error::Truncated));
    }
}
