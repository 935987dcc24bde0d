//! The stages a received frame goes through, each a small function that
//! returns a [`Verdict`] or passes the frame on:
//!
//! classify (parse and check headers) → user rules → ARP proxy / NDP
//! proxy (with the anti-spoofing checks) → gateway (ICMP and ICMPv6 echo;
//! routing out through `nat::route_out` for IPv4, `route6::route_out` for
//! IPv6) → L2 (learn, lookup, flood). Frames from the uplink take
//! `nat::from_uplink` instead. The worker applies the verdict.

use crate::datapath::{Domain, Port, Shared, Snapshot};
use crate::fdb::{self, PortId};
use crate::filter::{self, Action};
use crate::stats::DropReason;
use proto::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use proto::offload::Offload;
use proto::{arp, gso, icmp, icmpv6, ipv4, ipv6, ndp, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it unchanged to one port.
    Forward(PortId),
    /// Send it unchanged to every other port of the network.
    Flood,
    /// Send the frame built in the scratch buffer (this many bytes) back out
    /// of the port it came in on.
    Reply(usize),
    /// Send the frame built in the scratch buffer out of another port.
    Send(PortId, usize),
    /// Taken in by the switch itself (an ARP reply it asked for): nothing to send.
    Consumed,
    /// A VXLAN frame from the uplink: its inner frame (offset, length) came
    /// in through this tunnel port and goes through the pipeline from there.
    Decapsulated(PortId, usize, usize),
    Drop(DropReason),
}

/// What a stage sees besides the frame.
pub struct Context<'a> {
    pub snap: &'a Snapshot,
    pub(crate) shared: &'a Shared,
    pub net: &'a Domain,
    pub fdb: &'a fdb::Map,
    pub in_port: &'a Port,
    /// Seconds on the switch's clock.
    pub now: u32,
}

/// Run one frame through every stage. Frames are switched with their
/// offload metadata untouched; only a stage that must read a finished
/// packet (the gateway) finishes its checksum, in place.
#[inline]
pub fn process(ctx: &Context, frame: &mut [u8], offload: &mut Offload, scratch: &mut [u8]) -> Verdict {
    let eth = match classify(frame) {
        Ok(eth) => eth,
        Err(reason) => return Verdict::Drop(reason),
    };
    if filter::verdict(&ctx.snap.rules, filter::Entry::Network(ctx.net.spec.index), frame) == Some(Action::Drop) {
        return Verdict::Drop(DropReason::Rule);
    }
    ctx.net.fdb.learn(ctx.fdb, eth.src(), ctx.in_port.id, ctx.now);
    let proxied = match eth.ethertype() {
        ETHERTYPE_ARP => arp_proxy(ctx, &eth, scratch),
        ETHERTYPE_IPV6 if ctx.net.spec.ipv6.is_some() => ndp_proxy(ctx, &eth, scratch),
        _ => None,
    };
    if let Some(v) = proxied {
        return v;
    }
    if !ctx.net.spec.icc && eth.dst() != ctx.net.spec.gateway_mac {
        return Verdict::Drop(DropReason::Icc);
    }
    if eth.dst() == ctx.net.spec.gateway_mac {
        if eth.ethertype() == ETHERTYPE_IPV4 && routed_beyond(ctx, &eth) {
            return crate::nat::route_out(ctx, frame, offload, scratch);
        }
        if eth.ethertype() == ETHERTYPE_IPV6 && routed_beyond6(ctx, &eth) {
            return crate::route6::route_out(ctx, frame, offload, scratch);
        }
        if let Some(port) = crate::service::steer(ctx, &eth) {
            return Verdict::Forward(port);
        }
        if offload.needs_csum() {
            if gso::finish_checksum(frame, offload).is_err() {
                return Verdict::Drop(DropReason::Malformed);
            }
            *offload = Offload::NONE;
        }
        // Finishing wrote only inside the IP payload; parse again anyway
        // rather than trust that with a panic.
        let Ok(eth) = ethernet::Frame::parse(frame) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        return gateway(ctx, &eth, scratch);
    }
    l2(ctx, &eth)
}

/// Addressed to the gateway's MAC but not to its address: to be routed.
fn routed_beyond(ctx: &Context, eth: &ethernet::Frame) -> bool {
    ipv4::Packet::parse(eth.payload()).is_ok_and(|ip| ip.dst() != ctx.net.spec.gateway)
}

/// The IPv6 twin: for the gateway's MAC, not for one of its addresses.
fn routed_beyond6(ctx: &Context, eth: &ethernet::Frame) -> bool {
    ctx.net.spec.ipv6.is_some()
        && ipv6::Packet::parse(eth.payload()).is_ok_and(|ip| !ctx.net.spec.is_gateway6(ip.dst()))
}

/// Parse the Ethernet header and check the header of what it carries, so
/// that later stages never meet a length that lies.
pub fn classify(frame: &[u8]) -> Result<ethernet::Frame<'_>, DropReason> {
    let eth = ethernet::Frame::parse(frame).map_err(|_| DropReason::Malformed)?;
    if eth.src().is_multicast() {
        return Err(DropReason::Malformed);
    }
    let checked = match eth.ethertype() {
        ETHERTYPE_IPV4 => ipv4::Packet::parse(eth.payload()).is_ok(),
        ETHERTYPE_ARP => arp::Packet::parse(eth.payload()).is_ok(),
        ETHERTYPE_IPV6 => ipv6::Packet::parse(eth.payload()).is_ok(),
        _ => return Err(DropReason::UnsupportedEthertype),
    };
    if checked {
        Ok(eth)
    } else {
        Err(DropReason::Malformed)
    }
}

/// Answer ARP requests for addresses the switch knows (the gateway and the
/// network's endpoints) on the asking port instead of flooding them. Returns
/// None to let the frame go on to L2 (replies, gratuitous ARP, unknown targets).
pub fn arp_proxy(ctx: &Context, eth: &ethernet::Frame, scratch: &mut [u8]) -> Option<Verdict> {
    let req = arp::Packet::parse(eth.payload()).ok()?;
    if claims_foreign_ipv4(ctx, req.sender_ip()) {
        // Would teach every neighbour a wrong MAC for the gateway or a peer.
        return Some(Verdict::Drop(DropReason::Spoofed));
    }
    if req.op() != arp::OP_REQUEST || req.sender_ip() == req.target_ip() {
        return None;
    }
    let target = req.target_ip();
    let answer = if target == ctx.net.spec.gateway {
        ctx.net.spec.gateway_mac
    } else {
        match ctx.net.neighbours.get(&target) {
            // An endpoint asking for its own address is probing for a
            // duplicate: let the probe through rather than answer it.
            Some((_, port)) if *port == ctx.in_port.id => return None,
            Some((mac, _)) => *mac,
            None => return None,
        }
    };
    let sender = arp::Host { mac: answer, ip: target };
    let asker = arp::Host { mac: req.sender_mac(), ip: req.sender_ip() };
    let len = arp::write_frame(scratch, arp::OP_REPLY, sender, asker, eth.src());
    Some(Verdict::Reply(len))
}

/// The IPv6 twin of the ARP proxy: answer neighbour solicitations for the
/// gateway (fe80::1 and the network's gateway address) and for every
/// endpoint's addresses on the asking port, without flooding. A DAD probe
/// for an address someone else holds gets the advertisement that makes the
/// prober see the duplicate; a probe for the asker's own address goes on
/// unanswered. Router advertisements and redirects from containers are
/// dropped (only the switch routes), router solicitations taken in (the
/// switch's routes are configured, not advertised). None lets the frame go
/// on (advertisements, MLD, unknown targets).
pub fn ndp_proxy(ctx: &Context, eth: &ethernet::Frame, scratch: &mut [u8]) -> Option<Verdict> {
    let ip = ipv6::Packet::parse(eth.payload()).ok()?;
    let msg = icmpv6::message(&ip)?;
    let solicit = match msg[0] {
        icmpv6::TYPE_ROUTER_ADVERT | icmpv6::TYPE_REDIRECT => return Some(Verdict::Drop(DropReason::RouterAdvert)),
        icmpv6::TYPE_ROUTER_SOLICIT => return Some(Verdict::Consumed),
        icmpv6::TYPE_NEIGHBOR_ADVERT if msg.len() >= 24 => {
            let target = Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).expect("length checked"));
            let spoofed = claims_foreign_ipv6(ctx, target) || claims_foreign_ipv6(ctx, ip.src());
            return spoofed.then_some(Verdict::Drop(DropReason::Spoofed));
        }
        icmpv6::TYPE_NEIGHBOR_SOLICIT => match ndp::parse_solicit(&ip) {
            Ok(_) if claims_foreign_ipv6(ctx, ip.src()) => return Some(Verdict::Drop(DropReason::Spoofed)),
            Ok(solicit) => solicit?,
            Err(_) => return Some(Verdict::Drop(DropReason::Malformed)),
        },
        _ => return None,
    };
    let spec = &ctx.net.spec;
    let (answer, router) = if spec.is_gateway6(solicit.target) {
        (spec.gateway_mac, ndp::FLAG_ROUTER)
    } else {
        match ctx.net.neighbours6.get(&solicit.target) {
            Some((_, port)) if *port == ctx.in_port.id => return None,
            Some((mac, _)) => (*mac, 0),
            None => return None,
        }
    };
    match ndp::write_answer(scratch, &solicit, eth.src(), answer, router | ndp::FLAG_OVERRIDE) {
        0 => Some(Verdict::Drop(DropReason::Malformed)),
        len => Some(Verdict::Reply(len)),
    }
}

/// Whether `ip` is the gateway's or another port's IPv4 address: what a
/// port must not claim in ARP.
fn claims_foreign_ipv4(ctx: &Context, ip: Ipv4Addr) -> bool {
    ip == ctx.net.spec.gateway || ctx.net.neighbours.get(&ip).is_some_and(|(_, port)| *port != ctx.in_port.id)
}

/// The IPv6 twin: fe80::1, the gateway, or another port's global or
/// link-local address.
fn claims_foreign_ipv6(ctx: &Context, ip: Ipv6Addr) -> bool {
    ctx.net.spec.is_gateway6(ip) || ctx.net.neighbours6.get(&ip).is_some_and(|(_, port)| *port != ctx.in_port.id)
}

/// Frames for the gateway's addresses: the switch answers pings to them;
/// anything else is counted and dropped (routing beyond the gateway is
/// `nat::route_out` and `route6::route_out`).
pub fn gateway(ctx: &Context, eth: &ethernet::Frame, scratch: &mut [u8]) -> Verdict {
    match eth.ethertype() {
        ETHERTYPE_IPV4 => gateway4(ctx, eth, scratch),
        ETHERTYPE_IPV6 => gateway6(ctx, eth, scratch),
        _ => Verdict::Drop(DropReason::NoRoute),
    }
}

fn gateway6(ctx: &Context, eth: &ethernet::Frame, scratch: &mut [u8]) -> Verdict {
    let Ok(ip) = ipv6::Packet::parse(eth.payload()) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    if !ctx.net.spec.is_gateway6(ip.dst()) {
        return Verdict::Drop(DropReason::NoRoute);
    }
    match icmpv6::is_echo_request(&ip) {
        Ok(true) => match icmpv6::write_echo_reply(scratch, &ip, eth.src(), ctx.net.spec.gateway_mac) {
            Some(len) => Verdict::Reply(len),
            None => Verdict::Drop(DropReason::Malformed),
        },
        Ok(false) => Verdict::Drop(DropReason::NoRoute),
        Err(_) => Verdict::Drop(DropReason::Malformed),
    }
}

fn gateway4(ctx: &Context, eth: &ethernet::Frame, scratch: &mut [u8]) -> Verdict {
    let Ok(ip) = ipv4::Packet::parse(eth.payload()) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    if ip.dst() != ctx.net.spec.gateway {
        return Verdict::Drop(DropReason::NoRoute);
    }
    match icmp::is_echo_request(&ip) {
        Ok(true) => match icmp::write_echo_reply(scratch, &ip, eth.src(), ctx.net.spec.gateway_mac) {
            Some(len) => Verdict::Reply(len),
            None => Verdict::Drop(DropReason::Malformed),
        },
        Ok(false) => Verdict::Drop(DropReason::NoRoute),
        Err(_) => Verdict::Drop(DropReason::Malformed),
    }
}

/// Learning bridge: known unicast goes to its port, the rest floods.
#[inline]
pub fn l2(ctx: &Context, eth: &ethernet::Frame) -> Verdict {
    let dst: MacAddr = eth.dst();
    if dst.is_multicast() {
        return Verdict::Flood;
    }
    match ctx.fdb.get(&dst) {
        Some(entry) if entry.port() == ctx.in_port.id => Verdict::Drop(DropReason::SamePort),
        Some(entry) => Verdict::Forward(entry.port()),
        None => Verdict::Flood,
    }
}
