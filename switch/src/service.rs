//! A network's service port: a TAP whose other end is a kernel stack the
//! daemon owns (the embedded DNS server's sockets), holding the gateway's
//! MAC and address.
//!
//! - **To it** ([`steer`]): IPv4 UDP and TCP packets for the gateway's
//!   address and port 53, forwarded unchanged (offload metadata included),
//!   so the kernel there answers them with real sockets. Everything else
//!   for the gateway stays with the switch (ping, ARP, routing).
//! - **From it** ([`from_service`]): ARP requests for endpoints are answered
//!   for them (as the ARP proxy does, but from the gateway's own address,
//!   which only this port may claim); unicast IPv4 goes to the endpoint port that owns the
//!   destination MAC in the network's FDB. Nothing is learned, flooded or
//!   filtered by user rules, and inter-container rules do not apply: it is
//!   the gateway answering, so `--icc=false` networks get their answers.
//!   Anything else (multicast, broadcast, unknown MACs) is dropped.
//!
//! The cost for other traffic: one map lookup for frames to the gateway's
//! MAC that are not routed beyond it, and one flag per received batch.

use crate::fdb::PortId;
use crate::pipeline::{classify, Context, Verdict};
use crate::stats::DropReason;
use proto::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use proto::{arp, ipv4};

/// The port DNS is served on.
pub const DNS_PORT: u16 = 53;

/// The service port to forward `eth` to, if it is a query for the
/// gateway's port 53 on a network that has one.
#[inline]
pub fn steer(ctx: &Context, eth: &ethernet::Frame) -> Option<PortId> {
    let port = *ctx.snap.services.get(&ctx.net.spec.index)?;
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = ipv4::Packet::parse(eth.payload()).ok()?;
    if ip.dst() != ctx.net.spec.gateway || ip.is_later_fragment() {
        return None;
    }
    if !matches!(ip.protocol(), ipv4::PROTO_UDP | ipv4::PROTO_TCP) {
        return None;
    }
    let l4 = ip.payload();
    let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    (dport == DNS_PORT).then_some(port)
}

/// What to do with a frame the service port sent; see the module documentation.
pub fn from_service(ctx: &Context, frame: &[u8], scratch: &mut [u8]) -> Verdict {
    let eth = match classify(frame) {
        Ok(eth) => eth,
        Err(reason) => return Verdict::Drop(reason),
    };
    match eth.ethertype() {
        ETHERTYPE_ARP => answer_arp(ctx, &eth, scratch),
        ETHERTYPE_IPV4 if !eth.dst().is_multicast() => match ctx.fdb.get(&eth.dst()) {
            Some(entry) if entry.port() != ctx.in_port.id => Verdict::Forward(entry.port()),
            _ => Verdict::Drop(DropReason::NoRoute),
        },
        _ => Verdict::Drop(DropReason::NoRoute),
    }
}

/// The service's kernel asking for an endpoint's MAC (to send it an
/// answer): the switch answers for the endpoint. The asker names the
/// gateway's address as its own, which the ARP proxy refuses from any
/// other port.
fn answer_arp(ctx: &Context, eth: &ethernet::Frame, scratch: &mut [u8]) -> Verdict {
    let Ok(req) = arp::Packet::parse(eth.payload()) else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let Some((mac, _)) = ctx.net.neighbours.get(&req.target_ip()).filter(|_| req.op() == arp::OP_REQUEST) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let sender = arp::Host { mac: *mac, ip: req.target_ip() };
    let asker = arp::Host { mac: req.sender_mac(), ip: req.sender_ip() };
    Verdict::Reply(arp::write_frame(scratch, arp::OP_REPLY, sender, asker, eth.src()))
}
