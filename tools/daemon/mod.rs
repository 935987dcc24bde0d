//! vswitchd's request handling: validates each request against the desired
//! state, plumbs namespaces and TAPs, programs the switch, and persists.
//!
//! Every handler checks everything it can before it changes anything, so a
//! refused request leaves state, data path and namespaces as they were.

use crate::control::{NetSpec, Request, Response, RuleSpec};
use crate::dns::names::check_name;
use crate::dns::service::{DnsConfig, DnsService};
use crate::state::{State, Store};
use crate::{inspect, publish};
use ipnet::{IpNet, Ipv4Net};
use ports::endpoint::{self, EndpointSpec, Ipv6Plumbing};
use ports::tap::Tap;
use ports::uplink::Uplink;
use ports::{netlink, netns};
use proto::MacAddr;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use switch::conntrack::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use switch::fdb::PortId;
use switch::filter;
use switch::model::{self, Endpoint, Ipv6Config, Mapping, Network, UserRule, DEFAULT_MTU, DEFAULT_NETWORK};
use switch::nat::{Published, PublishedPorts};
use switch::{ipam, ipam6, Ipv6Spec, NetworkSpec, PortSpec, Switch, UplinkSpec};

mod cluster;
mod overlay;
mod uplink;

pub use uplink::{UplinkConfig, UplinkFlags};

type Outcome = Result<Value, String>;

/// What add-port asks for beyond network and namespace.
struct PortRequest {
    ip: Option<String>,
    ip6: Option<String>,
    mac: Option<String>,
    name: Option<String>,
    aliases: Vec<String>,
    publish: Vec<String>,
}

/// A port that is live in the data path.
struct Attached {
    port: PortId,
    /// The TAP's queues, one per worker.
    queues: Vec<Arc<Tap>>,
}

pub struct Daemon {
    store: Store,
    state: State,
    switch: Switch,
    /// Worker threads: each TAP gets one queue per worker.
    workers: usize,
    /// The switch's address on its uplink, where ports are published.
    uplink_ip: Option<Ipv4Addr>,
    /// The UDP port of VXLAN on the uplink.
    vxlan_port: u16,
    /// Endpoint id → its live port. An endpoint whose plumbing failed at
    /// restore is in `state` but not here.
    attached: HashMap<String, Attached>,
    /// The embedded DNS server of the user-defined networks.
    dns: DnsService,
    /// The cluster store, with `--cluster-store`.
    cluster: Option<cluster::ClusterLink>,
}

impl Daemon {
    /// Load the saved state, create the default network on first start, and
    /// bring every saved network and port back, and the uplink if given.
    pub fn start(store: Store, workers: usize, uplink: Option<&UplinkConfig>) -> io::Result<Daemon> {
        let dns = DnsConfig::new(store.dir(), Vec::new());
        Daemon::start_with_dns(store, workers, uplink, dns)
    }

    /// [`Daemon::start`] with the DNS service set up as `dns` says.
    pub fn start_with_dns(
        store: Store,
        workers: usize,
        uplink: Option<&UplinkConfig>,
        dns: DnsConfig,
    ) -> io::Result<Daemon> {
        let state = store.load()?;
        let switch = Switch::start(workers)?;
        let dns = DnsService::start(dns, workers)?;
        let vxlan_port = uplink.map_or(proto::vxlan::UDP_PORT, |u| u.vxlan_port);
        let mut daemon = Daemon {
            store,
            state,
            switch,
            workers,
            uplink_ip: None,
            vxlan_port,
            attached: HashMap::new(),
            dns,
            cluster: None,
        };
        if daemon.state.network(DEFAULT_NETWORK).is_none() {
            daemon.create_default_network().map_err(io::Error::other)?;
        }
        daemon.restore();
        daemon.install_rules();
        daemon.save().map_err(io::Error::other)?;
        if let Some(config) = uplink {
            daemon.attach_uplink(config)?;
        }
        daemon.restore_overlays();
        Ok(daemon)
    }

    fn attach_uplink(&mut self, config: &UplinkConfig) -> io::Result<()> {
        let port = Uplink::open(&config.ifname)?;
        let spec = UplinkSpec {
            name: format!("uplink/{}", config.ifname),
            shared_mac: config.shared.then(|| MacAddr(port.mac())),
            mtu: port.mtu(),
            queues: vec![Arc::new(port)],
            ip: config.ip,
            gateway: config.gateway,
            ipv6: config.ipv6,
        };
        self.switch.set_uplink(spec).map_err(io::Error::other)?;
        self.uplink_ip = Some(config.ip);
        self.install_published();
        log::info!("uplink {}: masquerading behind {} via {}", config.ifname, config.ip, config.gateway);
        match config.ipv6 {
            Some(v6) => log::info!("uplink {}: routing IPv6 via {}", config.ifname, v6.gateway),
            None => log::info!("uplink {}: no IPv6 next hop (--uplink-gw6): IPv6 stays inside", config.ifname),
        }
        if config.shared {
            log::warn!(
                "uplink {}: sharing the host's address {}: keep the host's stack off ports 32768-60999 and the \
                 published ports on it (see README), or give the switch its own address with --uplink-ip",
                config.ifname,
                config.ip
            );
        }
        Ok(())
    }

    fn create_default_network(&mut self) -> Result<(), String> {
        let docker0: Ipv4Net = "172.17.0.0/16".parse().unwrap();
        let mut used = host_routes();
        used.extend(self.state.networks.iter().map(|n| n.subnet));
        let subnet = ipam::pick_free_subnet(docker0, &used).ok_or("no free subnet for the default network")?;
        log::info!("creating default network {DEFAULT_NETWORK} on {subnet}");
        let net = self.new_network(DEFAULT_NETWORK, subnet, ipam::first_host(subnet), None, DEFAULT_MTU);
        // Only into the state: `restore` brings every saved network up.
        self.state.networks.push(net);
        Ok(())
    }

    fn restore(&mut self) {
        for net in self.state.networks.clone() {
            if let Err(e) = self.switch.add_network(network_spec(&net)) {
                log::error!("network {}: {e}", net.name);
            }
            if let Err(e) = self.dns.serve(&self.switch, &net) {
                log::error!("{e}");
            }
        }
        let mut routed = std::collections::HashSet::new();
        for ep in self.state.endpoints.clone() {
            let first_in_netns = routed.insert(ep.netns.clone());
            match self.attach(&ep, first_in_netns) {
                Ok(()) => log::info!("re-attached {}/{} to {}", ep.netns, ep.ifname, ep.network),
                Err(e) => log::error!("could not re-attach {}/{} to {}: {e}", ep.netns, ep.ifname, ep.network),
            }
        }
        self.refresh_names();
        for netns_name in routed {
            self.dns.update_resolv_conf(&self.state, &netns_name);
        }
    }

    pub fn save(&self) -> Result<(), String> {
        // The change is live by now: say so, rather than suggest it was refused.
        self.store.save(&self.state).map_err(|e| format!("the change took effect but could not be saved: {e}"))
    }

    /// Give the DNS server the names of every endpoint it answers for: this
    /// host's, and those on other hosts of the cluster's overlay networks.
    fn refresh_names(&self) {
        let cluster_networks = self.state.networks.iter().filter(|n| cluster::is_cluster_network(n));
        let remote: Vec<Endpoint> = match &self.cluster {
            Some(link) => cluster_networks.flat_map(|n| link.remote_endpoints(&n.name)).cloned().collect(),
            None => Vec::new(),
        };
        self.dns.set_names(&self.state, &remote);
    }

    pub fn shutdown(self) {
        if let Err(e) = self.save() {
            log::error!("{e}");
        }
        if let Some(link) = self.cluster {
            link.store.stop();
        }
        self.dns.stop(&self.switch);
        self.switch.shutdown();
    }

    pub fn handle(&mut self, request: Request) -> Response {
        let outcome = match request {
            Request::AddNet(spec) => self.add_net(spec),
            Request::DelNet { name, if_exists } => self.del_net(&name, if_exists),
            Request::AddPeer { network, ip } => self.peer(&network, &ip, true),
            Request::DelPeer { network, ip } => self.peer(&network, &ip, false),
            Request::ListNets => Ok(self.state.networks.iter().map(inspect::network_summary).collect()),
            Request::ShowNet { name } => self.show_net(&name),
            Request::AddPort { network, netns, ip, ip6, mac, name, aliases, publish, may_exist } => {
                let req = PortRequest { ip, ip6, mac, name, aliases, publish };
                self.add_port(&network, &netns, req, may_exist)
            }
            Request::Publish { network, netns, spec } => self.publish(&network, &netns, &spec),
            Request::Unpublish { network, netns, spec } => self.unpublish(&network, &netns, &spec),
            Request::Port { netns } => self.port(&netns),
            Request::Alias { network, netns, name } => self.alias(&network, &netns, &name, true),
            Request::Unalias { network, netns, name } => self.alias(&network, &netns, &name, false),
            Request::AddRule(spec) => self.add_rule(spec),
            Request::ListRules => serde_json::to_value(&self.state.rules).map_err(|e| e.to_string()),
            Request::DelRule { id } => self.del_rule(id),
            Request::DelPort { network, netns, if_exists } => self.del_port(&network, &netns, if_exists),
            Request::ListPorts { network } => self.list_ports(network.as_deref()),
            Request::FdbShow { network } => self.fdb_show(&network),
            Request::Conntrack { network } => self.conntrack(network.as_deref()),
            Request::Stats => serde_json::to_value(self.switch.report()).map_err(|e| e.to_string()),
        };
        match outcome {
            Ok(v) => Response::ok(v),
            Err(e) => Response::error(e),
        }
    }

    fn network(&self, name: &str) -> Result<&Network, String> {
        self.state.network(name).ok_or_else(|| format!("no network named {name:?}"))
    }

    // ----- networks -----

    fn add_net(&mut self, req: NetSpec) -> Outcome {
        let name = req.name.as_str();
        if let Some(existing) = self.state.network(name) {
            return if req.may_exist {
                Ok(json!(existing.id))
            } else {
                Err(format!("network {name:?} already exists"))
            };
        }
        validate_network_name(name)?;
        let overlay = self.plan_overlay(&req)?;
        let default_mtu = if overlay.is_some() { DEFAULT_MTU - proto::vxlan::OVERHEAD as u32 } else { DEFAULT_MTU };
        let mtu = req.mtu.unwrap_or(default_mtu);
        if !(68..=65_535).contains(&mtu) {
            return Err(format!("invalid mtu {mtu}: want 68 to 65535"));
        }
        let subnet = match req.subnet.as_deref() {
            Some(text) => {
                let subnet = ipam::parse_subnet(text)?;
                if let Some(other) = self.state.networks.iter().find(|n| ipam::overlaps(n.subnet, subnet)) {
                    return Err(format!("subnet {subnet} overlaps network {} ({})", other.name, other.subnet));
                }
                subnet
            }
            None => self.free_subnet()?,
        };
        let gateway = match req.gateway.as_deref() {
            Some(text) => ipam::parse_ipv4("gateway", text)?,
            None => ipam::first_host(subnet),
        };
        let ip_range = req.ip_range.as_deref().map(parse_ip_range).transpose()?;
        ipam::validate(subnet, gateway, ip_range)?;
        let mut net = self.new_network(name, subnet, gateway, ip_range, mtu);
        net.internal = req.internal;
        net.icc = req.icc;
        net.masquerade = !req.no_masquerade;
        net.ipv6 = self.plan_ipv6(&req)?;
        net.overlay = overlay;
        let id = net.id.clone();
        let in_cluster = cluster::is_cluster_network(&net);
        if in_cluster {
            let link = self.cluster.as_mut().expect("cluster networks are made with a store");
            let revision = link.store.create_network(&net)?;
            link.note_write(revision);
        }
        let installed = self.install_network(net.clone()).and_then(|()| {
            self.dns.serve(&self.switch, &net).inspect_err(|_| {
                // Undone: a network without its DNS is not what was asked for.
                let _ = self.switch.remove_network(net.index);
                self.state.networks.retain(|n| n.name != name);
            })
        });
        if let Err(e) = installed {
            if let (true, Some(link)) = (in_cluster, &mut self.cluster) {
                let vni = net.overlay.as_ref().map_or(0, |o| o.vni);
                if let Err(undo) = link.store.delete_network(name, vni) {
                    log::error!("network {name} stays in the cluster store: {undo}");
                }
            }
            return Err(e);
        }
        self.save()?;
        log::info!("added network {name} ({subnet})");
        Ok(json!(id))
    }

    /// The IPv6 side add-net asks for: --subnet6 (or a random unique local
    /// /64) and --gateway6 (or the subnet's ::1), checked against the other
    /// networks' IPv6 subnets.
    fn plan_ipv6(&self, req: &NetSpec) -> Result<Option<Ipv6Config>, String> {
        if !req.ipv6 {
            if req.subnet6.is_some() || req.gateway6.is_some() {
                return Err("--subnet6 and --gateway6 need --ipv6".into());
            }
            return Ok(None);
        }
        let subnet = match req.subnet6.as_deref() {
            Some(text) => ipam6::parse_subnet(text)?,
            None => ipam6::random_ula_subnet(random_bytes()),
        };
        let taken = self.state.networks.iter().filter_map(|n| n.ipv6.map(|v6| (n, v6.subnet)));
        if let Some((other, theirs)) = taken.into_iter().find(|(_, theirs)| ipam6::overlaps(*theirs, subnet)) {
            return Err(format!("IPv6 subnet {subnet} overlaps network {} ({theirs})", other.name));
        }
        let gateway = match req.gateway6.as_deref() {
            Some(text) => ipam6::parse_addr("gateway6", text)?,
            None => ipam6::first_host(subnet),
        };
        let config = Ipv6Config { subnet, gateway };
        ipam6::validate(&config)?;
        Ok(Some(config))
    }

    /// Docker's choice without --subnet: the first free /16 from 172.18.0.0.
    fn free_subnet(&self) -> Result<Ipv4Net, String> {
        let mut used = host_routes();
        used.extend(self.state.networks.iter().map(|n| n.subnet));
        ipam::pick_free_subnet("172.18.0.0/16".parse().unwrap(), &used)
            .ok_or_else(|| "no free subnet left in the default pools: give one with --subnet".to_string())
    }

    fn new_network(
        &self,
        name: &str,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        ip_range: Option<Ipv4Net>,
        mtu: u32,
    ) -> Network {
        Network {
            id: model::new_id(),
            name: name.to_string(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            subnet,
            gateway,
            ip_range,
            mtu,
            index: self.next_network_index(),
            internal: false,
            icc: true,
            masquerade: true,
            ipv6: None,
            overlay: None,
        }
    }

    /// The data path's number for the next network.
    fn next_network_index(&self) -> u32 {
        self.state.networks.iter().map(|n| n.index).max().unwrap_or(0) + 1
    }

    fn install_network(&mut self, net: Network) -> Result<(), String> {
        self.switch.add_network(network_spec(&net))?;
        if let Some(overlay) = &net.overlay {
            if let Err(e) = self.install_overlay(&net, overlay) {
                let _ = self.switch.remove_network(net.index);
                return Err(e);
            }
        }
        self.state.networks.push(net);
        Ok(())
    }

    fn del_net(&mut self, name: &str, if_exists: bool) -> Outcome {
        let Some(net) = self.state.network(name) else {
            return if if_exists { Ok(Value::Null) } else { Err(format!("no network named {name:?}")) };
        };
        if name == DEFAULT_NETWORK {
            return Err(format!("network {DEFAULT_NETWORK} is the default network and cannot be removed"));
        }
        let rules: Vec<String> =
            self.state.rules.iter().filter(|r| r.network.as_deref() == Some(name)).map(|r| r.id.to_string()).collect();
        if !rules.is_empty() {
            return Err(format!("network {name} is named by rules {} (del-rule them first)", rules.join(", ")));
        }
        let ports: Vec<String> = self.state.endpoints_of(name).map(|e| format!("{}/{}", e.netns, e.ifname)).collect();
        if !ports.is_empty() {
            return Err(format!("network {name} has active ports: {} (del-port them first)", ports.join(", ")));
        }
        if let (Some(overlay), Some(link)) = (net.overlay.as_ref().filter(|o| o.cluster), &mut self.cluster) {
            let revision = link.store.delete_network(name, overlay.vni)?;
            link.note_write(revision);
        }
        self.remove_network_here(name)?;
        self.save()?;
        log::info!("removed network {name}");
        Ok(Value::Null)
    }

    /// Take a network without ports out of this host: its tunnels, its DNS
    /// and its bridge domain.
    fn remove_network_here(&mut self, name: &str) -> Result<(), String> {
        let index = self.network(name)?.index;
        for vtep in self.switch.tunnels(index) {
            self.switch.remove_tunnel(index, vtep);
        }
        self.dns.unserve(&self.switch, index);
        self.switch.remove_network(index)?;
        self.state.networks.retain(|n| n.name != name);
        self.refresh_names();
        Ok(())
    }

    fn show_net(&self, name: &str) -> Outcome {
        let net = self.network(name)?;
        let endpoints: Vec<&Endpoint> = self.state.endpoints_of(name).collect();
        Ok(inspect::network(net, &endpoints, &self.switch.tunnels(net.index)))
    }

    // ----- ports -----

    fn add_port(&mut self, network: &str, netns_name: &str, req: PortRequest, may_exist: bool) -> Outcome {
        let net = self.network(network)?.clone();
        netns::validate_name(netns_name).map_err(|e| format!("invalid namespace name: {e}"))?;
        if let Some(existing) = self.state.endpoints_of(network).find(|e| e.netns == netns_name) {
            return if may_exist {
                Ok(inspect::endpoint(existing, &net))
            } else {
                Err(format!("namespace {netns_name} already has a port on network {network} ({})", existing.ifname))
            };
        }
        let published = self.plan_mappings(&req.publish, &mut self.taken_host_ports())?;
        let mut ep = self.plan_and_claim(&net, |daemon| daemon.plan_endpoint(&net, netns_name, &req))?;
        ep.published = published;
        let first_in_netns = self.state.endpoints_in_netns(netns_name).next().is_none();
        if let Err(e) = self.attach(&ep, first_in_netns) {
            self.release_in_cluster(&net, &ep).unwrap_or_else(|undo| log::error!("{undo}"));
            return Err(format!("plumbing {netns_name}/{}: {e}", ep.ifname));
        }
        self.state.endpoints.push(ep.clone());
        if !ep.published.is_empty() {
            self.install_published();
        }
        self.refresh_names();
        self.dns.update_resolv_conf(&self.state, netns_name);
        self.save()?;
        log::info!("added port {netns_name}/{} on {network} ({})", ep.ifname, ep.ipv4);
        Ok(inspect::endpoint(&ep, &net))
    }

    /// The endpoints of a network: this host's, and on a cluster network
    /// those on the other hosts (whose addresses, MACs and names are taken too).
    fn network_endpoints<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        let in_cluster = self.state.network(network).is_some_and(cluster::is_cluster_network);
        let remote =
            self.cluster.iter().filter(move |_| in_cluster).flat_map(move |link| link.remote_endpoints(network));
        self.state.endpoints_of(network).chain(remote)
    }

    /// Choose the endpoint's address, MAC, name and interface, refusing
    /// anything taken or out of place. Changes nothing.
    fn plan_endpoint(&self, net: &Network, netns_name: &str, req: &PortRequest) -> Result<Endpoint, String> {
        let taken = ipam::in_use(net, self.network_endpoints(&net.name).map(|e| e.ipv4));
        let ipv4 = match req.ip.as_deref() {
            Some(text) => {
                let ip = ipam::parse_ipv4("--ip", text)?;
                ipam::check_requested(net, ip, &taken)?;
                ip
            }
            None => ipam::allocate(net, &taken)?,
        };
        let mac = match req.mac.as_deref() {
            Some(text) => parse_unicast_mac(text)?,
            None => MacAddr::from_ipv4(ipv4),
        };
        if mac == net.gateway_mac() || self.network_endpoints(&net.name).any(|e| e.mac == mac) {
            return Err(format!("MAC address {mac} is already in use on network {}", net.name));
        }
        let ipv6 = self.plan_ipv6_address(net, mac, req.ip6.as_deref())?;
        if let Some(name) = &req.name {
            check_name("--name", name)?;
        }
        let name = req.name.clone().unwrap_or_else(|| netns_name.to_string());
        if self.network_endpoints(&net.name).any(|e| e.name.eq_ignore_ascii_case(&name)) {
            return Err(format!("name {name:?} is already in use on network {}", net.name));
        }
        let aliases = checked_aliases(&req.aliases)?;
        let netns_exists = netns::exists(netns_name);
        let owns_netns = match self.state.endpoints_in_netns(netns_name).next() {
            Some(sibling) => sibling.owns_netns,
            None => !netns_exists,
        };
        Ok(Endpoint {
            id: model::new_id(),
            network: net.name.clone(),
            netns: netns_name.to_string(),
            name,
            aliases,
            ifname: self.free_ifname(netns_name, netns_exists)?,
            mac,
            ipv4,
            ipv6,
            owns_netns,
            published: Vec::new(),
        })
    }

    /// The endpoint's IPv6 address on a dual-stack network: --ip6, or one
    /// from its MAC (or the lowest free one). --ip6 elsewhere is an error.
    fn plan_ipv6_address(&self, net: &Network, mac: MacAddr, ip6: Option<&str>) -> Result<Option<Ipv6Addr>, String> {
        let Some(config) = net.ipv6 else {
            return match ip6 {
                Some(_) => Err(format!("--ip6 given, but network {} has no IPv6 (add-net --ipv6)", net.name)),
                None => Ok(None),
            };
        };
        let taken = ipam6::in_use(&config, self.network_endpoints(&net.name).filter_map(|e| e.ipv6));
        let ip = match ip6 {
            Some(text) => {
                let ip = ipam6::parse_addr("--ip6", text)?;
                ipam6::check_requested(&config, ip, &taken).map_err(|e| format!("{e} on network {}", net.name))?;
                ip
            }
            None => ipam6::allocate(&config, mac, &taken)?,
        };
        Ok(Some(ip))
    }

    /// The first ethN neither our other ports nor the namespace itself use.
    fn free_ifname(&self, netns_name: &str, netns_exists: bool) -> Result<String, String> {
        let ours: Vec<&str> = self.state.endpoints_in_netns(netns_name).map(|e| e.ifname.as_str()).collect();
        for n in 0..256 {
            let candidate = format!("eth{n}");
            if ours.contains(&candidate.as_str()) {
                continue;
            }
            if netns_exists && link_exists_in(netns_name, &candidate)? {
                continue;
            }
            return Ok(candidate);
        }
        Err(format!("namespace {netns_name} has no free ethN interface name"))
    }

    /// Plumb the endpoint's TAP and add it to the data path.
    fn attach(&mut self, ep: &Endpoint, first_in_netns: bool) -> io::Result<()> {
        let net = self.state.network(&ep.network).cloned().ok_or_else(|| io::Error::other("network gone"))?;
        let created_netns = ep.owns_netns && !netns::exists(&ep.netns);
        let spec = EndpointSpec {
            netns: ep.netns.clone(),
            create_netns: ep.owns_netns,
            ifname: ep.ifname.clone(),
            mac: ep.mac.octets(),
            mtu: net.mtu,
            ipv4: ep.ipv4,
            prefix_len: net.subnet.prefix_len(),
            default_gw: first_in_netns.then_some(net.gateway),
            ipv6: self.ipv6_plumbing(ep, &net),
            queues: self.workers,
        };
        let queues: Vec<Arc<Tap>> = match endpoint::attach(&spec) {
            Ok(taps) => taps.into_iter().map(Arc::new).collect(),
            Err(e) => {
                if created_netns {
                    let _ = netns::delete(&ep.netns);
                }
                return Err(e);
            }
        };
        let port_spec = PortSpec {
            network: net.index,
            name: format!("{}/{}", ep.netns, ep.ifname),
            mac: ep.mac,
            ipv4: ep.ipv4,
            ipv6: ep.ipv6,
            queues: queues.iter().map(|q| q.clone() as Arc<dyn ports::FrameIo>).collect(),
        };
        let port = match self.switch.add_port(port_spec) {
            Ok(port) => port,
            Err(e) => {
                // Undo the plumbing: nothing half-made stays behind.
                let _ = queues[0].set_persist(false);
                if created_netns {
                    let _ = netns::delete(&ep.netns);
                }
                return Err(io::Error::other(e));
            }
        };
        self.attached.insert(ep.id.clone(), Attached { port, queues });
        Ok(())
    }

    /// The endpoint's IPv6 address and, for the namespace's first dual-stack
    /// port, a default route via the switch's fe80::1.
    fn ipv6_plumbing(&self, ep: &Endpoint, net: &Network) -> Option<Ipv6Plumbing> {
        let (addr, config) = (ep.ipv6?, net.ipv6?);
        let first_v6 = self.first_dual_stack_port(&ep.netns);
        let default_gw = first_v6.is_none_or(|first| first.id == ep.id).then_some(proto::ipv6::LINK_LOCAL_GATEWAY);
        Some(Ipv6Plumbing { addr, prefix_len: config.subnet.prefix_len(), default_gw })
    }

    fn del_port(&mut self, network: &str, netns_name: &str, if_exists: bool) -> Outcome {
        self.network(network)?;
        let Some(ep) = self.state.endpoints_of(network).find(|e| e.netns == netns_name).cloned() else {
            return if if_exists {
                Ok(Value::Null)
            } else {
                Err(format!("namespace {netns_name} has no port on network {network}"))
            };
        };
        let last_in_netns = self.state.endpoints_in_netns(netns_name).count() == 1;
        let had_default_route = self.state.endpoints_in_netns(netns_name).next().map(|e| &e.id) == Some(&ep.id);
        let had_v6_default_route = self.first_dual_stack_port(netns_name).map(|e| &e.id) == Some(&ep.id);
        let net = self.network(network)?.clone();
        self.release_in_cluster(&net, &ep)?;
        if let Err(e) = self.detach(&ep, ep.owns_netns && last_in_netns) {
            self.reclaim(&net, &ep).unwrap_or_else(|undo| log::error!("{undo}"));
            return Err(e);
        }
        self.state.endpoints.retain(|e| e.id != ep.id);
        if had_default_route {
            self.hand_over_default_route(netns_name);
        }
        if had_v6_default_route {
            self.hand_over_ipv6_default_route(netns_name);
        }
        if !ep.published.is_empty() {
            self.install_published();
        }
        self.refresh_names();
        self.dns.update_resolv_conf(&self.state, netns_name);
        self.save()?;
        log::info!("removed port {netns_name}/{} from {network}", ep.ifname);
        Ok(Value::Null)
    }

    /// The namespace's first port has the default route (as at add-port and
    /// at restart): when it goes, the next one takes it over.
    fn hand_over_default_route(&self, netns_name: &str) {
        let Some(next) = self.state.endpoints_in_netns(netns_name).next() else { return };
        let Some(gateway) = self.state.network(&next.network).map(|n| n.gateway) else { return };
        let ifname = next.ifname.clone();
        let added = netns::run_in(netns_name, move || {
            let index = netlink::link_index(&ifname)?.ok_or_else(|| io::Error::other(format!("{ifname} is gone")))?;
            netlink::add_ipv4_default_route(index, gateway)
        });
        match added {
            Ok(Ok(())) => log::info!("{netns_name}: default route now via {gateway} on {}", next.ifname),
            Ok(Err(e)) | Err(e) => log::warn!("{netns_name}: could not move the default route to {}: {e}", next.ifname),
        }
    }

    /// The namespace's first port on a dual-stack network: the one with the
    /// IPv6 default route (via fe80::1).
    fn first_dual_stack_port<'a>(&'a self, netns_name: &'a str) -> Option<&'a Endpoint> {
        self.state.endpoints_in_netns(netns_name).find(|e| e.ipv6.is_some())
    }

    /// The IPv6 twin of `hand_over_default_route`.
    fn hand_over_ipv6_default_route(&self, netns_name: &str) {
        let Some(next) = self.first_dual_stack_port(netns_name) else { return };
        let ifname = next.ifname.clone();
        let added = netns::run_in(netns_name, move || {
            let index = netlink::link_index(&ifname)?.ok_or_else(|| io::Error::other(format!("{ifname} is gone")))?;
            netlink::add_ipv6_default_route(index, proto::ipv6::LINK_LOCAL_GATEWAY)
        });
        match added {
            Ok(Ok(())) => log::info!("{netns_name}: IPv6 default route now via fe80::1 on {}", next.ifname),
            Ok(Err(e)) | Err(e) => log::warn!("{netns_name}: could not move the IPv6 default route: {e}"),
        }
    }

    /// Take the port out of the data path and its TAP out of the namespace.
    /// The live port is forgotten only once the switch has let go of it, so
    /// a failure leaves everything as it was for another try.
    fn detach(&mut self, ep: &Endpoint, delete_netns: bool) -> Result<(), String> {
        match self.attached.get(&ep.id) {
            Some(live) => {
                // Not persistent any more: the device goes with the last fd,
                // which the workers drop as remove_port returns.
                live.queues[0].set_persist(false).map_err(|e| format!("releasing {}: {e}", ep.ifname))?;
                self.switch.remove_port(live.port)?;
                self.attached.remove(&ep.id);
            }
            None => endpoint::detach(&ep.netns, &ep.ifname, false)
                .map_err(|e| format!("removing {}/{}: {e}", ep.netns, ep.ifname))?,
        }
        if delete_netns {
            // The port is gone either way; a namespace already removed by
            // someone else is just as good.
            match netns::delete(&ep.netns) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    log::warn!("port {}/{} removed, but not its namespace: {e}", ep.netns, ep.ifname)
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn list_ports(&self, network: Option<&str>) -> Outcome {
        if let Some(name) = network {
            self.network(name)?;
        }
        let rows = self
            .state
            .endpoints
            .iter()
            .filter(|e| network.is_none_or(|n| e.network == n))
            .filter_map(|e| Some(inspect::endpoint(e, self.state.network(&e.network)?)))
            .collect();
        Ok(rows)
    }

    // ----- published ports -----

    /// Host ports published so far, with who has each.
    fn taken_host_ports(&self) -> publish::Taken {
        let mut taken = publish::Taken::new();
        for ep in &self.state.endpoints {
            for m in &ep.published {
                for (host, _) in m.pairs() {
                    taken.insert((m.proto.clone(), host), format!("{}/{}", ep.netns, ep.ifname));
                }
            }
        }
        taken
    }

    /// Parse and place `specs`, refusing any host port taken (by others or
    /// by an earlier spec of the same request). Changes nothing.
    fn plan_mappings(&self, specs: &[String], taken: &mut publish::Taken) -> Result<Vec<Mapping>, String> {
        if !specs.is_empty() && self.uplink_ip.is_none() {
            return Err("publishing a port needs an uplink: start vswitchd with --uplink".into());
        }
        let mut mappings = Vec::with_capacity(specs.len());
        for text in specs {
            let spec = publish::parse(text)?;
            if let Some(ip) = spec.host_ip.filter(|ip| !ip.is_unspecified()) {
                if Some(ip) != self.uplink_ip {
                    return Err(format!(
                        "cannot publish on {ip}: the switch's uplink address is {}",
                        self.uplink_ip.unwrap()
                    ));
                }
            }
            let mapping = publish::allocate(&spec, taken)?;
            for (host, _) in mapping.pairs() {
                taken.insert((mapping.proto.clone(), host), "this request".into());
            }
            mappings.push(mapping);
        }
        Ok(mappings)
    }

    /// Give the data path the published ports of every endpoint.
    fn install_published(&self) {
        let mut ports = PublishedPorts::default();
        for ep in &self.state.endpoints {
            let Some(net) = self.state.network(&ep.network) else { continue };
            for m in &ep.published {
                let proto = if m.proto == "udp" { PROTO_UDP } else { PROTO_TCP };
                for (host, container) in m.pairs() {
                    ports.insert((proto, host), Published { network: net.index, ip: ep.ipv4, port: container });
                }
            }
        }
        self.switch.set_published(ports);
    }

    fn endpoint_index(&self, network: &str, netns_name: &str) -> Result<usize, String> {
        self.network(network)?;
        self.state
            .endpoints
            .iter()
            .position(|e| e.network == network && e.netns == netns_name)
            .ok_or_else(|| format!("namespace {netns_name} has no port on network {network}"))
    }

    fn publish(&mut self, network: &str, netns_name: &str, spec: &str) -> Outcome {
        let index = self.endpoint_index(network, netns_name)?;
        let mut added = self.plan_mappings(&[spec.to_string()], &mut self.taken_host_ports())?;
        let lines: Vec<String> = added.iter().map(|m| publish::describe(m, self.uplink_ip)).collect();
        self.state.endpoints[index].published.append(&mut added);
        self.install_published();
        self.save()?;
        Ok(json!(lines))
    }

    /// Remove the mappings of `spec`'s container ports (and host ports, if
    /// it names them).
    fn unpublish(&mut self, network: &str, netns_name: &str, spec: &str) -> Outcome {
        let index = self.endpoint_index(network, netns_name)?;
        let spec = publish::parse(spec)?;
        let matches = |m: &Mapping| {
            m.proto == spec.proto
                && m.container_port == spec.container_port
                && m.count == spec.count
                && spec.host_port.is_none_or(|h| h == m.host_port)
        };
        let published = &mut self.state.endpoints[index].published;
        let before = published.len();
        published.retain(|m| !matches(m));
        if published.len() == before {
            return Err(format!(
                "{netns_name} on {network} has no published port {}/{}",
                spec.container_port, spec.proto
            ));
        }
        self.install_published();
        self.save()?;
        Ok(Value::Null)
    }

    /// `docker port`: every published port of a namespace.
    fn port(&self, netns_name: &str) -> Outcome {
        let lines: Vec<String> = self
            .state
            .endpoints_in_netns(netns_name)
            .flat_map(|e| e.published.iter().map(|m| publish::describe(m, self.uplink_ip)))
            .collect();
        if lines.is_empty() && self.state.endpoints_in_netns(netns_name).next().is_none() {
            return Err(format!("namespace {netns_name} has no ports"));
        }
        Ok(json!(lines))
    }

    /// `vsctl alias` (`add`) and `vsctl unalias`: one DNS alias of a live endpoint.
    fn alias(&mut self, network: &str, netns_name: &str, name: &str, add: bool) -> Outcome {
        let index = self.endpoint_index(network, netns_name)?;
        let mut ep = self.state.endpoints[index].clone();
        let has = ep.aliases.iter().position(|a| a.eq_ignore_ascii_case(name));
        match (add, has) {
            (true, Some(_)) => return Err(format!("{netns_name} on {network} has the alias {name:?} already")),
            (true, None) => {
                check_name("alias", name)?;
                ep.aliases.push(name.to_string());
            }
            (false, None) => return Err(format!("{netns_name} on {network} has no alias {name:?}")),
            (false, Some(i)) => {
                ep.aliases.remove(i);
            }
        }
        let net = self.network(network)?.clone();
        self.republish_in_cluster(&net, &ep)?;
        self.state.endpoints[index] = ep;
        self.refresh_names();
        self.save()?;
        Ok(Value::Null)
    }

    // ----- user rules -----

    fn add_rule(&mut self, req: RuleSpec) -> Outcome {
        if req.network.is_some() && req.uplink {
            return Err("a rule is for --net NET or for --uplink, not both".into());
        }
        if let Some(name) = &req.network {
            self.network(name)?;
        }
        let cidr = |what: &str, text: &Option<String>| -> Result<Option<IpNet>, String> {
            let parse = |t: &String| -> Result<IpNet, String> {
                t.parse::<IpNet>()
                    .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("invalid {what} {t:?}: want an IPv4 or IPv6 CIDR or address"))
            };
            text.as_ref().map(parse).transpose()
        };
        let (src, dst) = (cidr("--src", &req.src)?, cidr("--dst", &req.dst)?);
        if let (Some(s), Some(d)) = (src, dst) {
            if matches!(s, IpNet::V4(_)) != matches!(d, IpNet::V4(_)) {
                return Err(format!(
                    "--src {s} and --dst {d} are of different IP versions: the rule could never match"
                ));
            }
        }
        if let Some(p) = req.proto.as_deref().filter(|p| !matches!(*p, "tcp" | "udp" | "icmp")) {
            return Err(format!("invalid --proto {p:?}: want tcp, udp or icmp"));
        }
        if req.dport.is_some() && !matches!(req.proto.as_deref(), Some("tcp" | "udp")) {
            return Err("--dport needs --proto tcp or --proto udp".into());
        }
        if req.dport == Some(0) {
            return Err("invalid --dport 0: want 1 to 65535".into());
        }
        if !matches!(req.action.as_str(), "allow" | "drop") {
            return Err(format!("invalid --action {:?}: want allow or drop", req.action));
        }
        let id = self.state.rules.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        let rule = UserRule {
            id,
            network: req.network,
            uplink: req.uplink,
            src,
            dst,
            proto: req.proto,
            dport: req.dport,
            action: req.action,
        };
        self.state.rules.push(rule);
        self.install_rules();
        self.save()?;
        Ok(json!(id))
    }

    fn del_rule(&mut self, id: u32) -> Outcome {
        let before = self.state.rules.len();
        self.state.rules.retain(|r| r.id != id);
        if self.state.rules.len() == before {
            return Err(format!("no rule {id}"));
        }
        self.install_rules();
        self.save()?;
        Ok(Value::Null)
    }

    /// Give the data path the user rules, in order.
    fn install_rules(&self) {
        let compiled = self.state.rules.iter().filter_map(|r| {
            let scope = match (&r.network, r.uplink) {
                (Some(name), _) => filter::Scope::Network(self.state.network(name)?.index),
                (None, true) => filter::Scope::Uplink,
                (None, false) => filter::Scope::Everywhere,
            };
            let proto = r.proto.as_deref().map(|p| match p {
                "tcp" => PROTO_TCP,
                "udp" => PROTO_UDP,
                _ => PROTO_ICMP,
            });
            let action = if r.action == "allow" { filter::Action::Allow } else { filter::Action::Drop };
            Some(filter::Rule { id: r.id, scope, src: r.src, dst: r.dst, proto, dport: r.dport, action })
        });
        self.switch.set_rules(compiled.collect());
    }

    fn conntrack(&self, network: Option<&str>) -> Outcome {
        let index = network.map(|name| self.network(name).map(|n| n.index)).transpose()?;
        let names: HashMap<u32, &str> = self.state.networks.iter().map(|n| (n.index, n.name.as_str())).collect();
        let rows = self.switch.conntrack_rows(index).into_iter().map(|r| {
            let network = names.get(&r.network).copied().unwrap_or("?");
            json!({ "network": network, "proto": r.proto, "src": r.src, "dst": r.dst, "nat_src": r.nat_src,
                    "state": r.state, "age_secs": r.age_secs })
        });
        Ok(rows.collect())
    }

    fn fdb_show(&self, network: &str) -> Outcome {
        let net = self.network(network)?;
        let names: HashMap<PortId, String> = self
            .state
            .endpoints_of(network)
            .filter_map(|e| Some((self.attached.get(&e.id)?.port, format!("{}/{}", e.netns, e.ifname))))
            .collect();
        let rows = self.switch.fdb_rows(net.index).unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|r| {
                let port = names.get(&r.port).cloned().unwrap_or_else(|| r.port.to_string());
                json!({ "mac": r.mac, "port": port, "type": r.kind, "age_secs": r.age_secs })
            })
            .collect())
    }
}

fn network_spec(net: &Network) -> NetworkSpec {
    NetworkSpec {
        index: net.index,
        name: net.name.clone(),
        subnet: net.subnet,
        gateway: net.gateway,
        gateway_mac: net.gateway_mac(),
        internal: net.internal,
        icc: net.icc,
        masquerade: net.masquerade,
        ipv6: net.ipv6.map(|v6| Ipv6Spec { subnet: v6.subnet, gateway: v6.gateway }),
    }
}

/// Five random bytes: the global ID of a unique local IPv6 prefix.
fn random_bytes() -> [u8; 5] {
    let id = model::new_id(); // 64 random hex digits
    let mut out = [0u8; 5];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

/// The host's IPv4 routes, but the default route, which overlaps everything.
fn host_routes() -> Vec<Ipv4Net> {
    match netlink::ipv4_routes() {
        Ok(routes) => routes
            .into_iter()
            .filter(|(_, len)| *len > 0)
            .filter_map(|(dst, len)| Ipv4Net::new(dst, len).ok())
            .collect(),
        Err(e) => {
            log::warn!("cannot read host routes, subnet choice ignores them: {e}");
            Vec::new()
        }
    }
}

fn link_exists_in(netns_name: &str, ifname: &str) -> Result<bool, String> {
    let name = ifname.to_string();
    let found = netns::run_in(netns_name, move || netlink::link_index(&name))
        .map_err(|e| format!("namespace {netns_name}: {e}"))?;
    Ok(matches!(found, Ok(Some(_))))
}

/// Docker's rule for network names.
fn validate_network_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !first_ok || !rest_ok || name.len() > 64 {
        return Err(format!(
            "invalid network name {name:?}: use letters, digits, '_', '.', '-', starting with a letter or digit, at most 64"
        ));
    }
    Ok(())
}

/// `--alias` names: each a DNS name, none twice (case aside).
fn checked_aliases(aliases: &[String]) -> Result<Vec<String>, String> {
    for (i, alias) in aliases.iter().enumerate() {
        check_name("--alias", alias)?;
        if aliases[..i].iter().any(|a| a.eq_ignore_ascii_case(alias)) {
            return Err(format!("--alias {alias:?} given twice"));
        }
    }
    Ok(aliases.to_vec())
}

fn parse_ip_range(text: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = text.parse().map_err(|_| format!("invalid ip-range {text:?}: want an IPv4 CIDR"))?;
    if net.trunc() != net {
        return Err(format!("invalid ip-range {text}: host bits set (did you mean {}?)", net.trunc()));
    }
    Ok(net)
}

fn parse_unicast_mac(text: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = text.parse()?;
    if mac.is_multicast() || mac == MacAddr::ZERO {
        return Err(format!("invalid MAC address {mac}: must be a unicast address"));
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names_follow_docker() {
        assert!(validate_network_name("lab-1.a_b").is_ok());
        assert!(validate_network_name("").is_err());
        assert!(validate_network_name("-x").is_err());
        assert!(validate_network_name("a b").is_err());
        assert!(validate_network_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn macs_must_be_unicast() {
        assert!(parse_unicast_mac("02:42:ac:11:00:09").is_ok());
        assert!(parse_unicast_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_unicast_mac("00:00:00:00:00:00").is_err());
        assert!(parse_unicast_mac("nonsense").is_err());
    }

    #[test]
    fn ip_ranges_are_strict() {
        assert!(parse_ip_range("10.0.1.0/24").is_ok());
        assert!(parse_ip_range("10.0.1.1/24").is_err());
        assert!(parse_ip_range("10.0.1.0").is_err());
    }
}
