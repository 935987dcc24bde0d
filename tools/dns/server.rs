//! Serving one network: a UDP socket and a TCP listener (the daemon's, bound
//! to the gateway's port 53), each with a thread of its own, feeding a shared
//! [`Resolver`].
//!
//! - UDP: one thread reads queries and answers local names at once; a query
//!   to forward gets a short-lived thread of its own (at most
//!   [`super::resolver::MAX_FORWARDS_IN_FLIGHT`] over all networks), so a
//!   slow upstream never holds up other clients.
//! - TCP: a thread per connection (at most [`MAX_TCP_CONNECTIONS`] per
//!   network; when full, the connection idle the longest makes room, or the
//!   new one is closed if every one is busy). Messages are framed by a 2-byte
//!   length (RFC 1035 4.2.2), several queries per connection, answered in
//!   order. A connection closes after [`TCP_IDLE_TIMEOUT`] without a query,
//!   when a started query is not complete within [`TCP_MESSAGE_TIMEOUT`],
//!   when a query is shorter than a header or longer than [`MAX_TCP_QUERY`],
//!   or when the client does not take its answer within [`TCP_WRITE_TIMEOUT`].
//!
//! The sockets may live in any namespace (the daemon's service namespace);
//! the threads, and so the sockets opened to forward queries upstream, are
//! in the namespace of the thread that calls [`DnsServer::start`]: call it
//! from one that reaches the upstream servers (the host's).
//!
//! [`DnsServer::stop`] (or dropping it) shuts the sockets down, which wakes
//! the blocked threads, and waits for the UDP and accept threads; connection
//! threads end at once, forwarding threads when their upstream answers or
//! times out.

use super::resolver::{servfail, Outcome, Resolver};
use super::upstream::Transport;
use super::wire::HEADER_LEN;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Open TCP connections per network.
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// A TCP connection without a query for this long is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A query whose length has arrived must be complete within this.
pub const TCP_MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// An answer must be taken by the client within this.
pub const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest query taken over TCP (a query is one question and an OPT
/// record; 4 KiB leaves room for any EDNS options).
pub const MAX_TCP_QUERY: usize = 4096;
/// Stack of the short-lived forwarding and connection threads.
const THREAD_STACK: usize = 256 * 1024;

/// The DNS service of one network; stops when dropped.
pub struct DnsServer {
    network: Arc<str>,
    stop: Arc<AtomicBool>,
    udp: Option<(Arc<UdpSocket>, JoinHandle<()>)>,
    tcp: Option<(Arc<TcpListener>, JoinHandle<()>)>,
    conns: Arc<Connections>,
}

impl DnsServer {
    /// Serve `network` on these sockets (either may be left out), answering
    /// with `resolver`. Askers are told apart by their source addresses.
    pub fn start(
        resolver: Arc<Resolver>,
        network: &str,
        udp: Option<UdpSocket>,
        tcp: Option<TcpListener>,
    ) -> io::Result<DnsServer> {
        let network: Arc<str> = Arc::from(network);
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Connections::default());
        let mut server = DnsServer { network: network.clone(), stop: stop.clone(), udp: None, tcp: None, conns };
        if let Some(sock) = udp {
            sock.set_nonblocking(false)?;
            let sock = Arc::new(sock);
            let (s, r, n, st) = (sock.clone(), resolver.clone(), network.clone(), stop.clone());
            let t =
                thread::Builder::new().name(format!("dns-udp-{network}")).spawn(move || udp_loop(&s, &r, &n, &st))?;
            server.udp = Some((sock, t));
        }
        if let Some(listener) = tcp {
            listener.set_nonblocking(false)?;
            let listener = Arc::new(listener);
            let (l, r, n, st, c) = (listener.clone(), resolver, network.clone(), stop, server.conns.clone());
            let t = thread::Builder::new()
                .name(format!("dns-tcp-{network}"))
                .spawn(move || accept_loop(&l, &r, &n, &st, &c))?;
            server.tcp = Some((listener, t));
        }
        Ok(server)
    }

    /// The network served.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Where the UDP socket is bound.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|(s, _)| s.local_addr().ok())
    }

    /// Where the TCP listener is bound.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// TCP connections open now.
    pub fn tcp_connections(&self) -> usize {
        self.conns.map.lock().len()
    }

    /// Stop serving: see the module documentation.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some((sock, t)) = self.udp.take() {
            // Wakes the blocked recv (Linux: shutdown marks even an
            // unconnected UDP socket, and answers ENOTCONN, which is fine).
            // SAFETY: a plain syscall on a descriptor we own.
            unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
            let _ = t.join();
        }
        if let Some((listener, t)) = self.tcp.take() {
            // SAFETY: as above; a shut-down listener fails the blocked accept.
            unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
            let _ = t.join();
        }
        for (_, c) in self.conns.map.lock().drain() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn udp_loop(sock: &Arc<UdpSocket>, resolver: &Arc<Resolver>, network: &str, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65535];
    loop {
        let got = sock.recv_from(&mut buf);
        if stop.load(Ordering::Acquire) {
            return;
        }
        let (n, client) = match got {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("dns: {network}: receiving on UDP: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let query = &buf[..n];
        match resolver.resolve(query, client.ip(), network, Transport::Udp) {
            Outcome::Reply(answer) => {
                let _ = sock.send_to(&answer, client);
            }
            Outcome::Drop => {}
            Outcome::Forward => {
                let (s, r, q) = (sock.clone(), resolver.clone(), query.to_vec());
                let spawned =
                    thread::Builder::new().name("dns-forward".into()).stack_size(THREAD_STACK).spawn(move || {
                        let answer = r.forward(&q, Transport::Udp);
                        let _ = s.send_to(&answer, client);
                    });
                if let Err(e) = spawned {
                    log::warn!("dns: {network}: no thread to forward a query: {e}");
                    let _ = sock.send_to(&servfail(query), client);
                }
            }
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    resolver: &Arc<Resolver>,
    network: &Arc<str>,
    stop: &Arc<AtomicBool>,
    conns: &Arc<Connections>,
) {
    loop {
        let got = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        let (stream, client) = match got {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
            Err(e) => {
                log::warn!("dns: {network}: accepting on TCP: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Some(id) = conns.admit(&stream) else {
            log::debug!("dns: {network}: {MAX_TCP_CONNECTIONS} busy TCP connections, closing {client}");
            continue;
        };
        let (r, n, st, c) = (resolver.clone(), network.clone(), stop.clone(), conns.clone());
        let spawned = thread::Builder::new().name("dns-tcp-conn".into()).stack_size(THREAD_STACK).spawn(move || {
            serve_connection(stream, client, id, &r, &n, &st, &c);
            c.map.lock().remove(&id);
        });
        if spawned.is_err() {
            conns.map.lock().remove(&id);
        }
    }
}

/// Queries and answers on one TCP connection until it closes or misbehaves.
fn serve_connection(
    mut stream: TcpStream,
    client: SocketAddr,
    id: u64,
    resolver: &Resolver,
    network: &str,
    stop: &AtomicBool,
    conns: &Connections,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(TCP_WRITE_TIMEOUT));
    loop {
        let mut len = [0u8; 2];
        if read_full(&mut stream, &mut len, Instant::now() + TCP_IDLE_TIMEOUT).is_err() {
            return;
        }
        let len = u16::from_be_bytes(len) as usize;
        if !(HEADER_LEN..=MAX_TCP_QUERY).contains(&len) {
            log::debug!("dns: {network}: {client} sent a {len}-byte TCP query, closing");
            return;
        }
        let mut query = vec![0u8; len];
        if read_full(&mut stream, &mut query, Instant::now() + TCP_MESSAGE_TIMEOUT).is_err()
            || stop.load(Ordering::Acquire)
        {
            return;
        }
        conns.set_busy(id, true);
        if let Some(answer) = resolver.answer(&query, client.ip(), network, Transport::Tcp) {
            let mut framed = Vec::with_capacity(answer.len() + 2);
            framed.extend_from_slice(&(answer.len() as u16).to_be_bytes());
            framed.extend_from_slice(&answer);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
        conns.set_busy(id, false);
    }
}

/// Fill `buf` from `stream` before `deadline`.
fn read_full(stream: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The open TCP connections of one network, to bound them and to close them.
#[derive(Default)]
struct Connections {
    map: Mutex<HashMap<u64, Connection>>,
    next: std::sync::atomic::AtomicU64,
}

struct Connection {
    /// A second handle, to shut the connection down from outside.
    stream: TcpStream,
    /// When it last finished a query (or opened).
    since: Instant,
    /// Between a complete query and its answer sent.
    busy: bool,
}

impl Connections {
    /// Register a new connection, closing the longest-idle one if full;
    /// `None` (and the new one not registered) when every one is busy.
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let mut map = self.map.lock();
        if map.len() >= MAX_TCP_CONNECTIONS {
            let idlest = map.iter().filter(|(_, c)| !c.busy).min_by_key(|(_, c)| c.since).map(|(id, _)| *id)?;
            if let Some(c) = map.remove(&idlest) {
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        map.insert(id, Connection { stream: handle, since: Instant::now(), busy: false });
        Some(id)
    }

    fn set_busy(&self, id: u64, busy: bool) {
        if let Some(c) = self.map.lock().get_mut(&id) {
            c.busy = busy;
            c.since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::names::{Endpoint, NameTable};
    use super::super::resolver::a_records;
    use super::super::upstream::Upstreams;
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::net::Ipv4Addr;

    const NET: &str = "lab";

    /// A resolver whose table has "web" at 127.0.0.1 on "lab" (so that test
    /// clients on 127.0.0.1 are that endpoint) and "db" at 10.1.0.3.
    fn resolver(upstreams: Upstreams, timeout: Duration) -> Arc<Resolver> {
        let r = Resolver::new(upstreams, timeout);
        let ep = |name: &str, ip: [u8; 4]| Endpoint {
            network: NET.into(),
            name: name.into(),
            aliases: vec![],
            ipv4: ip.into(),
            ipv6: None,
            key: name.into(),
        };
        r.set_names(NameTable::new([ep("web", [127, 0, 0, 1]), ep("db", [10, 1, 0, 3])]));
        Arc::new(r)
    }

    fn start(r: Arc<Resolver>) -> DnsServer {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        DnsServer::start(r, NET, Some(udp), Some(tcp)).unwrap()
    }

    fn query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn client() -> UdpSocket {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    }

    fn ask_udp(c: &UdpSocket, server: SocketAddr, q: &[u8]) -> Message {
        c.send_to(q, server).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = c.recv_from(&mut buf).expect("an answer");
        Message::from_vec(&buf[..n]).unwrap()
    }

    /// A fake upstream on 127.0.0.1 that answers every A query with
    /// 192.0.2.1, over UDP and TCP; `truncate_udp` makes its UDP answers
    /// empty with TC set, so that only TCP gets the record.
    struct FakeUpstream {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
    }

    impl FakeUpstream {
        fn start(truncate_udp: bool) -> FakeUpstream {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = udp.local_addr().unwrap();
            let tcp = TcpListener::bind(addr).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            tcp.set_nonblocking(true).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !st.load(Ordering::Acquire) {
                    if let Ok((n, from)) = udp.recv_from(&mut buf) {
                        let _ = udp.send_to(&Self::answer(&buf[..n], truncate_udp), from);
                    }
                    if let Ok((mut s, _)) = tcp.accept() {
                        s.set_nonblocking(false).unwrap();
                        let mut len = [0u8; 2];
                        s.read_exact(&mut len).unwrap();
                        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                        s.read_exact(&mut q).unwrap();
                        let a = Self::answer(&q, false);
                        s.write_all(&(a.len() as u16).to_be_bytes()).unwrap();
                        s.write_all(&a).unwrap();
                    }
                }
            });
            FakeUpstream { addr, stop }
        }

        fn answer(q: &[u8], truncated: bool) -> Vec<u8> {
            let q = Message::from_vec(q).unwrap();
            let mut m = Message::new(q.id, MessageType::Response, OpCode::Query);
            m.metadata.recursion_available = true;
            m.queries = q.queries.clone();
            if truncated {
                m.metadata.truncation = true;
            } else {
                let name = q.queries[0].name().clone();
                m.add_answer(Record::from_rdata(name, 60, RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))));
            }
            m.to_vec().unwrap()
        }
    }

    impl Drop for FakeUpstream {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
        }
    }

    #[test]
    fn udp_answers_local_names() {
        let server = start(resolver(Upstreams::default(), Duration::from_millis(300)));
        let c = client();
        let m = ask_udp(&c, server.udp_addr().unwrap(), &query(7, "db", RecordType::A));
        assert_eq!(m.id, 7);
        assert_eq!(a_records(&m), [Ipv4Addr::new(10, 1, 0, 3)]);
        server.stop();
    }

    #[test]
    fn udp_forwards_to_the_upstream_and_relays_with_the_clients_id() {
        let up = FakeUpstream::start(false);
        let server = start(resolver(Upstreams::new([up.addr]), Duration::from_secs(2)));
        let m = ask_udp(&client(), server.udp_addr().unwrap(), &query(0x4242, "example.com", RecordType::A));
        assert_eq!(m.id, 0x4242);
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert_eq!(a_records(&m), [Ipv4Addr::new(192, 0, 2, 1)]);
    }

    #[test]
    fn a_silent_upstream_gets_servfail_within_the_timeout_and_local_answers_go_on() {
        // An upstream that takes queries and never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let timeout = Duration::from_secs(1);
        let server = start(resolver(Upstreams::new([silent.local_addr().unwrap()]), timeout));
        let addr = server.udp_addr().unwrap();
        let c = client();
        let t = Instant::now();
        c.send_to(&query(1, "example.com", RecordType::A), addr).unwrap();
        // While that one waits, a local name is answered at once.
        let m = ask_udp(&client(), addr, &query(2, "db", RecordType::A));
        assert_eq!(a_records(&m).len(), 1);
        assert!(t.elapsed() < timeout, "the local answer waited for the forward");

        let mut buf = [0u8; 512];
        let (n, _) = c.recv_from(&mut buf).expect("SERVFAIL, not silence");
        let waited = t.elapsed();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!((m.id, m.response_code), (1, ResponseCode::ServFail));
        assert!(waited >= timeout && waited < timeout + Duration::from_millis(1500), "{waited:?}");
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing_and_the_server_goes_on() {
        let server = start(resolver(Upstreams::default(), Duration::from_millis(300)));
        let addr = server.udp_addr().unwrap();
        let c = client();
        let mut bad = query(9, "db", RecordType::A);
        bad.truncate(bad.len() - 3);
        c.send_to(&bad, addr).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        let h = super::super::wire::Header::read(&buf[..n]).unwrap();
        assert_eq!((h.id, h.rcode), (9, super::super::wire::RCODE_FORMERR));
        c.send_to(&[1, 2, 3], addr).unwrap(); // dropped
        let m = ask_udp(&c, addr, &query(10, "db", RecordType::A));
        assert_eq!(m.id, 10, "the short datagram got no answer, the next query did");
    }

    fn framed(q: &[u8]) -> Vec<u8> {
        let mut f = (q.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(q);
        f
    }

    fn read_framed(s: &mut TcpStream) -> Message {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut m).unwrap();
        Message::from_vec(&m).unwrap()
    }

    #[test]
    fn tcp_two_queries_on_one_connection_even_in_one_segment() {
        let up = FakeUpstream::start(false);
        let server = start(resolver(Upstreams::new([up.addr]), Duration::from_secs(2)));
        let mut s = TcpStream::connect(server.tcp_addr().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut both = framed(&query(1, "db", RecordType::A));
        both.extend(framed(&query(2, "example.org", RecordType::A)));
        s.write_all(&both).unwrap();
        let first = read_framed(&mut s);
        assert_eq!((first.id, a_records(&first)), (1, vec![Ipv4Addr::new(10, 1, 0, 3)]));
        let second = read_framed(&mut s);
        assert_eq!((second.id, a_records(&second)), (2, vec![Ipv4Addr::new(192, 0, 2, 1)]));
        // A third, byte by byte.
        for b in framed(&query(3, "WEB.", RecordType::A)) {
            s.write_all(&[b]).unwrap();
        }
        assert_eq!(a_records(&read_framed(&mut s)), [Ipv4Addr::new(127, 0, 0, 1)]);
    }

    #[test]
    fn tcp_clients_get_the_full_answer_when_udp_upstream_truncates() {
        let up = FakeUpstream::start(true);
        let server = start(resolver(Upstreams::new([up.addr]), Duration::from_secs(2)));
        // Over UDP the truncated answer is relayed as it is...
        let m = ask_udp(&client(), server.udp_addr().unwrap(), &query(5, "big.example", RecordType::A));
        assert!(m.truncation && m.answers.is_empty());
        // ...over TCP the resolver asks again over TCP.
        let mut s = TcpStream::connect(server.tcp_addr().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&framed(&query(6, "big.example", RecordType::A))).unwrap();
        let m = read_framed(&mut s);
        assert_eq!((m.id, m.truncation, a_records(&m)), (6, false, vec![Ipv4Addr::new(192, 0, 2, 1)]));
    }

    #[test]
    fn a_stalled_or_oversized_tcp_client_does_not_hold_up_others() {
        let server = start(resolver(Upstreams::default(), Duration::from_millis(300)));
        let addr = server.tcp_addr().unwrap();
        // One sends half a length prefix and stalls; one announces 60 KB.
        let mut stalled = TcpStream::connect(addr).unwrap();
        stalled.write_all(&[0]).unwrap();
        let mut huge = TcpStream::connect(addr).unwrap();
        huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        huge.write_all(&60000u16.to_be_bytes()).unwrap();
        let mut rest = [0u8; 1];
        assert_eq!(huge.read(&mut rest).unwrap(), 0, "an oversized query closes the connection");

        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&framed(&query(4, "db", RecordType::A))).unwrap();
        assert_eq!(read_framed(&mut s).id, 4);
        drop(stalled);
    }

    #[test]
    fn a_full_connection_table_closes_the_idlest() {
        let server = start(resolver(Upstreams::default(), Duration::from_millis(300)));
        let addr = server.tcp_addr().unwrap();
        let mut first = TcpStream::connect(addr).unwrap();
        first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.tcp_connections() < 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let _others: Vec<TcpStream> = (0..MAX_TCP_CONNECTIONS).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut probe = [0u8; 1];
        assert_eq!(first.read(&mut probe).unwrap_or(0), 0, "the idlest connection was closed");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&framed(&query(8, "db", RecordType::A))).unwrap();
        assert_eq!(read_framed(&mut s).id, 8);
        assert!(server.tcp_connections() <= MAX_TCP_CONNECTIONS);
    }

    #[test]
    fn stop_wakes_the_threads_and_closes_connections() {
        let server = start(resolver(Upstreams::default(), Duration::from_millis(300)));
        let mut s = TcpStream::connect(server.tcp_addr().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&framed(&query(1, "db", RecordType::A))).unwrap();
        read_framed(&mut s);
        let t = Instant::now();
        server.stop();
        assert!(t.elapsed() < Duration::from_secs(2), "stop took {:?}", t.elapsed());
        let mut probe = [0u8; 1];
        assert_eq!(s.read(&mut probe).unwrap_or(0), 0);
    }
}
