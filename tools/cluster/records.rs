//! What vswitchd keeps in the cluster store, and where: the key layout
//! under `/vswitch/v1/` and the records, as JSON.
//!
//! - `networks/<name>`: an overlay network's definition (a [`Network`]; its
//!   `index` and static peers are each host's own and not read from here).
//! - `vni/<n>`: the network holding VNI n, claimed with the network.
//! - `ipam/<network>/<address>`, `macs/<network>/<mac>` and
//!   `names/<network>/<name>`: the claims of what must be unique on a
//!   network (an endpoint's addresses, its MAC, its DNS name), each held by
//!   the endpoint id it names, under its host's lease.
//! - `endpoints/<network>/<id>`: an endpoint and the VTEP it is behind
//!   (an [`EndpointRecord`]), under its host's lease.
//!
//! Networks outlive hosts; addresses and endpoints go with the lease of the
//! host that made them, so a dead host's endpoints disappear everywhere.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use switch::model::{Endpoint, Network};

pub const PREFIX: &str = "/vswitch/v1/";

pub fn network_key(name: &str) -> String {
    format!("{PREFIX}networks/{name}")
}

pub fn vni_key(vni: u32) -> String {
    format!("{PREFIX}vni/{vni}")
}

pub fn ipam_key(network: &str, ip: IpAddr) -> String {
    format!("{PREFIX}ipam/{network}/{ip}")
}

/// Kinds of claim, each a key prefix under [`PREFIX`].
const CLAIMS: [&str; 3] = ["ipam", "macs", "names"];

pub fn endpoint_key(network: &str, id: &str) -> String {
    format!("{PREFIX}endpoints/{network}/{id}")
}

/// Where one network's endpoints are listed.
pub fn endpoints_prefix(network: &str) -> String {
    format!("{PREFIX}endpoints/{network}/")
}

/// Whether `key` is a claim (whose value names its holder).
pub fn is_claim_key(key: &str) -> bool {
    let kind = key.strip_prefix(PREFIX).and_then(|rest| rest.split('/').next());
    kind.is_some_and(|kind| CLAIMS.contains(&kind))
}

/// An endpoint as published in the store: where it lives, and what it is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointRecord {
    /// The VTEP address of its host (`--cluster-advertise`).
    pub host: Ipv4Addr,
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

/// The records that hold one endpoint in the store: its claims (addresses,
/// MAC, name) and then its record (key, value), all under its host's lease.
pub fn endpoint_records(host: Ipv4Addr, ep: &Endpoint) -> Vec<(String, String)> {
    // What only this host needs (its namespace, interface, published ports) stays here.
    let endpoint = Endpoint {
        netns: String::new(),
        ifname: String::new(),
        owns_netns: false,
        published: Vec::new(),
        ..ep.clone()
    };
    let record = EndpointRecord { host, endpoint };
    let net = &ep.network;
    let unique = [format!("{PREFIX}macs/{net}/{}", ep.mac), format!("{PREFIX}names/{net}/{}", ep.name.to_lowercase())];
    let claims = ep_addresses(ep).map(|ip| ipam_key(net, ip)).chain(unique);
    let mut records: Vec<(String, String)> = claims.map(|key| (key, ep.id.clone())).collect();
    let json = serde_json::to_string(&record).expect("an endpoint serializes");
    records.push((endpoint_key(&ep.network, &ep.id), json));
    records
}

fn ep_addresses(ep: &Endpoint) -> impl Iterator<Item = IpAddr> + '_ {
    std::iter::once(IpAddr::V4(ep.ipv4)).chain(ep.ipv6.map(IpAddr::V6))
}

/// A point in the store's history. A store that lost its data (wiped, or
/// restored from an older snapshot) counts its revisions from further back
/// again: the store thread notices and starts a new epoch, so that no
/// revision of the old history hides a view of the new one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revision {
    pub epoch: u64,
    pub number: i64,
}

impl Revision {
    pub fn of(epoch: u64, header: Option<&etcdv3client::pb::ResponseHeader>) -> Revision {
        Revision { epoch, number: header.map_or(0, |h| h.revision) }
    }

    /// Whether this is an earlier point of the same history.
    pub fn is_before(&self, other: &Revision) -> bool {
        self.epoch == other.epoch && self.number < other.number
    }
}

/// The cluster as the store has it at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    pub revision: Revision,
    /// Overlay networks by name.
    pub networks: BTreeMap<String, Network>,
    /// Every endpoint, on every host. (Its addresses' claims are written
    /// with it, in one transaction: the endpoints say what is taken.)
    pub endpoints: Vec<EndpointRecord>,
}

impl View {
    /// The view of the store's keys under [`PREFIX`]. A record that does
    /// not parse is logged and left out: one bad key must not stop a host.
    pub fn parse<'a>(revision: Revision, kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> View {
        let mut view = View { revision, ..View::default() };
        for (key, value) in kvs {
            if let Err(e) = view.add(key, value) {
                log::warn!("cluster store: ignoring {key}: {e}");
            }
        }
        view
    }

    fn add(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        let rest = key.strip_prefix(PREFIX).ok_or("not under the prefix")?;
        let mut parts = rest.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("networks"), Some(name), None) => {
                let net: Network = serde_json::from_slice(value).map_err(|e| e.to_string())?;
                if net.name != name || net.overlay.is_none() {
                    return Err("not an overlay network of this name".into());
                }
                self.networks.insert(net.name.clone(), net);
            }
            (Some("endpoints"), Some(network), Some(_)) => {
                let record: EndpointRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
                if record.endpoint.network != network {
                    return Err("an endpoint of another network".into());
                }
                self.endpoints.push(record);
            }
            (Some(kind), Some(_), Some(_)) if CLAIMS.contains(&kind) => {}
            (Some("vni"), Some(_), None) => {}
            _ => return Err("unknown key".into()),
        }
        Ok(())
    }

    /// The endpoints of `network` on hosts other than `local`.
    pub fn remote_endpoints<'a>(
        &'a self,
        network: &'a str,
        local: Ipv4Addr,
    ) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.endpoints.iter().filter(move |r| r.endpoint.network == network && r.host != local)
    }

    /// Replace what the view has of `network`'s endpoints with `current`
    /// (as the store had them when a claim failed).
    pub fn set_endpoints_of(&mut self, network: &str, current: Vec<EndpointRecord>) {
        self.endpoints.retain(|r| r.endpoint.network != network);
        self.endpoints.extend(current);
    }

    /// The VNIs the cluster's networks hold.
    pub fn vnis(&self) -> impl Iterator<Item = u32> + '_ {
        self.networks.values().filter_map(|n| n.overlay.as_ref().map(|o| o.vni))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::MacAddr;
    use switch::model::OverlayConfig;

    fn overlay(name: &str, vni: u32) -> Network {
        Network {
            id: "a".repeat(64),
            name: name.into(),
            created: "2026-01-01T00:00:00Z".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            ip_range: None,
            mtu: 1450,
            index: 3,
            internal: false,
            icc: true,
            masquerade: true,
            ipv6: None,
            overlay: Some(OverlayConfig { vni, peers: Vec::new(), cluster: true }),
        }
    }

    fn endpoint(network: &str, ip: Ipv4Addr) -> Endpoint {
        Endpoint {
            id: format!("{:064x}", u32::from(ip)),
            network: network.into(),
            netns: "c1".into(),
            name: "c1".into(),
            aliases: vec![],
            ifname: "eth0".into(),
            mac: MacAddr::from_ipv4(ip),
            ipv4: ip,
            ipv6: None,
            owns_netns: true,
            published: vec![],
        }
    }

    #[test]
    fn a_view_is_read_back_from_the_records_written() {
        let net = overlay("ov", 4096);
        let host: Ipv4Addr = "192.0.2.2".parse().unwrap();
        let ep = endpoint("ov", "10.0.0.2".parse().unwrap());
        let mut kvs =
            vec![(network_key("ov"), serde_json::to_string(&net).unwrap()), (vni_key(4096), "ov".to_string())];
        kvs.extend(endpoint_records(host, &ep));
        let view = View::parse(Revision { epoch: 1, number: 7 }, kvs.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        assert_eq!(view.revision.number, 7);
        assert_eq!(view.networks["ov"], net);
        assert_eq!(view.endpoints.len(), 1);
        let published = &view.endpoints[0];
        assert_eq!((published.host, &published.endpoint.id, published.endpoint.mac), (host, &ep.id, ep.mac));
        assert_eq!(published.endpoint.netns, "", "the namespace is the host's own business");
        assert_eq!(view.vnis().collect::<Vec<_>>(), vec![4096]);
        assert_eq!(view.remote_endpoints("ov", host).count(), 0, "our own endpoints are not remote");
        assert_eq!(view.remote_endpoints("ov", "192.0.2.1".parse().unwrap()).count(), 1);
    }

    #[test]
    fn bad_records_are_left_out_not_fatal() {
        let good = serde_json::to_string(&overlay("ov", 5000)).unwrap();
        let mut bridge = overlay("br", 1);
        bridge.overlay = None;
        let bridge = serde_json::to_string(&bridge).unwrap();
        let kvs = [
            (network_key("ov"), good.as_str()),
            (network_key("other-name"), good.as_str()),
            (network_key("br"), bridge.as_str()),
            (endpoint_key("ov", "x"), "{not json"),
            (ipam_key("ov", "10.0.0.9".parse().unwrap()), "id"),
            (format!("{PREFIX}whatever"), ""),
        ];
        let view = View::parse(Revision::default(), kvs.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        assert_eq!(view.networks.keys().collect::<Vec<_>>(), vec!["ov"]);
        assert!(view.endpoints.is_empty());
    }
}
