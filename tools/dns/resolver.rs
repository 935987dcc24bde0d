//! The resolver: what to answer to one query, given who asked and where.
//!
//! [`Resolver::resolve`] is the pure part: it parses the query, answers
//! local names from the current [`NameTable`], and says when a query is to
//! be forwarded or dropped; [`Resolver::answer`] adds the forwarding (which
//! blocks up to the upstream timeout). Neither knows about sockets.
//!
//! What comes back, by case:
//! - fewer than 12 bytes, or a response (QR set): nothing (dropped);
//! - an opcode other than QUERY: NOTIMP;
//! - not exactly one question, answer or authority records, too many
//!   additional records, or anything hickory-proto cannot parse: FORMERR;
//! - a local name (see [`super::names`]): its A/AAAA records (TTL
//!   [`LOCAL_TTL`]), rotated; NOERROR with no answers (NODATA) for a type
//!   it has none of; the PTR `NAME.NETWORK.` for the address of an endpoint
//!   in scope;
//! - anything else: forwarded upstream and the answer relayed; SERVFAIL when
//!   no upstream answers in time, when there is none, or when the asker is
//!   only on internal networks.

use super::names::{query_key, NameTable};
use super::upstream::{Transport, Upstreams};
use super::wire::{self, Header};
use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// TTL of local answers: Docker's embedded server uses 600 s.
pub const LOCAL_TTL: u32 = 600;
/// The default time a forwarded query may take in all, below glibc's 5 s so
/// that the client sees SERVFAIL rather than its own timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4);
/// Forwarded queries in flight at once, over all networks (Docker: 1024);
/// past it, SERVFAIL at once.
pub const MAX_FORWARDS_IN_FLIGHT: usize = 256;
/// The most additional records a query may carry (OPT, TSIG, ...).
const MAX_QUERY_ADDITIONALS: u16 = 4;
/// UDP payload size advertised in our own EDNS answers.
const EDNS_PAYLOAD: u16 = 1232;
/// Answers over UDP are cut to what the client can take: 512 bytes, or the
/// EDNS payload size it advertises.
const UDP_MIN: usize = 512;

/// What to do with one query.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this answer back.
    Reply(Vec<u8>),
    /// Not a local name: forward it ([`Resolver::forward`]).
    Forward,
    /// Send nothing.
    Drop,
}

/// Names, upstream servers and the forwarding timeout; shared by the serving
/// loops of every network.
pub struct Resolver {
    names: ArcSwap<NameTable>,
    upstreams: ArcSwap<Upstreams>,
    timeout: Duration,
    in_flight: AtomicUsize,
}

impl Resolver {
    /// A resolver with an empty name table.
    pub fn new(upstreams: Upstreams, timeout: Duration) -> Resolver {
        Resolver {
            names: ArcSwap::from_pointee(NameTable::default()),
            upstreams: ArcSwap::from_pointee(upstreams),
            timeout,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Publish a new name table; queries already being answered finish with the old one.
    pub fn set_names(&self, names: NameTable) {
        self.names.store(Arc::new(names));
    }

    /// The current name table.
    pub fn names(&self) -> Arc<NameTable> {
        self.names.load_full()
    }

    /// Replace the upstream servers.
    pub fn set_upstreams(&self, upstreams: Upstreams) {
        self.upstreams.store(Arc::new(upstreams));
    }

    /// The current upstream servers.
    pub fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.load_full()
    }

    /// The time a forwarded query may take in all.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The answer to `query` from `asker`, which arrived on `network` over
    /// `transport`, with forwarding done here (blocking up to the timeout).
    /// `None`: send nothing.
    pub fn answer(&self, query: &[u8], asker: IpAddr, network: &str, transport: Transport) -> Option<Vec<u8>> {
        match self.resolve(query, asker, network, transport) {
            Outcome::Reply(r) => Some(r),
            Outcome::Drop => None,
            Outcome::Forward => Some(self.forward(query, transport)),
        }
    }

    /// What to do with `query`, without any I/O: see the module documentation.
    pub fn resolve(&self, query: &[u8], asker: IpAddr, network: &str, transport: Transport) -> Outcome {
        let Some(h) = Header::read(query) else { return Outcome::Drop };
        if h.response {
            return Outcome::Drop;
        }
        if h.opcode != 0 {
            return Outcome::Reply(wire::header_reply(&h, wire::RCODE_NOTIMP));
        }
        let formerr = || Outcome::Reply(wire::header_reply(&h, wire::RCODE_FORMERR));
        if h.qdcount != 1 || h.ancount != 0 || h.nscount != 0 || h.arcount > MAX_QUERY_ADDITIONALS {
            return formerr();
        }
        let Ok(msg) = Message::from_vec(query) else { return formerr() };
        let Some(q) = msg.queries.first() else { return formerr() };
        if q.query_class() != DNSClass::IN {
            return Outcome::Forward;
        }

        let names = self.names.load();
        let scope = names.scope(network, asker);
        let ttl = LOCAL_TTL;
        let mut answers: Vec<Record> = Vec::new();
        let owner = q.name();
        let qtype = q.query_type();
        let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;

        if let Some(ip) = reverse_address(owner) {
            let Some(target) = names.reverse(&scope, ip) else { return self.not_local(&names, &scope, &msg) };
            if wants(RecordType::PTR) {
                answers.push(Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(target.clone()))));
            }
        } else {
            let mut key = String::with_capacity(64);
            if !query_key(owner, &mut key) {
                return self.not_local(&names, &scope, &msg);
            }
            let Some(addrs) = names.lookup(&scope, &key) else { return self.not_local(&names, &scope, &msg) };
            if wants(RecordType::A) {
                answers.extend(addrs.v4().map(|ip| Record::from_rdata(owner.clone(), ttl, RData::A(A(ip)))));
            }
            if wants(RecordType::AAAA) {
                answers.extend(addrs.v6().map(|ip| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(ip)))));
            }
        }
        // No records of the asked type: NODATA (NOERROR, empty), never NXDOMAIN.
        Outcome::Reply(reply(&msg, ResponseCode::NoError, answers, transport))
    }

    /// A name that is not local: forward it, unless the asker may not reach out.
    fn not_local(&self, names: &NameTable, scope: &super::names::Scope<'_>, msg: &Message) -> Outcome {
        if names.may_forward(scope) {
            Outcome::Forward
        } else {
            Outcome::Reply(reply(msg, ResponseCode::ServFail, Vec::new(), Transport::Tcp))
        }
    }

    /// Forward `query` upstream and return the relayed answer, or SERVFAIL
    /// when none came in time (or too many forwards are in flight).
    pub fn forward(&self, query: &[u8], transport: Transport) -> Vec<u8> {
        if self.in_flight.fetch_add(1, Relaxed) >= MAX_FORWARDS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Relaxed);
            log::debug!("dns: {MAX_FORWARDS_IN_FLIGHT} forwarded queries in flight, failing one");
            return servfail(query);
        }
        let answer = self.upstreams.load().forward(query, transport, self.timeout);
        self.in_flight.fetch_sub(1, Relaxed);
        answer.unwrap_or_else(|| servfail(query))
    }
}

/// SERVFAIL for a query [`Resolver::resolve`] sent to forwarding (so parsable).
pub fn servfail(query: &[u8]) -> Vec<u8> {
    match Message::from_vec(query) {
        Ok(msg) => reply(&msg, ResponseCode::ServFail, Vec::new(), Transport::Tcp),
        Err(_) => match Header::read(query) {
            Some(h) => wire::header_reply(&h, wire::RCODE_SERVFAIL),
            None => Vec::new(),
        },
    }
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa.`, 32 nibbles of
/// `ip6.arpa.`) stands for; `None` for other names and partial ones.
fn reverse_address(name: &Name) -> Option<IpAddr> {
    let mut labels = name.iter().rev();
    let last = labels.next()?;
    if !last.eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let mut full = name.clone();
    full.set_fqdn(true);
    let net = full.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// The response to `query` with `rcode` and `answers`, cut to what the
/// transport allows (answers dropped from the end, TC set) as Docker does.
fn reply(query: &Message, rcode: ResponseCode, mut answers: Vec<Record>, transport: Transport) -> Vec<u8> {
    let mut r = Message::new(query.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = query.recursion_desired;
    r.metadata.checking_disabled = query.checking_disabled;
    r.metadata.recursion_available = true;
    r.metadata.response_code = rcode;
    r.queries = query.queries.iter().take(1).cloned().collect::<Vec<Query>>();
    let limit = match (transport, &query.edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, Some(e)) => (e.max_payload() as usize).max(UDP_MIN),
        (Transport::Udp, None) => UDP_MIN,
    };
    if query.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        r.edns = Some(e);
    }
    loop {
        r.answers = std::mem::take(&mut answers);
        let bytes = r.to_vec().unwrap_or_default();
        if bytes.len() <= limit || r.answers.is_empty() {
            if bytes.is_empty() {
                // Cannot happen for the records built here; never answer garbage.
                return wire::header_reply(&header_of(query), wire::RCODE_SERVFAIL);
            }
            return bytes;
        }
        // Every answer record here takes 16 bytes (A) to 28 (AAAA) or more
        // (PTR): dropping excess/28 of them at once never drops too many, and
        // a name with thousands of addresses fits in a few rounds.
        answers = std::mem::take(&mut r.answers);
        let drop = ((bytes.len() - limit) / 28).max(1);
        answers.truncate(answers.len().saturating_sub(drop));
        r.metadata.truncation = true;
    }
}

fn header_of(m: &Message) -> Header {
    Header {
        id: m.id,
        response: false,
        opcode: 0,
        truncated: false,
        recursion_desired: m.recursion_desired,
        rcode: 0,
        qdcount: 0,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    }
}

/// The IPv4 addresses an answer carries (tests of the resolver and server).
#[cfg(test)]
pub(super) fn a_records(m: &Message) -> Vec<std::net::Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(A(ip)) => Some(ip),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::names::Endpoint;
    use super::*;
    use hickory_proto::op::Query;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::str::FromStr;

    const WEB: &str = "10.1.0.2";
    const DB: &str = "10.1.0.3";

    fn ep(network: &str, name: &str, aliases: &[&str], ip: &str, ip6: Option<&str>, key: &str) -> Endpoint {
        Endpoint {
            network: network.into(),
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ipv4: ip.parse().unwrap(),
            ipv6: ip6.map(|s| s.parse().unwrap()),
            key: key.into(),
        }
    }

    fn resolver() -> Resolver {
        let r = Resolver::new(Upstreams::default(), Duration::from_millis(200));
        r.set_names(
            NameTable::new([
                ep("front", "web", &["www"], WEB, Some("fd00:1::2"), "ns-web"),
                ep("front", "db", &["store"], DB, None, "ns-db"),
                ep("front", "db2", &["store"], "10.1.0.4", None, "ns-db2"),
                ep("back", "cache", &[], "10.2.0.4", None, "ns-cache"),
                ep("vault", "safe", &[], "10.9.0.2", None, "ns-safe"),
            ])
            .with_internal(["vault"]),
        );
        r
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn ask(r: &Resolver, name: &str, t: RecordType, asker: &str, net: &str) -> Outcome {
        r.resolve(&query(name, t), asker.parse().unwrap(), net, Transport::Udp)
    }

    fn reply_of(o: Outcome) -> Message {
        match o {
            Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn a_and_aaaa_for_names_and_aliases() {
        let r = resolver();
        let m = reply_of(ask(&r, "db", RecordType::A, WEB, "front"));
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert_eq!(m.id, 0xbeef);
        assert!(m.recursion_available && m.recursion_desired && !m.authoritative);
        assert_eq!(a_records(&m), [Ipv4Addr::new(10, 1, 0, 3)]);
        assert_eq!(m.answers[0].ttl, LOCAL_TTL);
        assert_eq!(m.queries.len(), 1);

        let m = reply_of(ask(&r, "www.", RecordType::AAAA, DB, "front"));
        let v6: Vec<Ipv6Addr> = m
            .answers
            .iter()
            .filter_map(|r| match r.data {
                RData::AAAA(AAAA(ip)) => Some(ip),
                _ => None,
            })
            .collect();
        assert_eq!(v6, ["fd00:1::2".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn case_insensitive_and_the_askers_case_kept() {
        let r = resolver();
        let m = reply_of(ask(&r, "WeB.", RecordType::A, DB, "front"));
        assert_eq!(a_records(&m), [Ipv4Addr::new(10, 1, 0, 2)]);
        assert_eq!(m.answers[0].name.to_ascii(), "WeB.");
    }

    #[test]
    fn round_robin_over_an_alias() {
        let r = resolver();
        let firsts: Vec<Ipv4Addr> =
            (0..4).map(|_| a_records(&reply_of(ask(&r, "store", RecordType::A, WEB, "front")))[0]).collect();
        assert_eq!(firsts[0], firsts[2]);
        assert_eq!(firsts[1], firsts[3]);
        assert_ne!(firsts[0], firsts[1]);
        assert_eq!(a_records(&reply_of(ask(&r, "store", RecordType::A, WEB, "front"))).len(), 2);
    }

    #[test]
    fn nodata_for_a_name_without_the_type_and_forward_for_unknown_names() {
        let r = resolver();
        for t in [RecordType::AAAA, RecordType::MX, RecordType::TXT, RecordType::PTR] {
            let m = reply_of(ask(&r, "db", t, WEB, "front"));
            assert_eq!(m.response_code, ResponseCode::NoError, "{t}");
            assert!(m.answers.is_empty(), "{t}");
        }
        assert_eq!(ask(&r, "example.com", RecordType::A, WEB, "front"), Outcome::Forward);
        assert_eq!(ask(&r, "nosuch", RecordType::AAAA, WEB, "front"), Outcome::Forward);
    }

    #[test]
    fn names_on_networks_not_shared_are_not_local() {
        let r = resolver();
        assert_eq!(ask(&r, "cache", RecordType::A, WEB, "front"), Outcome::Forward);
        assert_eq!(ask(&r, "web", RecordType::A, "10.2.0.4", "back"), Outcome::Forward);
    }

    #[test]
    fn ptr_for_endpoints_in_scope() {
        let r = resolver();
        let m = reply_of(ask(&r, "3.0.1.10.in-addr.arpa.", RecordType::PTR, WEB, "front"));
        let ptrs: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_ascii()),
                _ => None,
            })
            .collect();
        assert_eq!(ptrs, ["db.front."]);
        let v6 = Name::from(IpAddr::from_str("fd00:1::2").unwrap()).to_ascii();
        let m = reply_of(ask(&r, &v6, RecordType::PTR, DB, "front"));
        assert_eq!(m.answers.len(), 1);
        // Another network's endpoint, and a partial reverse name: forwarded.
        assert_eq!(ask(&r, "4.0.2.10.in-addr.arpa.", RecordType::PTR, WEB, "front"), Outcome::Forward);
        assert_eq!(ask(&r, "1.10.in-addr.arpa.", RecordType::PTR, WEB, "front"), Outcome::Forward);
        // An A query for a local reverse name: it exists, so NODATA.
        let m = reply_of(ask(&r, "3.0.1.10.in-addr.arpa.", RecordType::A, WEB, "front"));
        assert!(m.answers.is_empty() && m.response_code == ResponseCode::NoError);
    }

    #[test]
    fn internal_only_askers_get_servfail_for_outside_names() {
        let r = resolver();
        let m = reply_of(ask(&r, "example.com", RecordType::A, "10.9.0.2", "vault"));
        assert_eq!(m.response_code, ResponseCode::ServFail);
        assert_eq!(a_records(&reply_of(ask(&r, "safe", RecordType::A, "10.9.0.2", "vault"))).len(), 1);
    }

    #[test]
    fn formerr_notimp_and_drops() {
        let r = resolver();
        let asker: IpAddr = WEB.parse().unwrap();
        let res = |b: &[u8]| r.resolve(b, asker, "front", Transport::Udp);
        let good = query("web", RecordType::A);

        assert_eq!(res(&good[..11]), Outcome::Drop, "no header");
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(res(&response), Outcome::Drop, "a response");

        let rcode = |o: Outcome| match o {
            Outcome::Reply(b) => {
                let h = Header::read(&b).unwrap();
                assert!(h.response);
                assert_eq!(h.id, 0xbeef);
                h.rcode
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(rcode(res(&good[..good.len() - 2])), wire::RCODE_FORMERR, "cut question");
        let mut two = good.clone();
        two[5] = 2;
        assert_eq!(rcode(res(&two)), wire::RCODE_FORMERR, "qdcount 2");
        let mut none = good.clone();
        none[5] = 0;
        assert_eq!(rcode(res(&none)), wire::RCODE_FORMERR, "no question");
        let mut many = good.clone();
        many[10] = 0xff;
        assert_eq!(rcode(res(&many)), wire::RCODE_FORMERR, "arcount 65280");
        let mut status = good.clone();
        status[2] |= 2 << 3;
        assert_eq!(rcode(res(&status)), wire::RCODE_NOTIMP, "opcode STATUS");
    }

    #[test]
    fn edns_queries_get_opt_and_udp_answers_are_cut_to_size() {
        let eps = (0..100).map(|i| ep("big", &format!("n{i}"), &["all"], &format!("10.5.0.{}", i + 2), None, "k"));
        let r = Resolver::new(Upstreams::default(), Duration::from_millis(100));
        r.set_names(NameTable::new(eps));
        let asker: IpAddr = "10.5.0.2".parse().unwrap();

        let plain = query("all", RecordType::A);
        let Outcome::Reply(b) = r.resolve(&plain, asker, "big", Transport::Udp) else { panic!() };
        assert!(b.len() <= 512 && b.len() > 512 - 16, "{}: as many answers as fit", b.len());
        let m = Message::from_vec(&b).unwrap();
        assert!(m.truncation && !m.answers.is_empty() && m.answers.len() < 100);
        assert!(m.edns.is_none());

        let Outcome::Reply(b) = r.resolve(&plain, asker, "big", Transport::Tcp) else { panic!() };
        let m = Message::from_vec(&b).unwrap();
        assert!(!m.truncation);
        assert_eq!(m.answers.len(), 100);

        let mut q = Message::from_vec(&plain).unwrap();
        let mut e = Edns::new();
        e.set_max_payload(4096);
        q.edns = Some(e);
        let Outcome::Reply(b) = r.resolve(&q.to_vec().unwrap(), asker, "big", Transport::Udp) else { panic!() };
        let m = Message::from_vec(&b).unwrap();
        assert!(!m.truncation && m.answers.len() == 100 && m.edns.is_some());
    }

    #[test]
    fn non_in_classes_are_forwarded() {
        let r = resolver();
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        let mut q = Query::query(Name::from_str("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        m.add_query(q);
        assert_eq!(r.resolve(&m.to_vec().unwrap(), WEB.parse().unwrap(), "front", Transport::Udp), Outcome::Forward);
    }

    #[test]
    fn forwarding_without_upstreams_is_servfail_with_the_question() {
        let r = resolver();
        let b = r.answer(&query("example.com", RecordType::A), WEB.parse().unwrap(), "front", Transport::Udp).unwrap();
        let m = Message::from_vec(&b).unwrap();
        assert_eq!(m.response_code, ResponseCode::ServFail);
        assert_eq!(m.id, 0xbeef);
        assert_eq!(m.queries.len(), 1);
    }

    /// Thousands of random, truncated and bit-flipped buffers: no panic, and
    /// every reply is a response with the query's ID.
    #[test]
    fn random_and_broken_queries_never_panic() {
        let r = resolver();
        let asker: IpAddr = WEB.parse().unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let good = [
            query("web", RecordType::A),
            query("3.0.1.10.in-addr.arpa.", RecordType::PTR),
            query("www.example.com", RecordType::AAAA),
        ];
        let check = |buf: &[u8]| {
            for t in [Transport::Udp, Transport::Tcp] {
                if let Outcome::Reply(b) = r.resolve(buf, asker, "front", t) {
                    let h = Header::read(&b).expect("a reply has a header");
                    assert!(h.response);
                    assert_eq!(h.id, Header::read(buf).unwrap().id);
                }
            }
        };
        for i in 0..20_000 {
            let mut buf: Vec<u8> = match i % 3 {
                0 => (0..(rand() % 300) as usize).map(|_| rand() as u8).collect(),
                1 => {
                    let g = &good[i % good.len()];
                    g[..(rand() as usize % (g.len() + 1))].to_vec()
                }
                _ => {
                    let mut g = good[i % good.len()].clone();
                    for _ in 0..1 + rand() % 4 {
                        let at = rand() as usize % g.len();
                        g[at] ^= 1 << (rand() % 8);
                    }
                    g
                }
            };
            if i % 7 == 0 && buf.len() >= 12 {
                buf[2] &= 0x7f; // mostly queries, so that parsing is reached
                buf[4] = 0;
                buf[5] = 1;
            }
            check(&buf);
        }
    }
}
