//! Connection tracking for masquerade and published ports: every flow a
//! container opens to the outside gets an entry mapping its tuple to the
//! external port it is translated to, so that replies can be translated
//! back; a flow that comes in to a published port gets the same kind of
//! entry, with the published host port as its external port (the container
//! sees the client's real address).
//!
//! Published host ports are reserved: masquerade never hands them out.
//!
//! External ports are unique per protocol across the whole table, so the
//! same external tuple is never handed out twice. The table is bounded:
//! when full, the entry idle the longest is evicted (counted). Entries
//! expire by state (see [`Conntrack::expire`]).
//!
//! The table sits behind one lock taken per translated packet: simple and
//! correct for this first slice; the established-flow fast path is meant
//! to move to per-worker or RCU-published lookups.
//!
//! The table is generic over the address family: IPv4 (masquerade and
//! published ports) and IPv6 (published ports, and the masqueraded side of
//! a hairpin to the uplink's IPv6 address: otherwise IPv6 is routed).

use rustc_hash::FxHashMap;
use serde::Serialize;
use std::fmt::Display;
use std::hash::Hash;
use std::net::Ipv4Addr;

/// An address family's address, as the table keys and prints it.
pub trait Address: Copy + Eq + Hash + Display {}
impl<A: Copy + Eq + Hash + Display> Address for A {}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Masquerade source ports, as Linux's ephemeral range.
pub const NAT_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;
/// Default bound of the table.
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;

/// A flow as the container sent it. For ICMP echo both ports are the
/// echo identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple<A = Ipv4Addr> {
    pub proto: u8,
    pub src: A,
    pub sport: u16,
    pub dst: A,
    pub dport: u16,
}

/// What a reply from outside carries: (proto, remote address, remote port,
/// our external port).
type ReplyKey<A> = (u8, A, u16, u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Only the container has spoken.
    New,
    /// Both sides have.
    Established,
    /// A FIN was seen.
    Closing,
    /// A RST was seen.
    Closed,
}

#[derive(Clone, Debug)]
pub struct Entry<A = Ipv4Addr> {
    /// Data-path index of the container's network.
    pub network: u32,
    pub orig: Tuple<A>,
    pub nat_port: u16,
    /// Came in to a published port (its external port is the host port,
    /// shared by every client of it).
    pub published: bool,
    pub state: State,
    pub created: u32,
    pub last_seen: u32,
}

impl<A> Entry<A> {
    /// Seconds an entry in this state may stay idle.
    fn timeout(&self) -> u32 {
        match (self.orig.proto, self.state) {
            (PROTO_TCP, State::Established) => 7200,
            (PROTO_TCP, State::New | State::Closing) => 120,
            (PROTO_TCP, State::Closed) => 10,
            (PROTO_UDP, State::Established) => 180,
            _ => 30,
        }
    }
}

/// TCP flags that move the state.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_RST: u8 = 0x04;

pub struct Conntrack<A = Ipv4Addr> {
    flows: FxHashMap<Tuple<A>, Entry<A>>,
    replies: FxHashMap<ReplyKey<A>, Tuple<A>>,
    /// Next external port to try, per protocol.
    next_port: FxHashMap<u8, u16>,
    /// Masquerade ports in use, per protocol.
    ports_in_use: FxHashMap<(u8, u16), Tuple<A>>,
    /// Published host ports, per protocol: never used for masquerade.
    reserved: rustc_hash::FxHashSet<(u8, u16)>,
    max_entries: usize,
    pub evictions: u64,
}

/// One row of `vsctl conntrack`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub network: u32,
    pub proto: &'static str,
    pub src: String,
    pub dst: String,
    pub nat_src: String,
    pub state: State,
    pub age_secs: u32,
}

impl<A: Address> Conntrack<A> {
    pub fn new(max_entries: usize) -> Conntrack<A> {
        Conntrack {
            flows: FxHashMap::default(),
            replies: FxHashMap::default(),
            next_port: FxHashMap::default(),
            ports_in_use: FxHashMap::default(),
            reserved: Default::default(),
            max_entries: max_entries.max(1),
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The external port of an outgoing packet's flow, creating the entry
    /// for a new flow. None when no external port is free even after
    /// evicting (a protocol the table cannot map).
    pub fn outbound(&mut self, network: u32, orig: Tuple<A>, tcp_flags: u8, now: u32) -> Option<u16> {
        if let Some(nat_port) = self.outbound_existing(&orig, tcp_flags, now) {
            return Some(nat_port);
        }
        if self.flows.len() >= self.max_entries {
            self.evict_oldest_batch();
        }
        let nat_port = self.free_port(orig.proto).or_else(|| {
            self.evict_oldest_ports(orig.proto);
            self.free_port(orig.proto)
        })?;
        self.ports_in_use.insert((orig.proto, nat_port), orig);
        self.insert(
            Entry { network, orig, nat_port, published: false, state: State::New, created: now, last_seen: now },
            tcp_flags,
        );
        Some(nat_port)
    }

    /// The external port of an outgoing packet of a flow already tracked
    /// (refreshed); None for a flow the table does not know.
    pub fn outbound_existing(&mut self, orig: &Tuple<A>, tcp_flags: u8, now: u32) -> Option<u16> {
        let entry = self.flows.get_mut(orig)?;
        entry.last_seen = now;
        if entry.published && entry.state == State::New {
            entry.state = State::Established; // the container answered
        }
        advance(entry, tcp_flags);
        Some(entry.nat_port)
    }

    /// A new flow from outside to published host port `host_port`, for the
    /// container `orig` describes (its side as source, the client as
    /// destination). An existing entry is refreshed.
    pub fn inbound_published(&mut self, network: u32, orig: Tuple<A>, host_port: u16, tcp_flags: u8, now: u32) {
        if let Some(entry) = self.flows.get_mut(&orig) {
            entry.last_seen = now;
            advance(entry, tcp_flags);
            return;
        }
        if self.flows.len() >= self.max_entries {
            self.evict_oldest_batch();
        }
        let entry = Entry {
            network,
            orig,
            nat_port: host_port,
            published: true,
            state: State::New,
            created: now,
            last_seen: now,
        };
        self.insert(entry, tcp_flags);
    }

    fn insert(&mut self, mut entry: Entry<A>, tcp_flags: u8) {
        advance(&mut entry, tcp_flags);
        self.replies.insert(reply_key(&entry.orig, entry.nat_port), entry.orig);
        self.flows.insert(entry.orig, entry);
    }

    /// The published host ports masquerade must leave alone.
    pub fn set_reserved(&mut self, ports: impl IntoIterator<Item = (u8, u16)>) {
        self.reserved = ports.into_iter().collect();
    }

    /// The flow a reply from outside belongs to, marking it established.
    pub fn inbound(
        &mut self,
        proto: u8,
        remote: A,
        rport: u16,
        nat_port: u16,
        tcp_flags: u8,
        now: u32,
    ) -> Option<Entry<A>> {
        let orig = self.replies.get(&(proto, remote, rport, nat_port))?;
        let entry = self.flows.get_mut(orig)?;
        entry.last_seen = now;
        if entry.state == State::New {
            entry.state = State::Established;
        }
        advance(entry, tcp_flags);
        Some(entry.clone())
    }

    fn free_port(&mut self, proto: u8) -> Option<u16> {
        let span = (*NAT_PORTS.end() - *NAT_PORTS.start()) as usize + 1;
        let start = *self.next_port.get(&proto).unwrap_or(NAT_PORTS.start());
        let mut port = start;
        for _ in 0..span {
            let next = if port == *NAT_PORTS.end() { *NAT_PORTS.start() } else { port + 1 };
            if !self.ports_in_use.contains_key(&(proto, port)) && !self.reserved.contains(&(proto, port)) {
                self.next_port.insert(proto, next);
                return Some(port);
            }
            port = next;
        }
        None
    }

    /// Make room in a full table: the 1/64 of entries idle the longest go
    /// at once, so that a flood of new flows costs one scan per many flows,
    /// not per flow.
    fn evict_oldest_batch(&mut self) {
        self.evict_oldest_where((self.max_entries / 64).max(1), |_| true);
    }

    /// A protocol ran out of masquerade ports: free the 1/64 of them idle
    /// the longest. Only that protocol's masquerade entries hold such
    /// ports; evicting anything else would free none.
    fn evict_oldest_ports(&mut self, proto: u8) {
        let count = NAT_PORTS.len() / 64;
        self.evict_oldest_where(count, |e| e.orig.proto == proto && !e.published);
    }

    fn evict_oldest_where(&mut self, count: usize, eligible: impl Fn(&Entry<A>) -> bool) {
        let mut by_age: Vec<(u32, Tuple<A>)> =
            self.flows.values().filter(|e| eligible(e)).map(|e| (e.last_seen, e.orig)).collect();
        if by_age.len() > count {
            by_age.select_nth_unstable_by_key(count, |(seen, _)| *seen);
        }
        for (_, orig) in by_age.into_iter().take(count) {
            self.remove(&orig);
            self.evictions += 1;
        }
    }

    fn remove(&mut self, orig: &Tuple<A>) {
        if let Some(e) = self.flows.remove(orig) {
            self.replies.remove(&reply_key(orig, e.nat_port));
            if !e.published {
                self.ports_in_use.remove(&(orig.proto, e.nat_port));
            }
        }
    }

    /// Drop entries idle past their state's timeout; returns how many.
    pub fn expire(&mut self, now: u32) -> usize {
        let dead: Vec<Tuple<A>> =
            self.flows.values().filter(|e| now.saturating_sub(e.last_seen) > e.timeout()).map(|e| e.orig).collect();
        dead.iter().for_each(|t| self.remove(t));
        dead.len()
    }

    /// Every entry of `network` (or all), as `vsctl conntrack` shows them.
    pub fn rows(&self, network: Option<u32>, nat_ip: A, now: u32) -> Vec<Row> {
        rows(self.entries(network), nat_ip, now)
    }

    /// A copy of the entries of `network` (or all): cheap to take under the
    /// lock every translated packet needs; formatting happens outside it.
    pub fn entries(&self, network: Option<u32>) -> Vec<Entry<A>> {
        self.flows.values().filter(|e| network.is_none_or(|n| e.network == n)).cloned().collect()
    }
}

/// The rows `vsctl conntrack` shows for `entries`, sorted.
pub fn rows<A: Address>(entries: Vec<Entry<A>>, nat_ip: A, now: u32) -> Vec<Row> {
    let mut rows: Vec<Row> = entries
        .iter()
        .map(|e| Row {
            network: e.network,
            proto: proto_name(e.orig.proto),
            src: socket_text(e.orig.src, e.orig.sport),
            dst: socket_text(e.orig.dst, e.orig.dport),
            nat_src: socket_text(nat_ip, e.nat_port),
            state: e.state,
            age_secs: now.saturating_sub(e.created),
        })
        .collect();
    rows.sort_by(|a, b| (a.proto, &a.src, &a.dst).cmp(&(b.proto, &b.src, &b.dst)));
    rows
}

/// "ADDR:PORT", with an IPv6 address in brackets.
fn socket_text<A: Display>(addr: A, port: u16) -> String {
    let addr = addr.to_string();
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// How a reply to `orig`, translated to `nat_port`, is looked up. An ICMP
/// echo reply carries the identifier as translated, on both sides.
fn reply_key<A: Copy>(orig: &Tuple<A>, nat_port: u16) -> ReplyKey<A> {
    let remote_port = if orig.proto == PROTO_ICMP { nat_port } else { orig.dport };
    (orig.proto, orig.dst, remote_port, nat_port)
}

fn advance<A>(entry: &mut Entry<A>, tcp_flags: u8) {
    if entry.orig.proto != PROTO_TCP {
        return;
    }
    if tcp_flags & TCP_RST != 0 {
        entry.state = State::Closed;
    } else if tcp_flags & TCP_FIN != 0 && entry.state != State::Closed {
        entry.state = State::Closing;
    }
}

pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(sport: u16) -> Tuple {
        Tuple { proto: PROTO_UDP, src: Ipv4Addr::new(10, 0, 0, 2), sport, dst: Ipv4Addr::new(192, 0, 2, 1), dport: 53 }
    }

    #[test]
    fn maps_flows_to_distinct_ports_and_back() {
        let mut ct = Conntrack::new(100);
        let a = ct.outbound(1, flow(1000), 0, 0).unwrap();
        let b = ct.outbound(1, flow(1001), 0, 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(ct.outbound(1, flow(1000), 0, 5), Some(a), "same flow, same port");
        let back = ct.inbound(PROTO_UDP, flow(0).dst, 53, b, 0, 6).unwrap();
        assert_eq!(back.orig, flow(1001));
        assert_eq!(back.state, State::Established);
        assert!(ct.inbound(PROTO_UDP, Ipv4Addr::new(198, 51, 100, 1), 53, b, 0, 6).is_none(), "other remote");
        assert!(ct.inbound(PROTO_TCP, flow(0).dst, 53, b, 0, 6).is_none(), "other protocol");
    }

    #[test]
    fn bounded_with_oldest_idle_evicted() {
        let mut ct = Conntrack::new(3);
        for (i, now) in [(1, 10), (2, 5), (3, 20)] {
            ct.outbound(1, flow(i), 0, now).unwrap();
        }
        ct.outbound(1, flow(4), 0, 30).unwrap();
        assert_eq!(ct.len(), 3);
        assert_eq!(ct.evictions, 1);
        assert!(ct.rows(None, Ipv4Addr::UNSPECIFIED, 30).iter().all(|r| r.src != "10.0.0.2:2"));
    }

    #[test]
    fn never_hands_out_a_port_twice() {
        let mut ct = Conntrack::new(usize::MAX);
        let mut seen = std::collections::HashSet::new();
        let tuple = |i: u32| Tuple { src: Ipv4Addr::from(0x0a00_0000 + (i & 0xff_ffff)), ..flow(1) };
        for i in 0..NAT_PORTS.len() as u32 {
            let port = ct.outbound(1, tuple(i), 0, i).unwrap();
            assert!(seen.insert(port), "port {port} handed out twice");
        }
        // All ports live: the ones idle longest are freed, and a new flow
        // takes one of them; another protocol's flows are left alone.
        let tcp = Tuple { proto: PROTO_TCP, ..tuple(7) };
        ct.outbound(1, tcp, 0, 0).unwrap();
        let port = ct.outbound(1, tuple(0xff_fffe), 0, u32::MAX).unwrap();
        assert_eq!(ct.evictions as usize, NAT_PORTS.len() / 64);
        assert_eq!(port, *NAT_PORTS.start());
        assert!(ct.rows(None, Ipv4Addr::UNSPECIFIED, 0).iter().any(|r| r.proto == "tcp"), "TCP flow kept");
        assert!(ct.inbound(PROTO_UDP, flow(0).dst, 53, port, 0, 0).unwrap().orig == tuple(0xff_fffe));
    }

    #[test]
    fn echo_replies_carry_the_translated_identifier() {
        let mut ct = Conntrack::new(10);
        let ping = Tuple { proto: PROTO_ICMP, sport: 77, dport: 77, ..flow(0) };
        let id = ct.outbound(1, ping, 0, 0).unwrap();
        assert_eq!(ct.inbound(PROTO_ICMP, ping.dst, id, id, 0, 1).unwrap().orig, ping);
        assert!(ct.inbound(PROTO_ICMP, ping.dst, 77, id, 0, 1).is_none());
    }

    #[test]
    fn published_flows_share_the_host_port_and_masquerade_avoids_it() {
        let mut ct = Conntrack::new(10);
        ct.set_reserved([(PROTO_UDP, *NAT_PORTS.start())]);
        let client = |port| Tuple { dport: port, ..flow(80) };
        ct.inbound_published(1, client(1111), 8080, 0, 0);
        ct.inbound_published(1, client(2222), 8080, 0, 0);
        assert_eq!(ct.inbound(PROTO_UDP, flow(0).dst, 2222, 8080, 0, 1).unwrap().orig, client(2222));
        assert_eq!(ct.outbound(1, client(1111), 0, 1), Some(8080), "the container's answer leaves from the host port");
        assert_eq!(ct.outbound(1, flow(5), 0, 1), Some(*NAT_PORTS.start() + 1), "reserved ports are skipped");
        ct.expire(1000);
        assert!(ct.is_empty());
    }

    #[test]
    fn a_flood_of_new_flows_stays_bounded_and_cheap() {
        let mut ct = Conntrack::new(6400);
        let started = std::time::Instant::now();
        for i in 0..100_000u32 {
            let t = Tuple { src: Ipv4Addr::from(0x0a00_0000 + i), ..flow(1) };
            ct.outbound(1, t, 0, i);
            assert!(ct.len() <= 6400);
        }
        assert!(ct.evictions >= 100_000 - 6400);
        // The newest flows survive eviction.
        let newest = Tuple { src: Ipv4Addr::from(0x0a00_0000 + 99_999), ..flow(1) };
        assert!(ct.rows(None, Ipv4Addr::UNSPECIFIED, 0).iter().any(|r| r.src == format!("{}:1", newest.src)));
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "no scan per new flow");
    }

    #[test]
    fn expires_by_state() {
        let mut ct = Conntrack::new(10);
        let tcp = Tuple { proto: PROTO_TCP, ..flow(7) };
        let p = ct.outbound(1, tcp, 0, 0).unwrap();
        ct.inbound(PROTO_TCP, tcp.dst, tcp.dport, p, 0, 1).unwrap();
        ct.outbound(1, flow(8), 0, 0).unwrap();
        assert_eq!(ct.expire(100), 1, "the unreplied UDP flow");
        assert_eq!(ct.expire(7000), 0, "established TCP stays");
        ct.outbound(1, tcp, TCP_RST, 7000).unwrap();
        assert_eq!(ct.expire(7011), 1);
        assert!(ct.is_empty());
    }
}
