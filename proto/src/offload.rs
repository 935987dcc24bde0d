//! Offload metadata carried beside a frame: the `virtio_net_hdr` that a TAP
//! opened with IFF_VNET_HDR exchanges with the kernel. It says whether the
//! frame's L4 checksum is still to be finished (and where), and whether the
//! frame is a GSO super-frame to be cut into segments of `gso_size`.

/// VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from csum_start, stored at csum_start + csum_offset.
pub const F_NEEDS_CSUM: u8 = 1;
/// VIRTIO_NET_HDR_F_DATA_VALID: the checksum was verified already.
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

/// Size of `struct virtio_net_hdr`, the TAP default.
pub const VIRTIO_NET_HDR_LEN: usize = 10;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers before the payload (a hint; not trusted).
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl Offload {
    /// A finished, ordinary frame.
    pub const NONE: Offload =
        Offload { flags: 0, gso_type: GSO_NONE, hdr_len: 0, gso_size: 0, csum_start: 0, csum_offset: 0 };

    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// Nothing left to do in software for a port that takes no offloads.
    #[inline]
    pub fn is_plain(&self) -> bool {
        !self.needs_csum() && !self.is_gso()
    }

    /// Decode a `virtio_net_hdr` (native endian, as the TAP uses by default).
    pub fn from_virtio(b: &[u8; VIRTIO_NET_HDR_LEN]) -> Offload {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Offload {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    pub fn to_virtio(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut b = [0u8; VIRTIO_NET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_header_round_trips() {
        let o = Offload {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(Offload::from_virtio(&o.to_virtio()), o);
        assert!(o.needs_csum() && o.is_gso() && !o.is_plain());
        assert!(Offload::NONE.is_plain());
        assert!(!Offload { gso_type: GSO_ECN, ..Offload::NONE }.is_gso());
    }
}
