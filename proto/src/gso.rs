//! Software fallbacks for offloaded frames, for outputs that cannot take them
//! as they are: finishing a partial checksum, and cutting a TCP GSO
//! super-frame into MSS-sized segments (what the kernel's
//! skb_checksum_help and TSO segmentation do); and the way back, joining
//! consecutive segments of one TCP stream into a super-frame (GRO).

use crate::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::offload::{Offload, F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_TCPV6};
use crate::{be16, checksum, ipv4, ipv6, Error};

const TCP_MIN_HEADER: usize = 20;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Where the IP packet of an Ethernet frame ends (frames may carry padding).
fn ip_end(frame: &[u8]) -> Result<usize, Error> {
    Ok(ip_span(frame)?.1)
}

/// Where the IP payload of an Ethernet frame starts and the packet ends.
fn ip_span(frame: &[u8]) -> Result<(usize, usize), Error> {
    let eth = ethernet::Frame::parse(frame)?;
    let (header, len) = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let ip = ipv4::Packet::parse(eth.payload())?;
            (ip.header_len(), ip.total_len())
        }
        ETHERTYPE_IPV6 => (ipv6::HEADER_LEN, ipv6::HEADER_LEN + ipv6::Packet::parse(eth.payload())?.payload().len()),
        _ => return Err(Error::Malformed("offload metadata on a non-IP frame")),
    };
    Ok((ethernet::HEADER_LEN + header, ethernet::HEADER_LEN + len))
}

/// Finish the partial checksum `offload` describes, in place.
///
/// The offsets come from whoever sent the frame: they must point into the
/// IP payload, so that finishing can never write over the Ethernet or IP
/// headers the rest of the switch has checked.
pub fn finish_checksum(frame: &mut [u8], offload: &Offload) -> Result<(), Error> {
    let (payload, end) = ip_span(frame)?;
    let start = offload.csum_start as usize;
    let field = start + offload.csum_offset as usize;
    if start < payload {
        return Err(Error::Malformed("checksum start inside the IP header"));
    }
    if field + 2 > end {
        return Err(Error::Malformed("checksum offsets beyond the packet"));
    }
    // The field holds the pseudo-header sum; summing over it finishes it.
    let sum = match checksum::compute(&frame[start..end]) {
        0 => 0xffff, // as the kernel does: 0 means "no checksum" to UDP
        sum => sum,
    };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Layout of the headers of a TCP frame.
#[derive(Clone, Copy)]
struct TcpFrame {
    l3: usize,
    ip_header_len: usize,
    is_v4: bool,
    tcp: usize,
    headers_end: usize,
    end: usize,
}

fn tcp_layout(frame: &[u8]) -> Result<TcpFrame, Error> {
    let end = ip_end(frame)?;
    let l3 = ethernet::HEADER_LEN;
    let (ip_header_len, is_v4) = match be16(frame, 12) {
        ETHERTYPE_IPV4 => {
            let ip = ipv4::Packet::parse(&frame[l3..])?;
            if ip.protocol() != ipv4::PROTO_TCP {
                return Err(Error::Malformed("TCP GSO on a non-TCP packet"));
            }
            (ip.header_len(), true)
        }
        _ => {
            if ipv6::Packet::parse(&frame[l3..])?.next_header() != ipv4::PROTO_TCP {
                return Err(Error::Malformed("TCP GSO behind IPv6 extension headers"));
            }
            (ipv6::HEADER_LEN, false)
        }
    };
    let tcp = l3 + ip_header_len;
    if tcp + TCP_MIN_HEADER > end {
        return Err(Error::Truncated);
    }
    let headers_end = tcp + ((frame[tcp + 12] >> 4) as usize) * 4;
    if headers_end < tcp + TCP_MIN_HEADER || headers_end > end {
        return Err(Error::Malformed("TCP data offset"));
    }
    Ok(TcpFrame { l3, ip_header_len, is_v4, tcp, headers_end, end })
}

/// Cut a TCP GSO super-frame into segments of at most `gso_size` payload
/// bytes, each with finished IP and TCP checksums, built one at a time in
/// `out` and handed to `emit`. Returns the number of segments.
pub fn segment_tcp(
    frame: &[u8],
    offload: &Offload,
    out: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, Error> {
    let segments = Segments::new(frame, offload)?;
    if out.len() < segments.len(0) {
        return Err(Error::Malformed("segment larger than the segment buffer"));
    }
    for k in 0..segments.count() {
        let len = segments.write(k, out);
        emit(&out[..len]);
    }
    Ok(segments.count())
}

/// A TCP GSO super-frame to be cut into segments of at most `gso_size`
/// payload bytes, each written where the caller wants it (`write`), with
/// finished IP and TCP checksums. The headers' sums are taken once; per
/// segment only the payload is summed, as it is copied.
pub struct Segments<'a> {
    frame: &'a [u8],
    t: TcpFrame,
    mss: usize,
    count: usize,
    first_seq: u32,
    first_id: u16,
    /// Sum of the IPv4 header with its length, id and checksum taken out.
    ip_base: u32,
    /// Sum of the addresses (the pseudo-header's) and of the TCP header
    /// with its sequence number, offset/flags word and checksum taken out.
    tcp_base: u32,
}

impl<'a> Segments<'a> {
    pub fn new(frame: &'a [u8], offload: &Offload) -> Result<Segments<'a>, Error> {
        let kind = offload.gso_type & !GSO_ECN;
        if kind != GSO_TCPV4 && kind != GSO_TCPV6 {
            return Err(Error::Malformed("GSO type other than TCP"));
        }
        let mss = offload.gso_size as usize;
        if mss == 0 {
            return Err(Error::Malformed("GSO size 0"));
        }
        let t = tcp_layout(frame)?;
        let count = (t.end - t.headers_end).div_ceil(mss).max(1);
        let ip = &frame[t.l3..t.tcp];
        let ip_base = if t.is_v4 { sum_without(ip, &[2..6, 10..12]) } else { 0 };
        let addresses = if t.is_v4 { &ip[12..20] } else { &ip[8..40] };
        let tcp_base = sum_without(&frame[t.tcp..t.headers_end], &[4..8, 12..14, 16..18]);
        Ok(Segments {
            frame,
            t,
            mss,
            count,
            first_seq: u32::from_be_bytes(frame[t.tcp + 4..t.tcp + 8].try_into().unwrap()),
            first_id: be16(frame, t.l3 + 4),
            ip_base,
            tcp_base: checksum::sum(addresses, tcp_base),
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// The length of segment `k`.
    pub fn len(&self, k: usize) -> usize {
        self.t.headers_end + self.payload(k).len()
    }

    fn payload(&self, k: usize) -> &'a [u8] {
        let payload = &self.frame[self.t.headers_end..self.t.end];
        &payload[(k * self.mss).min(payload.len())..((k + 1) * self.mss).min(payload.len())]
    }

    /// Write segment `k` at the start of `out` (`len(k)` bytes at least);
    /// returns its length.
    pub fn write(&self, k: usize, out: &mut [u8]) -> usize {
        let (t, chunk) = (&self.t, self.payload(k));
        let len = t.headers_end + chunk.len();
        let out = &mut out[..len];
        out[..t.headers_end].copy_from_slice(&self.frame[..t.headers_end]);
        out[t.headers_end..].copy_from_slice(chunk);
        let l3_len = len - t.l3;
        if t.is_v4 {
            let id = self.first_id.wrapping_add(k as u16);
            let sum = checksum::finish(self.ip_base + l3_len as u32 + id as u32);
            let ip = &mut out[t.l3..];
            ip[2..4].copy_from_slice(&(l3_len as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&id.to_be_bytes());
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        } else {
            out[t.l3 + 4..t.l3 + 6].copy_from_slice(&((l3_len - ipv6::HEADER_LEN) as u16).to_be_bytes());
        }
        let seq = self.first_seq.wrapping_add((k * self.mss) as u32);
        let mut flags = self.frame[t.tcp + 13];
        if k + 1 != self.count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if k != 0 {
            flags &= !TCP_CWR;
        }
        let tcp_len = (len - t.tcp) as u32;
        let offset_and_flags = u16::from_be_bytes([self.frame[t.tcp + 12], flags]) as u32;
        let words = (seq >> 16) + (seq & 0xffff) + offset_and_flags + ipv4::PROTO_TCP as u32 + tcp_len;
        let sum = checksum::finish(checksum::sum(chunk, self.tcp_base + words));
        let tcp = &mut out[t.tcp..];
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[13] = flags;
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        len
    }
}

/// The one's-complement sum of `header` with the byte ranges `without`
/// (even-aligned, within its first 60 bytes) counted as zero.
fn sum_without(header: &[u8], without: &[std::ops::Range<usize>]) -> u32 {
    let mut copy = [0u8; 60];
    let copy = &mut copy[..header.len()];
    copy.copy_from_slice(header);
    for range in without {
        copy[range.clone()].fill(0);
    }
    checksum::sum(copy, 0)
}

/// Evenly spaced frames in a buffer, as a UDP GSO train carries them:
/// frame k starts at `first + k * stride`; all are `len` bytes long but the
/// last, which is `last_len` (1 to `len`).
#[derive(Clone, Copy, Debug)]
pub struct Train {
    pub first: usize,
    pub stride: usize,
    pub count: usize,
    pub len: usize,
    pub last_len: usize,
}

impl Train {
    /// Where frame `k` lies.
    pub fn frame(&self, k: usize) -> std::ops::Range<usize> {
        let start = self.first + k * self.stride;
        start..start + if k + 1 == self.count { self.last_len } else { self.len }
    }
}

/// Join the frames of `train` in `buf`, when they are consecutive segments
/// of one TCP stream as `segment_tcp` cuts them (same headers but for
/// lengths, IP ids, sequence numbers, checksums and the last one's PSH/FIN;
/// equal payloads but the last), into one super-frame at `train.first`
/// with the offload metadata that asks for it to be cut again: GSO of the
/// first payload's size, and the TCP checksum left partial (the kernel
/// takes it so, as from GRO). Returns its length. An error changes nothing
/// in `buf`: deliver the frames one by one.
pub fn coalesce_tcp(buf: &mut [u8], train: &Train) -> Result<(usize, Offload), Error> {
    if train.count < 2 || train.last_len == 0 || train.last_len > train.len || train.len > train.stride {
        return Err(Error::Malformed("not a train of segments"));
    }
    let first = &buf[train.frame(0)];
    let t = tcp_layout(first)?;
    let mss = t.end - t.headers_end;
    if t.end != first.len() || mss == 0 {
        return Err(Error::Malformed("segment with padding or no payload"));
    }
    let first_seq = u32::from_be_bytes(first[t.tcp + 4..t.tcp + 8].try_into().unwrap());
    if !tcp_checksum_ok(first, &t) {
        return Err(Error::Malformed("TCP checksum"));
    }
    let mut total = mss;
    for k in 1..train.count {
        let seg = &buf[train.frame(k)];
        let end = ip_end(seg)?;
        let payload = end.checked_sub(t.headers_end).filter(|p| *p > 0 && end == seg.len());
        let payload = payload.ok_or(Error::Malformed("segment length"))?;
        let last = k + 1 == train.count;
        if payload > mss || (!last && payload != mss) || !same_stream(first, seg, &t, last) {
            return Err(Error::Malformed("not the next segment of the stream"));
        }
        // Checked here, as the kernel's GRO does: the joined frame goes on
        // with its checksum left partial, which receivers take as checked.
        if !tcp_checksum_ok(seg, &t) {
            return Err(Error::Malformed("TCP checksum"));
        }
        let seq = u32::from_be_bytes(seg[t.tcp + 4..t.tcp + 8].try_into().unwrap());
        if seq != first_seq.wrapping_add(total as u32) {
            return Err(Error::Malformed("segment out of sequence"));
        }
        total += payload;
    }
    if t.headers_end - t.l3 + total > u16::MAX as usize {
        return Err(Error::Malformed("super-frame past the IP length"));
    }
    let last_flags = buf[train.frame(train.count - 1).start + t.tcp + 13];
    let mut end = train.first + t.end;
    for k in 1..train.count {
        let range = train.frame(k);
        buf.copy_within(range.start + t.headers_end..range.end, end);
        end += range.len() - t.headers_end;
    }
    let frame = &mut buf[train.first..end];
    fix_ip_header(frame, &t, be16(frame, t.l3 + 4));
    let tcp_len = frame.len() - t.tcp;
    let pseudo = pseudo_header_sum(&frame[t.l3..t.tcp], t.is_v4, tcp_len);
    frame[t.tcp + 13] |= last_flags & (TCP_FIN | TCP_PSH);
    frame[t.tcp + 16..t.tcp + 18].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
    let ecn = if frame[t.tcp + 13] & TCP_CWR != 0 { GSO_ECN } else { 0 };
    let offload = Offload {
        flags: F_NEEDS_CSUM,
        gso_type: if t.is_v4 { GSO_TCPV4 } else { GSO_TCPV6 } | ecn,
        hdr_len: t.headers_end as u16,
        gso_size: mss as u16,
        csum_start: t.tcp as u16,
        csum_offset: 16,
    };
    Ok((frame.len(), offload))
}

/// Whether `seg` has the headers of `first` but for what differs between
/// segments of one super-frame.
fn same_stream(first: &[u8], seg: &[u8], t: &TcpFrame, last: bool) -> bool {
    let same = |range: std::ops::Range<usize>| first[range.clone()] == seg[range];
    let ip_same = if t.is_v4 {
        // Version to TOS, fragment field to protocol, addresses, options.
        same(t.l3..t.l3 + 2) && same(t.l3 + 6..t.l3 + 10) && same(t.l3 + 12..t.tcp)
    } else {
        same(t.l3..t.l3 + 4) && same(t.l3 + 6..t.tcp)
    };
    // PSH and FIN may end the stream's last segment; CWR starts a new one
    // (only the first segment may have it, as the kernel's GRO has it).
    let allowed = if last { TCP_FIN | TCP_PSH } else { 0 };
    let flags_same = (first[t.tcp + 13] & !TCP_CWR) | allowed == seg[t.tcp + 13] | allowed;
    let fragment_free = !t.is_v4 || be16(first, t.l3 + 6) & 0x3fff == 0;
    same(0..ethernet::HEADER_LEN)
        && ip_same
        && fragment_free
        && same(t.tcp..t.tcp + 4)
        && same(t.tcp + 8..t.tcp + 13)
        && flags_same
        && same(t.tcp + 14..t.tcp + 16)
        && same(t.tcp + 18..t.headers_end)
        && first[t.tcp + 13] & (TCP_FIN | TCP_PSH) == 0
}

fn fix_ip_header(seg: &mut [u8], t: &TcpFrame, id: u16) {
    let l3_len = seg.len() - t.l3;
    let ip = &mut seg[t.l3..t.l3 + t.ip_header_len];
    if t.is_v4 {
        ip[2..4].copy_from_slice(&(l3_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[10..12].fill(0);
        let sum = checksum::compute(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    } else {
        ip[4..6].copy_from_slice(&((l3_len - ipv6::HEADER_LEN) as u16).to_be_bytes());
    }
}

/// Whether the TCP checksum of a segment laid out as `t` (its IP packet
/// ending where the segment does) is right.
fn tcp_checksum_ok(seg: &[u8], t: &TcpFrame) -> bool {
    let pseudo = pseudo_header_sum(&seg[t.l3..t.tcp], t.is_v4, seg.len() - t.tcp);
    checksum::finish(checksum::sum(&seg[t.tcp..], pseudo)) == 0
}

/// Sum of the TCP pseudo-header for the addresses in `ip_header`.
fn pseudo_header_sum(ip_header: &[u8], is_v4: bool, l4_len: usize) -> u32 {
    let addresses = if is_v4 { &ip_header[12..20] } else { &ip_header[8..40] };
    let tail = (ipv4::PROTO_TCP as u32) + (l4_len as u32 & 0xffff) + (l4_len as u32 >> 16);
    checksum::sum(addresses, tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::F_NEEDS_CSUM;
    use crate::MacAddr;
    use std::net::Ipv4Addr;

    /// A TCP/IPv4 frame with `payload_len` bytes and a partial checksum.
    fn tcp_frame(payload_len: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload_len];
        ethernet::write_header(&mut f, MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 1]), ETHERTYPE_IPV4);
        let h = ipv4::Header {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: ipv4::PROTO_TCP,
            ttl: 64,
            payload_len: 20 + payload_len,
        };
        ipv4::write_header(&mut f[14..], &h);
        let tcp = &mut f[34..];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        for (i, b) in tcp[20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        // What the kernel leaves in the field: the folded pseudo-header sum.
        let pseudo = pseudo_header_sum(&f[14..34], true, 20 + payload_len);
        let folded = !checksum::finish(pseudo);
        f[34 + 16..34 + 18].copy_from_slice(&folded.to_be_bytes());
        f
    }

    fn tcp_checksum_ok(frame: &[u8]) -> bool {
        let ip = ipv4::Packet::parse(&frame[14..]).unwrap();
        let pseudo = pseudo_header_sum(&frame[14..34], true, ip.payload().len());
        checksum::finish(checksum::sum(ip.payload(), pseudo)) == 0
    }

    fn partial() -> Offload {
        Offload { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..Offload::NONE }
    }

    #[test]
    fn finishes_a_partial_checksum() {
        let mut f = tcp_frame(100, 0x18);
        assert!(!tcp_checksum_ok(&f));
        finish_checksum(&mut f, &partial()).unwrap();
        assert!(tcp_checksum_ok(&f));
    }

    #[test]
    fn refuses_offsets_beyond_the_packet_or_inside_its_headers() {
        let mut f = tcp_frame(10, 0x18);
        let bad = Offload { csum_offset: 200, ..partial() };
        assert!(finish_checksum(&mut f, &bad).is_err());
        let into_ethernet = Offload { csum_start: 0, csum_offset: 12, ..partial() };
        let before = f.clone();
        assert!(finish_checksum(&mut f, &into_ethernet).is_err());
        assert_eq!(f, before, "nothing written");
    }

    #[test]
    fn segments_a_tcp_super_frame() {
        let f = tcp_frame(3000, 0x19); // FIN|PSH|ACK
        let o = Offload { gso_type: GSO_TCPV4, gso_size: 1400, ..partial() };
        let mut out = vec![0u8; 2000];
        let mut segs = vec![];
        let n = segment_tcp(&f, &o, &mut out, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(n, 3);
        let mut payload = vec![];
        for (i, s) in segs.iter().enumerate() {
            let ip = ipv4::Packet::parse(&s[14..]).unwrap();
            assert!(ip.header_checksum_ok());
            assert!(tcp_checksum_ok(s), "segment {i}");
            let tcp = ip.payload();
            assert_eq!(u32::from_be_bytes(tcp[4..8].try_into().unwrap()), 1000 + 1400 * i as u32);
            let last = i == 2;
            assert_eq!(tcp[13] & (TCP_FIN | TCP_PSH) != 0, last, "FIN/PSH only on the last");
            payload.extend_from_slice(&tcp[20..]);
        }
        assert_eq!(payload, f[54..].to_vec());
        assert_eq!(segs[2].len(), 54 + 200);
    }

    #[test]
    fn segments_a_tcp_ipv6_super_frame_with_options_and_an_odd_mss() {
        let payload_len = 2500;
        let mut f = vec![0u8; 14 + 40 + 32 + payload_len];
        ethernet::write_header(&mut f, MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 1]), ETHERTYPE_IPV6);
        let h = ipv6::Header {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            next_header: ipv4::PROTO_TCP,
            hop_limit: 64,
            payload_len: 32 + payload_len,
        };
        ipv6::write_header(&mut f[14..], &h);
        let tcp = &mut f[54..];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&u32::MAX.to_be_bytes()); // the sequence wraps
        tcp[12] = 8 << 4;
        tcp[13] = 0x18;
        tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]); // NOP NOP timestamps
        for (i, b) in tcp[32..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let o = Offload { gso_type: GSO_TCPV6, gso_size: 999, csum_start: 54, ..partial() };
        let mut segs = vec![];
        assert_eq!(segment_tcp(&f, &o, &mut vec![0u8; 2000], |s| segs.push(s.to_vec())).unwrap(), 3);
        let mut payload = vec![];
        for (i, s) in segs.iter().enumerate() {
            let ip = ipv6::Packet::parse(&s[14..]).unwrap();
            let tcp = ip.payload();
            let pseudo = pseudo_header_sum(&s[14..54], false, tcp.len());
            assert_eq!(checksum::finish(checksum::sum(tcp, pseudo)), 0, "segment {i}'s TCP checksum");
            assert_eq!(u32::from_be_bytes(tcp[4..8].try_into().unwrap()), u32::MAX.wrapping_add(999 * i as u32));
            assert_eq!(&tcp[20..32], &f[74..86], "options kept");
            payload.extend_from_slice(&tcp[32..]);
        }
        assert_eq!(payload, f[86..].to_vec());
    }

    #[test]
    fn refuses_non_tcp_gso() {
        let f = tcp_frame(3000, 0x10);
        let o = Offload { gso_type: 5, gso_size: 1400, ..partial() };
        assert!(segment_tcp(&f, &o, &mut [0u8; 2000], |_| {}).is_err());
        let o = Offload { gso_type: GSO_TCPV4, gso_size: 0, ..partial() };
        assert!(segment_tcp(&f, &o, &mut [0u8; 2000], |_| {}).is_err());
    }

    /// `frame` cut by `segment_tcp` and laid out as a UDP GSO train: each
    /// segment behind an 8-byte gap (where VXLAN's header would be).
    fn as_train(frame: &[u8], mss: u16) -> (Vec<u8>, Train) {
        let o = Offload { gso_type: GSO_TCPV4, gso_size: mss, ..partial() };
        let mut segs = vec![];
        segment_tcp(frame, &o, &mut vec![0u8; 4000], |s| segs.push(s.to_vec())).unwrap();
        let stride = 8 + segs[0].len();
        let mut buf = vec![0xeeu8; stride * segs.len()];
        for (k, seg) in segs.iter().enumerate() {
            buf[k * stride + 8..k * stride + 8 + seg.len()].copy_from_slice(seg);
        }
        let train =
            Train { first: 8, stride, count: segs.len(), len: segs[0].len(), last_len: segs.last().unwrap().len() };
        (buf, train)
    }

    #[test]
    fn coalesces_a_train_of_segments_back_into_the_super_frame() {
        let f = tcp_frame(3000, 0x19); // FIN|PSH|ACK
        let (mut buf, train) = as_train(&f, 1400);
        let (len, offload) = coalesce_tcp(&mut buf, &train).unwrap();
        assert_eq!(&buf[8..8 + len], &f[..], "the super-frame, byte for byte (partial checksum included)");
        assert!(ipv4::Packet::parse(&buf[8 + 14..8 + len]).unwrap().header_checksum_ok());
        let expected = Offload { gso_type: GSO_TCPV4, gso_size: 1400, hdr_len: 54, ..partial() };
        assert_eq!(offload, expected);
    }

    #[test]
    fn refuses_segments_that_do_not_follow_each_other() {
        let f = tcp_frame(3000, 0x10);
        // (what, segment, byte in it, bits flipped, checksum made right again)
        let cases = [
            ("a gap in sequence", 1, 14 + 20 + 7, 1, true),
            ("another port", 2, 14 + 20 + 1, 1, true),
            ("another address", 1, 14 + 19, 1, true),
            ("FIN in the middle", 1, 14 + 20 + 13, TCP_FIN, true),
            ("CWR in the middle", 1, 14 + 20 + 13, TCP_CWR, true),
            ("a corrupted payload byte", 2, 100, 0x40, false),
        ];
        for (what, k, at, bits, fix_checksum) in cases {
            let (mut buf, train) = as_train(&f, 1400);
            let seg = &mut buf[train.frame(k)];
            seg[at] ^= bits;
            if fix_checksum {
                seg[50..52].fill(0);
                let pseudo = pseudo_header_sum(&seg[14..34], true, seg.len() - 34);
                let sum = checksum::finish(checksum::sum(&seg[34..], pseudo));
                seg[50..52].copy_from_slice(&sum.to_be_bytes());
            }
            let before = buf.clone();
            assert!(coalesce_tcp(&mut buf, &train).is_err(), "{what}");
            assert_eq!(buf, before, "{what}: nothing written");
        }
        let (mut buf, train) = as_train(&f, 1400);
        let one = Train { count: 1, ..train };
        assert!(coalesce_tcp(&mut buf, &one).is_err(), "one frame is no train");
        let short = Train { last_len: train.len + 1, ..train };
        assert!(coalesce_tcp(&mut buf, &short).is_err(), "last frame longer than the others");
    }
}
