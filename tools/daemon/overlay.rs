//! Overlay networks on the daemon's side: `add-net --driver overlay`, the
//! VNI, and the static peers (`add-peer`/`del-peer`) programmed into the
//! switch as tunnels once the uplink (the VTEP) is attached.

use super::{Daemon, Outcome};
use crate::control::NetSpec;
use serde_json::Value;
use switch::ipam;
use switch::model::{Network, OverlayConfig};

/// Overlay networks' VNIs are handed out from here, as Docker's are.
const FIRST_VNI: u32 = 4096;

impl Daemon {
    /// Overlay networks need the uplink (their VTEP), attached after the
    /// networks are restored.
    pub(super) fn restore_overlays(&self) {
        for net in &self.state.networks {
            let Some(overlay) = &net.overlay else { continue };
            if self.uplink_ip.is_none() {
                log::error!("overlay network {} does not forward: vswitchd has no --uplink", net.name);
            } else if let Err(e) = self.install_overlay(net, overlay) {
                log::error!("overlay network {}: {e}", net.name);
            }
        }
    }

    /// The overlay side add-net asks for: --driver overlay [--vni N], which
    /// needs an uplink (its address is the VTEP).
    pub(super) fn plan_overlay(&self, req: &NetSpec) -> Result<Option<OverlayConfig>, String> {
        match req.driver.as_deref() {
            None | Some("bridge") => {
                if req.vni.is_some() {
                    return Err("--vni needs --driver overlay".into());
                }
                return Ok(None);
            }
            Some("overlay") => {}
            Some(other) => return Err(format!("invalid --driver {other:?}: want bridge or overlay")),
        }
        if self.uplink_ip.is_none() {
            return Err(
                "overlay networks need an uplink: start vswitchd with --uplink (its address is the VTEP)".into()
            );
        }
        if let Some(link) = self.cluster.as_ref().filter(|l| l.view.networks.contains_key(&req.name)) {
            return Err(format!("network {:?} already exists in the cluster {}", req.name, link.store.config().store));
        }
        let mut taken: Vec<u32> =
            self.state.networks.iter().filter_map(|n| n.overlay.as_ref().map(|o| o.vni)).collect();
        taken.extend(self.cluster.iter().flat_map(|link| link.view.vnis()));
        let vni = match req.vni {
            Some(vni) if vni == 0 || vni > proto::vxlan::MAX_VNI => {
                return Err(format!("invalid --vni {vni}: want 1 to {}", proto::vxlan::MAX_VNI))
            }
            Some(vni) if taken.contains(&vni) => return Err(format!("VNI {vni} is already in use")),
            Some(vni) => vni,
            None => (FIRST_VNI..=proto::vxlan::MAX_VNI).find(|v| !taken.contains(v)).ok_or("no free VNI left")?,
        };
        Ok(Some(OverlayConfig { vni, peers: Vec::new(), cluster: self.cluster.is_some() }))
    }

    /// Program an overlay network's VNI and tunnels to its peers; a peer
    /// that cannot be added is logged, not a reason to leave out the others.
    pub(super) fn install_overlay(&self, net: &Network, overlay: &OverlayConfig) -> Result<(), String> {
        self.switch.set_overlay(net.index, overlay.vni, self.vxlan_port)?;
        if let Err(e) = self.sync_tunnels(net) {
            log::error!("overlay network {}: {e}", net.name);
        }
        Ok(())
    }

    /// `add-peer` / `del-peer`: a static remote VTEP of an overlay network.
    pub(super) fn peer(&mut self, network: &str, ip: &str, add: bool) -> Outcome {
        let net = self.network(network)?.clone();
        let Some(mut overlay) = net.overlay.clone() else {
            return Err(format!("network {network} is not an overlay network (add-net --driver overlay)"));
        };
        let ip = ipam::parse_ipv4("peer address", ip)?;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
            return Err(format!("invalid peer address {ip}: want another host's unicast VTEP address"));
        }
        let known = overlay.peers.contains(&ip);
        match (add, known) {
            (true, true) => return Err(format!("{ip} is a peer of {network} already")),
            (false, false) => return Err(format!("{ip} is not a peer of {network}")),
            (true, false) => {
                if Some(ip) == self.uplink_ip {
                    return Err(format!("{ip} is this switch's own VTEP address"));
                }
                overlay.peers.push(ip);
            }
            (false, true) => overlay.peers.retain(|p| *p != ip),
        }
        let mut changed = net.clone();
        changed.overlay = Some(overlay);
        // A peer that is also a cluster host keeps its tunnel when it stops being static.
        self.sync_tunnels(&changed)?;
        if let Some(n) = self.state.networks.iter_mut().find(|n| n.name == network) {
            *n = changed;
        }
        self.save()?;
        Ok(Value::Null)
    }
}
