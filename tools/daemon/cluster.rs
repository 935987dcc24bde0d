//! The daemon's side of the cluster store: joining it, and programming this
//! host from each new view of it: overlay networks made on other hosts are
//! installed here and removed with them, and every remote endpoint is given
//! to the switch (ARP/NDP proxy, pinned MAC) with a tunnel to its VTEP.

use super::Daemon;
use crate::cluster::{ClaimError, Cluster, ClusterConfig, Revision, View};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use switch::model::{Endpoint, Network};
use switch::{ipam, RemoteEndpoint};

/// How long start-up waits for the store's first view before going on with
/// the saved state.
const FIRST_VIEW_WAIT: Duration = Duration::from_secs(3);
/// How soon a view whose programming failed in part is applied again.
const RETRY: Duration = Duration::from_secs(2);

/// The cluster store as the daemon holds it.
pub(super) struct ClusterLink {
    pub store: Cluster,
    /// The last view applied.
    pub view: View,
    /// The store's revision after this daemon's last write: an older view
    /// (of the same store) does not show that write yet, and is skipped for
    /// the one that will.
    pub written: Revision,
    /// When to apply the last view again (some of it could not be programmed).
    pub retry_at: Option<Instant>,
}

impl ClusterLink {
    /// The endpoints of `network` on other hosts.
    pub fn remote_endpoints<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.view.remote_endpoints(network, self.store.config().advertise).map(|r| &r.endpoint)
    }

    /// The other hosts with endpoints on `network`.
    fn remote_vteps(&self, network: &str) -> BTreeSet<Ipv4Addr> {
        self.view.remote_endpoints(network, self.store.config().advertise).map(|r| r.host).collect()
    }

    /// A write of this daemon's changed the store at `revision` (None: it
    /// changed nothing, and no view will show it). A write to a store made
    /// anew replaces what was noted of the old one.
    pub fn note_write(&mut self, revision: Option<Revision>) {
        if let Some(revision) = revision.filter(|r| !r.is_before(&self.written)) {
            self.written = revision;
        }
    }
}

pub(super) fn is_cluster_network(net: &Network) -> bool {
    net.overlay.as_ref().is_some_and(|o| o.cluster)
}

impl Daemon {
    /// Join the cluster store: keep this host's endpoints there and follow
    /// it. Waits a moment for the first view, so that the first requests
    /// see the cluster; an unreachable store is retried in the background.
    pub fn join_cluster(&mut self, config: ClusterConfig) -> std::io::Result<()> {
        let advertise = config.advertise;
        let owned = self
            .state
            .endpoints
            .iter()
            .filter(|e| self.state.network(&e.network).is_some_and(is_cluster_network))
            .map(|e| (e.id.clone(), crate::cluster::endpoint_records(advertise, e)))
            .collect();
        log::info!("cluster store {}: this host's VTEP is {advertise}", config.store);
        let store = Cluster::start(config, owned)?;
        self.cluster = Some(ClusterLink { store, view: View::default(), written: Revision::default(), retry_at: None });
        let deadline = Instant::now() + FIRST_VIEW_WAIT;
        while Instant::now() < deadline {
            if self.tick() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        log::warn!("cluster store: no answer yet; going on with the saved state");
        Ok(())
    }

    /// Apply the store's newest view, if there is one; says whether there
    /// was. A view whose programming failed in part is applied again a
    /// little later.
    pub fn tick(&mut self) -> bool {
        let Some(link) = &mut self.cluster else { return false };
        let view = match link.store.take_view() {
            Some(view) if view.revision.is_before(&link.written) => return true, // the view our write makes follows
            Some(view) => view,
            None if link.retry_at.is_some_and(|at| Instant::now() >= at) => link.view.clone(),
            None => return false,
        };
        link.retry_at = None;
        self.apply_view(view);
        true
    }

    fn apply_view(&mut self, view: View) {
        let mut changed = false;
        // A network of this name made anew (another id) is another network.
        let replaced = |local: &Network| view.networks.get(&local.name).is_some_and(|n| n.id != local.id);
        let gone: Vec<String> = self
            .state
            .networks
            .iter()
            .filter(|n| is_cluster_network(n) && (!view.networks.contains_key(&n.name) || replaced(n)))
            .map(|n| n.name.clone())
            .collect();
        for name in gone {
            if self.state.endpoints_of(&name).next().is_some() {
                self.keep_network_with_ports(&name, &view);
                continue;
            }
            match self.remove_network_here(&name) {
                Ok(()) => changed = true,
                Err(e) => log::error!("network {name} was removed from the cluster: {e}"),
            }
        }
        for net in view.networks.values() {
            match self.state.network(&net.name) {
                Some(local) if is_cluster_network(local) => {}
                Some(_) => log::error!("cluster network {} is not installed: a local network has its name", net.name),
                None => match self.adopt_network(net) {
                    Ok(()) => changed = true,
                    Err(e) => log::error!("cluster network {} is not installed: {e}", net.name),
                },
            }
        }
        if let Some(link) = &mut self.cluster {
            link.view = view;
        }
        self.program_all_remotes();
        self.refresh_names();
        if changed {
            if let Err(e) = self.save() {
                log::error!("{e}");
            }
        }
    }

    /// A cluster network the store does not have (any more) but this host
    /// has ports on: the store lost it (wiped, or restored from an older
    /// copy), as removing it anywhere needs it to have no ports. It is
    /// written back, unless the store has another network of its name.
    fn keep_network_with_ports(&mut self, name: &str, view: &View) {
        let (Some(net), Some(link)) = (self.state.network(name).cloned(), &mut self.cluster) else { return };
        if view.networks.contains_key(name) {
            log::error!("network {name} was made anew in the cluster but has ports here: kept as it was");
            return;
        }
        match link.store.create_network(&net) {
            Ok(revision) => {
                link.note_write(revision);
                log::warn!("network {name} was missing from the cluster store: written back (it has ports here)");
            }
            Err(e) => log::error!("network {name} is missing from the cluster store and has ports here: {e}"),
        }
    }

    /// Install a network another host made: this host's own index, no
    /// static peers.
    fn adopt_network(&mut self, net: &Network) -> Result<(), String> {
        if let Some(other) = self.state.networks.iter().find(|n| ipam::overlaps(n.subnet, net.subnet)) {
            return Err(format!("its subnet {} overlaps network {} ({})", net.subnet, other.name, other.subnet));
        }
        let mut net = net.clone();
        net.index = self.next_network_index();
        if let Some(overlay) = &mut net.overlay {
            overlay.peers.clear();
        }
        self.install_network(net.clone())?;
        if let Err(e) = self.dns.serve(&self.switch, &net) {
            log::error!("{e}");
        }
        log::info!("added network {} ({}) from the cluster", net.name, net.subnet);
        Ok(())
    }

    /// Program every cluster network's remote endpoints; when some of it
    /// fails (a tunnel the switch refused), try again in a while.
    fn program_all_remotes(&mut self) {
        let cluster_networks: Vec<Network> =
            self.state.networks.iter().filter(|n| is_cluster_network(n)).cloned().collect();
        let failed = cluster_networks.iter().filter(|net| !self.program_remotes(net)).count();
        if let (true, Some(link)) = (failed > 0, &mut self.cluster) {
            link.retry_at = Some(Instant::now() + RETRY);
        }
    }

    /// Give the switch the remote endpoints of `net` and a tunnel to each
    /// of their hosts (and to the static peers), and no other tunnels.
    /// Says whether all of it went through.
    fn program_remotes(&self, net: &Network) -> bool {
        let Some(link) = &self.cluster else { return true };
        let remotes: Vec<RemoteEndpoint> = link
            .view
            .remote_endpoints(&net.name, link.store.config().advertise)
            .map(|r| RemoteEndpoint { mac: r.endpoint.mac, ipv4: r.endpoint.ipv4, ipv6: r.endpoint.ipv6, vtep: r.host })
            .collect();
        let tunnels = self.sync_tunnels(net);
        let endpoints = self.switch.set_remote_endpoints(net.index, remotes);
        let errors: Vec<String> = [tunnels, endpoints].into_iter().filter_map(Result::err).collect();
        for e in &errors {
            log::error!("overlay network {}: {e}", net.name);
        }
        errors.is_empty()
    }

    /// The VTEPs `net` should have tunnels to: its static peers and, on a
    /// cluster network, the hosts of its remote endpoints.
    pub(super) fn wanted_vteps(&self, net: &Network) -> BTreeSet<Ipv4Addr> {
        let mut wanted: BTreeSet<Ipv4Addr> = net.overlay.iter().flat_map(|o| o.peers.iter().copied()).collect();
        if let (true, Some(link)) = (is_cluster_network(net), &self.cluster) {
            wanted.extend(link.remote_vteps(&net.name));
        }
        wanted
    }

    /// Add and remove tunnels until `net` has exactly the wanted ones,
    /// going on past a failure; returns the first.
    pub(super) fn sync_tunnels(&self, net: &Network) -> Result<(), String> {
        let wanted = self.wanted_vteps(net);
        let current: BTreeSet<Ipv4Addr> = self.switch.tunnels(net.index).into_iter().collect();
        for gone in current.difference(&wanted) {
            self.switch.remove_tunnel(net.index, *gone);
        }
        let mut first_error = Ok(());
        for new in wanted.difference(&current) {
            if let Err(e) = self.switch.add_tunnel(net.index, *new) {
                first_error = first_error.and(Err(e));
            }
        }
        first_error
    }
}

impl Daemon {
    /// Plan the endpoint (`plan`) and, on a cluster network, claim its
    /// addresses and publish it. When another host got there first, plan
    /// again from the store's endpoints as the refusal gave them: an
    /// address asked for is then refused as taken, a chosen one chosen anew.
    pub(super) fn plan_and_claim(
        &mut self,
        net: &Network,
        plan: impl Fn(&Daemon) -> Result<Endpoint, String>,
    ) -> Result<Endpoint, String> {
        const ATTEMPTS: usize = 3;
        if is_cluster_network(net) && self.cluster.is_none() {
            return Err(format!(
                "network {} is a cluster network: its addresses are handed out through the cluster store \
                 (start vswitchd with --cluster-store)",
                net.name
            ));
        }
        for _ in 0..ATTEMPTS {
            let ep = plan(self)?;
            let (true, Some(link)) = (is_cluster_network(net), &mut self.cluster) else { return Ok(ep) };
            match link.store.claim_endpoint(&ep) {
                Ok(revision) => {
                    link.note_write(revision);
                    return Ok(ep);
                }
                Err(ClaimError::Taken(current)) => {
                    link.view.set_endpoints_of(&net.name, current);
                    self.program_remotes(net);
                }
                Err(ClaimError::Store(e)) => return Err(e),
            }
        }
        Err(format!("the addresses of network {} keep being taken by other hosts: try again", net.name))
    }

    /// Claim an endpoint this host had (put back after a failed removal).
    pub(super) fn reclaim(&mut self, net: &Network, ep: &Endpoint) -> Result<(), String> {
        if self.cluster.is_none() {
            return Ok(()); // nothing was released
        }
        self.plan_and_claim(net, |_| Ok(ep.clone())).map(|_| ())
    }

    /// On a cluster network: publish the endpoint's changed record (its aliases).
    pub(super) fn republish_in_cluster(&mut self, net: &Network, ep: &Endpoint) -> Result<(), String> {
        let (true, Some(link)) = (is_cluster_network(net), &mut self.cluster) else { return Ok(()) };
        let revision = link.store.update_endpoint(ep)?;
        link.note_write(revision);
        Ok(())
    }

    /// On a cluster network: withdraw the endpoint and free its addresses.
    pub(super) fn release_in_cluster(&mut self, net: &Network, ep: &Endpoint) -> Result<(), String> {
        let (true, Some(link)) = (is_cluster_network(net), &mut self.cluster) else { return Ok(()) };
        let revision = link.store.release_endpoint(ep)?;
        link.note_write(revision);
        Ok(())
    }
}
