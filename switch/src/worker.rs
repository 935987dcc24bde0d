//! Per-core workers: poll-mode run loops that receive a batch from each ready
//! port, run it through the pipeline and send the results.
//!
//! Idle back-off: a worker that saw traffic within its spin window polls
//! with a zero timeout (no sleep, microsecond reaction); after that it blocks
//! in `epoll_wait` until a port is readable or the control plane wakes it,
//! so an idle switch costs no CPU. The window adapts (see [`SpinWindow`]):
//! it grows while spinning keeps finding traffic and shrinks when it does
//! not, so steady streams never pay for a wake-up and sparse traffic (a
//! heartbeat every few milliseconds) does not keep a core busy.

use crate::datapath::{Domain, Port, Shared, Snapshot};
use crate::fdb::PortId;
use crate::nat::{self, UplinkContext};
use crate::overlay;
use crate::pipeline::{self, Context, Verdict};
use crate::service;
use crate::stats::DropReason;
use proto::gso;
use proto::offload::Offload;
use rustc_hash::FxHashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frames taken from one port before moving to the next.
pub const BATCH: usize = 32;
/// Room for the largest frame a TAP hands over (64 KiB plus headers).
const FRAME_BUF: usize = 65_536 + 64;
/// Bounds of the time a worker keeps spinning after its last frame.
const MIN_SPIN: Duration = Duration::from_micros(50);
const MAX_SPIN: Duration = Duration::from_millis(5);
/// Longest sleep in epoll_wait; a safety net, wake-ups come by eventfd.
const MAX_SLEEP_MS: i32 = 1000;
/// epoll user data of the waker: port ids start at 1, so it never collides.
const WAKER_TOKEN: u64 = 0;

/// An eventfd the control plane writes to make a worker look at a new snapshot.
pub struct Waker(OwnedFd);

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Waker(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a valid buffer; a full counter (EAGAIN) still wakes.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into a valid buffer of 8.
        unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

/// Buffers a worker owns, allocated once: no allocation per frame.
pub struct Engine {
    /// The worker this engine runs in: it sends on that worker's queues.
    worker: usize,
    frames: Vec<Box<[u8]>>,
    lens: [usize; BATCH],
    offloads: [Offload; BATCH],
    /// Frames the switch writes itself (ARP and ICMP replies).
    scratch: Box<[u8]>,
    /// Where GSO super-frames are cut for ports that take no offloads.
    segment: Box<[u8]>,
}

impl Engine {
    pub fn new(worker: usize) -> Engine {
        let buffer = || vec![0u8; FRAME_BUF].into_boxed_slice();
        Engine {
            worker,
            frames: (0..BATCH).map(|_| buffer()).collect(),
            lens: [0; BATCH],
            offloads: [Offload::NONE; BATCH],
            scratch: buffer(),
            segment: buffer(),
        }
    }

    /// Receive up to a batch from queue `queue` of `port` and handle it;
    /// returns frames handled.
    pub fn poll_port(&mut self, shared: &Shared, snap: &Snapshot, port: &Port, queue: usize) -> usize {
        let n = self.receive_batch(port, queue);
        if n == 0 {
            return 0;
        }
        let now = shared.now_secs();
        let Engine { worker, frames, lens, offloads, scratch, segment } = self;
        let mut out = Output { shared, worker: *worker, from: port, segment };
        let Some(net) = snap.networks.get(&port.spec.network) else {
            // Not a bridge port: the uplink.
            let Some(uplink) = snap.uplink.as_deref().filter(|u| u.port == port.id) else {
                return n;
            };
            let ctx = UplinkContext { snap, shared, uplink, now };
            for i in 0..n {
                let frame = &mut frames[i][..lens[i]];
                match nat::from_uplink(&ctx, frame, &offloads[i], scratch) {
                    Verdict::Decapsulated(tunnel, start, len) if overlay::is_train(&offloads[i]) => {
                        let datagram = offloads[i].gso_size as usize;
                        out.through_tunnel_train(snap, (tunnel, now), frame, (start, start + len, datagram), scratch);
                    }
                    Verdict::Decapsulated(tunnel, start, len) => {
                        let offload = overlay::inner_offload(&offloads[i], start);
                        let inner = &mut frame[start..start + len];
                        out.through_tunnel(snap, (tunnel, now), inner, offload, scratch);
                    }
                    verdict => out.apply(snap, None, frame, &mut offloads[i], scratch, verdict),
                }
            }
            return n;
        };
        let view = net.fdb.view();
        let ctx = Context { snap, shared, net, fdb: &view, in_port: port, now };
        if port.service {
            for i in 0..n {
                let frame = &mut frames[i][..lens[i]];
                let verdict = service::from_service(&ctx, frame, scratch);
                out.apply(snap, Some(net), frame, &mut offloads[i], scratch, verdict);
            }
            return n;
        }
        for i in 0..n {
            let frame = &mut frames[i][..lens[i]];
            let offload = &mut offloads[i];
            let verdict = pipeline::process(&ctx, frame, offload, scratch);
            out.apply(snap, Some(net), frame, offload, scratch, verdict);
        }
        n
    }

    fn receive_batch(&mut self, port: &Port, queue: usize) -> usize {
        let io = &port.spec.queues[queue];
        let mut n = 0;
        while n < BATCH {
            match io.recv(&mut self.frames[n]) {
                Ok((len, offload)) => {
                    port.counters.received(self.worker, len);
                    self.lens[n] = len;
                    self.offloads[n] = offload;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("port {}: receive: {e}", port.spec.name);
                    break;
                }
            }
        }
        n
    }
}

/// Sends frames out, doing in software what an output cannot take: a port
/// without offloads gets GSO super-frames cut into segments and partial
/// checksums finished (Open vSwitch's userspace TSO dropped such frames).
struct Output<'a> {
    shared: &'a Shared,
    worker: usize,
    /// The port the frames came in on: where a refused frame is counted.
    from: &'a Port,
    segment: &'a mut [u8],
}

impl<'a> Output<'a> {
    /// Carry out what the pipeline decided for one frame.
    #[inline]
    fn apply(
        &mut self,
        snap: &Snapshot,
        net: Option<&Domain>,
        frame: &mut [u8],
        offload: &mut Offload,
        scratch: &[u8],
        verdict: Verdict,
    ) {
        let from = self.from;
        match verdict {
            Verdict::Forward(id) => match snap.ports.get(&id) {
                // Split horizon for unicast too: a peer's frame is never sent
                // on to another peer (a stale entry would bounce it between hosts).
                Some(to) if from.is_tunnel() && to.is_tunnel() => {
                    drop_frame(self.shared, self.worker, from, DropReason::SamePort)
                }
                Some(to) => self.send(to, frame, offload),
                None => drop_frame(self.shared, self.worker, from, DropReason::NoRoute),
            },
            Verdict::Flood => {
                // Split horizon: what came through a tunnel goes to no other tunnel.
                let others = net.iter().flat_map(|n| n.ports.iter()).filter(|p| p.id != from.id);
                for to in others.filter(|p| !(from.is_tunnel() && p.is_tunnel())) {
                    self.send(to, frame, offload);
                }
            }
            Verdict::Reply(len) => transmit(self.shared, self.worker, from, &scratch[..len], &Offload::NONE),
            Verdict::Send(id, len) => match snap.ports.get(&id) {
                Some(to) => transmit(self.shared, self.worker, to, &scratch[..len], &Offload::NONE),
                None => drop_frame(self.shared, self.worker, from, DropReason::NoRoute),
            },
            Verdict::Drop(reason) => drop_frame(self.shared, self.worker, from, reason),
            Verdict::Consumed | Verdict::Decapsulated(..) => {}
        }
    }

    /// An inner frame that came in through tunnel port `tunnel`: through the
    /// pipeline of its overlay network, as received on that port.
    fn through_tunnel(
        &mut self,
        snap: &'a Snapshot,
        (tunnel, now): (PortId, u32),
        frame: &mut [u8],
        mut offload: Offload,
        scratch: &mut [u8],
    ) {
        let Some(port) = snap.ports.get(&tunnel) else { return };
        let Some(net) = snap.networks.get(&port.spec.network) else { return };
        let view = net.fdb.view();
        let ctx = Context { snap, shared: self.shared, net, fdb: &view, in_port: port, now };
        port.counters.received(self.worker, frame.len());
        let verdict = pipeline::process(&ctx, frame, &mut offload, scratch);
        let uplink = std::mem::replace(&mut self.from, port);
        self.apply(snap, Some(net), frame, &mut offload, scratch, verdict);
        self.from = uplink;
    }

    /// A train of VXLAN datagrams that came in whole: its inner frames
    /// joined into one super-frame when they are segments of one TCP
    /// stream (as a switch's `send_train` cut them), so the container's
    /// TAP takes them in one write; else one by one.
    fn through_tunnel_train(
        &mut self,
        snap: &'a Snapshot,
        tunnel: (PortId, u32),
        frame: &mut [u8],
        (start, end, datagram): (usize, usize, usize),
        scratch: &mut [u8],
    ) {
        let Some(train) = overlay::train_frames(frame, start, end, datagram) else {
            return drop_frame(self.shared, self.worker, self.from, DropReason::Malformed);
        };
        match gso::coalesce_tcp(frame, &train) {
            Ok((len, offload)) => self.through_tunnel(snap, tunnel, &mut frame[start..start + len], offload, scratch),
            Err(_) => {
                for k in 0..train.count {
                    self.through_tunnel(snap, tunnel, &mut frame[train.frame(k)], Offload::NONE, scratch);
                }
            }
        }
    }

    #[inline]
    fn send(&mut self, to: &Port, frame: &mut [u8], offload: &mut Offload) {
        let (shared, worker) = (self.shared, self.worker);
        if offload.is_plain() || to.takes_offloads() {
            return transmit(shared, worker, to, frame, offload);
        }
        if offload.is_gso() {
            let each = |seg: &[u8]| transmit(shared, worker, to, seg, &Offload::NONE);
            if gso::segment_tcp(frame, offload, self.segment, each).is_err() {
                drop_frame(shared, worker, self.from, DropReason::Malformed);
            }
            return;
        }
        // Finished once, in place: every later output gets it as it is.
        if gso::finish_checksum(frame, offload).is_err() {
            return drop_frame(shared, worker, self.from, DropReason::Malformed);
        }
        *offload = Offload::NONE;
        transmit(shared, worker, to, frame, offload);
    }
}

#[inline]
fn transmit(shared: &Shared, worker: usize, out: &Port, frame: &[u8], offload: &Offload) {
    match out.tx_queue(worker).send(frame, offload) {
        Ok(()) => out.counters.sent(worker, frame.len()),
        Err(_) => {
            out.counters.tx_dropped(worker);
            shared.drops.count(DropReason::TxError);
        }
    }
}

fn drop_frame(shared: &Shared, worker: usize, port: &Port, reason: DropReason) {
    port.counters.rx_dropped(worker);
    shared.drops.count(reason);
}

pub fn spawn(shared: Arc<Shared>, index: usize) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("vsw-worker{index}")).spawn(move || {
        pin_to_core(index);
        if let Err(e) = run(&shared, index) {
            log::error!("worker {index} stopped: {e}");
        }
    })
}

fn pin_to_core(index: usize) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) affects this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(index % cores, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            log::warn!("worker {index}: could not pin to a core: {}", io::Error::last_os_error());
        }
    }
}

/// The ports this worker has registered with its epoll set.
struct Registered {
    epoll: OwnedFd,
    /// Port id → the port and the queue of it this worker receives.
    ports: FxHashMap<u32, (Arc<Port>, usize)>,
    generation: u64,
}

impl Registered {
    /// Bring the epoll set in line with the ports the snapshot gives this worker.
    fn sync(&mut self, snap: &Snapshot, index: usize) {
        self.generation = snap.generation;
        let gone: Vec<u32> = self.ports.keys().filter(|id| !snap.ports.contains_key(id)).copied().collect();
        for id in gone {
            if let Some(fd) = self.ports.remove(&id).and_then(|(p, q)| p.spec.queues[q].poll_fd()) {
                epoll_ctl(&self.epoll, libc::EPOLL_CTL_DEL, fd, 0);
            }
        }
        for port in snap.ports.values() {
            let Some(queue) = port.rx_queue(index) else { continue };
            if self.ports.contains_key(&port.id) {
                continue;
            }
            if let Some(fd) = port.spec.queues[queue].poll_fd() {
                epoll_ctl(&self.epoll, libc::EPOLL_CTL_ADD, fd, port.id as u64);
                self.ports.insert(port.id, (port.clone(), queue));
            }
        }
    }
}

impl Registered {
    /// Stop polling a queue whose device is gone (its namespace was deleted
    /// behind the switch's back): level-triggered, it would report an error
    /// on every wait and keep the worker spinning.
    fn drop_broken(&mut self, id: u32, index: usize) {
        if let Some((port, queue)) = self.ports.remove(&id) {
            log::warn!("worker {index}: port {} failed; no longer receiving from it", port.spec.name);
            if let Some(fd) = port.spec.queues[queue].poll_fd() {
                epoll_ctl(&self.epoll, libc::EPOLL_CTL_DEL, fd, 0);
            }
        }
    }
}

fn epoll_ctl(epoll: &OwnedFd, op: libc::c_int, fd: RawFd, token: u64) {
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
    // SAFETY: valid epoll fd and event struct.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut ev) } != 0 {
        log::warn!("epoll_ctl({op}) on fd {fd}: {}", io::Error::last_os_error());
    }
}

/// How long to keep polling without sleeping after the last frame.
struct SpinWindow {
    window: Duration,
    last_traffic: Instant,
    /// Whether the window was open on the previous poll.
    was_open: bool,
}

impl SpinWindow {
    fn new() -> SpinWindow {
        SpinWindow { window: MIN_SPIN, last_traffic: Instant::now() - MAX_SPIN, was_open: false }
    }

    /// Whether to poll without sleeping now. A window that closes without
    /// traffic was spent for nothing: the next one is half as long.
    fn active(&mut self) -> bool {
        let open = self.last_traffic.elapsed() < self.window;
        if self.was_open && !open {
            self.window = (self.window / 2).max(MIN_SPIN);
        }
        self.was_open = open;
        open
    }

    /// Frames arrived; `while_spinning` says the window caught them, so a
    /// longer one would have saved a wake-up next time too.
    fn traffic(&mut self, while_spinning: bool) {
        if while_spinning {
            self.window = (self.window * 2).min(MAX_SPIN);
        }
        self.last_traffic = Instant::now();
    }
}

fn run(shared: &Shared, index: usize) -> io::Result<()> {
    // SAFETY: epoll_create1 returns a new descriptor or -1.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor we own.
    let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
    let slot = &shared.workers[index];
    let (waker, counters) = (&slot.waker, &slot.counters);
    epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, waker.0.as_raw_fd(), WAKER_TOKEN);
    let mut reg = Registered { epoll, ports: FxHashMap::default(), generation: u64::MAX };
    let mut engine = Engine::new(index);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut spin = SpinWindow::new();
    while !shared.stop.load(Relaxed) {
        let spinning = spin.active();
        let timeout = if spinning { 0 } else { MAX_SLEEP_MS };
        // SAFETY: events is a valid buffer of the length passed.
        let ready =
            unsafe { libc::epoll_wait(reg.epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, timeout) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let events = &events[..ready as usize];
        // A wake-up is taken before the snapshot is loaded: taken after, it
        // could swallow the wake-up of a change published in between.
        if events.iter().any(|ev| ev.u64 == WAKER_TOKEN) {
            waker.drain();
        }
        // Loaded after the wait, never held across it: a sleeping worker must
        // not keep removed ports (and their TAP fds) alive.
        let snap = shared.snapshot.load_full();
        if snap.generation != reg.generation {
            reg.sync(&snap, index);
            slot.synced.store(snap.generation, Release);
        }
        let started = Instant::now();
        let mut handled = 0;
        for ev in events.iter().filter(|ev| ev.u64 != WAKER_TOKEN) {
            let id = ev.u64 as u32;
            if ev.events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                reg.drop_broken(id, index);
            } else if let Some((port, queue)) = reg.ports.get(&id) {
                handled += engine.poll_port(shared, &snap, port, *queue);
            }
        }
        if handled > 0 {
            spin.traffic(spinning);
            counters.packets.fetch_add(handled as u64, Relaxed);
            counters.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        } else if spinning {
            // An empty spin gives the core to whatever else is runnable on it
            // (often the very namespaces whose traffic we wait for); with
            // nothing else runnable this returns at once.
            std::thread::yield_now();
        }
    }
    Ok(())
}
