//! The daemon's side of the embedded DNS server: where it runs, how queries
//! reach it, what it knows, and the containers' resolv.conf.
//!
//! - **A service namespace per daemon** (`vswdns-` and 8 hex digits of a
//!   hash of the state directory, so that daemons of other state
//!   directories never meet): created at start (or found again after a
//!   crash), deleted at a clean stop.
//! - **Per user-defined network**, a TAP `dnsINDEX` in it with the
//!   network's gateway MAC and address (IPv6 off), attached to the switch
//!   as the network's service port (`Switch::set_service_port`): the switch
//!   steers TCP and UDP for the gateway's port 53 to it, and the kernel
//!   there hands them to a UDP socket and a TCP listener bound to
//!   GATEWAY:53, which [`DnsServer`] serves. The TAP is not persistent: it
//!   goes with the daemon and is made again at start.
//! - The server threads, and so the sockets that forward queries upstream,
//!   run in the daemon's own namespace (the host's): [`DnsService::serve`]
//!   must be called from a thread there.
//! - **Names**: the endpoints of every user-defined network, rebuilt whole on
//!   every change ([`DnsService::set_names`]).
//! - **resolv.conf** of each namespace ([`DnsService::update_resolv_conf`]):
//!   the gateway of its first user-defined network, or on the default
//!   network alone the host's servers, as Docker does.

use super::{DnsServer, Endpoint as NameEntry, NameTable, NetnsEtc, ResolvConf, Resolver, Upstreams};
use crate::state::State;
use ports::endpoint::{self, EndpointSpec};
use ports::netns;
use ports::tap::Tap;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use switch::model::{Endpoint, Network, DEFAULT_NETWORK};
use switch::service::DNS_PORT;
use switch::{PortSpec, Switch};

/// How the daemon's DNS service is set up.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Upstream servers (`vswitchd --dns`); empty: the host's resolv.conf
    /// less loopback entries.
    pub servers: Vec<IpAddr>,
    /// The service namespace.
    pub netns: String,
    /// Where containers' resolv.conf files go.
    pub etc: NetnsEtc,
    /// The time a forwarded query may take in all.
    pub timeout: Duration,
}

impl DnsConfig {
    /// The configuration of a daemon with this state directory.
    pub fn new(state_dir: &Path, servers: Vec<IpAddr>) -> DnsConfig {
        DnsConfig {
            servers,
            netns: service_netns(state_dir),
            etc: NetnsEtc::default(),
            timeout: super::DEFAULT_TIMEOUT,
        }
    }
}

/// The service namespace of the daemon whose state is in `state_dir`:
/// `vswdns-` and the FNV-1a hash of its absolute path in 8 hex digits.
pub fn service_netns(state_dir: &Path) -> String {
    let path = std::fs::canonicalize(state_dir)
        .or_else(|_| std::path::absolute(state_dir))
        .unwrap_or_else(|_| state_dir.to_path_buf());
    let mut hash: u32 = 0x811c_9dc5;
    for b in path.as_os_str().as_encoded_bytes() {
        hash = (hash ^ *b as u32).wrapping_mul(0x0100_0193);
    }
    format!("vswdns-{hash:08x}")
}

/// The TAP of network `index` in the service namespace.
fn tap_name(index: u32) -> String {
    format!("dns{index}")
}

/// One network served.
struct Served {
    /// The TAP's queues: the device lives while they are open.
    _taps: Vec<Arc<Tap>>,
    server: DnsServer,
}

/// The embedded DNS service of one daemon; see the module documentation.
pub struct DnsService {
    config: DnsConfig,
    resolver: Arc<Resolver>,
    /// Queues of each service TAP: one per worker.
    queues: usize,
    /// Network index → what serves it.
    served: HashMap<u32, Served>,
}

impl DnsService {
    /// Create (or find again) the service namespace; nothing is served yet.
    pub fn start(config: DnsConfig, queues: usize) -> io::Result<DnsService> {
        match netns::create(&config.netns) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let upstreams = match config.servers.is_empty() {
            true => Upstreams::from_host(),
            false => Upstreams::from_ips(config.servers.iter().copied()),
        };
        match upstreams.servers() {
            [] => log::warn!("dns: no upstream servers (none but loopback in resolv.conf?): names not local fail"),
            list => log::info!("dns: service namespace {}, forwarding to {list:?}", config.netns),
        }
        let resolver = Arc::new(Resolver::new(upstreams, config.timeout));
        Ok(DnsService { config, resolver, queues, served: HashMap::new() })
    }

    /// The service namespace.
    pub fn netns(&self) -> &str {
        &self.config.netns
    }

    /// The resolver all networks share.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Serve DNS on `net`'s gateway (nothing for the default network). On
    /// failure nothing of it is left behind.
    pub fn serve(&mut self, switch: &Switch, net: &Network) -> Result<(), String> {
        if net.name == DEFAULT_NETWORK || self.served.contains_key(&net.index) {
            return Ok(());
        }
        let ifname = tap_name(net.index);
        let spec = EndpointSpec {
            netns: self.config.netns.clone(),
            create_netns: true,
            ifname: ifname.clone(),
            mac: net.gateway_mac().octets(),
            mtu: net.mtu,
            ipv4: net.gateway,
            prefix_len: net.subnet.prefix_len(),
            default_gw: None,
            ipv6: None,
            queues: self.queues,
        };
        let what = format!("DNS service of network {}", net.name);
        let taps: Vec<Arc<Tap>> =
            endpoint::attach(&spec).map_err(|e| format!("{what}: {e}"))?.into_iter().map(Arc::new).collect();
        // Made again at each start: it goes with the daemon (its last queue closed).
        taps[0].set_persist(false).map_err(|e| format!("{what}: {e}"))?;
        let at = SocketAddr::new(net.gateway.into(), DNS_PORT);
        let (udp, tcp) = netns::run_in(&self.config.netns, move || -> io::Result<(UdpSocket, TcpListener)> {
            Ok((UdpSocket::bind(at)?, TcpListener::bind(at)?))
        })
        .and_then(|r| r)
        .map_err(|e| format!("{what}: binding {at} in {}: {e}", self.config.netns))?;
        let port = PortSpec {
            network: net.index,
            name: format!("{}/{ifname}", self.config.netns),
            mac: net.gateway_mac(),
            ipv4: net.gateway,
            ipv6: None,
            queues: taps.iter().map(|q| q.clone() as Arc<dyn ports::FrameIo>).collect(),
        };
        switch.set_service_port(port).map_err(|e| format!("{what}: {e}"))?;
        let server = match DnsServer::start(self.resolver.clone(), &net.name, Some(udp), Some(tcp)) {
            Ok(server) => server,
            Err(e) => {
                let _ = switch.remove_service_port(net.index);
                return Err(format!("{what}: {e}"));
            }
        };
        self.served.insert(net.index, Served { _taps: taps, server });
        log::info!("dns: serving network {} on {at}", net.name);
        Ok(())
    }

    /// Stop serving network `index` (if it is served) and take its TAP away.
    pub fn unserve(&mut self, switch: &Switch, index: u32) {
        let Some(served) = self.served.remove(&index) else { return };
        served.server.stop();
        if let Err(e) = switch.remove_service_port(index) {
            log::warn!("dns: {e}");
        }
        // Dropping the last queues removes the TAP.
    }

    /// Publish the names of every endpoint of the user-defined networks.
    /// `remote` are the endpoints on other hosts of the overlay networks.
    pub fn set_names(&self, state: &State, remote: &[Endpoint]) {
        self.resolver.set_names(names(state, remote));
    }

    /// Write (or rewrite) the resolv.conf of `netns` for the ports it has
    /// now, or remove it when it has none. A file vswitchd did not write is
    /// left alone. Failures are logged: they do not undo a port.
    pub fn update_resolv_conf(&self, state: &State, netns_name: &str) {
        let etc = &self.config.etc;
        if !etc.is_ours(netns_name) {
            log::info!("dns: {netns_name}: leaving a resolv.conf vswitchd did not write as it is");
            return;
        }
        let done = match self.resolv_conf(state, netns_name) {
            Some(text) => etc.write_resolv_conf(netns_name, &text).map(|_| ()),
            None => etc.remove_resolv_conf(netns_name),
        };
        if let Err(e) = done {
            log::warn!("dns: resolv.conf of {netns_name}: {e}");
        }
    }

    /// What the resolv.conf of `netns` says; `None` when it has no ports.
    fn resolv_conf(&self, state: &State, netns_name: &str) -> Option<String> {
        let host = ResolvConf::host();
        let user = state.endpoints_in_netns(netns_name).find(|e| e.network != DEFAULT_NETWORK);
        if let Some(net) = user.and_then(|e| state.network(&e.network)) {
            return Some(host.for_container(net.gateway.into()));
        }
        state.endpoints_in_netns(netns_name).next()?;
        let servers = match self.config.servers.is_empty() {
            true => host.upstream_servers(),
            false => self.config.servers.clone(),
        };
        Some(host.for_default_bridge(&servers))
    }

    /// Stop serving every network and delete the service namespace (a
    /// clean stop of the daemon).
    pub fn stop(mut self, switch: &Switch) {
        let served: Vec<u32> = self.served.keys().copied().collect();
        for index in served {
            self.unserve(switch, index);
        }
        match netns::delete(&self.config.netns) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => log::warn!("dns: {e}"),
            _ => log::info!("dns: service namespace {} deleted", self.config.netns),
        }
    }
}

/// The name table of `state`: every endpoint of a user-defined network by
/// its name and aliases, keyed by namespace; internal networks marked.
pub fn names(state: &State, remote: &[Endpoint]) -> NameTable {
    let local = state.endpoints.iter().filter(|e| e.network != DEFAULT_NETWORK).map(|e| (e, e.netns.clone()));
    // A remote endpoint is a container of its own here (its namespace is on another host).
    let remote = remote.iter().map(|e| (e, format!("remote/{}", e.id)));
    let entries = local.chain(remote).map(|(e, key)| NameEntry {
        network: e.network.clone(),
        name: e.name.clone(),
        aliases: e.aliases.clone(),
        ipv4: e.ipv4,
        ipv6: e.ipv6,
        key,
    });
    let internal = state.networks.iter().filter(|n| n.internal).map(|n| n.name.as_str());
    NameTable::new(entries).with_internal(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_namespaces_differ_by_state_dir_and_fit_a_name() {
        let a = service_netns(Path::new("/tmp/vswitch-a/state"));
        let b = service_netns(Path::new("/tmp/vswitch-b/state"));
        assert_ne!(a, b);
        assert_eq!(a, service_netns(Path::new("/tmp/vswitch-a/state")), "stable across calls");
        assert!(a.starts_with("vswdns-") && a.len() == 15, "{a}");
        assert!(netns::validate_name(&a).is_ok());
    }

    fn network(name: &str, index: u32, internal: bool) -> Network {
        Network {
            id: "f".repeat(64),
            name: name.into(),
            created: String::new(),
            subnet: format!("10.{index}.0.0/24").parse().unwrap(),
            gateway: format!("10.{index}.0.1").parse().unwrap(),
            ip_range: None,
            mtu: 1500,
            index,
            internal,
            icc: true,
            masquerade: true,
            ipv6: None,
            overlay: None,
        }
    }

    fn endpoint(network: &str, index: u32, netns: &str, last: u8) -> switch::model::Endpoint {
        let ipv4: std::net::Ipv4Addr = format!("10.{index}.0.{last}").parse().unwrap();
        switch::model::Endpoint {
            id: "e".repeat(64),
            network: network.into(),
            netns: netns.into(),
            name: netns.into(),
            aliases: vec![format!("{netns}-alias")],
            ifname: "eth0".into(),
            mac: proto::MacAddr::from_ipv4(ipv4),
            ipv4,
            ipv6: None,
            owns_netns: true,
            published: vec![],
        }
    }

    #[test]
    fn the_default_network_has_no_names_and_internal_networks_no_way_out() {
        let state = State {
            networks: vec![network(DEFAULT_NETWORK, 1, false), network("app", 2, false), network("vault", 3, true)],
            endpoints: vec![
                endpoint(DEFAULT_NETWORK, 1, "old", 2),
                endpoint(DEFAULT_NETWORK, 1, "both", 3),
                endpoint("app", 2, "both", 2),
                endpoint("vault", 3, "safe", 2),
            ],
            rules: vec![],
        };
        let t = names(&state, &[]);
        assert_eq!(t.len(), 2, "endpoints of the default network are left out");
        let both = t.scope("app", "10.2.0.2".parse().unwrap());
        assert!(t.lookup(&both, "both").is_some() && t.lookup(&both, "both-alias").is_some());
        assert!(t.lookup(&both, "old").is_none(), "a name on the default network resolved");
        assert!(t.may_forward(&both));
        let safe = t.scope("vault", "10.3.0.2".parse().unwrap());
        assert!(t.lookup(&safe, "safe").is_some() && !t.may_forward(&safe));
    }

    #[test]
    fn tap_names_fit_ifnamsiz() {
        assert!(tap_name(u32::MAX).len() < 16);
    }
}
