//! DNS helpers for the lab tests: queries asked from inside a namespace over
//! UDP and TCP (hickory-proto builds and reads the messages), a tiny
//! upstream server in an outside namespace, and a lab with vswitchd in a
//! host namespace that reaches it.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{in_ns, Daemon, Outside};

/// What the fake upstream answers for names under [`OUTSIDE_ZONE`].
pub const OUTSIDE_ANSWER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The zone the fake upstream knows; every other name is NXDOMAIN there.
pub const OUTSIDE_ZONE: &str = "outside.test.";

static NEXT_ID: AtomicU16 = AtomicU16::new(0x4000);

/// A query for `name` of type `t`, with a fresh ID.
pub fn query(name: &str, t: RecordType) -> Vec<u8> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap_or_else(|e| panic!("{name:?}: {e}")), t));
    m.to_vec().expect("encode a query")
}

/// A UDP socket inside `ns` on any port.
pub fn client(ns: &str) -> UdpSocket {
    in_ns(ns, || UdpSocket::bind("0.0.0.0:0")).unwrap_or_else(|e| panic!("UDP socket in {ns}: {e}"))
}

/// Send the raw `query` from `ns` to `server`:53 over UDP, again every
/// second, until an answer with its ID comes or `timeout` passes.
pub fn ask_raw(ns: &str, server: Ipv4Addr, q: &[u8], timeout: Duration) -> Result<Message, String> {
    let sock = client(ns);
    exchange(&sock, server, q, timeout)
}

/// One query over a socket made with [`client`].
pub fn exchange(sock: &UdpSocket, server: Ipv4Addr, q: &[u8], timeout: Duration) -> Result<Message, String> {
    let id = u16::from_be_bytes([q[0], q[1]]);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    while Instant::now() < deadline {
        sock.send_to(q, (server, 53)).map_err(|e| format!("send to {server}:53: {e}"))?;
        sent += 1;
        let resend = (Instant::now() + Duration::from_secs(1)).min(deadline);
        while let Some(left) = resend.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            sock.set_read_timeout(Some(left)).unwrap();
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == SocketAddr::from((server, 53)) && n >= 2 && buf[..2] == id.to_be_bytes() => {
                    return Message::from_vec(&buf[..n]).map_err(|e| format!("unreadable answer: {e}"));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
    }
    Err(format!("no answer from {server}:53 in {timeout:?} ({sent} queries sent)"))
}

/// Ask `name`/`t` from `ns` at `server` over UDP.
pub fn ask(ns: &str, server: Ipv4Addr, name: &str, t: RecordType) -> Message {
    ask_raw(ns, server, &query(name, t), Duration::from_secs(8))
        .unwrap_or_else(|e| panic!("{name} {t} from {ns} at {server}: {e}"))
}

/// Ask `name`/`t` from `ns` at `server`:53 over one TCP connection.
pub fn ask_tcp(ns: &str, server: Ipv4Addr, name: &str, t: RecordType) -> Message {
    let mut s = in_ns(ns, move || TcpStream::connect_timeout(&(server, 53).into(), Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("TCP connect to {server}:53 from {ns}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    tcp_exchange(&mut s, &query(name, t)).unwrap_or_else(|e| panic!("{name} over TCP from {ns}: {e}"))
}

/// One length-prefixed query and its answer on a TCP connection.
pub fn tcp_exchange(s: &mut TcpStream, q: &[u8]) -> io::Result<Message> {
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut answer)?;
    Message::from_vec(&answer).map_err(|e| io::Error::other(e.to_string()))
}

/// The A records of an answer.
pub fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The AAAA records of an answer.
pub fn aaaa_records(m: &Message) -> Vec<Ipv6Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The PTR targets of an answer.
pub fn ptr_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect()
}

/// `d.c.b.a.in-addr.arpa.` of an IPv4 address.
pub fn reverse_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
}

/// Whether the answer is NXDOMAIN.
pub fn is_nxdomain(m: &Message) -> bool {
    m.response_code == ResponseCode::NXDomain
}

/// An upstream DNS server inside a namespace, on UDP: A records under
/// [`OUTSIDE_ZONE`] are [`OUTSIDE_ANSWER`], every other name NXDOMAIN; when
/// made silent it answers nothing. Records every name asked. Stops on drop.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    silent: Arc<AtomicBool>,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeUpstream {
    /// Serve on `ip`:53 inside `ns`.
    pub fn start(ns: &str, ip: Ipv4Addr) -> FakeUpstream {
        let sock = in_ns(ns, move || UdpSocket::bind((ip, 53)))
            .unwrap_or_else(|e| panic!("bind the fake upstream at {ip}:53 in {ns}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let (silent, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (s2, a2, st2) = (silent.clone(), Arc::clone(&asked), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let Some(question) = q.queries.first() else { continue };
                a2.lock().unwrap().push(question.name().to_ascii());
                if !s2.load(Ordering::Relaxed) {
                    let _ = sock.send_to(&Self::answer(&q), from);
                }
            }
        });
        FakeUpstream { addr: SocketAddr::from((ip, 53)), silent, asked, stop, thread: Some(thread) }
    }

    fn answer(q: &Message) -> Vec<u8> {
        let mut m = Message::new(q.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = q.recursion_desired;
        m.metadata.recursion_available = true;
        m.queries = q.queries.clone();
        let question = &q.queries[0];
        let name = question.name().to_ascii().to_ascii_lowercase();
        if name.ends_with(OUTSIDE_ZONE) {
            if question.query_type() == RecordType::A {
                m.add_answer(Record::from_rdata(question.name().clone(), 60, RData::A(A(OUTSIDE_ANSWER))));
            }
        } else {
            m.metadata.response_code = ResponseCode::NXDomain;
        }
        m.to_vec().unwrap()
    }

    /// Stop (or start again) answering.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::Relaxed);
    }

    /// Every name asked so far (as `name.`).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The host namespace's address towards the outside one.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 2);
/// The outside namespace's address: the upstream DNS server.
pub const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 1);

/// vswitchd in a host namespace started with `--dns UPSTREAM_IP`, and a
/// [`FakeUpstream`] in an outside namespace the host reaches over a veth
/// pair (no uplink: the forwarded queries leave through the host's own
/// stack). Field order is drop order: the daemon and its containers first.
pub struct DnsLab {
    pub d: Daemon,
    pub upstream: FakeUpstream,
    pub out: Outside,
}

impl DnsLab {
    pub fn start() -> DnsLab {
        Self::start_with(&[])
    }

    /// With `extra` vswitchd flags.
    pub fn start_with(extra: &[&str]) -> DnsLab {
        let out = Outside::create(UPSTREAM_IP, 24);
        in_ns(&out.host.0, || -> io::Result<()> {
            let up = ports::netlink::link_index(super::UPLINK_IFACE)?.expect("up0 in the host namespace");
            ports::netlink::add_ipv4_addr(up, HOST_IP, 24)
        })
        .unwrap_or_else(|e| panic!("address the host namespace: {e}"));
        let upstream = FakeUpstream::start(&out.outside.0, UPSTREAM_IP);
        let ip = UPSTREAM_IP.to_string();
        let mut args = vec!["--dns", ip.as_str()];
        args.extend_from_slice(extra);
        let d = Daemon::start_in_netns(&out.host.0, &args);
        DnsLab { d, upstream, out }
    }
}

/// The service namespace of a daemon (as vswitchd names it).
pub fn service_netns(d: &Daemon) -> String {
    vswitch::dns::service::service_netns(&d.state_dir)
}

/// The resolv.conf vswitchd wrote for `ns`, if any.
pub fn resolv_conf(ns: &str) -> Option<String> {
    std::fs::read_to_string(format!("/etc/netns/{ns}/resolv.conf")).ok()
}
