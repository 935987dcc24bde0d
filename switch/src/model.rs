//! The desired state the daemon keeps and persists: networks and endpoints.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proto::MacAddr;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The default network every switch has, as docker0 is to Docker.
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_MTU: u32 = 1500;

/// A bridge network: one isolated L2 domain with its subnet and gateway.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Network {
    /// 64 hex digits, like a Docker network ID.
    pub id: String,
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Where IPAM hands out addresses from (defaults to the subnet).
    pub ip_range: Option<Ipv4Net>,
    pub mtu: u32,
    /// Small number the data path knows the network by.
    pub index: u32,
    /// No way out of the network (Docker's --internal).
    #[serde(default)]
    pub internal: bool,
    /// Inter-container communication (Docker's enable_icc).
    #[serde(default = "enabled")]
    pub icc: bool,
    /// Masquerade behind the uplink address (Docker's enable_ip_masquerade).
    #[serde(default = "enabled")]
    pub masquerade: bool,
    /// Dual stack (Docker's --ipv6): the IPv6 subnet and gateway.
    #[serde(default)]
    pub ipv6: Option<Ipv6Config>,
    /// An overlay network (`--driver overlay`): stretched over hosts by VXLAN.
    #[serde(default)]
    pub overlay: Option<OverlayConfig>,
}

/// An overlay network's VXLAN side.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OverlayConfig {
    pub vni: u32,
    /// Static remote VTEPs (`vsctl add-peer`).
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
    /// Defined in the cluster store (made with `--cluster-store`): the
    /// network, its addresses and its endpoints are the cluster's.
    #[serde(default)]
    pub cluster: bool,
}

impl Network {
    /// Docker's driver name: "bridge" or "overlay".
    pub fn driver(&self) -> &'static str {
        if self.overlay.is_some() {
            "overlay"
        } else {
            "bridge"
        }
    }

    /// Docker's scope: an overlay network is the cluster's, not this host's.
    pub fn scope(&self) -> &'static str {
        if self.overlay.is_some() {
            "global"
        } else {
            "local"
        }
    }
}

/// A network's IPv6 side.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ipv6Config {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
}

fn enabled() -> bool {
    true
}

impl Network {
    /// The switch's MAC on this network, Docker-style from the gateway address.
    pub fn gateway_mac(&self) -> MacAddr {
        MacAddr::from_ipv4(self.gateway)
    }
}

/// A namespace's port on a network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    /// 64 hex digits, like a Docker endpoint ID.
    pub id: String,
    /// Name of the network it is attached to.
    pub network: String,
    /// `ip netns` name of the namespace.
    pub netns: String,
    /// The endpoint's (container's) name, defaults to the namespace name.
    pub name: String,
    /// Further names on its network (`--alias`, Docker's --network-alias).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Interface name inside the namespace: eth0, eth1...
    pub ifname: String,
    #[serde(with = "mac_string")]
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    /// Its global IPv6 address, on a dual-stack network.
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// The switch created the namespace and removes it with its last port.
    pub owns_netns: bool,
    /// Ports published on the uplink address (`--publish`).
    #[serde(default)]
    pub published: Vec<Mapping>,
}

/// A user filter rule as `vsctl add-rule` made it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UserRule {
    pub id: u32,
    /// Frames entering from this network's ports only.
    pub network: Option<String>,
    /// Frames entering on the uplink only.
    #[serde(default)]
    pub uplink: bool,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    /// "tcp", "udp" or "icmp".
    pub proto: Option<String>,
    pub dport: Option<u16>,
    /// "allow" or "drop".
    pub action: String,
}

/// A published port range: host ports `host_port..host_port+count` on the
/// uplink address lead to `container_port..container_port+count`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mapping {
    /// "tcp" or "udp".
    pub proto: String,
    pub host_port: u16,
    pub container_port: u16,
    pub count: u16,
}

impl Mapping {
    /// (host port, container port) of every port in the range.
    pub fn pairs(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        (0..self.count).map(|i| (self.host_port + i, self.container_port + i))
    }
}

/// New random identifier of 64 hex digits, like Docker's.
pub fn new_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if filled.is_err() {
        // No urandom: fall back to the clock, still unique enough for one host.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

mod mac_string {
    use proto::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(mac)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
