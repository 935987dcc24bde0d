//! Lab tests: a real vswitchd, real namespaces and TAP devices, traffic made
//! by the tests with plain sockets. They need root (and fail, never pass,
//! without it). Each test starts its own daemon, makes its own uniquely named
//! namespaces, removes them even when it fails, and only ever sends to
//! addresses inside them.
//!
//! Run: `cargo test --test lab -- --test-threads=2` (add `--nocapture` to see
//! the figures the TCP and scale tests print).

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ports::netlink;
use ports::netns;
use serde_json::Value;

const PING: Duration = Duration::from_secs(5);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// An Ethernet frame: header and payload as given (no padding).
fn eth_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; proto::ethernet::HEADER_LEN];
    proto::ethernet::write_header(&mut f, proto::MacAddr(dst), proto::MacAddr(src), ethertype);
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet holding a UDP datagram (checksum 0: none) of `data`.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, data: &[u8]) -> Vec<u8> {
    let udp_len = 8 + data.len();
    let mut p = vec![0u8; proto::ipv4::MIN_HEADER_LEN + udp_len];
    proto::ipv4::write_header(
        &mut p,
        &proto::ipv4::Header { src, dst, protocol: proto::ipv4::PROTO_UDP, ttl: 64, payload_len: udp_len },
    );
    let u = &mut p[proto::ipv4::MIN_HEADER_LEN..];
    u[0..2].copy_from_slice(&40000u16.to_be_bytes());
    u[2..4].copy_from_slice(&9u16.to_be_bytes()); // discard
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    u[8..].copy_from_slice(data);
    p
}

/// Rewrite the IPv4 header checksum after editing the header of `p`.
fn fix_ipv4_checksum(p: &mut [u8]) {
    let hl = (((p[0] & 0x0f) as usize) * 4).min(p.len());
    p[10..12].fill(0);
    let sum = proto::checksum::compute(&p[..hl]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// Everything the control plane shows: list-nets, show-net of each network,
/// list-ports. Refused requests must leave it unchanged.
fn snapshot(d: &Daemon) -> Value {
    let nets = d.list_nets();
    let names: Vec<String> = nets
        .as_array()
        .expect("list-nets --json is an array")
        .iter()
        .map(|n| n["Name"].as_str().expect("Name").to_string())
        .collect();
    let shows: Vec<Value> = names.iter().map(|n| d.show_net(n)).collect();
    let ports = d.vsctl_json(&["list-ports", "--json"]);
    serde_json::json!({ "nets": nets, "show": shows, "ports": ports })
}

/// The one object of `show-net`.
fn show_one(d: &Daemon, net: &str) -> Value {
    let v = d.show_net(net);
    let arr = v.as_array().expect("show-net prints an array");
    assert_eq!(arr.len(), 1, "show-net {net}: {v}");
    arr[0].clone()
}

/// Write `bytes` to the control socket, close our side and return whatever
/// comes back within a few seconds.
fn raw_control(socket: &std::path::Path, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(socket).expect("connect to the control socket");
    conn.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let _ = conn.write_all(bytes); // the daemon may stop reading a huge request
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// `f(0..n)` on `threads` threads; results in index order.
fn parallel_map<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let out: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                *out[i].lock().unwrap() = Some(f(i));
            });
        }
    });
    out.into_iter().map(|m| m.into_inner().unwrap().expect("every index done")).collect()
}

/// An ICMP echo reply frame carrying `payload`: the receiving kernel drops it
/// without answering (no neighbour entry needed), an AF_PACKET socket sees it.
fn icmp_echo_reply_frame(src: ([u8; 6], Ipv4Addr), dst: ([u8; 6], Ipv4Addr), payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload.len()];
    let n = proto::icmp::write_echo_request(
        &mut f,
        (proto::MacAddr(src.0), src.1),
        (proto::MacAddr(dst.0), dst.1),
        0x5ca1,
        1,
        payload,
    );
    f.truncate(n);
    let icmp = &mut f[14 + 20..];
    icmp[0] = proto::icmp::TYPE_ECHO_REPLY;
    icmp[2..4].fill(0);
    let sum = proto::checksum::compute(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}

// ---------------------------------------------------------------------------

#[test]
fn two_namespaces_reach_each_other_and_the_gateway() {
    let d = Daemon::start();
    d.add_net("lab1", "10.101.0.0/24", &[]);
    let a = d.new_port("lab1");
    let b = d.new_port("lab1");
    let gw = ip("10.101.0.1");
    assert_eq!(a.gateway, gw, "{:?}", a.json);
    assert_eq!(a.ip, ip("10.101.0.2"), "first endpoint gets .2");
    assert_eq!(b.ip, ip("10.101.0.3"), "second endpoint gets .3");
    assert_eq!(a.prefix_len, 24);

    assert!(ping(&a.netns, b.ip, PING), "A cannot ping B");
    assert!(ping(&b.netns, a.ip, PING), "B cannot ping A");
    assert!(ping(&a.netns, gw, PING), "A cannot ping the gateway");
    assert!(ping(&b.netns, gw, PING), "B cannot ping the gateway");

    let mb = env_u64("VSWITCH_LAB_TCP_MB", 20);
    let bytes = mb << 20;
    let t = tcp_stream(&b.netns, b.ip, &a.netns, bytes).unwrap_or_else(|e| panic!("TCP stream A -> B: {e}"));
    let gbit = bytes as f64 * 8.0 / t.as_secs_f64() / 1e9;
    println!("lab: TCP A -> B: {mb} MiB intact in {t:.2?} ({gbit:.2} Gbit/s)");
    eprintln!("lab: TCP A -> B: {mb} MiB intact in {t:.2?} ({gbit:.2} Gbit/s)");
    tcp_stream(&a.netns, a.ip, &b.netns, 4 << 20).unwrap_or_else(|e| panic!("TCP stream B -> A: {e}"));

    // The counters saw the stream: A sent at least `bytes` into the switch.
    let stats = d.stats();
    let a_rx = stats.port_counter(&a.stats_name(), "rx_bytes");
    let b_tx = stats.port_counter(&b.stats_name(), "tx_bytes");
    assert!(a_rx >= bytes && b_tx >= bytes, "stats: A rx_bytes {a_rx}, B tx_bytes {b_tx}, stream was {bytes} bytes");
    // Offloads are on with no ethtool step in the namespace: the stream came
    // as GSO super-frames (frames far above the 1514-byte wire maximum), and
    // still arrived intact above.
    let a_rx_packets = stats.port_counter(&a.stats_name(), "rx_packets");
    assert!(a_rx / a_rx_packets > 4000, "A sent {a_rx} bytes in {a_rx_packets} frames: no TSO super-frames");

    // Both endpoints sit in the FDB as static entries.
    let fdb = d.vsctl_json(&["fdb-show", "lab1", "--json"]);
    for e in [&a, &b] {
        let entry = fdb
            .as_array()
            .expect("fdb-show --json is an array")
            .iter()
            .find(|f| f["mac"].as_str().map(str::to_lowercase) == Some(e.mac.to_lowercase()))
            .unwrap_or_else(|| panic!("{} not in fdb: {fdb}", e.mac));
        assert_eq!(entry["type"], "static", "{entry}");
    }
}

#[test]
fn two_networks_stay_isolated() {
    let d = Daemon::start();
    d.add_net("neta", "10.102.1.0/24", &[]);
    d.add_net("netb", "10.102.2.0/24", &[]);
    let a = d.new_port("neta");
    let a2 = d.new_port("neta");
    let b = d.new_port("netb");
    // Control: the same kind of traffic works within a network.
    assert!(ping(&a.netns, a2.ip, PING), "A cannot ping A2 on its own net");
    assert!(ping(&b.netns, b.gateway, PING), "B cannot ping its gateway");

    let cap_b = PacketSocket::open(&b.netns, "eth0");
    let cap_a2 = PacketSocket::open(&a2.netns, "eth0");
    let before = d.stats();

    // L3: A's packets for B's address go to A's gateway, which must not route them.
    assert!(!ping(&a.netns, b.ip, Duration::from_secs(2)), "A reached B");

    // L2: frames straight to B's MAC, ARP for B's address, and broadcasts.
    let marker = b"VSWLAB-ISOLATION";
    let raw = PacketSocket::open(&a.netns, "eth0");
    let unicast =
        eth_frame(b.mac_bytes(), a.mac_bytes(), proto::ethernet::ETHERTYPE_IPV4, &ipv4_udp(a.ip, b.ip, marker));
    let bcast = eth_frame(
        [0xff; 6],
        a.mac_bytes(),
        proto::ethernet::ETHERTYPE_IPV4,
        &ipv4_udp(a.ip, ip("255.255.255.255"), marker),
    );
    let mut arp = [0u8; 64];
    let n = proto::arp::write_frame(
        &mut arp,
        proto::arp::OP_REQUEST,
        proto::arp::Host { mac: proto::MacAddr(a.mac_bytes()), ip: a.ip },
        proto::arp::Host { mac: proto::MacAddr::ZERO, ip: b.ip },
        proto::MacAddr::BROADCAST,
    );
    for _ in 0..3 {
        raw.send(&unicast).expect("send unicast");
        raw.send(&bcast).expect("send broadcast");
        raw.send(&arp[..n]).expect("send ARP");
    }

    let in_b = cap_b.collect(Duration::from_millis(700));
    let in_a2 = cap_a2.collect(Duration::from_millis(100));
    let a_mac = a.mac_bytes();
    let leaked: Vec<&Vec<u8>> =
        in_b.iter().filter(|f| f.len() >= 12 && f[6..12] == a_mac || contains(f, marker)).collect();
    assert!(leaked.is_empty(), "{} frame(s) from network A reached B: {:02x?}", leaked.len(), leaked);
    assert_eq!(arp_requests_for(&in_b, b.ip), 0, "A's ARP reached B");
    // Control: the broadcast was flooded within A.
    assert!(in_a2.iter().any(|f| contains(f, marker)), "A's broadcast did not reach A2 on the same network");

    let after = d.stats();
    let name = b.stats_name();
    let tx = |s: &Stats| s.port_counter(&name, "tx_packets");
    assert_eq!(tx(&after), tx(&before), "stats: the switch delivered frames to B's port while only A sent");
    assert!(
        after.drops("no_route") > before.drops("no_route"),
        "pings routed beyond A's gateway were not counted in drops.no_route: {}",
        after.0["drops"]
    );
}

#[test]
fn arp_for_a_known_address_is_answered_not_flooded() {
    let d = Daemon::start();
    d.add_net("lab3", "10.103.0.0/24", &[]);
    let a = d.new_port("lab3");
    let b = d.new_port("lab3");
    let c = d.new_port("lab3");
    let cap_c = PacketSocket::open(&c.netns, "eth0");

    assert_eq!(arp_entry(&a.netns, b.ip), None, "A already knows B before the test");
    let rx = udp_socket(&b.netns, b.ip);
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let port = rx.local_addr().unwrap().port();
    let tx = udp_socket(&a.netns, a.ip);
    let mut buf = [0u8; 64];
    let mut got = None;
    for _ in 0..6 {
        tx.send_to(b"hello-over-arp", (b.ip, port)).unwrap();
        if let Ok((n, from)) = rx.recv_from(&mut buf) {
            got = Some((buf[..n].to_vec(), from));
            break;
        }
    }
    let (data, from) = got.expect("A's datagram never reached B (ARP unanswered?)");
    assert_eq!(data, b"hello-over-arp");
    assert_eq!(from.ip(), std::net::IpAddr::V4(a.ip));
    assert_eq!(
        arp_entry(&a.netns, b.ip).map(|m| m.to_lowercase()),
        Some(b.mac.to_lowercase()),
        "A resolved B to the wrong MAC"
    );
    // Resolving the gateway is answered by the switch too.
    assert!(ping(&a.netns, a.gateway, PING), "A cannot ping the gateway");

    let frames = cap_c.collect(Duration::from_millis(500));
    assert_eq!(arp_requests_for(&frames, b.ip), 0, "A's ARP request for known B was flooded to C");
    assert_eq!(arp_requests_for(&frames, a.gateway), 0, "A's ARP request for the gateway was flooded to C");

    // Control (the capture works): ARP for an unknown address does flood.
    let unknown = ip("10.103.0.200");
    tx.send_to(b"nobody", (unknown, 9)).unwrap();
    let frames = cap_c.collect(Duration::from_millis(2500));
    assert!(
        arp_requests_for(&frames, unknown) >= 1,
        "ARP for an unknown target did not flood to C ({} frames seen)",
        frames.len()
    );
}

#[test]
fn state_and_traffic_survive_restarts() {
    let mut d = Daemon::start();
    d.add_net("lab4", "10.104.0.0/24", &["--mtu", "1450"]);
    let a = d.new_port("lab4");
    let b = d.new_port("lab4");
    assert!(ping(&a.netns, b.ip, PING), "A cannot ping B");
    let before = snapshot(&d);

    // kill -9: the namespaces and their TAPs outlive the daemon.
    d.kill9();
    assert!(netns::exists(&a.netns) && netns::exists(&b.netns));
    ifindex_in(&a.netns, "eth0");
    d.spawn();
    assert!(ping(&a.netns, b.ip, Duration::from_secs(10)), "A cannot ping B after kill -9 and restart");
    assert!(ping(&b.netns, b.gateway, PING), "B cannot ping the gateway");
    assert_eq!(snapshot(&d), before, "state after kill -9 differs from before");
    tcp_stream(&b.netns, b.ip, &a.netns, 2 << 20).unwrap_or_else(|e| panic!("TCP after kill -9 restart: {e}"));

    // IPAM survived: the next endpoint gets the next free address.
    let c = d.new_port("lab4");
    assert_eq!(c.ip, ip("10.104.0.4"), "IPAM lost its allocations");
    let before = snapshot(&d);

    // Clean stop: SIGTERM.
    let status = d.terminate(Duration::from_secs(10)).expect("vswitchd did not stop on SIGTERM");
    assert!(status.success(), "vswitchd exited with {status} on SIGTERM");
    d.spawn();
    assert_eq!(snapshot(&d), before, "state after SIGTERM restart differs");
    for (x, y) in [(&a, &c), (&c, &b), (&b, &a)] {
        assert!(
            ping(&x.netns, y.ip, Duration::from_secs(10)),
            "{} cannot ping {} after SIGTERM restart",
            x.netns,
            y.ip
        );
    }

    // A namespace that vanished while the daemon was down (the user deleted
    // it) does not keep the daemon from starting or the others from forwarding.
    let mine = NetnsGuard::create();
    let m = d.add_port("lab4", &mine.0, &[]);
    assert!(ping(&mine.0, a.ip, PING), "the user's namespace cannot ping A");
    d.kill9();
    netns::delete(&mine.0).expect("delete the user's namespace");
    d.spawn();
    assert!(ping(&a.netns, b.ip, Duration::from_secs(10)), "A cannot ping B after a namespace vanished");
    assert!(!ping(&a.netns, m.ip, Duration::from_secs(1)), "the vanished namespace answers");
}

#[test]
fn malformed_frames_are_counted_and_dropped() {
    let mut d = Daemon::start();
    d.add_net("lab5", "10.105.0.0/24", &[]);
    let a = d.new_port("lab5");
    let b = d.new_port("lab5");
    assert!(ping(&a.netns, b.ip, PING), "A cannot ping B");

    let raw = PacketSocket::open(&a.netns, "eth0");
    let cap_b = PacketSocket::open(&b.netns, "eth0");
    let (am, bm) = (a.mac_bytes(), b.mac_bytes());
    let marker = b"VSWLAB-MALFORMED";
    let good_ip = ipv4_udp(a.ip, b.ip, marker);
    const V4: u16 = proto::ethernet::ETHERTYPE_IPV4;

    // Frames no parser may accept.
    let mut malformed: Vec<(&str, Vec<u8>)> = Vec::new();
    malformed.push(("Ethernet header only", eth_frame(bm, am, V4, &[])));
    malformed.push(("truncated IPv4 header", eth_frame(bm, am, V4, &good_ip[..12])));
    let mut lying = good_ip.clone();
    lying[2..4].copy_from_slice(&1400u16.to_be_bytes());
    fix_ipv4_checksum(&mut lying);
    malformed.push(("IPv4 total length 1400 in a short frame", eth_frame(bm, am, V4, &lying)));
    let mut lying_ihl = good_ip.clone();
    lying_ihl[0] = 0x4f; // 60-byte header in a 44-byte packet
    malformed.push(("IPv4 IHL beyond the packet", eth_frame(bm, am, V4, &lying_ihl)));
    let mut short_ihl = good_ip.clone();
    short_ihl[0] = 0x43; // 12-byte header: less than the minimum
    malformed.push(("IPv4 IHL below 5", eth_frame(bm, am, V4, &short_ihl)));
    let mut small_total = good_ip.clone();
    small_total[2..4].copy_from_slice(&10u16.to_be_bytes());
    fix_ipv4_checksum(&mut small_total);
    malformed.push(("IPv4 total length below its header", eth_frame(bm, am, V4, &small_total)));
    malformed.push(("truncated ARP", eth_frame([0xff; 6], am, proto::ethernet::ETHERTYPE_ARP, &[0, 1, 8, 0, 6])));
    // Frames that are malformed or of a kind the switch does not carry.
    let mut odd: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut llc = vec![0xaa, 0xaa, 0x03, 0, 0, 0];
    llc.extend_from_slice(marker);
    odd.push(("802.3 length in the EtherType field", eth_frame(bm, am, llc.len() as u16, &llc)));
    odd.push(("multicast source MAC", eth_frame(bm, [0x01, 0x00, 0x5e, 0x00, 0x00, 0x42], V4, &good_ip)));

    let reps = 5u64;
    let before = d.stats();
    for _ in 0..reps {
        for (what, f) in malformed.iter().chain(odd.iter()) {
            raw.send(f).unwrap_or_else(|e| panic!("send {what}: {e}"));
        }
    }
    let n_malformed = reps * malformed.len() as u64;
    let n_all = reps * (malformed.len() + odd.len()) as u64;
    let counted = |s: &Stats| {
        (
            s.drops("malformed") - before.drops("malformed"),
            s.drops("malformed") + s.drops("unsupported_ethertype")
                - before.drops("malformed")
                - before.drops("unsupported_ethertype"),
        )
    };
    let mut seen = (0, 0);
    let done = wait_for(Duration::from_secs(3), || {
        seen = counted(&d.stats());
        seen.0 >= n_malformed && seen.1 >= n_all
    });
    assert!(
        done,
        "sent {n_malformed} malformed frames and {n_all} in all; drops.malformed rose by {}, \
         malformed + unsupported_ethertype by {}",
        seen.0, seen.1
    );
    assert!(d.alive(), "vswitchd died");

    // None of them was forwarded to B.
    let in_b = cap_b.collect(Duration::from_millis(300));
    let leaked: Vec<&Vec<u8>> = in_b.iter().filter(|f| contains(f, marker)).collect();
    assert!(leaked.is_empty(), "{} malformed frame(s) were forwarded to B: {:02x?}", leaked.len(), leaked);
    // A multicast source must not be learned.
    let fdb = d.vsctl_ok(&["fdb-show", "lab5", "--json"]);
    assert!(!fdb.to_lowercase().contains("01:00:5e:00:00:42"), "multicast source learned: {fdb}");
    // And the daemon still serves.
    assert!(ping(&a.netns, b.ip, PING), "A cannot ping B afterwards");
    assert!(ping(&b.netns, a.gateway, PING), "B cannot ping the gateway");
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let mut d = Daemon::start();
    let net_id = d.add_net("lab6", "10.106.0.0/16", &[]);
    let p1 = d.new_port("lab6");
    d.add_net("tiny6", "10.107.0.0/29", &[]);
    // A /29 holds 6 hosts: the gateway and 5 endpoints.
    let mut tiny = Vec::new();
    for _ in 0..5 {
        tiny.push(d.new_port("tiny6"));
    }
    let fresh = d.ns_name();
    let state = snapshot(&d);

    let refused = |what: &str, args: &[&str], words: &[&str]| {
        let err = d.vsctl_err(args);
        assert_one_line_naming(what, &err, words);
        assert_eq!(snapshot(&d), state, "{what}: state changed by a refused request");
        assert!(!netns::exists(&fresh), "{what}: refused add-port left namespace {fresh} behind");
    };
    let p1_ip = p1.ip.to_string();
    refused("prefix length 33", &["add-net", "x6", "--subnet", "10.1.0.0/33"], &["10.1.0.0/33"]);
    refused("not a CIDR", &["add-net", "x6", "--subnet", "not-a-cidr"], &["not-a-cidr"]);
    refused("octet 300", &["add-net", "x6", "--subnet", "10.1.0.300/24"], &["10.1.0.300/24"]);
    refused("overlapping subnet", &["add-net", "x6", "--subnet", "10.106.5.0/24"], &["overlap"]);
    refused("duplicate name", &["add-net", "lab6", "--subnet", "10.200.0.0/16"], &["lab6"]);
    refused(
        "gateway outside the subnet",
        &["add-net", "x6", "--subnet", "10.108.0.0/24", "--gateway", "10.109.0.1"],
        &["10.109.0.1"],
    );
    refused("del-net of an unknown network", &["del-net", "nosuch6"], &["nosuch6"]);
    refused("add-port to an unknown network", &["add-port", "nosuch6", &fresh], &["nosuch6"]);
    refused("del-port of an unknown port", &["del-port", "lab6", &fresh], &[&fresh]);
    refused("del-port on an unknown network", &["del-port", "nosuch6", &p1.netns], &["nosuch6"]);
    refused("--ip outside the subnet", &["add-port", "lab6", &fresh, "--ip", "10.99.0.5"], &["10.99.0.5"]);
    refused("--ip taken", &["add-port", "lab6", &fresh, "--ip", &p1_ip], &[&p1_ip]);
    refused("--ip is the gateway", &["add-port", "lab6", &fresh, "--ip", "10.106.0.1"], &["10.106.0.1"]);
    refused("port already attached", &["add-port", "lab6", &p1.netns], &[&p1.netns]);
    refused("bad netns name", &["add-port", "lab6", "bad/name"], &["bad/name"]);
    refused("del-net with ports attached", &["del-net", "lab6"], &[&p1.netns]);
    refused("del-net bridge", &["del-net", "bridge"], &["bridge"]);
    refused(
        "pool exhausted",
        &["add-port", "tiny6", &fresh],
        &["exhaust", "no free", "full", "available", "no more", "pool"],
    );
    refused(
        "ip-range outside the subnet",
        &["add-net", "x6", "--subnet", "10.108.0.0/24", "--ip-range", "10.109.0.0/28"],
        &["10.109.0.0/28"],
    );
    refused("MTU too small", &["add-net", "x6", "--subnet", "10.108.0.0/24", "--mtu", "50"], &["mtu"]);

    // Garbage on the control socket: answered with an error or dropped,
    // never a crash, and the daemon goes on serving.
    let junk: [&[u8]; 6] = [
        b"this is not json\n",
        b"{\"unknown\": [1, 2, 3]}\n",
        b"[]\n",
        b"\xff\xfe\x00\x01 binary\n",
        b"{\"truncated",
        &[b'{'; 4 << 20],
    ];
    for (k, bytes) in junk.iter().enumerate() {
        let answer = raw_control(&d.socket, bytes);
        assert!(d.alive(), "vswitchd died on junk request #{k}; answer {answer:?}");
        assert_eq!(snapshot(&d), state, "junk request #{k} changed the state");
    }

    // The idempotent variants succeed and change nothing either.
    let id = d.vsctl_ok(&["add-net", "lab6", "--subnet", "10.106.0.0/16", "--may-exist"]);
    assert_eq!(id.trim(), net_id, "add-net --may-exist printed another id");
    let again = Endpoint::parse(&d.vsctl_ok(&["add-port", "lab6", &p1.netns, "--may-exist"]));
    assert_eq!((again.ip, &again.mac), (p1.ip, &p1.mac));
    d.vsctl_ok(&["del-net", "nosuch6", "--if-exists"]);
    d.vsctl_ok(&["del-port", "lab6", &fresh, "--if-exists"]);
    assert_eq!(snapshot(&d), state, "an idempotent request changed the state");

    // And the real thing works once the ports are gone.
    for p in &tiny {
        d.vsctl_ok(&["del-port", "tiny6", &p.netns]);
    }
    d.vsctl_ok(&["del-net", "tiny6"]);
    d.vsctl_ok(&["del-port", "lab6", &p1.netns]);
    d.vsctl_ok(&["del-net", "lab6"]);
    d.vsctl_ok(&["del-net", "lab6", "--if-exists"]);
    let names: Vec<Value> = d.list_nets().as_array().unwrap().iter().map(|n| n["Name"].clone()).collect();
    assert_eq!(names, vec![Value::from("bridge")], "left: {names:?}");
}

#[test]
fn add_port_plumbs_the_namespace() {
    let d = Daemon::start();
    let id1 = d.add_net("lab7", "10.110.0.0/24", &["--mtu", "1400"]);
    d.add_net("lab7b", "10.111.0.0/24", &[]);

    let ns = d.ns_name();
    let e = d.add_port("lab7", &ns, &[]);
    assert_eq!(e.interface, "eth0");
    assert_eq!(e.netns, ns);
    assert!(
        e.network == id1 || e.network == "lab7",
        "Network {:?} is neither the network's id nor its name",
        e.network
    );
    assert_eq!(e.ip, ip("10.110.0.2"));
    assert_eq!(e.prefix_len, 24);
    assert_eq!(e.gateway, ip("10.110.0.1"));
    assert_eq!(e.mac.to_lowercase(), "02:42:0a:6e:00:02");

    let (eth0, lo, addrs) = in_ns(&ns, || {
        let eth0 = netlink::link("eth0").unwrap().expect("no eth0");
        let lo = netlink::link("lo").unwrap().expect("no lo");
        let addrs = netlink::ipv4_addrs(eth0.index).unwrap();
        (eth0, lo, addrs)
    });
    assert_eq!(format_mac(eth0.mac.expect("eth0 MAC")), "02:42:0a:6e:00:02");
    assert_eq!(eth0.mtu, 1400, "eth0 MTU");
    assert!(eth0.up, "eth0 is down");
    assert!(lo.up, "lo is down");
    assert_eq!(addrs, vec![(ip("10.110.0.2"), 24)], "eth0 addresses");
    let defaults = |ns: &str| -> Vec<Route> {
        routes_in(ns).into_iter().filter(|r| r.dst.is_unspecified() && r.mask.is_unspecified()).collect()
    };
    let want = vec![Route {
        iface: "eth0".into(),
        dst: Ipv4Addr::UNSPECIFIED,
        gateway: ip("10.110.0.1"),
        mask: Ipv4Addr::UNSPECIFIED,
    }];
    assert_eq!(defaults(&ns), want, "default route");

    // show-net lists the endpoint; Options carry the MTU.
    let show = show_one(&d, "lab7");
    assert_eq!(show["Name"], "lab7");
    assert_eq!(show["Id"], id1.as_str());
    assert_eq!(show["Driver"], "bridge");
    assert_eq!(show["Scope"], "local");
    assert_eq!(show["IPAM"]["Config"][0]["Subnet"], "10.110.0.0/24");
    assert_eq!(show["IPAM"]["Config"][0]["Gateway"], "10.110.0.1");
    assert_eq!(show["Options"]["com.docker.network.driver.mtu"], "1400");
    let c = &show["Containers"][e.id.as_str()];
    assert_eq!(c["EndpointID"], e.id.as_str(), "Containers: {show}");
    assert_eq!(c["IPv4Address"], "10.110.0.2/24");
    assert_eq!(c["MacAddress"].as_str().map(str::to_lowercase).as_deref(), Some("02:42:0a:6e:00:02"));

    // --ip, --mac, --name.
    let ns3 = d.ns_name();
    let e3 = d.add_port("lab7", &ns3, &["--ip", "10.110.0.50", "--mac", "02:00:00:aa:bb:cc", "--name", "web"]);
    assert_eq!(e3.ip, ip("10.110.0.50"));
    assert_eq!(e3.mac.to_lowercase(), "02:00:00:aa:bb:cc");
    assert_eq!(e3.name, "web");
    let mac3 = in_ns(&ns3, || netlink::link("eth0").unwrap().unwrap().mac);
    assert_eq!(mac3.map(format_mac).as_deref(), Some("02:00:00:aa:bb:cc"));
    assert!(ping(&ns3, e.ip, PING), "the --ip/--mac port cannot ping eth0's");

    // A second network of the same namespace: eth1, no second default route.
    let e2 = d.add_port("lab7b", &ns, &[]);
    assert_eq!(e2.interface, "eth1");
    assert_eq!(e2.ip, ip("10.111.0.2"));
    let (eth1, addrs1) = in_ns(&ns, || {
        let eth1 = netlink::link("eth1").unwrap().expect("no eth1");
        let addrs = netlink::ipv4_addrs(eth1.index).unwrap();
        (eth1, addrs)
    });
    assert_eq!(eth1.mtu, 1500, "eth1 MTU");
    assert_eq!(format_mac(eth1.mac.unwrap()), "02:42:0a:6f:00:02");
    assert_eq!(addrs1, vec![(ip("10.111.0.2"), 24)]);
    assert_eq!(defaults(&ns), want, "default routes after eth1");
    assert!(ping(&ns, ip("10.111.0.1"), PING), "eth1's gateway");

    // del-port removes the device; the namespace stays while it has ports.
    d.vsctl_ok(&["del-port", "lab7b", &ns]);
    assert!(netns::exists(&ns), "namespace removed with a port left");
    assert_eq!(in_ns(&ns, || netlink::link("eth1").unwrap()), None, "eth1 left");
    assert!(in_ns(&ns, || netlink::link("eth0").unwrap()).is_some());
    assert_eq!(show_one(&d, "lab7b")["Containers"].as_object().map(|m| m.len()), Some(0));
    // ... and an owned namespace goes with its last port.
    d.vsctl_ok(&["del-port", "lab7", &ns]);
    assert!(
        wait_for(Duration::from_secs(5), || !netns::exists(&ns)),
        "vswitchd's namespace {ns} outlived its last port"
    );

    // A namespace the user made is left alone.
    let mine = NetnsGuard::create();
    let e4 = d.add_port("lab7", &mine.0, &[]);
    assert_eq!(e4.interface, "eth0");
    assert!(ping(&mine.0, e3.ip, PING), "pre-existing namespace cannot ping");
    d.vsctl_ok(&["del-port", "lab7", &mine.0]);
    assert!(netns::exists(&mine.0), "del-port deleted the user's namespace");
    let name = mine.0.clone();
    // When del-port returns, the device is gone (scripts re-attach at once).
    let left = in_ns(&name, || netlink::link("eth0").unwrap());
    assert_eq!(left, None, "eth0 still in the user's namespace after del-port returned");

    // Detach and re-attach at once: the same plumbing as the first time.
    let again = d.add_port("lab7", &mine.0, &[]);
    assert_eq!(again.interface, "eth0", "re-attached right after del-port");
    let want0 = vec![Route { gateway: again.gateway, ..want[0].clone() }];
    assert_eq!(defaults(&mine.0), want0, "default route after re-attaching");
    assert!(ping(&mine.0, e3.ip, PING), "re-attached namespace cannot ping");
    d.vsctl_ok(&["del-port", "lab7", &mine.0]);
    assert!(netns::exists(&mine.0), "del-port deleted the user's namespace");
}

#[test]
fn scale_many_namespaces_on_one_network() {
    let n = env_u64("VSWITCH_LAB_SCALE", 1000) as usize;
    assert!(n >= 2, "VSWITCH_LAB_SCALE must be at least 2");
    let d = Daemon::start();
    d.add_net("scale", "10.120.0.0/16", &[]);
    let rss_before = d.rss_kib();

    let names: Vec<String> = (0..n).map(|_| d.ns_name()).collect();
    let endpoints: Mutex<Vec<Option<Endpoint>>> = Mutex::new(vec![None; n]);
    let next = AtomicUsize::new(0);
    let clients = env_u64("VSWITCH_LAB_SCALE_CLIENTS", 4) as usize;
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let out = d.vsctl_ok(&["add-port", "scale", &names[i]]);
                endpoints.lock().unwrap()[i] = Some(Endpoint::parse(&out));
            });
        }
    });
    let attach = start.elapsed();
    let rss_after = d.rss_kib();
    let endpoints: Vec<Endpoint> = endpoints.into_inner().unwrap().into_iter().map(Option::unwrap).collect();
    let report = format!(
        "lab scale: attached {n} namespaces in {attach:.2?} ({:.1} ms each, {clients} vsctl \
         clients); vswitchd VmRSS {rss_before} KiB before, {rss_after} KiB after \
         ({:.1} KiB per port)",
        attach.as_secs_f64() * 1e3 / n as f64,
        (rss_after as f64 - rss_before as f64) / n as f64
    );
    println!("{report}");
    eprintln!("{report}");

    let ips: HashSet<Ipv4Addr> = endpoints.iter().map(|e| e.ip).collect();
    assert_eq!(ips.len(), n, "duplicate addresses handed out");
    let stats = d.stats();
    // The n endpoints and the network's DNS service port.
    assert_eq!(stats.0["ports"].as_array().map(Vec::len), Some(n + 1), "stats does not list {n} ports and the service");

    // Every namespace forwards. Kernel pings between all of them cannot show
    // it: each needs neighbour entries, and the host's ARP table is shared by
    // all namespaces (net.ipv4.neigh.default.gc_thresh3, 1024 entries by
    // default): a thousand namespaces pinging overflow it ("neighbor table
    // overflow") and the kernel drops their packets before they reach eth0.
    // So each namespace speaks with frames of its own on an AF_PACKET socket,
    // leaving its kernel's ARP table alone: it resolves the gateway by ARP and
    // pings it, resolves its next peer by ARP (the switch answers with the
    // peer's MAC) and sends it a frame, which the peer must receive.
    let start = Instant::now();
    let socks: Vec<PacketSocket> = parallel_map(n, 16, |i| PacketSocket::open(&endpoints[i].netns, "eth0"));
    let gw = endpoints[0].gateway;
    let tag = |from: usize, to: usize| format!("vswlab-scale:{from}>{to};").into_bytes();
    let got: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
    let results: Vec<Result<(), String>> = parallel_map(n, 16, |i| {
        let (e, sock) = (&endpoints[i], &socks[i]);
        let (peer_i, prev_i) = ((i + 1) % n, (i + n - 1) % n);
        let peer = &endpoints[peer_i];
        let mine = tag(prev_i, i);
        let mut other = |f: &[u8]| {
            if contains(f, &mine) {
                got[i].store(true, Ordering::Relaxed);
            }
        };
        let me = (e.mac_bytes(), e.ip);
        let gw_mac = sock.arp_resolve(me, gw, PING, &mut other).ok_or("ARP for the gateway unanswered")?;
        if !sock.ping_raw(me, (gw_mac, gw), PING, &mut other) {
            return Err(format!("no echo reply from the gateway (MAC {})", format_mac(gw_mac)));
        }
        let peer_mac = sock.arp_resolve(me, peer.ip, PING, &mut other).ok_or("ARP for the peer unanswered")?;
        if peer_mac != peer.mac_bytes() {
            return Err(format!("ARP says {} is at {}, not {}", peer.ip, format_mac(peer_mac), peer.mac));
        }
        sock.send(&icmp_echo_reply_frame(me, (peer_mac, peer.ip), &tag(i, peer_i)))
            .map_err(|e| format!("send to peer: {e}"))?;
        Ok(())
    });
    // The frames the peers sent: most were seen while waiting for answers.
    let missing: Vec<usize> = (0..n).filter(|&j| !got[j].load(Ordering::Relaxed)).collect();
    let still: Vec<bool> = parallel_map(missing.len(), 16, |k| {
        let j = missing[k];
        let mine = tag((j + n - 1) % n, j);
        let deadline = Instant::now() + Duration::from_secs(1);
        std::iter::from_fn(|| socks[j].recv_frame(deadline)).any(|f| contains(&f, &mine))
    });
    let checked = start.elapsed();
    let mut failures: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.as_ref().err().map(|why| format!("#{i} {} ({}): {why}", endpoints[i].netns, endpoints[i].ip))
        })
        .collect();
    for (k, &j) in missing.iter().enumerate() {
        if !still[k] {
            let e = &endpoints[j];
            failures.push(format!("#{j} {} ({}) did not receive the frame of #{}", e.netns, e.ip, (j + n - 1) % n));
        }
    }

    // And the namespaces' own kernels forward too, in a sample that stays
    // far from the neighbour table's limit.
    let sample: Vec<usize> = (0..8).map(|k| k * (n - 1) / 7).collect();
    for &i in &sample {
        let e = &endpoints[i];
        for dst in [gw, endpoints[(i + n / 2) % n].ip] {
            if let Err(why) = ping_detail(&e.netns, dst, PING) {
                failures.push(format!("kernel ping #{i} {} -> {dst}: {why}", e.netns));
            }
        }
    }
    let rss_traffic = d.rss_kib();
    let report = format!(
        "lab scale: every one of {n} namespaces resolved and pinged the gateway and reached its peer \
         in {checked:.2?} ({} failures); vswitchd VmRSS {rss_traffic} KiB after traffic",
        failures.len()
    );
    println!("{report}");
    eprintln!("{report}");
    assert!(
        failures.is_empty(),
        "{} failures, first: {:#?}\ndrops {}\nworkers {}",
        failures.len(),
        &failures[..failures.len().min(12)],
        d.stats().0["drops"],
        d.stats().0["workers"]
    );
}
