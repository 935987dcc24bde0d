//! Traffic the lab bench makes with its own sockets: TCP bulk streams, a
//! 64-byte frame generator (UDP, sendmmsg batches) and a UDP ping-pong.
//!
//! Sockets are opened on a thread inside the namespace they belong to
//! (`netns::run_in`) and then used from ordinary threads. Every blocking call
//! has a timeout and every loop a deadline, so a stalled switch makes a bad
//! figure, never a hung bench.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ports::kernel_bridge as kb;
use ports::netlink;
use ports::netns;

use crate::topo::Pair;

/// TCP: what a sender writes per call, and what a receiver reads into.
const SEND_BUF: usize = 128 * 1024;
const RECV_BUF: usize = 1024 * 1024;
/// Time for TCP windows (and the switch's queues) to settle before counting.
const WARMUP: Duration = Duration::from_secs(1);
/// Generator batch (one sendmmsg call) and payload: 14 Ethernet + 20 IPv4 +
/// 8 UDP + 18 = 60 bytes, 64 with the FCS.
const BATCH: usize = 64;
const FRAME_PAYLOAD: usize = 18;
/// Timeout of each blocking socket call; loops check their stop flag after it.
const IO_TIMEOUT: Duration = Duration::from_millis(200);
const TCP_PORT: u16 = 5201;
const ECHO_PORT: u16 = 7;
const DISCARD_PORT: u16 = 9;

/// Received Gbit/s of `streams` TCP streams from A to B over `secs`.
pub fn tcp_gbps(pair: &Pair, streams: usize, secs: Duration) -> io::Result<f64> {
    tcp_gbps_peers(pair, streams, secs).map(|(gbps, _)| gbps)
}

/// Like `tcp_gbps`, also returning the peer address of each connection as
/// B's accept() saw it (behind NAT: the masquerade address).
pub fn tcp_gbps_peers(pair: &Pair, streams: usize, secs: Duration) -> io::Result<(f64, Vec<SocketAddr>)> {
    let port = TCP_PORT + streams as u16;
    let addr = SocketAddr::from((pair.b_ip, port));
    let listener = netns::run_in(&pair.b_ns, move || TcpListener::bind(addr))??;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let received = Arc::new(AtomicU64::new(0));
    let acceptor = {
        let (stop, received) = (stop.clone(), received.clone());
        thread::spawn(move || accept_readers(listener, streams, stop, received))
    };
    let mut writers = Vec::new();
    for _ in 0..streams {
        let stream = netns::run_in(&pair.a_ns, move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))??;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let stop = stop.clone();
        writers.push(thread::spawn(move || write_until(stream, stop)));
    }
    let rate = measure_rate(&received, secs);
    stop.store(true, Ordering::Relaxed);
    join_all(writers);
    let (readers, peers) = acceptor.join().map_err(|_| io::Error::other("acceptor panicked"))??;
    join_all(readers);
    Ok((rate * 8.0 / 1e9, peers))
}

/// Accept `streams` connections (within 5 s) and start a reader on each;
/// also returns the peer address of each.
fn accept_readers(
    listener: TcpListener,
    streams: usize,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
) -> io::Result<(Vec<JoinHandle<()>>, Vec<SocketAddr>)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut readers, mut peers) = (Vec::new(), Vec::new());
    while readers.len() < streams {
        match listener.accept() {
            Ok((stream, peer)) => {
                peers.push(peer);
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                let (stop, received) = (stop.clone(), received.clone());
                readers.push(thread::spawn(move || read_until(stream, stop, received)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                join_all(readers);
                return Err(io::Error::new(e.kind(), format!("accept: {e}")));
            }
        }
    }
    Ok((readers, peers))
}

/// Read and discard until EOF, an error, or `stop` (checked on timeouts).
fn read_until(mut stream: TcpStream, stop: Arc<AtomicBool>, received: Arc<AtomicU64>) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if is_timeout(&e) && !stop.load(Ordering::Relaxed) => {}
            Err(_) => return,
        }
    }
}

/// Write 128 KiB buffers until `stop`; a write that times out is retried
/// (the window is full), any other error ends the stream.
fn write_until(mut stream: TcpStream, stop: Arc<AtomicBool>) {
    let buf = vec![0x5au8; SEND_BUF];
    while !stop.load(Ordering::Relaxed) {
        match stream.write(&buf) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// After the warm-up, units per second of `counter` over `secs`.
fn measure_rate(counter: &AtomicU64, secs: Duration) -> f64 {
    thread::sleep(WARMUP);
    let (c0, t0) = (counter.load(Ordering::Relaxed), Instant::now());
    thread::sleep(secs);
    let (c1, t1) = (counter.load(Ordering::Relaxed), Instant::now());
    (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
}

/// 64-byte frame forwarding: frames per second (sent by the generator,
/// received by B's interface), measured over `secs` after a warm-up.
pub struct FrameRate {
    pub sent_pps: f64,
    pub received_pps: f64,
}

/// Generate 64-byte frames from A to the blackhole address (B's MAC) with
/// `threads` sendmmsg loops and count what B's interface receives.
pub fn frame_rate(pair: &Pair, threads: usize, secs: Duration) -> io::Result<FrameRate> {
    frame_rate_with(pair, &Generators { threads, src_ports: Vec::new(), cpus: Vec::new() }, secs)
}

/// How the 64-byte generator runs.
pub struct Generators {
    /// Number of sendmmsg loops, one socket (so one flow) each.
    pub threads: usize,
    /// Thread i sends from UDP port `src_ports[i]` where given (distinct
    /// flows, so that a multi-queue TAP spreads them by flow hash); from an
    /// ephemeral port otherwise.
    pub src_ports: Vec<u16>,
    /// Thread i is pinned to CPU `cpus[i]` where given; unpinned otherwise.
    pub cpus: Vec<usize>,
}

/// `frame_rate` with explicit source ports and CPU pinning of the generators.
pub fn frame_rate_with(pair: &Pair, gen: &Generators, secs: Duration) -> io::Result<FrameRate> {
    let threads = gen.threads;
    let b_index = in_ns(&pair.b_ns, {
        let ifname = pair.b_if.clone();
        move || netlink::link_index(&ifname)?.ok_or_else(|| io::Error::other(format!("no {ifname}")))
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let mut generators = Vec::new();
    for i in 0..threads {
        let socket = generator_socket(pair, gen.src_ports.get(i).copied().unwrap_or(0))?;
        let (stop, sent, cpu) = (stop.clone(), sent.clone(), gen.cpus.get(i).copied());
        generators.push(thread::spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
            }
            generate(socket, stop, sent)
        }));
    }
    let rx_packets = || in_ns(&pair.b_ns, move || kb::link_stats(b_index)).map(|s| s.rx_packets);
    thread::sleep(WARMUP);
    let (s0, r0, t0) = (sent.load(Ordering::Relaxed), rx_packets(), Instant::now());
    thread::sleep(secs);
    let (s1, r1, t1) = (sent.load(Ordering::Relaxed), rx_packets(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    join_all(generators);
    let elapsed = (t1 - t0).as_secs_f64();
    let received = r1? - r0?;
    Ok(FrameRate { sent_pps: (s1 - s0) as f64 / elapsed, received_pps: received as f64 / elapsed })
}

/// A's UDP socket from `src_port` (0: ephemeral) to the blackhole address.
fn generator_socket(pair: &Pair, src_port: u16) -> io::Result<UdpSocket> {
    let (a_ip, dst) = (pair.a_ip, SocketAddr::from((pair.blackhole, DISCARD_PORT)));
    let socket = in_ns(&pair.a_ns, move || {
        let s = UdpSocket::bind((a_ip, src_port))?;
        s.connect(dst)?;
        Ok(s)
    })?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(socket)
}

/// 64-byte frames from A's UDP port `src_port` to the blackhole address for
/// `dur` (one generator thread, unpinned); returns the frames sent.
pub fn burst(pair: &Pair, src_port: u16, dur: Duration) -> io::Result<u64> {
    let socket = generator_socket(pair, src_port)?;
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let generator = {
        let (stop, sent) = (stop.clone(), sent.clone());
        thread::spawn(move || generate(socket, stop, sent))
    };
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    join_all(vec![generator]);
    Ok(sent.load(Ordering::Relaxed))
}

/// Pin the calling thread to `cpu`; a failure only costs the pinning.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) affects this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            eprintln!("lab: generator: could not pin to CPU {cpu}: {}", io::Error::last_os_error());
        }
    }
}

/// One generator thread: sendmmsg batches of BATCH datagrams until `stop`.
fn generate(socket: UdpSocket, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut payload = [0u8; FRAME_PAYLOAD];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: FRAME_PAYLOAD };
    // SAFETY: all-zero is a valid mmsghdr; the pointers set below outlive the
    // loop, and the socket is connected, so no msg_name is needed.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs holds BATCH initialised headers pointing at live buffers.
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        } else if !is_timeout(&io::Error::last_os_error()) {
            // ENOBUFS and friends: the queue is full, back off a little.
            thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Round-trip times of a UDP ping-pong, sorted, in microseconds.
pub struct Latency {
    pub rtts_us: Vec<f64>,
    pub lost: usize,
}

impl Latency {
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let last = self.rtts_us.len().checked_sub(1)?;
        Some(self.rtts_us[((last as f64) * p / 100.0).round() as usize])
    }
}

/// `warmup` then `count` UDP round trips A → B (echo server) → A, one at a
/// time, with 64-byte frames. Gives up after `budget` (then reports what it has).
pub fn latency(pair: &Pair, warmup: usize, count: usize, budget: Duration) -> io::Result<Latency> {
    let b_addr = SocketAddr::from((pair.b_ip, ECHO_PORT));
    let server = in_ns(&pair.b_ns, move || UdpSocket::bind(b_addr))?;
    server.set_read_timeout(Some(IO_TIMEOUT))?;
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let echo = {
        let stop = stop.clone();
        thread::spawn(move || echo_until(server, stop))
    };
    let a_ip = pair.a_ip;
    let client = in_ns(&pair.a_ns, move || {
        let s = UdpSocket::bind((a_ip, 0))?;
        s.connect(b_addr)?;
        Ok(s)
    })?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    let result = ping_pong(&client, warmup, count, budget);
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    result
}

fn ping_pong(client: &UdpSocket, warmup: usize, count: usize, budget: Duration) -> io::Result<Latency> {
    let deadline = Instant::now() + budget;
    let mut out = Latency { rtts_us: Vec::with_capacity(count), lost: 0 };
    let (mut msg, mut reply) = ([0u8; FRAME_PAYLOAD], [0u8; 64]);
    for seq in 0..(warmup + count) as u64 {
        if Instant::now() > deadline {
            break;
        }
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        let start = Instant::now();
        client.send(&msg)?;
        if wait_reply(client, &mut reply, seq)? {
            if seq >= warmup as u64 {
                out.rtts_us.push(start.elapsed().as_secs_f64() * 1e6);
            }
        } else {
            out.lost += 1;
        }
    }
    if out.rtts_us.is_empty() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no echo came back ({} lost)", out.lost)));
    }
    out.rtts_us.sort_by(f64::total_cmp);
    Ok(out)
}

/// Wait for the echo of `seq` (skipping late echoes of earlier ones); false
/// on timeout.
fn wait_reply(client: &UdpSocket, buf: &mut [u8], seq: u64) -> io::Result<bool> {
    loop {
        match client.recv(buf) {
            Ok(n) if n >= 8 && buf[..8] == seq.to_le_bytes() => return Ok(true),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

fn echo_until(server: UdpSocket, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = server.recv_from(&mut buf) {
            let _ = server.send_to(&buf[..n], from);
        }
    }
}

/// Whether A reaches B at all: a few UDP round trips within `within`.
pub fn reachable(pair: &Pair, within: Duration) -> io::Result<()> {
    let got = latency(pair, 0, 5, within)?;
    if got.rtts_us.len() < 5 {
        return Err(io::Error::other(format!("{} of 5 echoes lost", 5 - got.rtts_us.len())));
    }
    Ok(())
}

/// CPU used by process `pid` over `secs`, in % of one core.
pub fn cpu_percent(pid: u32, secs: Duration) -> io::Result<f64> {
    let (t0, start) = (cpu_ticks(pid)?, Instant::now());
    thread::sleep(secs);
    Ok(ticks_to_percent(cpu_ticks(pid)? - t0, start.elapsed()))
}

/// `ticks` of CPU time used over `elapsed`, in % of one core.
pub fn ticks_to_percent(ticks: u64, elapsed: Duration) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz / elapsed.as_secs_f64() * 100.0
}

/// utime + stime of `pid` in clock ticks, from /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after "(comm)": state is the first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (field(11), field(12)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc/{pid}/stat: {stat}"))),
    }
}

/// Run `f` inside namespace `ns`, flattening both layers of errors.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    netns::run_in(ns, f)?
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.join();
    }
}

/// Sets its flag when dropped, so that an early return (`?`) still stops the
/// threads that watch the flag.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
