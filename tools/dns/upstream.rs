//! Upstream resolvers, and forwarding one query to them.
//!
//! Each forwarded query gets a socket of its own (a fresh source port) and a
//! fresh random ID, and an answer counts only if it comes from the server
//! asked, carries that ID and repeats the question: a spoofed or stray
//! datagram is ignored. The answer is relayed with the client's ID.
//!
//! Servers are tried in order, at most [`MAX_UPSTREAMS`] of them (as glibc
//! and Docker do), within one deadline for the whole query: each server gets
//! an equal share of what is left, so a dead first server does not eat the
//! time of the others, and the client gets SERVFAIL before its own timeout
//! (glibc: 5 s) rather than nothing. A server that answers SERVFAIL or
//! REFUSED, or refuses the connection, passes the query on to the next.
//!
//! Queries from UDP clients go upstream over UDP; a truncated answer is
//! relayed as it is, so the client asks again over TCP. Queries from TCP
//! clients go over UDP first and, if the answer is truncated, over TCP.
//!
//! Sockets are opened in the network namespace of the calling thread.

use super::wire::{self, Header};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// At most this many servers are used, the first ones given.
pub const MAX_UPSTREAMS: usize = 3;
/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// How the client asked: it decides the upstream transport and size limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The servers names that are not local go to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upstreams {
    servers: Vec<SocketAddr>,
}

impl Upstreams {
    /// These servers (`vswitchd --dns IP`, or addresses with ports in tests),
    /// in order, without duplicates; only the first [`MAX_UPSTREAMS`] are used.
    pub fn new(servers: impl IntoIterator<Item = SocketAddr>) -> Upstreams {
        let mut list: Vec<SocketAddr> = Vec::new();
        for s in servers {
            if !list.contains(&s) && list.len() < MAX_UPSTREAMS {
                list.push(s);
            }
        }
        Upstreams { servers: list }
    }

    /// These addresses on port 53.
    pub fn from_ips(ips: impl IntoIterator<Item = IpAddr>) -> Upstreams {
        Upstreams::new(ips.into_iter().map(|ip| SocketAddr::new(ip, DNS_PORT)))
    }

    /// The nameservers of a resolv.conf text, less loopback ones (127.0.0.0/8
    /// and ::1), as Docker leaves them out.
    pub fn from_resolv_conf(text: &str) -> Upstreams {
        Upstreams::from_ips(super::ResolvConf::parse(text).upstream_servers())
    }

    /// The host's servers (see [`super::ResolvConf::host`]), less loopback ones.
    pub fn from_host() -> Upstreams {
        Upstreams::from_ips(super::ResolvConf::host().upstream_servers())
    }

    /// The servers in use.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Whether there is no server to forward to.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Forward `query` (a well-formed query with one question) and return the
    /// answer with the query's ID, or `None` when no server answered usefully
    /// within `timeout`.
    pub fn forward(&self, query: &[u8], transport: Transport, timeout: Duration) -> Option<Vec<u8>> {
        let client_id = Header::read(query)?.id;
        let question = query.get(wire::question_span(query)?)?;
        let deadline = Instant::now() + timeout;
        for (i, server) in self.servers.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let share = (deadline - now) / (self.servers.len() - i) as u32;
            let attempt = Exchange { server: *server, query, question, deadline: now + share };
            let answer = match attempt.udp() {
                Ok(a) if transport == Transport::Tcp && Header::read(&a).is_some_and(|h| h.truncated) => attempt.tcp(),
                other => other,
            };
            match answer {
                Ok(mut a) => {
                    let rcode = Header::read(&a).map(|h| h.rcode);
                    if rcode == Some(wire::RCODE_SERVFAIL) || rcode == Some(wire::RCODE_REFUSED) {
                        log::debug!("dns: upstream {server} answered rcode {rcode:?}, trying the next");
                        continue;
                    }
                    wire::set_id(&mut a, client_id);
                    return Some(a);
                }
                Err(e) => log::debug!("dns: upstream {server}: {e}"),
            }
        }
        None
    }
}

/// One query to one server before a deadline.
struct Exchange<'a> {
    server: SocketAddr,
    query: &'a [u8],
    /// The question as the query has it: the answer must repeat it.
    question: &'a [u8],
    deadline: Instant,
}

impl Exchange<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
        }
        Ok(left)
    }

    /// The query with a fresh random ID, and that ID.
    fn our_query(&self) -> (Vec<u8>, u16) {
        let id = random_id();
        let mut q = self.query.to_vec();
        wire::set_id(&mut q, id);
        (q, id)
    }

    /// Whether `answer` answers our query `id`.
    fn matches(&self, answer: &[u8], id: u16) -> bool {
        let Some(h) = Header::read(answer) else { return false };
        if !h.response || h.id != id {
            return false;
        }
        if h.qdcount == 0 {
            // Some servers leave the question out of error answers.
            return h.rcode != 0;
        }
        wire::question_span(answer)
            .and_then(|span| answer.get(span))
            .is_some_and(|q| q.eq_ignore_ascii_case(self.question))
    }

    fn udp(&self) -> io::Result<Vec<u8>> {
        let local: IpAddr = match self.server {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let sock = UdpSocket::bind(SocketAddr::new(local, 0))?;
        sock.connect(self.server)?;
        let (query, id) = self.our_query();
        sock.send(&query)?;
        let mut buf = vec![0u8; 65535];
        loop {
            sock.set_read_timeout(Some(self.left()?))?;
            match sock.recv(&mut buf) {
                Ok(n) if self.matches(&buf[..n], id) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn tcp(&self) -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&self.server, self.left()?)?;
        s.set_nodelay(true)?;
        let (query, id) = self.our_query();
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        s.set_write_timeout(Some(self.left()?))?;
        s.write_all(&framed)?;
        loop {
            let mut len = [0u8; 2];
            self.read_exact(&mut s, &mut len)?;
            let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
            self.read_exact(&mut s, &mut answer)?;
            if self.matches(&answer, id) {
                return Ok(answer);
            }
        }
    }

    fn read_exact(&self, s: &mut TcpStream, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            s.set_read_timeout(Some(self.left()?))?;
            match s.read(buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => buf = &mut buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A query ID nobody off the path can guess (getrandom(2); the clock if that fails).
fn random_id() -> u16 {
    let mut id = [0u8; 2];
    // SAFETY: getrandom writes at most the 2 bytes of `id`.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n == 2 {
        return u16::from_ne_bytes(id);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.subsec_nanos() ^ (t.subsec_nanos() >> 16)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_three_distinct_servers() {
        let a: SocketAddr = "192.0.2.1:53".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:53".parse().unwrap();
        let c: SocketAddr = "[2001:db8::3]:53".parse().unwrap();
        let d: SocketAddr = "192.0.2.4:53".parse().unwrap();
        assert_eq!(Upstreams::new([a, a, b, c, d]).servers(), [a, b, c]);
    }

    #[test]
    fn resolv_conf_servers_less_loopback_on_port_53() {
        let u = Upstreams::from_resolv_conf("nameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.9\n");
        assert_eq!(u.servers(), ["192.0.2.9:53".parse::<SocketAddr>().unwrap()]);
        assert!(Upstreams::from_resolv_conf("nameserver 127.0.0.11\n").is_empty());
    }

    #[test]
    fn no_servers_means_no_answer_at_once() {
        let q = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1];
        let t = Instant::now();
        assert!(Upstreams::default().forward(&q, Transport::Udp, Duration::from_secs(5)).is_none());
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
