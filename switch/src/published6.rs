//! Published ports on the uplink's IPv6 address (`--uplink-ip6`): a client
//! reaching [UPLINK_IP6]:HOSTPORT lands in the container's IPv6 address and
//! port, as Docker's ip6tables DNAT does, and the container's answers leave
//! from [UPLINK_IP6]:HOSTPORT again. The same table of published ports as
//! IPv4's; the flows are tracked in an IPv6 connection table (published
//! entries, and the masqueraded side of a hairpin: a container reaching
//! [UPLINK_IP6]:HOSTPORT itself; nothing else is masqueraded over IPv6).

use std::net::Ipv6Addr;

use crate::conntrack::{Tuple, PROTO_TCP, PROTO_UDP};
use crate::datapath::{Shared, Snapshot};
use crate::fdb::PortId;
use crate::pipeline::Context;
use proto::offload::Offload;
use proto::{checksum, ethernet, ipv6, MacAddr};

const L3: usize = ethernet::HEADER_LEN;
const L4: usize = L3 + ipv6::HEADER_LEN;
const SRC_AT: usize = L3 + 8;
const DST_AT: usize = L3 + 24;

/// The transport ports of a TCP or UDP packet carried without extension headers.
struct Ports {
    proto: u8,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
}

fn ports(ip: &ipv6::Packet) -> Option<Ports> {
    let seg = ip.payload();
    let be16 = |at: usize| u16::from_be_bytes([seg[at], seg[at + 1]]);
    match ip.next_header() {
        PROTO_TCP if seg.len() >= 20 => {
            Some(Ports { proto: PROTO_TCP, sport: be16(0), dport: be16(2), tcp_flags: seg[13] })
        }
        PROTO_UDP if seg.len() >= 8 => Some(Ports { proto: PROTO_UDP, sport: be16(0), dport: be16(2), tcp_flags: 0 }),
        _ => None,
    }
}

/// Where a packet from outside to the uplink's IPv6 address goes, if it
/// belongs to a published port: its destination is rewritten to the
/// container's, and (container MAC, port, gateway MAC) returned.
pub(crate) fn inbound(
    snap: &Snapshot,
    shared: &Shared,
    now: u32,
    frame: &mut [u8],
    offload: &Offload,
) -> Option<(MacAddr, PortId, MacAddr)> {
    let ip = ipv6::Packet::parse(&frame[L3..]).ok()?;
    let p = ports(&ip)?;
    let remote = ip.src();
    let (network, container, container_port) = {
        let mut table = shared.conntrack6.lock();
        match table.inbound(p.proto, remote, p.sport, p.dport, p.tcp_flags, now) {
            Some(e) => (e.network, e.orig.src, e.orig.sport),
            None => {
                let target = snap.published.get(&(p.proto, p.dport))?;
                let domain = snap.networks.get(&target.network)?;
                let &(_, port) = domain.neighbours.get(&target.ip)?;
                let container = snap.ports.get(&port)?.spec.ipv6?;
                let orig = Tuple { proto: p.proto, src: container, sport: target.port, dst: remote, dport: p.sport };
                table.inbound_published(target.network, orig, p.dport, p.tcp_flags, now);
                (target.network, container, target.port)
            }
        }
    };
    let domain = snap.networks.get(&network)?;
    let &(mac, port) = domain.neighbours6.get(&container)?;
    rewrite(frame, offload, p.proto, DST_AT, container, container_port);
    Some((mac, port, domain.spec.gateway_mac))
}

/// A container's packet of a flow that came in to a published port: its
/// source becomes [UPLINK_IP6]:HOSTPORT again. Other packets are left alone.
pub(crate) fn outbound(ctx: &Context, uplink_ip6: Ipv6Addr, frame: &mut [u8], offload: &Offload) {
    if ctx.snap.published.is_empty() {
        return;
    }
    let Ok(ip) = ipv6::Packet::parse(&frame[L3..]) else { return };
    let Some(p) = ports(&ip) else { return };
    if !ctx.snap.published_targets.contains(&(p.proto, ctx.in_port.spec.ipv4, p.sport)) {
        return; // not from a published port: no lock taken
    }
    let orig = Tuple { proto: p.proto, src: ip.src(), sport: p.sport, dst: ip.dst(), dport: p.dport };
    let host_port = ctx.shared.conntrack6.lock().outbound_existing(&orig, p.tcp_flags, ctx.now);
    if let Some(host_port) = host_port {
        rewrite(frame, offload, p.proto, SRC_AT, uplink_ip6, host_port);
    }
}

/// A container's packet to [UPLINK_IP6]:PORT itself: its source becomes
/// the uplink address (the published port it answers from, or a
/// masquerade port), and it goes in again as if it came from outside, so
/// it lands in the published port's container and the answer finds its way
/// back the same way. None when it is for no published port or flow.
pub(crate) fn hairpin(
    ctx: &Context,
    uplink_ip6: Ipv6Addr,
    frame: &mut [u8],
    offload: &Offload,
) -> Option<(MacAddr, PortId, MacAddr)> {
    let ip = ipv6::Packet::parse(&frame[L3..]).ok()?;
    let p = ports(&ip)?;
    let orig = Tuple { proto: p.proto, src: ip.src(), sport: p.sport, dst: ip.dst(), dport: p.dport };
    let is_published = ctx.snap.published.contains_key(&(p.proto, p.dport));
    let nat_port = {
        let mut table = ctx.shared.conntrack6.lock();
        match table.outbound_existing(&orig, p.tcp_flags, ctx.now) {
            Some(port) => port,
            None if is_published => table.outbound(ctx.net.spec.index, orig, p.tcp_flags, ctx.now)?,
            None => return None,
        }
    };
    rewrite(frame, offload, p.proto, SRC_AT, uplink_ip6, nat_port);
    inbound(ctx.snap, ctx.shared, ctx.now, frame, offload)
}

/// An ICMPv6 error from outside about a packet of a published flow (packet
/// too big, unreachable, time exceeded), sent to the uplink address: the
/// outer destination and the quoted source become the container's again,
/// so that Path MTU discovery works through the published port. Returns
/// where it goes, None when it concerns no tracked flow.
pub(crate) fn translate_error(
    snap: &Snapshot,
    shared: &Shared,
    now: u32,
    uplink_ip6: Ipv6Addr,
    frame: &mut [u8],
) -> Option<(MacAddr, PortId, MacAddr)> {
    let quoted = L4 + 8;
    let end = L3 + ipv6::Packet::parse(&frame[L3..]).ok()?.bytes().len();
    if quoted + ipv6::HEADER_LEN + 4 > end || frame[quoted] >> 4 != 6 {
        return None;
    }
    let inner = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&frame[quoted + at..quoted + at + 16]).unwrap());
    let (proto, src, dst) = (frame[quoted + 6], inner(8), inner(24));
    let l4 = quoted + ipv6::HEADER_LEN;
    let port_at = |at: usize| u16::from_be_bytes([frame[l4 + at], frame[l4 + at + 1]]);
    if src != uplink_ip6 || !matches!(proto, PROTO_TCP | PROTO_UDP) {
        return None;
    }
    let (host_port, remote_port) = (port_at(0), port_at(2));
    let entry = shared.conntrack6.lock().inbound(proto, dst, remote_port, host_port, 0, now)?;
    let domain = snap.networks.get(&entry.network)?;
    let &(mac, port) = domain.neighbours6.get(&entry.orig.src)?;
    let container = entry.orig.src.octets();
    frame[DST_AT..DST_AT + 16].copy_from_slice(&container);
    frame[quoted + 8..quoted + 24].copy_from_slice(&container);
    frame[l4..l4 + 2].copy_from_slice(&entry.orig.sport.to_be_bytes());
    // The message changed in several places: seal it afresh.
    let src_ip = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[SRC_AT..SRC_AT + 16]).unwrap());
    proto::icmpv6::seal(src_ip, entry.orig.src, &mut frame[L4..end]);
    Some((mac, port, domain.spec.gateway_mac))
}

/// Replace the address at `addr_at` (source or destination) and the port
/// on the same side, keeping the TCP/UDP checksum right (IPv6 has no header
/// checksum; the pseudo-header covers the addresses).
fn rewrite(frame: &mut [u8], offload: &Offload, proto: u8, addr_at: usize, addr: Ipv6Addr, port: u16) {
    let old_addr: [u8; 16] = frame[addr_at..addr_at + 16].try_into().expect("parsed");
    frame[addr_at..addr_at + 16].copy_from_slice(&addr.octets());
    let port_at = if addr_at == SRC_AT { L4 } else { L4 + 2 };
    let old_port: [u8; 2] = frame[port_at..port_at + 2].try_into().expect("parsed");
    frame[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    let csum_at = L4 + if proto == PROTO_TCP { 16 } else { 6 };
    let field = u16::from_be_bytes([frame[csum_at], frame[csum_at + 1]]);
    let sum = if offload.needs_csum() {
        // The field holds the pseudo-header sum; the ports are summed later.
        checksum::update_partial(field, &old_addr, &addr.octets())
    } else {
        let sum = checksum::update(field, &old_addr, &addr.octets());
        match checksum::update(sum, &old_port, &port.to_be_bytes()) {
            0 if proto == PROTO_UDP => 0xffff,
            sum => sum,
        }
    };
    frame[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
}
