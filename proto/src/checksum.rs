//! The Internet checksum (RFC 1071).

/// One's-complement sum of `data` added to `initial`, not yet folded.
///
/// Four bytes at a time: the sum does not depend on byte order (RFC 1071
/// 2(B)), so native-endian 32-bit words are added into a 64-bit total (no
/// carry to carry: the compiler turns the loop into vector adds), folded to
/// 16 bits and turned to network order once at the end. (Two bytes at a
/// time, the inner checksums of super-frames cut into segments took half of
/// a worker's time in the overlay bench.)
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut words = data.chunks_exact(4);
    let mut acc: u64 = (&mut words).map(|w| u32::from_ne_bytes(w.try_into().expect("4 bytes")) as u64).sum();
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        acc += u32::from_ne_bytes(last) as u64;
    }
    let native = fold16(fold64(acc));
    fold64(initial as u64 + u16::from_be(native) as u64)
}

fn fold16(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn fold64(mut acc: u64) -> u32 {
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Fold a 32-bit sum to 16 bits and complement it: the value to store.
pub fn finish(acc: u32) -> u16 {
    !fold16(acc)
}

/// Checksum of `data` alone (IPv4 header, ICMP message).
pub fn compute(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// RFC 1624: the stored checksum `sum` after the 16-bit words `old` of the
/// data it covers became `new` (same even length).
pub fn update(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    !fold_words(!sum as u32, old, new)
}

/// The same for a partial checksum left for the hardware to finish
/// (virtio NEEDS_CSUM): the field holds the folded pseudo-header sum,
/// not complemented.
pub fn update_partial(field: u16, old: &[u8], new: &[u8]) -> u16 {
    fold_words(field as u32, old, new)
}

fn fold_words(mut acc: u32, old: &[u8], new: &[u8]) -> u16 {
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += !u16::from_be_bytes([o[0], o[1]]) as u32;
        acc += u16::from_be_bytes([n[0], n[1]]) as u32;
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The example from RFC 1071 section 3: sum is 0xddf2, checksum its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(compute(&data), !0xddf2);
    }

    /// The plain RFC 1071 loop, two bytes at a time.
    fn reference(data: &[u8], initial: u32) -> u16 {
        let mut acc = initial as u64;
        for c in data.chunks(2) {
            acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn eight_bytes_at_a_time_agrees_with_the_plain_loop() {
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for len in (0..80).chain([1499, 1500, 65_535]) {
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let initial = next() & 0x3_ffff;
            assert_eq!(finish(sum(&data, initial)), reference(&data, initial), "length {len}");
        }
        assert_eq!(finish(sum(&[0xff; 64], 0)), reference(&[0xff; 64], 0), "all ones");
        assert_eq!(finish(sum(&[0; 64], 0)), reference(&[0; 64], 0), "all zeroes");
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(compute(&[0x12]), compute(&[0x12, 0x00]));
    }

    #[test]
    fn verifying_a_checksummed_buffer_gives_zero() {
        let mut data = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let c = compute(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(compute(&data), 0);
    }

    #[test]
    fn incremental_update_matches_recomputing() {
        let mut data = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let before = compute(&data);
        let old = data[12..16].to_vec();
        data[12..16].copy_from_slice(&[192, 0, 2, 77]);
        assert_eq!(update(before, &old, &data[12..16]), compute(&data));
    }

    #[test]
    fn partial_update_matches_recomputing_the_pseudo_sum() {
        let pseudo = |src: [u8; 4]| {
            let mut p = src.to_vec();
            p.extend_from_slice(&[10, 0, 0, 2, 0, 6, 0, 40]);
            !finish(sum(&p, 0))
        };
        let field = pseudo([10, 0, 0, 1]);
        assert_eq!(update_partial(field, &[10, 0, 0, 1], &[192, 0, 2, 77]), pseudo([192, 0, 2, 77]));
    }
}
