//! Criterion benches of the pipeline, one group per stage, on one core.
//!
//! A switch with no worker threads is driven by `poll_all` on the bench
//! thread; its ports are in-memory ports. Every iteration is one batch: the
//! input port holds a batch of frames, `poll_all` receives and handles it,
//! and the frames that came out are put back in as the next batch (or, where
//! they cannot be, given back to the port they came out of). Buffers go
//! round that loop, so the measured loop allocates nothing.
//!
//! Criterion reports frames in as elem/s. After each group a line
//! `Mpps per core` gives the same figure plainly (median sample), with the
//! copies sent where a frame goes out more than once (flooding).
//!
//! The figures include the in-memory ports (lock-free queues, one copy in and
//! one out per frame), which TAP ports replace with a syscall; the
//! `l2/mem_port_only` bench measures that part alone, without the switch, and
//! the `*_engine` benches the switch alone, with ports that have no queues.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ports::mem::MemPort;
use ports::{FrameIo, Offload};
use proto::ethernet::{self, ETHERTYPE_IPV4};
use proto::{arp, icmp, icmpv6, ipv4, ipv6, ndp, vxlan, MacAddr};
use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switch::{Ipv6Spec, NetworkSpec, PortSpec, Switch, UplinkSpec};

/// Frames per iteration: one receive batch of the engine.
const BATCH: usize = 32;
/// Frame size for the forwarding benches.
const FRAME_LEN: usize = 64;
/// Queue depth of each in-memory port.
const QUEUE: usize = 1024;
/// MAC of a host nobody knows: frames to it flood.
const STRANGER: MacAddr = MacAddr([2, 9, 9, 9, 9, 9]);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, last)
}

fn ip6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last)
}

struct Host {
    port: Arc<MemPort>,
    mac: MacAddr,
    ip: Ipv4Addr,
}

/// One network (10.1.0.0/16, gateway 10.1.0.1) with `hosts` ports.
fn topology(hosts: usize) -> (Switch, Vec<Host>) {
    let sw = Switch::start(0).expect("switch starts");
    let gateway = ip(1);
    sw.add_network(NetworkSpec {
        // Dual stack, for the NDP proxy bench; IPv4 frames never look at it.
        ipv6: Some(Ipv6Spec { subnet: "2001:db8:1::/64".parse().unwrap(), gateway: "2001:db8:1::1".parse().unwrap() }),
        ..NetworkSpec::bridge(1, "bench", "10.1.0.0/16".parse().unwrap(), gateway)
    })
    .expect("network added");
    let hosts = (0..hosts)
        .map(|i| {
            let ip = ip(2 + i as u8);
            let mac = MacAddr::from_ipv4(ip);
            let port = Arc::new(MemPort::new(QUEUE));
            let ipv6 = Some(ip6(2 + i as u16));
            let spec = PortSpec { network: 1, name: format!("h{i}"), mac, ipv4: ip, ipv6, queues: vec![port.clone()] };
            sw.add_port(spec).expect("port added");
            Host { port, mac, ip }
        })
        .collect();
    (sw, hosts)
}

/// A 64-byte IPv4 frame (UDP-like payload) from `src` to `dst`.
fn ipv4_frame(src: (MacAddr, Ipv4Addr), dst: (MacAddr, Ipv4Addr)) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_LEN];
    ethernet::write_header(&mut f, dst.0, src.0, ETHERTYPE_IPV4);
    let payload_len = FRAME_LEN - ethernet::HEADER_LEN - 20;
    let h = ipv4::Header { src: src.1, dst: dst.1, protocol: ipv4::PROTO_UDP, ttl: 64, payload_len };
    ipv4::write_header(&mut f[ethernet::HEADER_LEN..], &h);
    f
}

fn arp_request(from: &Host, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let me = arp::Host { mac: from.mac, ip: from.ip };
    let them = arp::Host { mac: MacAddr::ZERO, ip: target };
    arp::write_frame(&mut f, arp::OP_REQUEST, me, them, MacAddr::BROADCAST);
    f
}

/// A neighbour solicitation from `from` for `target`.
fn neighbour_solicit(from: &Host, from_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0u8; 128];
    let len = ndp::write_solicit(&mut f, ndp::Host { mac: from.mac, ip: from_ip }, target);
    f.truncate(len);
    f
}

/// A 64-byte echo request to the gateway.
fn ping_gateway(from: &Host) -> Vec<u8> {
    let gw = (MacAddr::from_ipv4(ip(1)), ip(1));
    let mut f = vec![0u8; 128];
    let payload = [0x5a; FRAME_LEN - 14 - 20 - 8];
    let len = icmp::write_echo_request(&mut f, (from.mac, from.ip), gw, 42, 7, &payload);
    f.truncate(len);
    f
}

/// Take every frame `host` was sent; count them.
fn drain(host: &Host, mut each: impl FnMut(Vec<u8>)) -> usize {
    let mut n = 0;
    while let Some(f) = host.port.take() {
        each(f);
        n += 1;
    }
    n
}

/// Put `f` back in as the next frame from `host`.
fn inject(host: &Host, f: Vec<u8>) {
    assert!(host.port.inject(f), "input queue full");
}

/// Overwrite a spent buffer with `template` and inject it (no allocation:
/// the buffer keeps its capacity).
fn refill(host: &Host, mut f: Vec<u8>, template: &[u8]) {
    f.clear();
    f.extend_from_slice(template);
    inject(host, f);
}

/// A port without queues, to measure the engine without the in-memory
/// ports' lock-free queues: `recv` hands out `budget` copies of its frames
/// (cycling through them), `send` only counts. Plain loads and stores, no
/// atomic read-modify-write, so it costs next to nothing.
struct NullPort {
    frames: Vec<Vec<u8>>,
    budget: AtomicUsize,
    sent: AtomicUsize,
}

impl NullPort {
    fn new(frames: Vec<Vec<u8>>) -> NullPort {
        NullPort { frames, budget: AtomicUsize::new(0), sent: AtomicUsize::new(0) }
    }

    /// Let the next `poll_all` receive `n` frames; returns frames sent since the last call.
    fn refill(&self, n: usize) -> usize {
        self.budget.store(n, Relaxed);
        let sent = self.sent.load(Relaxed);
        self.sent.store(0, Relaxed);
        sent
    }
}

impl FrameIo for NullPort {
    fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Offload)> {
        let left = self.budget.load(Relaxed);
        if left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.budget.store(left - 1, Relaxed);
        let f = &self.frames[left % self.frames.len()];
        buf[..f.len()].copy_from_slice(f);
        Ok((f.len(), Offload::NONE))
    }

    fn send(&self, frame: &[u8], _offload: &Offload) -> io::Result<()> {
        black_box(frame);
        self.sent.store(self.sent.load(Relaxed) + 1, Relaxed);
        Ok(())
    }

    fn takes_offloads(&self) -> bool {
        true
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
}

/// The same network as [`topology`], with a [`NullPort`] for each host,
/// handing out `frames(i)` on port `i`.
fn null_topology(hosts: &[Host], frames: impl Fn(usize) -> Vec<Vec<u8>>) -> (Switch, Vec<Arc<NullPort>>) {
    let (sw, _) = topology(0);
    let ports = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = Arc::new(NullPort::new(frames(i)));
            let spec = PortSpec {
                network: 1,
                name: format!("null{i}"),
                mac: host.mac,
                ipv4: host.ip,
                ipv6: None,
                queues: vec![port.clone()],
            };
            sw.add_port(spec).expect("port added");
            port
        })
        .collect();
    (sw, ports)
}

// ---- Mpps summary -------------------------------------------------------

/// Times of the measured calls of one bench, for the summary line.
struct Meter {
    name: String,
    frames_in: u64,
    copies_out: u64,
    /// (iterations, time) of each call criterion made.
    calls: Vec<(u64, Duration)>,
}

thread_local! {
    static METERS: RefCell<Vec<Meter>> = const { RefCell::new(Vec::new()) };
}

/// Run `step` `iters` times, timed; record it for the summary.
fn timed(name: &str, frames_in: u64, copies_out: u64, iters: u64, mut step: impl FnMut() -> usize) -> Duration {
    let start = Instant::now();
    let mut out = 0;
    for _ in 0..iters {
        out += step();
    }
    let took = start.elapsed();
    black_box(out);
    assert_eq!(out as u64, copies_out * iters, "{name}: every frame should come out as expected");
    METERS.with(|m| {
        let mut m = m.borrow_mut();
        if m.last().map(|l| l.name != name).unwrap_or(true) {
            m.push(Meter { name: name.into(), frames_in, copies_out, calls: Vec::new() });
        }
        m.last_mut().unwrap().calls.push((iters, took));
    });
    took
}

/// Whether criterion measures (`cargo bench`), rather than runs each bench once (`cargo test --benches`).
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    has("--bench") && !has("--test") && !has("--list")
}

/// Print one `Mpps per core` line per bench measured since the last call.
fn summarise() {
    let meters = METERS.with(|m| std::mem::take(&mut *m.borrow_mut()));
    if !measuring() {
        return;
    }
    for m in meters {
        // The median of the per-iteration times of the calls with enough
        // iterations to time (criterion's warm-up starts with one).
        let mut per_iter: Vec<f64> =
            m.calls.iter().filter(|(n, _)| *n >= 16).map(|(n, t)| t.as_nanos() as f64 / *n as f64).collect();
        if per_iter.is_empty() {
            continue;
        }
        per_iter.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let ns = per_iter[per_iter.len() / 2];
        let mpps = m.frames_in as f64 * 1e3 / ns;
        let ns_frame = ns / m.frames_in as f64;
        let mut line = format!("{:<28} Mpps per core: {mpps:6.2} in ({ns_frame:6.1} ns/frame)", m.name);
        if m.copies_out != m.frames_in {
            let copies = m.copies_out as f64 * 1e3 / ns;
            line += &format!(", {copies:6.2} M copies/s out ({} per frame)", m.copies_out / m.frames_in);
        }
        eprintln!("{line}");
    }
}

// ---- (1) L2 learn + forward ----------------------------------------------

/// Known unicast both ways between two ports, 64-byte frames, four source
/// MACs each way (the port's own and three learned behind it), so every frame
/// refreshes a learned or static FDB entry and looks up a static one.
/// Both directions run in one batch each: the buffers a port receives are the
/// ones it then sends with, so nothing is allocated.
fn l2_forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("l2");
    group.throughput(Throughput::Elements(2 * BATCH as u64));
    let (sw, h) = topology(2);
    let (a, b) = (&h[0], &h[1]);
    let behind = |host: &Host, k: u8| {
        if k == 0 {
            host.mac
        } else {
            let mut m = host.mac;
            m.0[0] = 0x06; // locally administered, distinct from the endpoint's
            m.0[5] = m.0[5].wrapping_add(k * 16);
            m
        }
    };
    for i in 0..BATCH {
        let k = (i % 4) as u8;
        inject(a, ipv4_frame((behind(a, k), a.ip), (b.mac, b.ip)));
        inject(b, ipv4_frame((behind(b, k), b.ip), (a.mac, a.ip)));
    }
    let step = || {
        sw.poll_all();
        // What came out at b went in at a, and the other way: send it again.
        drain(b, |f| inject(a, f)) + drain(a, |f| inject(b, f))
    };
    // Learn the MACs behind each port and fill the spare buffers.
    for _ in 0..4 {
        step();
    }
    assert_eq!(sw.fdb_rows(1).unwrap().len(), 8, "2 static + 6 learned MACs");
    let name = "l2/known_unicast_64B";
    group.bench_function(BenchmarkId::new("known_unicast_64B", "2x32"), |bench| {
        bench.iter_custom(|iters| timed(name, 2 * BATCH as u64, 2 * BATCH as u64, iters, step))
    });
    assert_eq!(sw.report().drops.same_port + sw.report().drops.tx_error, 0);

    // The engine alone: the same traffic through ports without queues.
    let frames = |from: &Host, to: &Host| -> Vec<Vec<u8>> {
        (0..4).map(|k| ipv4_frame((behind(from, k), from.ip), (to.mac, to.ip))).collect()
    };
    let (null_sw, null_ports) = null_topology(&h, |i| if i == 0 { frames(a, b) } else { frames(b, a) });
    let null_step = || {
        let out = null_ports[0].refill(BATCH) + null_ports[1].refill(BATCH);
        null_sw.poll_all();
        out
    };
    null_step();
    null_step();
    let name = "l2/known_unicast_64B_engine";
    group.bench_function(BenchmarkId::new("known_unicast_64B_engine", "2x32"), |bench| {
        bench.iter_custom(|iters| timed(name, 2 * BATCH as u64, 2 * BATCH as u64, iters, null_step))
    });

    // The in-memory ports' share: the same queue operations and copies for
    // one frame (inject, recv into a 64 KiB buffer, send, take), no switch.
    let port = MemPort::new(QUEUE);
    let mut buf = vec![0u8; 65_536 + 64].into_boxed_slice();
    let frame = ipv4_frame((a.mac, a.ip), (b.mac, b.ip));
    let mut spare: Vec<Vec<u8>> = (0..BATCH).map(|_| frame.clone()).collect();
    let mem_only = || {
        for f in spare.drain(..) {
            port.inject(f);
        }
        while let Ok(n) = port.recv(&mut buf) {
            port.send(&buf[..n.0], &Offload::NONE).unwrap();
        }
        while let Some(f) = port.take() {
            spare.push(f);
        }
        spare.len()
    };
    let mut mem_only = mem_only;
    mem_only();
    let name = "l2/mem_port_only";
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("mem_port_only", "32"), |bench| {
        bench.iter_custom(|iters| timed(name, BATCH as u64, BATCH as u64, iters, &mut mem_only))
    });
    group.finish();
    summarise();
}

// ---- (2) flood ---------------------------------------------------------------

/// Broadcast and unknown unicast into a network of 8 ports: each frame in
/// goes out as 7 copies. The ingress port turns round-robin, and the next
/// ingress sends the copies it just got (with its own source MAC), so each
/// port's buffers stay with it.
fn flood(c: &mut Criterion) {
    const PORTS: usize = 8;
    let mut group = c.benchmark_group("flood");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (label, dst) in [("broadcast_64B", MacAddr::BROADCAST), ("unknown_unicast_64B", STRANGER)] {
        let (sw, h) = topology(PORTS);
        let dst_ip = if dst == MacAddr::BROADCAST { Ipv4Addr::new(10, 1, 255, 255) } else { ip(200) };
        for _ in 0..BATCH {
            inject(&h[0], ipv4_frame((h[0].mac, h[0].ip), (dst, dst_ip)));
        }
        let mut ingress = 0;
        let mut step = || {
            sw.poll_all();
            let next = (ingress + 1) % PORTS;
            let mut out = 0;
            for (p, host) in h.iter().enumerate() {
                out += if p == next {
                    drain(host, |mut f| {
                        f[6..12].copy_from_slice(&host.mac.0);
                        inject(host, f)
                    })
                } else {
                    drain(host, |f| host.port.recycle(f))
                };
            }
            ingress = next;
            out
        };
        for _ in 0..2 * PORTS {
            step();
        }
        let name = format!("flood/{label}");
        let copies = ((PORTS - 1) * BATCH) as u64;
        group.bench_function(BenchmarkId::new(label, "8 ports"), |bench| {
            bench.iter_custom(|iters| timed(&name, BATCH as u64, copies, iters, &mut step))
        });
        assert_eq!(sw.fdb_rows(1).unwrap().len(), PORTS, "nothing learned: the stranger never speaks");

        // The engine alone: ingress on port 0 of 8 queue-less ports.
        let (null_sw, null_ports) =
            null_topology(
                &h,
                |i| if i == 0 { vec![ipv4_frame((h[0].mac, h[0].ip), (dst, dst_ip))] } else { Vec::new() },
            );
        let null_step = || {
            let out: usize = null_ports.iter().map(|p| p.refill(0)).sum();
            null_ports[0].refill(BATCH);
            null_sw.poll_all();
            out
        };
        null_step();
        null_step();
        let name = format!("flood/{label}_engine");
        group.bench_function(BenchmarkId::new(format!("{label}_engine"), "8 ports"), |bench| {
            bench.iter_custom(|iters| timed(&name, BATCH as u64, copies, iters, null_step))
        });
    }
    group.finish();
    summarise();
}

// ---- (3) ARP proxy -----------------------------------------------------------

/// ARP requests for a known endpoint, answered by the switch on the asking
/// port. Each reply's buffer is rewritten into the next request.
fn arp_proxy(c: &mut Criterion) {
    let mut group = c.benchmark_group("arp_proxy");
    group.throughput(Throughput::Elements(BATCH as u64));
    let (sw, h) = topology(3);
    let (a, b, others) = (&h[0], &h[1], &h[2]);
    let request = arp_request(a, b.ip);
    for _ in 0..BATCH {
        inject(a, request.clone());
    }
    let step = || {
        sw.poll_all();
        assert!(b.port.take().is_none() && others.port.take().is_none(), "answered, not flooded");
        drain(a, |f| refill(a, f, &request))
    };
    sw.poll_all();
    let replies = drain(a, |f| {
        let eth = ethernet::Frame::parse(&f).unwrap();
        let reply = arp::Packet::parse(eth.payload()).unwrap();
        assert_eq!((reply.op(), reply.sender_mac()), (arp::OP_REPLY, b.mac));
        refill(a, f, &request)
    });
    assert_eq!(replies, BATCH);
    group.bench_function(BenchmarkId::new("request_for_endpoint", "32"), |bench| {
        bench.iter_custom(|iters| timed("arp_proxy/request_for_endpoint", BATCH as u64, BATCH as u64, iters, step))
    });
    group.finish();
    summarise();
}

/// Neighbour solicitations for a known endpoint's IPv6 address, answered by
/// the switch on the asking port (the checksum of each is verified).
fn ndp_proxy(c: &mut Criterion) {
    let mut group = c.benchmark_group("ndp_proxy");
    group.throughput(Throughput::Elements(BATCH as u64));
    let (sw, h) = topology(3);
    let (a, b, others) = (&h[0], &h[1], &h[2]);
    let request = neighbour_solicit(a, ip6(2), ip6(3));
    for _ in 0..BATCH {
        inject(a, request.clone());
    }
    let step = || {
        sw.poll_all();
        assert!(b.port.take().is_none() && others.port.take().is_none(), "answered, not flooded");
        drain(a, |f| refill(a, f, &request))
    };
    sw.poll_all();
    let replies = drain(a, |f| {
        let eth = ethernet::Frame::parse(&f).unwrap();
        let ip = ipv6::Packet::parse(eth.payload()).unwrap();
        let msg = icmpv6::message(&ip).unwrap();
        assert_eq!((msg[0], &msg[26..32]), (icmpv6::TYPE_NEIGHBOR_ADVERT, &b.mac.0[..]));
        refill(a, f, &request)
    });
    assert_eq!(replies, BATCH);
    group.bench_function(BenchmarkId::new("solicit_for_endpoint", "32"), |bench| {
        bench.iter_custom(|iters| timed("ndp_proxy/solicit_for_endpoint", BATCH as u64, BATCH as u64, iters, step))
    });
    group.finish();
    summarise();
}

// ---- (4) gateway ICMP echo --------------------------------------------------

/// 64-byte echo requests to the gateway address, answered by the switch.
fn gateway_icmp(c: &mut Criterion) {
    let mut group = c.benchmark_group("gateway");
    group.throughput(Throughput::Elements(BATCH as u64));
    let (sw, h) = topology(2);
    let (a, b) = (&h[0], &h[1]);
    let request = ping_gateway(a);
    for _ in 0..BATCH {
        inject(a, request.clone());
    }
    let step = || {
        sw.poll_all();
        assert!(b.port.take().is_none(), "the gateway answers, nothing else");
        drain(a, |f| refill(a, f, &request))
    };
    sw.poll_all();
    let replies = drain(a, |f| {
        let eth = ethernet::Frame::parse(&f).unwrap();
        assert_eq!(ipv4::Packet::parse(eth.payload()).unwrap().payload()[0], icmp::TYPE_ECHO_REPLY);
        refill(a, f, &request)
    });
    assert_eq!(replies, BATCH);
    group.bench_function(BenchmarkId::new("icmp_echo_64B", "32"), |bench| {
        bench.iter_custom(|iters| timed("gateway/icmp_echo_64B", BATCH as u64, BATCH as u64, iters, step))
    });
    group.finish();
    summarise();
}

/// Masquerade of established flows through the engine alone: a container
/// port and an uplink that only count, 32 UDP flows already in the
/// connection table; out (container → outside) and in (replies).
fn nat(c: &mut Criterion) {
    const FLOWS: u16 = 32;
    let remote = Ipv4Addr::new(198, 51, 100, 7);
    let (uplink_ip, next_hop) = (Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 1));
    let next_hop_mac = MacAddr([2, 0, 0, 0, 0, 0xfe]);
    let udp = |src: (MacAddr, Ipv4Addr), sport: u16, dst: (MacAddr, Ipv4Addr), dport: u16| {
        let mut f = ipv4_frame(src, dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..40].copy_from_slice(&((FRAME_LEN - 34) as u16).to_be_bytes());
        f[40..42].copy_from_slice(&0x1234u16.to_be_bytes()); // a checksum to update
        f
    };
    let container = Host { port: Arc::new(MemPort::new(1)), mac: MacAddr::from_ipv4(ip(2)), ip: ip(2) };
    let gw_mac = MacAddr::from_ipv4(ip(1));
    let out_frames: Vec<Vec<u8>> =
        (0..FLOWS).map(|k| udp((container.mac, container.ip), 1000 + k, (gw_mac, remote), 53)).collect();
    let (sw, ports) = null_topology(std::slice::from_ref(&container), |_| out_frames.clone());
    let mut reply = vec![0u8; 60];
    let gw = arp::Host { mac: next_hop_mac, ip: next_hop };
    let us = arp::Host { mac: MacAddr::from_ipv4(uplink_ip), ip: uplink_ip };
    arp::write_frame(&mut reply, arp::OP_REPLY, gw, us, us.mac);
    let mut uplink_frames = vec![reply];
    let nat_ports = *switch::conntrack::NAT_PORTS.start()..*switch::conntrack::NAT_PORTS.start() + FLOWS;
    uplink_frames.extend(nat_ports.map(|p| udp((next_hop_mac, remote), 53, (us.mac, uplink_ip), p)));
    let uplink = Arc::new(NullPort::new(uplink_frames));
    let spec = UplinkSpec {
        name: "up".into(),
        queues: vec![uplink.clone()],
        ip: uplink_ip,
        gateway: next_hop,
        mtu: 1500,
        shared_mac: None,
        ipv6: None,
    };
    sw.set_uplink(spec).expect("uplink set");
    // The ARP reply (frame 0, handed out when one frame is left in budget 1)...
    uplink.refill(FLOWS as usize + 1);
    sw.poll_all();
    uplink.refill(0);
    let out_step = || {
        ports[0].refill(BATCH);
        sw.poll_all();
        uplink.refill(0)
    };
    out_step(); // creates the 32 flows
    assert_eq!(sw.conntrack_rows(None).len(), FLOWS as usize);
    let mut group = c.benchmark_group("nat");
    group.throughput(Throughput::Elements(BATCH as u64));
    let name = "nat/masquerade_out_engine";
    group.bench_function(BenchmarkId::new("masquerade_out_engine", "32 flows"), |bench| {
        bench.iter_custom(|iters| timed(name, BATCH as u64, BATCH as u64, iters, out_step))
    });
    let in_step = || {
        uplink.refill(FLOWS as usize); // the replies, frames 1..=32
        sw.poll_all();
        ports[0].refill(0)
    };
    in_step();
    let name = "nat/reply_in_engine";
    group.bench_function(BenchmarkId::new("reply_in_engine", "32 flows"), |bench| {
        bench.iter_custom(|iters| timed(name, FLOWS as u64, FLOWS as u64, iters, in_step))
    });
    group.finish();
    summarise();
}

// ---- (6) overlay: VXLAN encapsulation and decapsulation -------------------

/// 64-byte frames between a local container and a MAC behind a remote VTEP
/// of overlay network VNI 42: wrapped in VXLAN on the way out, unwrapped
/// and switched on the way in (the uplink only counts what it is sent).
fn overlay(c: &mut Criterion) {
    const VNI: u32 = 42;
    let (vtep, peer) = (Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3));
    let peer_mac = MacAddr([2, 0, 0, 0, 0, 3]);
    let container = Host { port: Arc::new(MemPort::new(1)), mac: MacAddr::from_ipv4(ip(2)), ip: ip(2) };
    let remote = (MacAddr::from_ipv4(ip(9)), ip(9));
    let out_frame = ipv4_frame((container.mac, container.ip), remote);
    let (sw, ports) = null_topology(std::slice::from_ref(&container), |_| vec![out_frame.clone()]);
    let mut arp_reply = vec![0u8; 60];
    let (them, us) = (arp::Host { mac: peer_mac, ip: peer }, arp::Host { mac: MacAddr::from_ipv4(vtep), ip: vtep });
    arp::write_frame(&mut arp_reply, arp::OP_REPLY, them, us, us.mac);
    let inner = ipv4_frame(remote, (container.mac, container.ip));
    let wrapped: Vec<Vec<u8>> = (0..BATCH as u16)
        .map(|k| {
            let mut f = vec![0u8; vxlan::OVERHEAD + inner.len()];
            let o = vxlan::Outer {
                src_mac: peer_mac,
                dst_mac: us.mac,
                src_ip: peer,
                dst_ip: vtep,
                vni: VNI,
                src_port: 50000 + k,
                dst_port: vxlan::UDP_PORT,
            };
            vxlan::encapsulate(&mut f, &o, &inner).expect("room");
            f
        })
        .collect();
    let uplink = Arc::new(NullPort::new(std::iter::once(arp_reply).chain(wrapped).collect()));
    let spec = UplinkSpec {
        name: "up".into(),
        queues: vec![uplink.clone()],
        ip: vtep,
        // The peer is the next hop too: its ARP reply resolves both, and
        // no ARP for the next hop is sent while the bench counts frames.
        gateway: peer,
        mtu: 1500,
        shared_mac: None,
        ipv6: None,
    };
    sw.set_uplink(spec).expect("uplink set");
    sw.set_overlay(1, VNI, vxlan::UDP_PORT).expect("overlay");
    sw.add_tunnel(1, peer).expect("tunnel");
    // The peer's ARP reply first (frame 0), then its frames: the remote MAC
    // is learnt behind the tunnel.
    uplink.refill(BATCH + 1);
    sw.poll_all(); // a batch: the reply and 31 frames
    sw.poll_all();
    assert_eq!(ports[0].refill(0), BATCH, "decapsulated and delivered");
    uplink.refill(0);
    let mut group = c.benchmark_group("overlay");
    group.throughput(Throughput::Elements(BATCH as u64));
    let encap_step = || {
        ports[0].refill(BATCH);
        sw.poll_all();
        uplink.refill(0)
    };
    assert_eq!(encap_step(), BATCH, "every frame wrapped and sent");
    group.bench_function(BenchmarkId::new("encapsulate_engine", "64B"), |bench| {
        bench.iter_custom(|iters| timed("overlay/encapsulate_engine", BATCH as u64, BATCH as u64, iters, encap_step))
    });
    let decap_step = || {
        uplink.refill(BATCH);
        sw.poll_all();
        ports[0].refill(0)
    };
    assert_eq!(decap_step(), BATCH, "every frame unwrapped and delivered");
    group.bench_function(BenchmarkId::new("decapsulate_engine", "64B"), |bench| {
        bench.iter_custom(|iters| timed("overlay/decapsulate_engine", BATCH as u64, BATCH as u64, iters, decap_step))
    });
    group.finish();
    summarise();
}

// ---- (7) overlay trains: a TCP super-frame cut and joined ----------------

/// What a tunnel does to a 64 KiB TCP super-frame before its one send (cut
/// it into segments with finished checksums, each behind a VXLAN header,
/// laid out as a train), and what the other switch does to the train
/// before its one TAP write (check every segment and join them). Reported
/// as Gbit/s of super-frame per core: the userspace share of the overlay
/// row, without the syscalls.
fn overlay_train(c: &mut Criterion) {
    const MSS: usize = 1398;
    let payload = 46 * MSS; // 64 KiB of IP packet, as a TAP hands it over
    let mut frame = vec![0u8; 14 + 20 + 20 + payload];
    ethernet::write_header(&mut frame, MacAddr::from_ipv4(ip(3)), MacAddr::from_ipv4(ip(2)), ETHERTYPE_IPV4);
    let h = ipv4::Header { src: ip(2), dst: ip(3), protocol: ipv4::PROTO_TCP, ttl: 64, payload_len: 20 + payload };
    ipv4::write_header(&mut frame[14..], &h);
    frame[46] = 5 << 4;
    frame[47] = 0x10;
    for (i, b) in frame[54..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let offload = Offload {
        flags: proto::offload::F_NEEDS_CSUM,
        gso_type: proto::offload::GSO_TCPV4,
        hdr_len: 54,
        gso_size: MSS as u16,
        csum_start: 34,
        csum_offset: 16,
    };
    let datagram = vxlan::HEADER_LEN + 54 + MSS;
    let mut train = vec![0u8; 46 * datagram];
    let cut = |train: &mut [u8]| {
        let segments = proto::gso::Segments::new(&frame, &offload).expect("a super-frame");
        for k in 0..segments.count() {
            vxlan::write_vxlan_header(&mut train[k * datagram..], 42);
            segments.write(k, &mut train[k * datagram + vxlan::HEADER_LEN..]);
        }
        segments.count()
    };
    let layout =
        proto::gso::Train { first: vxlan::HEADER_LEN, stride: datagram, count: 46, len: 54 + MSS, last_len: 54 + MSS };
    let mut group = c.benchmark_group("overlay_train");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("cut_64KiB", |bench| bench.iter(|| black_box(cut(&mut train))));
    cut(&mut train);
    let cut_train = train.clone();
    group.bench_function("join_64KiB", |bench| {
        bench.iter(|| {
            train.copy_from_slice(&cut_train); // joining works in place
            black_box(proto::gso::coalesce_tcp(&mut train, &layout).expect("joins"))
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = l2_forward, flood, arp_proxy, ndp_proxy, gateway_icmp, nat, overlay, overlay_train
}
criterion_main!(benches);
