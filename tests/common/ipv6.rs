//! IPv6 helpers for the lab tests: ICMPv6 ping from inside a namespace,
//! interface address states, and the endpoint's IPv6 address.

use std::io;
use std::mem;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{ifindex_in, in_ns, socket_in, Endpoint};
use ports::netlink::{self, Ipv6AddrState};

/// The endpoint's IPv6 address from add-port's JSON, if it has one.
pub fn endpoint_ipv6(ep: &Endpoint) -> Option<(Ipv6Addr, u8)> {
    let text = ep.json["IPv6Address"].as_str()?;
    let (addr, len) = text.split_once('/')?;
    Some((addr.parse().ok()?, len.parse().ok()?))
}

/// Ping `dst` from `ns` with ICMPv6 echo (link-local destinations go out of
/// `ifname`): a request every 200 ms until a reply from `dst` with our
/// identifier arrives or `timeout` passes.
pub fn ping6(ns: &str, ifname: &str, dst: Ipv6Addr, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let sock = socket_in(ns, libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)
        .map_err(|e| format!("raw ICMPv6 socket in {ns}: {e}"))?;
    let fd = sock.as_raw_fd();
    let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
    // SAFETY: tv is a valid timeval of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let scope = if dst.is_unicast_link_local() { ifindex_in(ns, ifname) } else { 0 };
    let to = sockaddr_in6(dst, scope);
    let ident = (std::process::id() as u16) ^ 0x5a5a;
    let deadline = Instant::now() + timeout;
    let (mut seq, mut next_send, mut errors) = (0u16, Instant::now(), Vec::new());
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            seq = seq.wrapping_add(1);
            // The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets.
            let mut msg = vec![proto::icmpv6::TYPE_ECHO_REQUEST, 0, 0, 0];
            msg.extend_from_slice(&ident.to_be_bytes());
            msg.extend_from_slice(&seq.to_be_bytes());
            msg.extend_from_slice(b"vswitch-lab-ping6");
            // SAFETY: msg and `to` are valid for the lengths passed.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    msg.as_ptr() as *const libc::c_void,
                    msg.len(),
                    0,
                    &to as *const _ as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                errors.push(io::Error::last_os_error().to_string());
            }
            next_send = Instant::now() + Duration::from_millis(200);
        }
        // SAFETY: all-zero is a valid sockaddr_in6.
        let mut from: libc::sockaddr_in6 = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut from as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n < 8 {
            continue;
        }
        let msg = &buf[..n as usize];
        let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
        if msg[0] == proto::icmpv6::TYPE_ECHO_REPLY && msg[4..6] == ident.to_be_bytes() && src == dst {
            return Ok(started.elapsed());
        }
    }
    errors.dedup();
    Err(format!("no ICMPv6 echo reply from {dst} in {ns} within {timeout:?} (send errors: {errors:?})"))
}

fn sockaddr_in6(ip: Ipv6Addr, scope_id: u32) -> libc::sockaddr_in6 {
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr.s6_addr = ip.octets();
    sa.sin6_scope_id = scope_id;
    sa
}

/// The IPv6 addresses of `ifname` in `ns`, with their DAD state.
pub fn ipv6_addrs_in(ns: &str, ifname: &str) -> Vec<Ipv6AddrState> {
    let index = ifindex_in(ns, ifname);
    in_ns(ns, move || netlink::ipv6_addrs(index)).unwrap_or_else(|e| panic!("IPv6 addresses in {ns}: {e}"))
}

/// Add `addr/prefix_len` to `ifname` in `ns` with duplicate address detection.
pub fn add_ipv6_with_dad(ns: &str, ifname: &str, addr: Ipv6Addr, prefix_len: u8) {
    let index = ifindex_in(ns, ifname);
    in_ns(ns, move || netlink::add_ipv6_addr(index, addr, prefix_len, true))
        .unwrap_or_else(|e| panic!("add {addr} in {ns}: {e}"));
}

/// Neighbour solicitations in `frames` whose target is `target`.
pub fn solicitations_for(frames: &[Vec<u8>], target: Ipv6Addr) -> usize {
    frames
        .iter()
        .filter(|f| {
            let Ok(eth) = proto::ethernet::Frame::parse(f) else { return false };
            let Ok(ip) = proto::ipv6::Packet::parse(eth.payload()) else { return false };
            proto::icmpv6::message(&ip).is_some_and(|m| {
                m[0] == proto::icmpv6::TYPE_NEIGHBOR_SOLICIT && m.len() >= 24 && m[8..24] == target.octets()
            })
        })
        .count()
}

/// Give `ifname` in `ns` the IPv6 address `addr/prefix_len` (no DAD).
pub fn add_ipv6(ns: &str, ifname: &str, addr: Ipv6Addr, prefix_len: u8) {
    let index = ifindex_in(ns, ifname);
    in_ns(ns, move || netlink::add_ipv6_addr(index, addr, prefix_len, false))
        .unwrap_or_else(|e| panic!("add {addr} in {ns}: {e}"));
}

/// Neighbour advertisements in `frames` for `target`, as (sender MAC, target MAC option).
pub fn advertisements_for(frames: &[Vec<u8>], target: Ipv6Addr) -> Vec<([u8; 6], [u8; 6])> {
    frames
        .iter()
        .filter_map(|f| {
            let eth = proto::ethernet::Frame::parse(f).ok()?;
            let ip = proto::ipv6::Packet::parse(eth.payload()).ok()?;
            let m = proto::icmpv6::message(&ip)?;
            let is_it = m[0] == proto::icmpv6::TYPE_NEIGHBOR_ADVERT && m.len() >= 32 && m[8..24] == target.octets();
            is_it.then(|| (eth.src().0, m[26..32].try_into().unwrap()))
        })
        .collect()
}
