//! The uplink's command-line side: `vswitchd --uplink IFACE --uplink-ip CIDR
//! [--uplink-gw IP] [--uplink-ip6 CIDR] [--uplink-gw6 IP] [--vxlan-port N]`
//! checked into an [`UplinkConfig`], with the host's routes as defaults.

use ipnet::{Ipv4Net, Ipv6Net};
use ports::netlink;
use std::net::{Ipv4Addr, Ipv6Addr};
use switch::{ipam, ipam6, UplinkSpec6};

/// `vswitchd --uplink IFACE --uplink-ip CIDR [--uplink-gw IP]
/// [--uplink-ip6 CIDR] [--uplink-gw6 IP]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkConfig {
    pub ifname: String,
    /// The address the switch owns on the uplink's segment.
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The address is the interface's own (no --uplink-ip): the host's
    /// stack answers ARP for it, and must be kept off the NAT ports (README).
    pub shared: bool,
    /// IPv6 routed out of the uplink, when it has a next hop.
    pub ipv6: Option<UplinkSpec6>,
    /// The UDP port of overlay networks' VXLAN (`--vxlan-port`).
    pub vxlan_port: u16,
}

/// The uplink flags as given.
#[derive(Debug, Clone, Default)]
pub struct UplinkFlags<'a> {
    pub ip: Option<&'a str>,
    pub gateway: Option<&'a str>,
    pub ip6: Option<&'a str>,
    pub gateway6: Option<&'a str>,
    pub vxlan_port: Option<u16>,
}

impl UplinkConfig {
    /// Check the uplink flags; without --uplink-gw, the host's default
    /// route through IFACE gives the next hop (the same for IPv6, which is
    /// routed only when there is a next hop).
    pub fn from_flags(ifname: &str, flags: &UplinkFlags) -> Result<UplinkConfig, String> {
        let (net, shared) = match flags.ip {
            Some(ip) => {
                let net: Ipv4Net = ip.parse().map_err(|_| {
                    format!("invalid --uplink-ip {ip:?}: want an address with its prefix, like 192.0.2.10/24")
                })?;
                (net, false)
            }
            None => (interface_address(ifname)?, true),
        };
        let gateway = match flags.gateway {
            Some(text) => ipam::parse_ipv4("--uplink-gw", text)?,
            None => default_gateway_via(ifname)
                .ok_or_else(|| format!("no default route via {ifname}: give the next hop with --uplink-gw"))?,
        };
        if !net.contains(&gateway) || gateway == net.addr() {
            return Err(format!("--uplink-gw {gateway} is not another host of the uplink's subnet {}", net.trunc()));
        }
        let ipv6 = uplink_ipv6(ifname, flags)?;
        let vxlan_port = flags.vxlan_port.unwrap_or(proto::vxlan::UDP_PORT);
        if vxlan_port == 0 || switch::conntrack::NAT_PORTS.contains(&vxlan_port) {
            let nat = &switch::conntrack::NAT_PORTS;
            return Err(format!(
                "invalid --vxlan-port {vxlan_port}: want 1 to 65535 outside the masquerade ports {}-{}",
                nat.start(),
                nat.end()
            ));
        }
        Ok(UplinkConfig { ifname: ifname.to_string(), ip: net.addr(), gateway, shared, ipv6, vxlan_port })
    }
}

/// The uplink's IPv6 side from --uplink-ip6 and --uplink-gw6 (or the
/// host's IPv6 default route through `ifname`); None without a next hop.
fn uplink_ipv6(ifname: &str, flags: &UplinkFlags) -> Result<Option<UplinkSpec6>, String> {
    let ip = match flags.ip6 {
        Some(text) => {
            let net: Ipv6Net = text.parse().map_err(|_| {
                format!("invalid --uplink-ip6 {text:?}: want an address with its prefix, like 2001:db8::10/64")
            })?;
            Some(net.addr())
        }
        None => None,
    };
    let gateway = match flags.gateway6 {
        Some(text) => Some(ipam6::parse_addr("--uplink-gw6", text)?),
        None => default_gateway6_via(ifname),
    };
    match (gateway, ip) {
        (Some(gateway), _) if Some(gateway) == ip || gateway.is_multicast() || gateway.is_unspecified() => {
            Err(format!("--uplink-gw6 {gateway} is not another host on the uplink's segment"))
        }
        (Some(gateway), ip) => Ok(Some(UplinkSpec6 { ip, gateway })),
        (None, Some(_)) => Err(format!("no IPv6 default route via {ifname}: give the next hop with --uplink-gw6")),
        (None, None) => Ok(None),
    }
}

/// The next hop of the host's IPv6 default route through `ifname`, from
/// /proc/net/ipv6_route (destination, prefix, source, prefix, next hop,
/// metric, refcount, use, flags, interface; addresses in 32 hex digits).
fn default_gateway6_via(ifname: &str) -> Option<Ipv6Addr> {
    let table = std::fs::read_to_string("/proc/net/ipv6_route").ok()?;
    table.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 || cols[9] != ifname || cols[0] != "0".repeat(32) || cols[1] != "00" {
            return None;
        }
        let gw = Ipv6Addr::from(u128::from_str_radix(cols[4], 16).ok()?);
        (!gw.is_unspecified()).then_some(gw)
    })
}

/// The first IPv4 address of `ifname`, for an uplink sharing it.
fn interface_address(ifname: &str) -> Result<Ipv4Net, String> {
    let index = netlink::link_index(ifname)
        .map_err(|e| format!("--uplink {ifname}: {e}"))?
        .ok_or_else(|| format!("--uplink {ifname}: no such interface"))?;
    let addrs = netlink::ipv4_addrs(index).map_err(|e| format!("--uplink {ifname}: {e}"))?;
    let (addr, len) = addrs.first().copied().ok_or_else(|| {
        format!("--uplink {ifname} has no IPv4 address to share: give the switch its own with --uplink-ip CIDR")
    })?;
    Ipv4Net::new(addr, len).map_err(|e| e.to_string())
}

/// The gateway of the host's IPv4 default route through `ifname`, from
/// /proc/net/route (columns: Iface Destination Gateway ..., hex, host order).
fn default_gateway_via(ifname: &str) -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 3 || cols[0] != ifname || cols[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(cols[2], 16).ok()?;
        Some(Ipv4Addr::from(gw.to_le_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(ip: Option<&'a str>, gateway: Option<&'a str>) -> UplinkFlags<'a> {
        UplinkFlags { ip, gateway, ..UplinkFlags::default() }
    }

    #[test]
    fn uplink_flags_are_checked() {
        let ok = UplinkConfig::from_flags("up0", &flags(Some("10.250.0.2/24"), Some("10.250.0.1"))).unwrap();
        assert_eq!((ok.ip, ok.gateway), ("10.250.0.2".parse().unwrap(), "10.250.0.1".parse().unwrap()));
        assert!(UplinkConfig::from_flags("nosuch-if", &flags(None, None)).unwrap_err().contains("no such interface"));
        assert!(!ok.shared);
        assert!(UplinkConfig::from_flags("up0", &flags(Some("10.250.0.2"), Some("10.250.0.1"))).is_err());
        let off_link = UplinkConfig::from_flags("up0", &flags(Some("10.250.0.2/24"), Some("10.9.0.1"))).unwrap_err();
        assert!(off_link.contains("not another host"), "{off_link}");
        assert!(UplinkConfig::from_flags("nosuch-if", &flags(Some("10.250.0.2/24"), None))
            .unwrap_err()
            .contains("no default route"));
    }

    #[test]
    fn uplink_ipv6_flags_are_checked() {
        let v6 = |ip6: Option<&'static str>, gateway6: Option<&'static str>| {
            let f = UplinkFlags { ip6, gateway6, ..flags(Some("10.250.0.2/24"), Some("10.250.0.1")) };
            UplinkConfig::from_flags("nosuch-if", &f).map(|c| c.ipv6)
        };
        assert_eq!(v6(None, None).unwrap(), None, "no next hop: IPv6 not routed");
        let both = v6(Some("2001:db8::2/64"), Some("fe80::1")).unwrap().unwrap();
        assert_eq!((both.ip, both.gateway), (Some("2001:db8::2".parse().unwrap()), "fe80::1".parse().unwrap()));
        assert!(v6(Some("2001:db8::2"), Some("fe80::1")).unwrap_err().contains("--uplink-ip6"));
        assert!(v6(Some("2001:db8::2/64"), None).unwrap_err().contains("--uplink-gw6"));
        assert!(v6(None, Some("nonsense")).unwrap_err().contains("--uplink-gw6"));
        assert!(v6(Some("2001:db8::2/64"), Some("2001:db8::2")).unwrap_err().contains("not another host"));
        let vxlan = |port: u16| {
            UplinkConfig::from_flags(
                "nosuch-if",
                &UplinkFlags { vxlan_port: Some(port), ..flags(Some("10.250.0.2/24"), Some("10.250.0.1")) },
            )
        };
        assert_eq!(vxlan(8472).unwrap().vxlan_port, 8472);
        assert!(vxlan(40000).unwrap_err().contains("masquerade ports"), "inside the NAT range");
        assert!(vxlan(0).is_err());
    }
}
