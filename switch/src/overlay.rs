//! Overlay networks: one bridge domain stretched over several hosts with
//! VXLAN (RFC 7348) on the uplink, the switch's address there being its
//! VTEP.
//!
//! Every remote VTEP of an overlay network is a port of the network's
//! bridge domain (a *tunnel port*) whose `send` wraps the frame in VXLAN
//! and sends it out of the uplink. So the rest of the switch needs to know
//! nothing of tunnels: flooding to every port is head-end replication,
//! learning a source MAC on a tunnel port is learning which VTEP it lives
//! behind, and a known remote MAC is unicast to its VTEP alone. Frames that
//! came in through a tunnel are never flooded to another tunnel (split
//! horizon: every VTEP floods to all the others itself).
//!
//! A VTEP's MAC on the underlay is resolved with ARP (it must be on the
//! uplink's segment) and learnt from every frame it sends.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;
use ports::FrameIo;
use proto::offload::{Offload, GSO_ECN, GSO_UDP_L4};
use proto::{arp, ethernet, gso, vxlan, MacAddr};

use crate::fdb::PortId;
use crate::nat::UplinkContext;
use crate::neighbour::Neighbour;
use crate::pipeline::Verdict;
use crate::stats::DropReason;

/// The switch's end of the tunnels: its VTEP address and MAC on the uplink.
#[derive(Clone, Copy, Debug)]
pub struct LocalVtep {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub udp_port: u16,
}

/// One queue of a tunnel port: encapsulates and sends on one uplink queue.
pub struct TunnelQueue {
    vni: u32,
    remote: Ipv4Addr,
    neighbour: Arc<Neighbour>,
    local: LocalVtep,
    uplink: Arc<dyn FrameIo>,
    /// Where frames are wrapped and trains laid out. Worker w sends on
    /// queue w mod queues, so the lock is contended only when the uplink
    /// has fewer queues than there are workers (an AF_PACKET uplink has one).
    wrap: Mutex<Box<[u8]>>,
    /// The uplink refused a train (a kernel without UDP GSO on packet
    /// sockets): datagrams go one by one from then on.
    trains_refused: AtomicBool,
}

/// Datagrams in one train at most: the kernel's UDP_MAX_SEGMENTS (64
/// before Linux 6.x raised it to 128); past it the send is refused.
const MAX_TRAIN_DATAGRAMS: usize = 64;

impl TunnelQueue {
    pub fn new(
        vni: u32,
        remote: Ipv4Addr,
        neighbour: Arc<Neighbour>,
        local: LocalVtep,
        uplink: Arc<dyn FrameIo>,
    ) -> TunnelQueue {
        let wrap = Mutex::new(vec![0u8; vxlan::OVERHEAD + 65536].into_boxed_slice());
        TunnelQueue { vni, remote, neighbour, local, uplink, wrap, trains_refused: AtomicBool::new(false) }
    }

    /// Ask the underlay for the VTEP's MAC, at most once a second.
    fn resolve(&self, buf: &mut [u8]) {
        if !self.neighbour.should_ask() {
            return;
        }
        let us = arp::Host { mac: self.local.mac, ip: self.local.ip };
        let them = arp::Host { mac: MacAddr::ZERO, ip: self.remote };
        let len = arp::write_frame(buf, arp::OP_REQUEST, us, them, MacAddr::BROADCAST);
        let _ = self.uplink.send(&buf[..len], &Offload::NONE);
    }

    /// A TCP super-frame: cut into segments, each wrapped in VXLAN, the
    /// datagrams laid out as one UDP GSO train that the uplink sends at
    /// once (the kernel cuts it; or more trains past 64 KiB). The peer
    /// receives the train whole where it can and joins it again.
    fn send_train(&self, wrap: &mut [u8], outer: &vxlan::Outer, frame: &[u8], offload: &Offload) -> io::Result<()> {
        let segments = gso::Segments::new(frame, offload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut train = TrainLayout::default();
        let mut failed = None;
        for k in 0..segments.count() {
            let datagram = vxlan::HEADER_LEN + segments.len(k);
            if datagram > vxlan::MAX_TRAIN_PAYLOAD {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "segment too big to encapsulate"));
            }
            if train.payload + datagram > vxlan::MAX_TRAIN_PAYLOAD || train.count == MAX_TRAIN_DATAGRAMS {
                if let Err(e) = self.send_laid_out(wrap, outer, &train) {
                    failed.get_or_insert(e);
                }
                train = TrainLayout::default();
            }
            let at = vxlan::TRAIN_HEADERS + train.payload;
            vxlan::write_vxlan_header(&mut wrap[at..], self.vni);
            segments.write(k, &mut wrap[at + vxlan::HEADER_LEN..]);
            train.add(datagram);
        }
        let last = self.send_laid_out(wrap, outer, &train);
        failed.map_or(last, Err)
    }

    fn send_laid_out(&self, wrap: &mut [u8], outer: &vxlan::Outer, train: &TrainLayout) -> io::Result<()> {
        if train.count < 2 || self.trains_refused.load(Relaxed) {
            return self.send_one_by_one(wrap, outer, train);
        }
        let offload = vxlan::write_train(wrap, outer, train.payload, train.datagram);
        match self.uplink.send(&wrap[..vxlan::TRAIN_HEADERS + train.payload], &offload) {
            Err(e) if refuses_trains(&e) => {
                if !self.trains_refused.swap(true, Relaxed) {
                    log::warn!(
                        "tunnel to {}: the uplink refuses UDP GSO ({e}): sending datagrams one by one",
                        self.remote
                    );
                }
                self.send_one_by_one(wrap, outer, train)
            }
            sent => sent,
        }
    }

    /// The train's datagrams one at a time, each given its outer headers
    /// in the bytes before it (the tail of the one sent before).
    fn send_one_by_one(&self, wrap: &mut [u8], outer: &vxlan::Outer, train: &TrainLayout) -> io::Result<()> {
        for k in 0..train.count {
            let at = k * train.datagram;
            let len = train.datagram.min(train.payload - at);
            vxlan::write_outer(&mut wrap[at..], outer, len - vxlan::HEADER_LEN);
            self.uplink.send(&wrap[at..at + vxlan::TRAIN_HEADERS + len], &Offload::NONE)?;
        }
        Ok(())
    }
}

/// Whether a send failed because the kernel takes no UDP GSO from packet sockets.
fn refuses_trains(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT))
}

/// The datagrams laid out for one train so far.
#[derive(Default)]
struct TrainLayout {
    /// Bytes of datagram payload (VXLAN header and inner frame) laid out.
    payload: usize,
    /// The size of each (of the first; only the last may be smaller).
    datagram: usize,
    count: usize,
}

impl TrainLayout {
    fn add(&mut self, datagram: usize) {
        if self.count == 0 {
            self.datagram = datagram;
        }
        self.payload += datagram;
        self.count += 1;
    }
}

impl FrameIo for TunnelQueue {
    fn recv(&self, _buf: &mut [u8]) -> io::Result<(usize, Offload)> {
        Err(io::ErrorKind::WouldBlock.into()) // what comes through a tunnel enters by the uplink
    }

    /// Wrap `frame` and send it to the VTEP; while its MAC is unknown, ask
    /// for it and drop the frame. A partial checksum is finished in the
    /// wrapped copy; a super-frame goes as a train (`send_train`).
    fn send(&self, frame: &[u8], offload: &Offload) -> io::Result<()> {
        let mut wrap = self.wrap.lock();
        let Some(dst_mac) = self.neighbour.mac() else {
            self.resolve(&mut wrap);
            return Err(io::Error::new(io::ErrorKind::WouldBlock, format!("VTEP {} not resolved yet", self.remote)));
        };
        let outer = vxlan::Outer {
            src_mac: self.local.mac,
            dst_mac,
            src_ip: self.local.ip,
            dst_ip: self.remote,
            vni: self.vni,
            src_port: vxlan::source_port(frame),
            dst_port: self.local.udp_port,
        };
        if offload.is_gso() {
            return self.send_train(&mut wrap, &outer, frame, offload);
        }
        let len = vxlan::encapsulate(&mut wrap, &outer, frame)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too big to encapsulate"))?;
        if offload.needs_csum() {
            gso::finish_checksum(&mut wrap[vxlan::OVERHEAD..len], offload)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        self.uplink.send(&wrap[..len], &Offload::NONE)
    }

    /// What the uplink takes: super-frames and partial checksums are then
    /// handled here (trains, checksums finished in the wrapped copy).
    fn takes_offloads(&self) -> bool {
        self.uplink.takes_offloads()
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
}

/// A VXLAN frame from the uplink for one of the switch's overlay networks:
/// which tunnel port it came through and where its inner frame lies
/// (`Verdict::Decapsulated`). None: not VXLAN for us; the uplink's other
/// paths take it.
pub(crate) fn decapsulate(ctx: &UplinkContext, frame: &[u8], offload: &Offload) -> Option<Verdict> {
    let overlay = &ctx.snap.overlay;
    if overlay.vnis.is_empty() {
        return None;
    }
    let d = match vxlan::decapsulate(frame, overlay.udp_port) {
        Ok(Some(d)) if d.dst_ip == ctx.uplink.ip => d,
        Ok(_) => return None,
        Err(_) => return Some(Verdict::Drop(DropReason::Malformed)),
    };
    let start = d.inner.as_ptr() as usize - frame.as_ptr() as usize;
    if offload.is_gso() && !is_train(offload) && inner_offload(offload, start).is_plain() {
        // A super-frame whose metadata does not point into the inner frame.
        return Some(Verdict::Drop(DropReason::Malformed));
    }
    let Some(&port) = overlay.tunnels.get(&(d.vni, d.src_ip)) else {
        return Some(Verdict::Drop(DropReason::UnknownVtep));
    };
    // Learnt from traffic only while unknown: ARP (which always updates it)
    // decides after that, so one forged frame cannot re-point a VTEP.
    if let Some(neighbour) = overlay.neighbours.get(&d.src_ip).filter(|n| n.mac().is_none()) {
        neighbour.learn(d.src_mac);
    }
    Some(Verdict::Decapsulated(port, start, d.inner.len()))
}

/// Whether an uplink frame is a train: VXLAN datagrams that a sender (a
/// switch's `send_train`) handed over as one UDP GSO packet and that
/// arrived whole, `gso_size` bytes of datagram payload each.
pub(crate) fn is_train(offload: &Offload) -> bool {
    offload.gso_type & !GSO_ECN == GSO_UDP_L4
}

/// Where the inner frames of a train lie: its first one from `start` (behind
/// the VXLAN header decapsulation checked) to `end` for the whole train, in
/// datagrams of `datagram` bytes. None unless every datagram carries that
/// same VXLAN header (same VNI).
pub(crate) fn train_frames(frame: &[u8], start: usize, end: usize, datagram: usize) -> Option<gso::Train> {
    let headers = start - vxlan::HEADER_LEN;
    if datagram <= vxlan::HEADER_LEN + ethernet::HEADER_LEN || end <= start {
        return None;
    }
    let count = (end - headers).div_ceil(datagram);
    let last = end - headers - (count - 1) * datagram;
    let first_header = &frame[headers..start];
    let same_header = |k: usize| frame[headers + k * datagram..][..vxlan::HEADER_LEN] == *first_header;
    if last <= vxlan::HEADER_LEN || !(1..count).all(same_header) {
        return None;
    }
    let len = datagram - vxlan::HEADER_LEN;
    Some(gso::Train { first: start, stride: datagram, count, len, last_len: last - vxlan::HEADER_LEN })
}

/// The offload metadata of a decapsulated frame starting at `start` of
/// the outer one. A sender on this host (the kernel's vxlan device) leaves
/// the inner TCP checksum partial and hands over TCP super-frames whole,
/// the metadata pointing into the inner frame: it moves to the inner
/// frame's offsets, so the super-frame is switched whole too. A partial
/// checksum on the outer UDP header goes with it (never read).
pub fn inner_offload(outer: &Offload, start: usize) -> Offload {
    let csum_start = outer.csum_start as usize;
    if !outer.needs_csum() || csum_start < start + ethernet::HEADER_LEN {
        return Offload::NONE;
    }
    Offload {
        csum_start: (csum_start - start) as u16,
        hdr_len: (outer.hdr_len as usize).saturating_sub(start) as u16,
        ..*outer
    }
}

/// What the data path knows of the overlay networks.
#[derive(Clone, Default)]
pub struct OverlayTable {
    /// The UDP port VXLAN arrives on (4789 unless configured).
    pub udp_port: u16,
    /// VNI → network index.
    pub vnis: rustc_hash::FxHashMap<u32, u32>,
    /// (VNI, remote VTEP) → its tunnel port.
    pub tunnels: rustc_hash::FxHashMap<(u32, Ipv4Addr), PortId>,
    /// Remote VTEP → its MAC on the underlay.
    pub neighbours: rustc_hash::FxHashMap<Ipv4Addr, Arc<Neighbour>>,
}
