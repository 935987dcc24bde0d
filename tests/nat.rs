//! Lab tests of the way out: vswitchd runs in a "host" namespace of its own
//! and owns an uplink (a veth whose other end sits in an "outside"
//! namespace standing for the world); containers reach the outside with
//! their traffic masqueraded behind the uplink address, and internal
//! networks have no way out.
//!
//! ```text
//!   container ──TAP── vswitchd (netns H) ──AF_PACKET── H:up0 ══veth══ O:eth0 10.250.0.1/24
//!                     uplink address 10.250.0.2/24, next hop 10.250.0.1
//! ```
//!
//! Like tests/lab.rs they need root, make and remove their own namespaces
//! (also on failure) and only ever send to addresses inside them.
//! Run: `cargo test --test nat -- --test-threads=2`.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PING: Duration = Duration::from_secs(5);
/// O:eth0, the server every test talks to, and the switch's next hop.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// The address the switch owns on the uplink segment.
const UPLINK: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A daemon in its own host namespace with an uplink to an outside
/// namespace (see `common::UplinkLab`), at this file's addresses.
type Lab = UplinkLab;

impl Lab {
    fn start() -> Lab {
        UplinkLab::start_at(OUTSIDE, UPLINK)
    }
}

/// The IPv4 packet of an Ethernet frame, if it carries one.
fn ipv4_of(frame: &[u8]) -> Option<proto::ipv4::Packet<'_>> {
    let eth = proto::ethernet::Frame::parse(frame).ok()?;
    if eth.ethertype() != proto::ethernet::ETHERTYPE_IPV4 {
        return None;
    }
    proto::ipv4::Packet::parse(eth.payload()).ok()
}

/// Connect from `client_ns` to a listener on `server_ip` in `server_ns`,
/// send `up` patterned bytes, then receive `down` patterned bytes; both
/// directions are verified byte by byte. Returns the peer address the
/// server's accept() saw.
fn tcp_up_down(
    server_ns: &str,
    server_ip: Ipv4Addr,
    client_ns: &str,
    up: u64,
    down: u64,
) -> Result<SocketAddrV4, String> {
    use std::io::{Read, Write};
    const IO_TIMEOUT: Duration = Duration::from_secs(20);
    let listener = in_ns(server_ns, move || std::net::TcpListener::bind((server_ip, 0)))
        .map_err(|e| format!("listen on {server_ip} in {server_ns}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;

    let server = std::thread::spawn(move || -> Result<SocketAddrV4, String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let (mut conn, peer) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        let std::net::SocketAddr::V4(peer) = peer else { return Err(format!("peer {peer}")) };
        conn.set_nonblocking(false).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got: u64 = 0;
        while got < up {
            let n = conn.read(&mut buf).map_err(|e| format!("server: read after {got} of {up} bytes: {e}"))?;
            if n == 0 {
                return Err(format!("server: EOF after {got} of {up} bytes"));
            }
            for (i, b) in buf[..n].iter().enumerate() {
                let off = got + i as u64;
                if *b != pattern_byte(off) {
                    return Err(format!("upstream byte {off} is {b:#04x}, sent {:#04x}", pattern_byte(off)));
                }
            }
            got += n as u64;
        }
        let mut off: u64 = 0;
        while off < down {
            let n = buf.len().min((down - off) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern_byte(off + i as u64);
            }
            conn.write_all(&buf[..n]).map_err(|e| format!("server: write after {off} of {down} bytes: {e}"))?;
            off += n as u64;
        }
        conn.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
        // Wait for the client to close, so the last bytes are not reset away.
        let _ = conn.read(&mut buf);
        Ok(peer)
    });

    let dst = SocketAddrV4::new(server_ip, port);
    let client = (|| -> Result<(), String> {
        let mut conn = in_ns(client_ns, move || TcpStream::connect_timeout(&dst.into(), Duration::from_secs(5)))
            .map_err(|e| format!("connect {dst} from {client_ns}: {e}"))?;
        conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut off: u64 = 0;
        while off < up {
            let n = buf.len().min((up - off) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern_byte(off + i as u64);
            }
            conn.write_all(&buf[..n]).map_err(|e| format!("client: write after {off} of {up} bytes: {e}"))?;
            off += n as u64;
        }
        let mut got: u64 = 0;
        loop {
            let n = conn.read(&mut buf).map_err(|e| format!("client: read after {got} of {down} bytes: {e}"))?;
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                let off = got + i as u64;
                if *b != pattern_byte(off) {
                    return Err(format!("downstream byte {off} is {b:#04x}, sent {:#04x}", pattern_byte(off)));
                }
            }
            got += n as u64;
        }
        if got != down {
            return Err(format!("client received {got} bytes of {down}"));
        }
        Ok(())
    })();
    let server = server.join().map_err(|_| "server thread panicked".to_string())?;
    client?;
    server
}

/// The entries of `vsctl conntrack ARGS --json`.
fn conntrack(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["conntrack"];
    a.extend_from_slice(args);
    a.push("--json");
    let v = d.vsctl_json(&a);
    v.as_array().unwrap_or_else(|| panic!("vsctl conntrack --json must print an array: {v}")).clone()
}

/// "IP:PORT" of a conntrack field.
fn ct_addr(e: &Value, field: &str) -> SocketAddrV4 {
    let s = e[field].as_str().unwrap_or_else(|| panic!("conntrack entry lacks string {field:?}: {e}"));
    s.parse().unwrap_or_else(|err| panic!("conntrack {field} {s:?} is not IP:PORT ({err}): {e}"))
}

/// The one entry of `table` with this protocol and original source.
fn ct_find<'a>(table: &'a [Value], proto: &str, src: SocketAddrV4) -> &'a Value {
    let found: Vec<&Value> =
        table.iter().filter(|e| e["proto"] == proto && e["src"].as_str() == Some(&src.to_string())).collect();
    assert_eq!(found.len(), 1, "conntrack: {} {proto} entries from {src}: {table:#?}", found.len());
    found[0]
}

/// Whether a conntrack entry's "network" names this network (by name or id).
fn ct_net_is(e: &Value, name: &str, id: &str) -> bool {
    e["network"] == name || e["network"] == id
}

// ---------------------------------------------------------------------------

#[test]
fn tcp_to_the_outside_is_masqueraded() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("lab", "10.251.1.0/24", &[]);
    let c = d.new_port("lab");

    let peer = tcp_up_down(lab.o(), OUTSIDE, &c.netns, 4 << 20, 4 << 20)
        .unwrap_or_else(|e| panic!("TCP container -> outside and back: {e}"));
    assert_eq!(*peer.ip(), UPLINK, "the outside server saw {peer}, not the uplink address");
    // A second connection works too, and is masqueraded the same way.
    let peer2 = tcp_up_down(lab.o(), OUTSIDE, &c.netns, 64 << 10, 1 << 20)
        .unwrap_or_else(|e| panic!("second TCP connection: {e}"));
    assert_eq!(*peer2.ip(), UPLINK, "second connection seen from {peer2}");

    // The outside resolved the uplink address to the switch's own MAC.
    assert_eq!(
        arp_entry(lab.o(), UPLINK).map(|m| m.to_lowercase()),
        Some(docker_mac(UPLINK).to_lowercase()),
        "the outside's ARP entry for the uplink address"
    );
}

#[test]
fn udp_to_the_outside_is_masqueraded() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("lab", "10.251.2.0/24", &[]);
    let c = d.new_port("lab");
    let echo = UdpEcho::start(lab.o(), OUTSIDE);

    let sock = udp_socket(&c.netns, c.ip);
    let from =
        udp_round_trip(&sock, echo.addr, b"vswlab-udp-nat-1", Duration::from_millis(300), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("UDP container -> outside: {e}"));
    assert_eq!(from, echo.addr, "the echo came back from {from}");
    let from =
        udp_round_trip(&sock, echo.addr, b"vswlab-udp-nat-2", Duration::from_millis(300), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("second datagram of the same flow: {e}"));
    assert_eq!(from, echo.addr);

    let seen = echo.seen();
    assert!(!seen.is_empty());
    let sources: HashSet<SocketAddrV4> = seen.iter().map(|(s, _)| *s).collect();
    assert!(sources.iter().all(|s| *s.ip() == UPLINK), "the server saw sources {sources:?}, not {UPLINK}");
    assert_eq!(sources.len(), 1, "one socket's datagrams must keep one translated source, saw {sources:?}");
}

#[test]
fn ping_to_the_outside_is_masqueraded_and_ttl_decremented() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("lab", "10.251.3.0/24", &[]);
    let c = d.new_port("lab");
    // Sees every ICMP packet the outside receives.
    let sniffer = socket_in(lab.o(), libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP).expect("raw socket in O");
    set_recv_timeout(&sniffer, Duration::from_millis(200)).unwrap();

    ping_detail(&c.netns, OUTSIDE, PING).unwrap_or_else(|e| panic!("container -> outside: {e}"));

    let mut requests = Vec::new();
    while let Some(p) = recv_raw(&sniffer) {
        let Ok(pkt) = proto::ipv4::Packet::parse(&p) else { continue };
        let msg = pkt.payload();
        if !msg.is_empty() && msg[0] == proto::icmp::TYPE_ECHO_REQUEST {
            requests.push((pkt.src(), p[8]));
        }
    }
    assert!(!requests.is_empty(), "the outside saw no echo request");
    for (src, ttl) in &requests {
        assert_eq!(*src, UPLINK, "echo request reached the outside from {src}: not masqueraded");
        // The container's kernel sends with TTL 64; the switch routes once.
        assert_eq!(*ttl, 63, "echo request reached the outside with TTL {ttl}: not decremented once");
    }
    // The gateway still answers, and the container can ping repeatedly.
    assert!(ping(&c.netns, c.gateway, PING), "container cannot ping its gateway");
    ping_detail(&c.netns, OUTSIDE, PING).unwrap_or_else(|e| panic!("second ping: {e}"));
}

#[test]
fn conntrack_lists_the_translated_flows() {
    let lab = Lab::start();
    let d = &lab.d;
    let net_id = d.add_net("ctnet", "10.251.4.0/24", &[]);
    d.add_net("quiet", "10.251.5.0/24", &[]);
    let c = d.new_port("ctnet");
    let tcp = TcpEcho::start(lab.o(), OUTSIDE);
    let udp = UdpEcho::start(lab.o(), OUTSIDE);

    ping_detail(&c.netns, OUTSIDE, PING).unwrap_or_else(|e| panic!("ping container -> outside: {e}"));
    let mut conn = tcp_connect_from(&c.netns, SocketAddrV4::new(c.ip, 0), tcp.addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("TCP connect container -> outside: {e}"));
    tcp_echo_round(&mut conn, b"vswlab-conntrack-tcp").unwrap_or_else(|e| panic!("TCP echo: {e}"));
    let tcp_src = match conn.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        a => panic!("{a}"),
    };
    let sock = udp_socket(&c.netns, c.ip);
    udp_round_trip(&sock, udp.addr, b"vswlab-conntrack-udp", Duration::from_millis(300), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("UDP container -> outside: {e}"));
    let udp_src = match sock.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        a => panic!("{a}"),
    };

    let table = conntrack(d, &[]);
    // TCP: the translated source is what the server accepted.
    let e = ct_find(&table, "tcp", tcp_src);
    assert_eq!(ct_addr(e, "dst"), tcp.addr, "{e}");
    let nat = ct_addr(e, "nat_src");
    assert_eq!(*nat.ip(), UPLINK, "{e}");
    assert_eq!(tcp.peers(), vec![nat], "the server's peer and the entry's nat_src differ: {e}");
    assert!(ct_net_is(e, "ctnet", &net_id), "network of {e}");
    let state = e["state"].as_str().unwrap_or_else(|| panic!("no state: {e}")).to_lowercase();
    assert!(state.contains("established"), "an open TCP connection that carried data is in state {state:?}: {e}");
    assert!(e["age_secs"].as_u64().is_some_and(|a| a < 120), "age_secs of {e}");
    // UDP.
    let e = ct_find(&table, "udp", udp_src);
    assert_eq!(ct_addr(e, "dst"), udp.addr, "{e}");
    let nat = ct_addr(e, "nat_src");
    assert_eq!(*nat.ip(), UPLINK, "{e}");
    assert!(udp.seen().iter().all(|(s, _)| *s == nat), "the server saw {:?}, the entry says {nat}", udp.seen());
    assert!(ct_net_is(e, "ctnet", &net_id), "network of {e}");
    assert!(e["state"].is_string(), "state of {e}");
    assert!(e["age_secs"].as_u64().is_some(), "age_secs of {e}");
    // ICMP echo: "port" is the identifier.
    let icmp: Vec<&Value> = table
        .iter()
        .filter(|e| e["proto"] == "icmp" && e["src"].as_str().is_some_and(|s| s.starts_with(&format!("{}:", c.ip))))
        .collect();
    assert!(!icmp.is_empty(), "no ICMP entry from {}: {table:#?}", c.ip);
    for e in icmp {
        assert_eq!(*ct_addr(e, "dst").ip(), OUTSIDE, "{e}");
        assert_eq!(*ct_addr(e, "nat_src").ip(), UPLINK, "{e}");
        assert!(ct_net_is(e, "ctnet", &net_id), "network of {e}");
    }

    // --net filters.
    let only = conntrack(d, &["--net", "ctnet"]);
    ct_find(&only, "tcp", tcp_src);
    ct_find(&only, "udp", udp_src);
    assert!(only.iter().all(|e| ct_net_is(e, "ctnet", &net_id)), "--net ctnet lists others: {only:#?}");
    let quiet = conntrack(d, &["--net", "quiet"]);
    assert!(quiet.is_empty(), "a network without traffic lists flows: {quiet:#?}");
    let err = d.vsctl_err(&["conntrack", "--net", "nosuchnet"]);
    assert_one_line_naming("conntrack --net nosuchnet", &err, &["nosuchnet", "network", "not found", "no such"]);
    // The human-readable table shows the flows too.
    let text = d.vsctl_ok(&["conntrack"]);
    assert!(text.contains(&UPLINK.to_string()) && text.contains(&tcp_src.to_string()), "vsctl conntrack:\n{text}");
    drop(conn);
}

#[test]
fn many_udp_flows_get_distinct_ports_and_their_own_replies() {
    const FLOWS: usize = 200;
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("lab", "10.251.8.0/24", &[]);
    let c = d.new_port("lab");
    let echo = UdpEcho::start(lab.o(), OUTSIDE);
    // Resolve the gateway (container) and the next hop (switch) first.
    ping_detail(&c.netns, OUTSIDE, PING).unwrap_or_else(|e| panic!("container -> outside: {e}"));

    let cip = c.ip;
    let socks = in_ns(&c.netns, move || {
        (0..FLOWS).map(|_| std::net::UdpSocket::bind((cip, 0))).collect::<std::io::Result<Vec<_>>>()
    })
    .expect("200 UDP sockets");
    for s in &socks {
        s.set_nonblocking(true).unwrap();
    }
    let payload = |i: usize| format!("vswlab-flow-{i:03}").into_bytes();
    let mut answered = [false; FLOWS];
    let mut misdelivered = Vec::new();
    let mut rounds = 0;
    let mut buf = [0u8; 256];
    while answered.iter().any(|a| !a) && rounds < 6 {
        rounds += 1;
        for (i, s) in socks.iter().enumerate() {
            if !answered[i] {
                s.send_to(&payload(i), echo.addr).unwrap_or_else(|e| panic!("send flow {i}: {e}"));
            }
        }
        let round_end = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < round_end && answered.iter().any(|a| !a) {
            for (i, s) in socks.iter().enumerate() {
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    if buf[..n] == payload(i)[..] && from == std::net::SocketAddr::V4(echo.addr) {
                        answered[i] = true;
                    } else {
                        misdelivered.push((i, String::from_utf8_lossy(&buf[..n]).into_owned(), from));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let missing: Vec<usize> = (0..FLOWS).filter(|i| !answered[*i]).collect();
    assert!(misdelivered.is_empty(), "replies reached the wrong socket (socket, payload, from): {misdelivered:?}");
    assert!(missing.is_empty(), "{} of {FLOWS} flows got no reply after {rounds} rounds: {missing:?}", missing.len());

    // The server: every flow from the uplink address, one port per flow,
    // no port shared by two flows.
    let mut by_flow: HashMap<Vec<u8>, HashSet<SocketAddrV4>> = HashMap::new();
    for (src, data) in echo.seen() {
        by_flow.entry(data).or_default().insert(src);
    }
    assert_eq!(by_flow.len(), FLOWS, "the server saw {} distinct flows", by_flow.len());
    let mut ports = HashSet::new();
    for (data, srcs) in &by_flow {
        let flow = String::from_utf8_lossy(data);
        assert_eq!(srcs.len(), 1, "{flow} reached the server from several sources: {srcs:?}");
        let src = *srcs.iter().next().unwrap();
        assert_eq!(*src.ip(), UPLINK, "{flow} reached the server from {src}");
        assert!(ports.insert(src.port()), "two flows share the translated source {src}");
    }
    assert_eq!(ports.len(), FLOWS);

    let udp_entries = conntrack(d, &["--net", "lab"])
        .iter()
        .filter(|e| e["proto"] == "udp" && e["dst"].as_str() == Some(&echo.addr.to_string()))
        .count();
    assert!(udp_entries >= FLOWS, "conntrack lists {udp_entries} UDP flows to the server, {FLOWS} are live");
}

#[test]
fn internal_network_has_no_way_out() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("intnet", "10.251.6.0/24", &["--internal"]);
    d.add_net("extnet", "10.251.7.0/24", &[]);
    let ci = d.new_port("intnet");
    let ce = d.new_port("extnet");
    let tcp = TcpEcho::start(lab.o(), OUTSIDE);
    let udp = UdpEcho::start(lab.o(), OUTSIDE);

    assert!(ping(&ci.netns, ci.gateway, PING), "the internal container cannot ping its gateway");
    let cap = PacketSocket::open(lab.o(), "eth0");
    let before = d.stats();

    assert!(!ping(&ci.netns, OUTSIDE, Duration::from_secs(2)), "the internal container pinged the outside");
    let started = Instant::now();
    let conn = tcp_connect_from(&ci.netns, SocketAddrV4::new(ci.ip, 0), tcp.addr, Duration::from_secs(3));
    assert!(conn.is_err(), "the internal container connected to the outside");
    assert!(started.elapsed() < Duration::from_secs(10), "a refused connect took {:?}", started.elapsed());
    let sock = udp_socket(&ci.netns, ci.ip);
    let r = udp_round_trip(&sock, udp.addr, b"vswlab-internal", Duration::from_millis(300), Duration::from_secs(1));
    assert!(r.is_err(), "the internal container's UDP reached the outside and came back");

    let frames = cap.collect(Duration::from_millis(500));
    let leaked: Vec<String> =
        frames.iter().filter_map(|f| ipv4_of(f)).map(|p| format!("{} -> {}", p.src(), p.dst())).collect();
    assert!(leaked.is_empty(), "IPv4 from the internal network reached the outside: {leaked:?}");
    assert!(tcp.peers().is_empty(), "the outside server accepted {:?}", tcp.peers());
    assert!(udp.seen().is_empty(), "the outside server received {:?}", udp.seen());
    let after = d.stats();
    assert!(
        after.drops("no_route") > before.drops("no_route"),
        "traffic beyond an internal gateway was not counted in drops.no_route: {}",
        after.0["drops"]
    );
    assert!(ping(&ci.netns, ci.gateway, PING), "the internal container lost its gateway");
    assert!(
        conntrack(d, &[]).iter().all(|e| !e["src"].as_str().unwrap_or("").starts_with(&format!("{}:", ci.ip))),
        "conntrack has entries of the internal container"
    );

    // The normal network of the same daemon still has its way out.
    ping_detail(&ce.netns, OUTSIDE, PING).unwrap_or_else(|e| panic!("the external container cannot ping out: {e}"));
    let sock = udp_socket(&ce.netns, ce.ip);
    udp_round_trip(&sock, udp.addr, b"vswlab-external", Duration::from_millis(300), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the external container's UDP: {e}"));
    assert!(udp.seen().iter().all(|(s, _)| *s.ip() == UPLINK), "{:?}", udp.seen());
    let mut conn = tcp_connect_from(&ce.netns, SocketAddrV4::new(ce.ip, 0), tcp.addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the external container's TCP connect: {e}"));
    tcp_echo_round(&mut conn, b"vswlab-external-tcp").unwrap_or_else(|e| panic!("external TCP echo: {e}"));
    assert!(tcp.peers().iter().all(|p| *p.ip() == UPLINK), "{:?}", tcp.peers());
    drop(conn);

    // Internal is part of the network's persisted state: it shows, and it
    // survives a restart of the daemon (which comes back with its uplink).
    let show = |d: &Daemon| d.show_net("intnet")[0]["Internal"].clone();
    assert_eq!(show(d), true, "show-net intnet: Internal");
    assert_eq!(d.show_net("extnet")[0]["Internal"], false, "show-net extnet: Internal");
    let mut lab = lab;
    lab.d.terminate(Duration::from_secs(10)).expect("vswitchd did not stop on SIGTERM");
    lab.d.spawn();
    let d = &lab.d;
    assert_eq!(show(d), true, "show-net intnet after a restart: Internal");
    assert!(
        ping(&ci.netns, ci.gateway, Duration::from_secs(10)),
        "the internal container lost its gateway after a restart"
    );
    assert!(!ping(&ci.netns, OUTSIDE, Duration::from_secs(2)), "the internal container pinged out after a restart");
    ping_detail(&ce.netns, OUTSIDE, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the external container cannot ping out after a restart: {e}"));
}

#[test]
fn fragmented_udp_is_masqueraded() {
    // A datagram bigger than the MTU leaves the container as IP fragments
    // (only the first carries the UDP ports); the echo comes back fragmented
    // by the outside's kernel.
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("lab", "10.251.11.0/24", &[]);
    let c = d.new_port("lab");
    let echo = UdpEcho::start(lab.o(), OUTSIDE);
    let sock = udp_socket(&c.netns, c.ip);
    // Control: a datagram that fits passes.
    udp_round_trip(&sock, echo.addr, &[0x5a; 1000], Duration::from_millis(300), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("1000-byte datagram: {e}"));
    let big: Vec<u8> = (0..4000u32).map(|i| pattern_byte(i as u64)).collect();
    let before = d.stats();
    let r = udp_round_trip(&sock, echo.addr, &big, Duration::from_millis(300), Duration::from_secs(5));
    let after = d.stats();
    r.unwrap_or_else(|e| {
        panic!(
            "4000-byte (fragmented) datagram: {e}; the server received sizes {:?}; drops before {} after {}",
            echo.seen().iter().map(|(_, p)| p.len()).collect::<Vec<_>>(),
            before.0["drops"],
            after.0["drops"]
        )
    });
    assert!(
        echo.seen().iter().all(|(s, _)| *s.ip() == UPLINK),
        "{:?}",
        echo.seen().iter().map(|x| x.0).collect::<Vec<_>>()
    );
}

#[test]
fn two_containers_share_the_uplink_without_port_clashes() {
    // Both containers use the same local port towards the same server port:
    // the translated tuples would clash unless the switch picks another port.
    const LOCAL_PORT: u16 = 40000;
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("lab", "10.251.9.0/24", &[]);
    let a = d.new_port("lab");
    let b = d.new_port("lab");
    let tcp = TcpEcho::start(lab.o(), OUTSIDE);
    let udp = UdpEcho::start(lab.o(), OUTSIDE);

    let connect = |c: &Endpoint| {
        tcp_connect_from(&c.netns, SocketAddrV4::new(c.ip, LOCAL_PORT), tcp.addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("TCP connect from {}:{LOCAL_PORT}: {e}", c.ip))
    };
    let mut ca = connect(&a);
    let mut cb = connect(&b);
    // Both open at once, used in turns.
    for round in 0..5 {
        tcp_echo_round(&mut ca, format!("A-{round}").as_bytes()).unwrap_or_else(|e| panic!("A round {round}: {e}"));
        tcp_echo_round(&mut cb, format!("B-{round}").as_bytes()).unwrap_or_else(|e| panic!("B round {round}: {e}"));
    }
    let peers = tcp.peers();
    assert_eq!(peers.len(), 2, "the server accepted {peers:?}");
    assert!(peers.iter().all(|p| *p.ip() == UPLINK), "the server saw {peers:?}");
    assert_ne!(peers[0].port(), peers[1].port(), "two connections got the same translated source {peers:?}");

    // UDP the same way.
    let sa = in_ns(&a.netns, move || std::net::UdpSocket::bind((a.ip, LOCAL_PORT))).expect("bind A");
    let sb = in_ns(&b.netns, move || std::net::UdpSocket::bind((b.ip, LOCAL_PORT))).expect("bind B");
    for round in 0..3 {
        for (name, s) in [("A", &sa), ("B", &sb)] {
            let msg = format!("{name}-udp-{round}");
            udp_round_trip(s, udp.addr, msg.as_bytes(), Duration::from_millis(300), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{name} UDP round {round}: {e}"));
        }
    }
    let mut by_sender: HashMap<u8, HashSet<SocketAddrV4>> = HashMap::new();
    for (src, data) in udp.seen() {
        by_sender.entry(data[0]).or_default().insert(src);
    }
    let (srcs_a, srcs_b) = (&by_sender[&b'A'], &by_sender[&b'B']);
    assert_eq!(srcs_a.len(), 1, "A's datagrams came from {srcs_a:?}");
    assert_eq!(srcs_b.len(), 1, "B's datagrams came from {srcs_b:?}");
    let (sa_nat, sb_nat) = (*srcs_a.iter().next().unwrap(), *srcs_b.iter().next().unwrap());
    assert!(*sa_nat.ip() == UPLINK && *sb_nat.ip() == UPLINK, "UDP sources {sa_nat}, {sb_nat}");
    assert_ne!(sa_nat, sb_nat, "A's and B's UDP flows share a translated source");

    // The TCP connections still work after the UDP traffic.
    tcp_echo_round(&mut ca, b"A-last").unwrap_or_else(|e| panic!("A last: {e}"));
    tcp_echo_round(&mut cb, b"B-last").unwrap_or_else(|e| panic!("B last: {e}"));
}

#[test]
fn containers_still_reach_each_other_with_an_uplink() {
    let lab = Lab::start();
    let d = &lab.d;
    d.add_net("lab", "10.251.10.0/24", &[]);
    let a = d.new_port("lab");
    let b = d.new_port("lab");
    assert_eq!(a.gateway, ip("10.251.10.1"));
    assert!(ping(&a.netns, b.ip, PING), "A cannot ping B");
    assert!(ping(&b.netns, a.ip, PING), "B cannot ping A");
    assert!(ping(&a.netns, a.gateway, PING), "A cannot ping the gateway");
    tcp_stream(&b.netns, b.ip, &a.netns, 8 << 20).unwrap_or_else(|e| panic!("TCP A -> B: {e}"));
    // Traffic between containers is not translated: B sees A's own address.
    let echo = UdpEcho::start(&b.netns, b.ip);
    let sock = udp_socket(&a.netns, a.ip);
    udp_round_trip(&sock, echo.addr, b"vswlab-east-west", Duration::from_millis(300), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("UDP A -> B: {e}"));
    assert!(echo.seen().iter().all(|(s, _)| *s.ip() == a.ip), "B saw {:?}, not A's address", echo.seen());
    // And both still have their way out.
    assert!(ping(&a.netns, OUTSIDE, PING), "A cannot ping the outside");
    assert!(ping(&b.netns, OUTSIDE, PING), "B cannot ping the outside");
}
