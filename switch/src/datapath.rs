//! The switch as the control plane sees it: networks and ports are added and
//! removed here, published to the workers as an immutable [`Snapshot`].
//!
//! Workers never lock: they load the current snapshot once per batch. A
//! change builds a new snapshot beside the old one, publishes it, and wakes
//! the workers so they pick up new ports at once.

use crate::conntrack::{self, Conntrack, DEFAULT_MAX_ENTRIES};
use crate::fdb::{self, Fdb, PortId};
use crate::filter;
use crate::nat::{Fragments, PublishedPorts, Uplink};
use crate::overlay::{LocalVtep, OverlayTable, TunnelQueue};
use crate::route6::Uplink6;
use crate::stats::{ConntrackReport, DropCounters, PortCounters, PortReport, Report, WorkerCounters, WorkerReport};
use crate::worker::{self, Engine, Waker};
use arc_swap::ArcSwap;
use ipnet::{Ipv4Net, Ipv6Net};
use parking_lot::Mutex;
use ports::FrameIo;
use proto::MacAddr;
use rustc_hash::{FxHashMap, FxHashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Learned MACs not seen for this long are forgotten (the Linux bridge's default).
pub const DEFAULT_FDB_AGING: Duration = Duration::from_secs(300);

/// What the data path needs to know of a network.
#[derive(Clone, Debug)]
pub struct NetworkSpec {
    pub index: u32,
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub gateway_mac: MacAddr,
    /// No way out: traffic beyond the gateway is dropped (Docker's --internal).
    pub internal: bool,
    /// Inter-container communication: off, containers reach only the
    /// gateway and what lies beyond it (Docker's enable_icc=false).
    pub icc: bool,
    /// Translate the source of packets going out to the uplink address
    /// (off: they leave with the containers' own addresses, and the world
    /// outside routes the subnet to the uplink address).
    pub masquerade: bool,
    /// Dual stack: the network's IPv6 subnet and gateway (Docker's --ipv6).
    pub ipv6: Option<Ipv6Spec>,
}

/// A network's IPv6 side. The switch answers for fe80::1 and `gateway`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Spec {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
}

impl NetworkSpec {
    /// A network with the defaults the daemon also starts from: the
    /// gateway's MAC derived from its address (Docker's), ICC and
    /// masquerade on, not internal, IPv4 only. Tests and benches build on it.
    pub fn bridge(index: u32, name: &str, subnet: Ipv4Net, gateway: Ipv4Addr) -> NetworkSpec {
        NetworkSpec {
            index,
            name: name.to_string(),
            subnet,
            gateway,
            gateway_mac: MacAddr::from_ipv4(gateway),
            internal: false,
            icc: true,
            masquerade: true,
            ipv6: None,
        }
    }

    /// Whether `ip` is one of the switch's own IPv6 addresses on this network.
    #[inline]
    pub fn is_gateway6(&self, ip: Ipv6Addr) -> bool {
        self.ipv6.is_some_and(|v6| ip == v6.gateway || ip == proto::ipv6::LINK_LOCAL_GATEWAY)
    }
}

/// The uplink: the switch's port on the world outside its networks.
#[derive(Clone)]
pub struct UplinkSpec {
    pub name: String,
    pub queues: Vec<Arc<dyn FrameIo>>,
    /// The address the switch owns on the uplink's segment.
    pub ip: Ipv4Addr,
    /// Next hop for everything beyond the networks.
    pub gateway: Ipv4Addr,
    /// Largest IP packet the uplink carries.
    pub mtu: u32,
    /// The address is the interface's own: use its MAC and leave ARP for
    /// it to the host. None: the switch is a separate host on the segment.
    pub shared_mac: Option<MacAddr>,
    /// IPv6 routed out of the uplink (no NAT).
    pub ipv6: Option<UplinkSpec6>,
}

/// The uplink's IPv6 side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkSpec6 {
    /// The switch's own global address on the segment (else it speaks from
    /// its link-local address).
    pub ip: Option<Ipv6Addr>,
    /// Next hop for IPv6 beyond the networks.
    pub gateway: Ipv6Addr,
}

/// The data-path network index of the uplink port (no bridge domain).
pub const UPLINK_NETWORK: u32 = u32::MAX;

/// What the data path needs to know of a port.
#[derive(Clone)]
pub struct PortSpec {
    pub network: u32,
    /// Label in stats, e.g. "ns1/eth0".
    pub name: String,
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    /// The endpoint's global IPv6 address on a dual-stack network.
    pub ipv6: Option<Ipv6Addr>,
    /// The port's queues (at least one). Queue j is received by worker
    /// (first + j) mod workers; worker w sends on queue w mod queues.
    pub queues: Vec<Arc<dyn FrameIo>>,
}

pub struct Port {
    pub id: PortId,
    pub spec: PortSpec,
    /// The worker that receives queue 0, if any worker runs.
    first_worker: Option<usize>,
    /// Workers the switch runs.
    workers: usize,
    pub counters: PortCounters,
    /// A network's service port (`Switch::set_service_port`), not an endpoint.
    pub service: bool,
    /// A tunnel to the remote VTEP at this address (`Switch::add_tunnel`).
    pub tunnel: Option<Ipv4Addr>,
}

impl Port {
    /// The queue worker `w` receives from, if it receives from this port.
    pub fn rx_queue(&self, w: usize) -> Option<usize> {
        let first = self.first_worker?;
        let q = (w + self.workers - first) % self.workers;
        (q < self.spec.queues.len()).then_some(q)
    }

    /// The queue worker `w` sends on: its own, so workers do not contend.
    #[inline]
    pub fn tx_queue(&self, w: usize) -> &dyn FrameIo {
        &*self.spec.queues[w % self.spec.queues.len()]
    }

    /// Whether the port takes GSO super-frames and partial checksums.
    #[inline]
    pub fn takes_offloads(&self) -> bool {
        self.spec.queues[0].takes_offloads()
    }

    /// A tunnel to a remote VTEP, not an endpoint.
    pub fn is_tunnel(&self) -> bool {
        self.tunnel.is_some()
    }

    /// The workers that receive from this port.
    fn receiving_workers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.workers).filter(|w| self.rx_queue(*w).is_some())
    }
}

/// One network's bridge domain as the workers see it.
pub struct Domain {
    pub spec: NetworkSpec,
    pub ports: Vec<Arc<Port>>,
    /// Addresses the ARP proxy answers for: endpoint IPv4 → (MAC, port).
    /// Remote endpoints of an overlay network are here with their tunnel.
    pub neighbours: FxHashMap<Ipv4Addr, (MacAddr, PortId)>,
    /// Addresses the NDP proxy answers for: each endpoint's global and
    /// link-local IPv6 address → (MAC, port). Empty on IPv4-only networks.
    pub neighbours6: FxHashMap<Ipv6Addr, (MacAddr, PortId)>,
    pub fdb: Arc<Fdb>,
    /// Endpoints on other hosts of an overlay network (`set_remote_endpoints`).
    pub remotes: Arc<[RemoteEndpoint]>,
}

/// An endpoint on another host of an overlay network, as the cluster store
/// tells it: the switch answers ARP and NDP for it and pins its MAC to the
/// tunnel to its VTEP, so nothing about it is flooded over the underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
    pub vtep: Ipv4Addr,
}

impl Domain {
    fn new(spec: NetworkSpec) -> Domain {
        Domain {
            spec,
            ports: Vec::new(),
            neighbours: FxHashMap::default(),
            neighbours6: FxHashMap::default(),
            fdb: Arc::new(Fdb::default()),
            remotes: Arc::from(Vec::new()),
        }
    }

    /// This domain with `ports` in place of its ports.
    fn with_ports(&self, ports: Vec<Arc<Port>>) -> Domain {
        self.rebuilt(ports, self.remotes.clone())
    }

    /// The domain with these ports and remote endpoints, its neighbour
    /// tables derived from them. A remote endpoint whose VTEP has no tunnel
    /// (yet) is not answered for.
    fn rebuilt(&self, ports: Vec<Arc<Port>>, remotes: Arc<[RemoteEndpoint]>) -> Domain {
        let endpoints =
            || ports.iter().filter(|p| !p.is_tunnel()).map(|p| (p.id, p.spec.mac, p.spec.ipv4, p.spec.ipv6));
        let remote = remotes.iter().filter_map(|r| tunnel_to(&ports, r.vtep).map(|id| (id, r.mac, r.ipv4, r.ipv6)));
        // Local endpoints last: they win over a remote claiming the same address.
        let all: Vec<_> = remote.chain(endpoints()).collect();
        let neighbours = all.iter().map(|(id, mac, ip, _)| (*ip, (*mac, *id))).collect();
        let neighbours6 = match self.spec.ipv6 {
            Some(_) => all
                .iter()
                .flat_map(|(id, mac, _, ip6)| ipv6_addresses(*mac, *ip6).map(move |ip| (ip, (*mac, *id))))
                .collect(),
            None => FxHashMap::default(),
        };
        Domain { spec: self.spec.clone(), ports, neighbours, neighbours6, fdb: self.fdb.clone(), remotes }
    }

    /// Where each remote endpoint's MAC is pinned: the tunnel to its VTEP,
    /// where it has one, unless a local endpoint has that MAC.
    fn remote_pins(&self) -> impl Iterator<Item = (MacAddr, PortId)> + '_ {
        let local_mac = |mac: MacAddr| self.ports.iter().any(|p| !p.is_tunnel() && p.spec.mac == mac);
        let remotes = self.remotes.iter().filter(move |r| !local_mac(r.mac));
        remotes.filter_map(|r| Some((r.mac, tunnel_to(&self.ports, r.vtep)?)))
    }

    /// Pin every remote endpoint's MAC to its tunnel.
    fn pin_remotes(&self) {
        for (mac, port) in self.remote_pins() {
            self.fdb.add_static(mac, port);
        }
    }
}

/// The tunnel port among `ports` to the VTEP at `vtep`.
fn tunnel_to(ports: &[Arc<Port>], vtep: Ipv4Addr) -> Option<PortId> {
    ports.iter().find(|p| p.tunnel == Some(vtep)).map(|p| p.id)
}

/// A port's IPv6 addresses: its global one, if any, and the link-local one
/// the kernel derives from its MAC.
fn ipv6_addresses(mac: MacAddr, global: Option<Ipv6Addr>) -> impl Iterator<Item = Ipv6Addr> {
    let link_local = proto::ipv6::link_local_from_mac(mac.octets());
    global.into_iter().chain(std::iter::once(link_local))
}

/// Everything the workers read, published as a whole.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub ports: FxHashMap<PortId, Arc<Port>>,
    pub networks: FxHashMap<u32, Arc<Domain>>,
    pub uplink: Option<Arc<Uplink>>,
    /// Published ports on the uplink address.
    pub published: Arc<PublishedPorts>,
    /// What the published ports lead to: (protocol, container IPv4, container
    /// port). Derived from `published`, so that a container's outgoing IPv6
    /// packet is looked up in the connection table only when it can belong
    /// to a published flow.
    pub published_targets: Arc<FxHashSet<(u8, Ipv4Addr, u16)>>,
    /// User filter rules, in order.
    pub rules: Arc<Vec<filter::Rule>>,
    /// Network index → its service port (the embedded DNS server's TAP).
    pub services: FxHashMap<u32, PortId>,
    /// Overlay networks: VNIs, tunnels, remote VTEPs.
    pub overlay: OverlayTable,
}

/// What the control plane shares with one worker.
pub(crate) struct WorkerSlot {
    pub waker: Waker,
    pub counters: WorkerCounters,
    /// The snapshot generation the worker has taken in (its epoll set matches it).
    pub synced: AtomicU64,
}

/// How long a port removal waits for workers to let go of the port.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// State shared between the control plane and the workers.
pub(crate) struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub drops: DropCounters,
    pub workers: Vec<WorkerSlot>,
    pub stop: AtomicBool,
    pub started: Instant,
    pub conntrack: Mutex<Conntrack>,
    /// Flows to ports published on the uplink's IPv6 address.
    pub conntrack6: Mutex<Conntrack<Ipv6Addr>>,
    /// ICMP and ICMPv6 errors the switch may still send this second.
    pub icmp_errors: crate::ratelimit::ErrorBudget,
    pub fragments: Mutex<Fragments>,
}

impl Shared {
    /// Seconds since the switch started: the FDB's clock.
    pub fn now_secs(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }
}

pub struct Switch {
    shared: Arc<Shared>,
    /// Serialises changes to the snapshot; never taken by workers.
    control: Mutex<Control>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Used by `poll_all` when the switch runs without worker threads.
    inline_engine: Mutex<Engine>,
    fdb_aging: Duration,
}

#[derive(Default)]
struct Control {
    next_port: PortId,
}

impl Switch {
    /// Start a switch with `workers` pinned worker threads. With zero, nothing
    /// polls the ports on its own: tests drive it with [`Switch::poll_all`].
    pub fn start(workers: usize) -> std::io::Result<Switch> {
        Self::start_with_aging(workers, DEFAULT_FDB_AGING)
    }

    pub fn start_with_aging(workers: usize, fdb_aging: Duration) -> std::io::Result<Switch> {
        let mut slots = Vec::with_capacity(workers);
        for _ in 0..workers {
            slots.push(WorkerSlot {
                waker: Waker::new()?,
                counters: WorkerCounters::default(),
                synced: AtomicU64::new(0),
            });
        }
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            drops: DropCounters::default(),
            workers: slots,
            stop: AtomicBool::new(false),
            started: Instant::now(),
            conntrack: Mutex::new(Conntrack::new(DEFAULT_MAX_ENTRIES)),
            conntrack6: Mutex::new(Conntrack::new(DEFAULT_MAX_ENTRIES)),
            icmp_errors: Default::default(),
            fragments: Mutex::new(Fragments::default()),
        });
        let mut threads = Vec::with_capacity(workers + 1);
        for index in 0..workers {
            threads.push(worker::spawn(shared.clone(), index)?);
        }
        threads.push(spawn_housekeeping(shared.clone(), fdb_aging)?);
        Ok(Switch {
            shared,
            control: Mutex::new(Control { next_port: 1 }),
            threads: Mutex::new(threads),
            inline_engine: Mutex::new(Engine::new(0)),
            fdb_aging,
        })
    }

    pub fn fdb_aging(&self) -> Duration {
        self.fdb_aging
    }

    /// Apply `change` to a copy of the snapshot and publish it; returns its generation.
    fn publish(&self, change: impl FnOnce(&mut Snapshot)) -> u64 {
        let mut next = Snapshot::clone(&self.shared.snapshot.load());
        next.generation += 1;
        change(&mut next);
        let generation = next.generation;
        self.shared.snapshot.store(Arc::new(next));
        generation
    }

    pub fn add_network(&self, spec: NetworkSpec) -> Result<(), String> {
        let _c = self.control.lock();
        if self.shared.snapshot.load().networks.contains_key(&spec.index) {
            return Err(format!("network index {} already in the data path", spec.index));
        }
        self.publish(|s| {
            s.networks.insert(spec.index, Arc::new(Domain::new(spec.clone())));
        });
        Ok(())
    }

    pub fn remove_network(&self, index: u32) -> Result<(), String> {
        let _c = self.control.lock();
        let snap = self.shared.snapshot.load();
        let domain = snap.networks.get(&index).ok_or_else(|| format!("no network index {index}"))?;
        if !domain.ports.is_empty() {
            return Err(format!("network {} still has {} ports", domain.spec.name, domain.ports.len()));
        }
        if snap.services.contains_key(&index) {
            return Err(format!("network {} still has its service port", domain.spec.name));
        }
        self.publish(|s| {
            s.networks.remove(&index);
            s.overlay.vnis.retain(|_, n| *n != index);
        });
        Ok(())
    }

    /// Set the uplink (once); masquerade for non-internal networks starts.
    pub fn set_uplink(&self, spec: UplinkSpec) -> Result<PortId, String> {
        let mut control = self.control.lock();
        let snap = self.shared.snapshot.load();
        if snap.uplink.is_some() {
            return Err("the switch has an uplink already".into());
        }
        let port_spec = PortSpec {
            network: UPLINK_NETWORK,
            name: spec.name,
            mac: MacAddr::from_ipv4(spec.ip),
            ipv4: spec.ip,
            ipv6: None,
            queues: spec.queues,
        };
        let port = self.new_port(&mut control, &snap, port_spec)?;
        let mut uplink = Uplink::new(port.id, spec.ip, spec.gateway, spec.mtu);
        if let Some(mac) = spec.shared_mac {
            uplink.share_host_address(mac);
        }
        uplink.v6 = spec.ipv6.map(|v6| Uplink6::new(v6.ip, v6.gateway, uplink.mac, spec.shared_mac.is_none()));
        let uplink = Arc::new(uplink);
        self.publish(|s| {
            s.ports.insert(port.id, port.clone());
            s.uplink = Some(uplink);
        });
        port.receiving_workers().for_each(|w| self.shared.workers[w].waker.wake());
        resolve_next_hop(&self.shared);
        Ok(port.id)
    }

    fn new_port(&self, control: &mut Control, snap: &Snapshot, spec: PortSpec) -> Result<Arc<Port>, String> {
        if spec.queues.is_empty() {
            return Err(format!("port {} has no queues", spec.name));
        }
        let id = control.next_port;
        control.next_port += 1;
        Ok(Arc::new(Port {
            id,
            first_worker: self.least_loaded_worker(snap),
            workers: self.shared.workers.len(),
            spec,
            counters: PortCounters::new(self.shared.workers.len()),
            service: false,
            tunnel: None,
        }))
    }

    /// Attach a port; its worker starts receiving from it at once.
    pub fn add_port(&self, spec: PortSpec) -> Result<PortId, String> {
        let mut control = self.control.lock();
        let snap = self.shared.snapshot.load();
        let domain = snap.networks.get(&spec.network).ok_or_else(|| format!("no network index {}", spec.network))?;
        let port = self.new_port(&mut control, &snap, spec)?;
        let id = port.id;
        domain.fdb.add_static(port.spec.mac, id);
        let mut ports = domain.ports.clone();
        ports.push(port.clone());
        let rebuilt = domain.with_ports(ports);
        self.publish(|s| {
            s.ports.insert(id, port.clone());
            s.networks.insert(rebuilt.spec.index, Arc::new(rebuilt));
        });
        port.receiving_workers().for_each(|w| self.shared.workers[w].waker.wake());
        Ok(id)
    }

    pub fn remove_port(&self, id: PortId) -> Result<(), String> {
        let _c = self.control.lock();
        let snap = self.shared.snapshot.load();
        let port = snap.ports.get(&id).ok_or_else(|| format!("no port {id}"))?.clone();
        let domain =
            snap.networks.get(&port.spec.network).ok_or_else(|| format!("port {id} is not a bridge port"))?.clone();
        let ports = domain.ports.iter().filter(|p| p.id != id).cloned().collect();
        let rebuilt = domain.with_ports(ports);
        let generation = self.publish(|s| {
            s.ports.remove(&id);
            s.networks.insert(rebuilt.spec.index, Arc::new(rebuilt));
        });
        port.receiving_workers().for_each(|w| self.shared.workers[w].waker.wake());
        port.receiving_workers().for_each(|w| self.wait_synced(w, generation));
        // Only now: a worker still in a batch of the old snapshot could
        // have learned a MAC on the port after an earlier cleanup.
        domain.fdb.remove_port(id);
        Ok(())
    }

    /// Make network `network` an overlay network with VXLAN network
    /// identifier `vni` (unique on the switch), carried on UDP `udp_port`.
    pub fn set_overlay(&self, network: u32, vni: u32, udp_port: u16) -> Result<(), String> {
        let _c = self.control.lock();
        let snap = self.shared.snapshot.load();
        if !snap.networks.contains_key(&network) {
            return Err(format!("no network index {network}"));
        }
        if vni > proto::vxlan::MAX_VNI {
            return Err(format!("VNI {vni} is beyond 24 bits"));
        }
        if snap.overlay.vnis.get(&vni).is_some_and(|n| *n != network) {
            return Err(format!("VNI {vni} is taken by another network"));
        }
        if !snap.overlay.vnis.is_empty() && snap.overlay.udp_port != udp_port {
            return Err(format!("VXLAN runs on UDP port {} already", snap.overlay.udp_port));
        }
        self.publish(|s| {
            s.overlay.vnis.insert(vni, network);
            s.overlay.udp_port = udp_port;
        });
        Ok(())
    }

    /// Add a tunnel from overlay network `network` to the VTEP at `remote`:
    /// a port of the network that carries frames there in VXLAN through the
    /// uplink (see `overlay`).
    pub fn add_tunnel(&self, network: u32, remote: Ipv4Addr) -> Result<PortId, String> {
        let mut control = self.control.lock();
        let snap = self.shared.snapshot.load();
        let domain = snap.networks.get(&network).ok_or_else(|| format!("no network index {network}"))?;
        let vni = snap.overlay.vnis.iter().find(|(_, n)| **n == network).map(|(v, _)| *v);
        let vni = vni.ok_or_else(|| format!("network {} is not an overlay network", domain.spec.name))?;
        let uplink = snap.uplink.as_ref().ok_or("overlay networks need an uplink (vswitchd --uplink)")?;
        let uplink_port = snap.ports.get(&uplink.port).ok_or("the uplink port is gone")?;
        if remote == uplink.ip || snap.overlay.tunnels.contains_key(&(vni, remote)) {
            return Err(format!("{remote} is a VTEP of network {} already (or this switch)", domain.spec.name));
        }
        let neighbour = snap.overlay.neighbours.get(&remote).cloned().unwrap_or_default();
        let local = LocalVtep { mac: uplink.mac, ip: uplink.ip, udp_port: snap.overlay.udp_port };
        let queues =
            uplink_port.spec.queues.iter().map(|q| {
                Arc::new(TunnelQueue::new(vni, remote, neighbour.clone(), local, q.clone())) as Arc<dyn FrameIo>
            });
        let spec = PortSpec {
            network,
            name: format!("vxlan{vni}/{remote}"),
            mac: MacAddr::ZERO,
            ipv4: Ipv4Addr::UNSPECIFIED,
            ipv6: None,
            queues: queues.collect(),
        };
        let mut port = self.new_port(&mut control, &snap, spec)?;
        {
            let tunnel = Arc::get_mut(&mut port).expect("a new port is not shared");
            tunnel.tunnel = Some(remote);
            tunnel.first_worker = None; // nothing to receive: its frames come in by the uplink
        }
        let id = port.id;
        let mut ports = domain.ports.clone();
        ports.push(port.clone());
        let rebuilt = Arc::new(domain.with_ports(ports));
        self.publish(|s| {
            s.ports.insert(id, port.clone());
            s.networks.insert(network, rebuilt.clone());
            s.overlay.tunnels.insert((vni, remote), id);
            s.overlay.neighbours.insert(remote, neighbour);
        });
        rebuilt.pin_remotes();
        Ok(id)
    }

    /// Remove the tunnel from `network` to `remote`, if there is one; what
    /// was learnt behind it goes too. Any worker may be decapsulating into
    /// it (they all read the uplink), so every worker lets go of it before
    /// its MACs are forgotten.
    pub fn remove_tunnel(&self, network: u32, remote: Ipv4Addr) {
        let _c = self.control.lock();
        let snap = self.shared.snapshot.load();
        let vni = snap.overlay.vnis.iter().find(|(_, n)| **n == network).map(|(v, _)| *v);
        let id = vni.and_then(|vni| snap.overlay.tunnels.get(&(vni, remote)).copied());
        let (Some(vni), Some(id), Some(domain)) = (vni, id, snap.networks.get(&network)) else { return };
        let ports = domain.ports.iter().filter(|p| p.id != id).cloned().collect();
        let rebuilt = Arc::new(domain.with_ports(ports));
        self.publish_everywhere(|s| {
            s.ports.remove(&id);
            s.networks.insert(network, rebuilt);
            s.overlay.tunnels.remove(&(vni, remote));
            if !s.overlay.tunnels.keys().any(|(_, r)| *r == remote) {
                s.overlay.neighbours.remove(&remote);
            }
        });
        domain.fdb.remove_port(id);
    }

    /// The remote VTEPs overlay network `network` has tunnels to.
    pub fn tunnels(&self, network: u32) -> Vec<Ipv4Addr> {
        let snap = self.shared.snapshot.load();
        let Some(domain) = snap.networks.get(&network) else { return Vec::new() };
        domain.ports.iter().filter_map(|p| p.tunnel).collect()
    }

    /// Set the endpoints on other hosts of overlay network `network` (from
    /// the cluster store), replacing the ones set before: the ARP and NDP
    /// proxies answer for them and their MACs are pinned to the tunnels to
    /// their VTEPs. Tunnels are added with `add_tunnel`; an endpoint whose
    /// VTEP has none is kept and takes effect when the tunnel comes.
    pub fn set_remote_endpoints(&self, network: u32, remotes: Vec<RemoteEndpoint>) -> Result<(), String> {
        let _c = self.control.lock();
        let snap = self.shared.snapshot.load();
        let domain = snap.networks.get(&network).ok_or_else(|| format!("no network index {network}"))?;
        if *domain.remotes == *remotes {
            return Ok(());
        }
        let rebuilt = Arc::new(domain.rebuilt(domain.ports.clone(), Arc::from(remotes)));
        self.publish(|s| {
            s.networks.insert(network, rebuilt.clone());
        });
        let pinned: Vec<(MacAddr, PortId)> = rebuilt.remote_pins().collect();
        let gone: Vec<(MacAddr, PortId)> = domain.remote_pins().filter(|pin| !pinned.contains(pin)).collect();
        rebuilt.fdb.forget(&gone);
        rebuilt.pin_remotes();
        Ok(())
    }

    /// Attach `spec` as its network's service port: the switch sends it the
    /// IPv4 TCP and UDP packets for the gateway's port 53, and switches what
    /// it sends (answers, ARP) to the network's endpoints; see `service`.
    /// It is not an endpoint: never flooded to, learned or ARP-proxied for.
    pub fn set_service_port(&self, spec: PortSpec) -> Result<PortId, String> {
        let mut control = self.control.lock();
        let snap = self.shared.snapshot.load();
        let network = spec.network;
        let domain = snap.networks.get(&network).ok_or_else(|| format!("no network index {network}"))?;
        if snap.services.contains_key(&network) {
            return Err(format!("network {} has a service port already", domain.spec.name));
        }
        let mut port = self.new_port(&mut control, &snap, spec)?;
        Arc::get_mut(&mut port).expect("a new port is not shared").service = true;
        let id = port.id;
        self.publish(|s| {
            s.ports.insert(id, port.clone());
            s.services.insert(network, id);
        });
        port.receiving_workers().for_each(|w| self.shared.workers[w].waker.wake());
        Ok(id)
    }

    /// Detach the service port of network `network`; once this returns no
    /// worker holds it (nor its queues).
    pub fn remove_service_port(&self, network: u32) -> Result<(), String> {
        let _c = self.control.lock();
        let snap = self.shared.snapshot.load();
        let id = *snap.services.get(&network).ok_or_else(|| format!("network index {network} has no service port"))?;
        let port = snap.ports.get(&id).cloned();
        let generation = self.publish(|s| {
            s.ports.remove(&id);
            s.services.remove(&network);
        });
        for w in port.iter().flat_map(|p| p.receiving_workers()) {
            self.shared.workers[w].waker.wake();
            self.wait_synced(w, generation);
        }
        Ok(())
    }

    /// Wait until worker `w` has taken in `generation`, so that it has let go
    /// of removed ports (and their file descriptors) when this returns.
    fn wait_synced(&self, w: usize, generation: u64) {
        let deadline = Instant::now() + RELEASE_TIMEOUT;
        while self.shared.workers[w].synced.load(Ordering::Acquire) < generation {
            if Instant::now() > deadline {
                log::warn!("worker {w} did not take in snapshot {generation} in time");
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The worker receiving the fewest queues: where a new port's first goes.
    fn least_loaded_worker(&self, snap: &Snapshot) -> Option<usize> {
        let mut load = vec![0usize; self.shared.workers.len()];
        for w in snap.ports.values().flat_map(|p| p.receiving_workers()) {
            load[w] += 1;
        }
        (0..load.len()).min_by_key(|w| load[*w])
    }

    /// Receive once from every port and handle what came, on the calling
    /// thread. For tests and benches of a switch started with no workers.
    pub fn poll_all(&self) -> usize {
        let snap = self.shared.snapshot.load_full();
        let mut engine = self.inline_engine.lock();
        let mut handled = 0;
        for port in snap.ports.values() {
            for queue in 0..port.spec.queues.len() {
                handled += engine.poll_port(&self.shared, &snap, port, queue);
            }
        }
        handled
    }

    /// Replace the published ports. Their host ports are kept out of
    /// masquerade from now on.
    pub fn set_published(&self, ports: PublishedPorts) {
        let _c = self.control.lock();
        self.shared.conntrack.lock().set_reserved(ports.keys().copied());
        self.shared.conntrack6.lock().set_reserved(ports.keys().copied());
        let targets: FxHashSet<_> = ports.iter().map(|((proto, _), t)| (*proto, t.ip, t.port)).collect();
        let (ports, targets) = (Arc::new(ports), Arc::new(targets));
        self.publish_everywhere(|s| {
            s.published = ports;
            s.published_targets = targets;
        });
    }

    /// Publish a change and return once every worker has taken it in, so
    /// that no frame is handled by the old state after the call returns
    /// (a rule added is a rule in force).
    fn publish_everywhere(&self, change: impl FnOnce(&mut Snapshot)) {
        let generation = self.publish(change);
        self.shared.workers.iter().for_each(|slot| slot.waker.wake());
        (0..self.shared.workers.len()).for_each(|w| self.wait_synced(w, generation));
    }

    /// Replace the user filter rules.
    pub fn set_rules(&self, rules: Vec<filter::Rule>) {
        let _c = self.control.lock();
        let rules = Arc::new(rules);
        self.publish_everywhere(|s| s.rules = rules);
    }

    /// The connection table, of one network or all, for `vsctl conntrack`.
    pub fn conntrack_rows(&self, network: Option<u32>) -> Vec<conntrack::Row> {
        let snap = self.shared.snapshot.load();
        let nat_ip = snap.uplink.as_ref().map(|u| u.ip).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let nat_ip6 = snap.uplink.as_ref().and_then(|u| u.v6.as_ref()?.ip).unwrap_or(Ipv6Addr::UNSPECIFIED);
        let entries = self.shared.conntrack.lock().entries(network);
        let entries6 = self.shared.conntrack6.lock().entries(network);
        let now = self.shared.now_secs();
        let mut rows = conntrack::rows(entries, nat_ip, now);
        rows.extend(conntrack::rows(entries6, nat_ip6, now));
        rows
    }

    /// The FDB of a network, for `vsctl fdb-show`.
    pub fn fdb_rows(&self, network: u32) -> Option<Vec<fdb::Row>> {
        let snap = self.shared.snapshot.load();
        let domain = snap.networks.get(&network)?;
        Some(domain.fdb.rows(self.shared.now_secs()))
    }

    pub fn report(&self) -> Report {
        let snap = self.shared.snapshot.load();
        let mut ports: Vec<PortReport> = snap
            .ports
            .values()
            .map(|p| {
                let net = snap
                    .networks
                    .get(&p.spec.network)
                    .map(|d| d.spec.name.clone())
                    .unwrap_or_else(|| "(uplink)".to_string());
                PortReport::new(p.id, p.spec.name.clone(), net, &p.counters)
            })
            .collect();
        ports.sort_by_key(|p| p.id);
        let elapsed_ns = self.shared.started.elapsed().as_nanos().max(1) as f64;
        let workers = self
            .shared
            .workers
            .iter()
            .enumerate()
            .map(|(index, slot)| (index, &slot.counters))
            .map(|(index, c)| WorkerReport {
                index,
                ports: snap.ports.values().filter(|p| p.rx_queue(index).is_some()).count(),
                packets: c.packets.load(Ordering::Relaxed),
                busy_percent: c.busy_ns.load(Ordering::Relaxed) as f64 * 100.0 / elapsed_ns,
            })
            .collect();
        let conntrack = {
            let (v4, v6) = (self.shared.conntrack.lock(), self.shared.conntrack6.lock());
            ConntrackReport { entries: v4.len() + v6.len(), evictions: v4.evictions + v6.evictions }
        };
        Report { ports, workers, drops: self.shared.drops.report(), conntrack }
    }

    /// Stop the workers and wait for them.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for slot in &self.shared.workers {
            slot.waker.wake();
        }
        for t in self.threads.lock().drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Ask for the uplink's next hop until it answers, so that the first
/// packet out does not wait for ARP.
fn resolve_next_hop(shared: &Shared) {
    let snap = shared.snapshot.load();
    let Some(uplink) = snap.uplink.as_deref() else { return };
    let Some(port) = snap.ports.get(&uplink.port) else { return };
    let mut frame = [0u8; 128];
    let send = |len: usize, frame: &[u8]| port.tx_queue(0).send(&frame[..len], &proto::offload::Offload::NONE);
    if let Some(len) = uplink.gateway_request(&mut frame) {
        let _ = send(len, &frame);
    }
    if let Some(len) = uplink.v6.as_ref().and_then(|v6| v6.gateway_solicit(uplink.mac, &mut frame)) {
        let _ = send(len, &frame);
    }
}

/// Ages the FDBs and the connection table once a second.
fn spawn_housekeeping(shared: Arc<Shared>, aging: Duration) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("vsw-housekeeping".into()).spawn(move || {
        let max_age = aging.as_secs().max(1) as u32;
        while !shared.stop.load(Ordering::SeqCst) {
            std::thread::park_timeout(Duration::from_secs(1));
            let now = shared.now_secs();
            for domain in shared.snapshot.load().networks.values() {
                domain.fdb.age(now, max_age);
            }
            shared.conntrack.lock().expire(now);
            shared.conntrack6.lock().expire(now);
            shared.fragments.lock().expire(now);
            resolve_next_hop(&shared);
        }
    })
}
