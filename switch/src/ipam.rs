//! IP address management: subnet choice, gateway defaults and address
//! allocation, following Docker's defaults.
//!
//! Allocations are not kept in a table of their own: the addresses in use on
//! a network are the gateway plus its endpoints' addresses, so the persisted
//! endpoints are the allocation state and the two can never disagree.

use crate::model::Network;
use ipnet::Ipv4Net;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Parse a CIDR such as 10.1.0.0/16; host bits must be zero, as Docker requires.
pub fn parse_subnet(text: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net =
        text.parse().map_err(|_| format!("invalid subnet {text:?}: want an IPv4 CIDR like 10.1.0.0/16"))?;
    if net.trunc() != net {
        return Err(format!("invalid subnet {text}: host bits set (did you mean {}?)", net.trunc()));
    }
    if net.prefix_len() > 30 {
        return Err(format!(
            "invalid subnet {text}: a /{} has no room for a gateway and an endpoint",
            net.prefix_len()
        ));
    }
    Ok(net)
}

/// Parse an IPv4 address, naming the option it came from in the error.
pub fn parse_ipv4(what: &str, text: &str) -> Result<Ipv4Addr, String> {
    text.parse().map_err(|_| format!("invalid {what} {text:?}: want an IPv4 address"))
}

/// The first host address, Docker's default gateway.
pub fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A usable host address of `subnet`: not its network or broadcast address.
fn is_host_of(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// Check a network definition: gateway and ip-range inside the subnet.
pub fn validate(subnet: Ipv4Net, gateway: Ipv4Addr, ip_range: Option<Ipv4Net>) -> Result<(), String> {
    if !is_host_of(subnet, gateway) {
        return Err(format!("gateway {gateway} is not a host address of subnet {subnet}"));
    }
    if let Some(range) = ip_range {
        if !subnet.contains(&range) {
            return Err(format!("ip-range {range} is not inside subnet {subnet}"));
        }
    }
    Ok(())
}

/// Docker's default address pools: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s.
fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let big = (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap());
    let small = (0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).unwrap());
    big.chain(small)
}

/// The first default pool at or after `from` that overlaps nothing in `used`
/// (other networks' subnets and the host's routes).
pub fn pick_free_subnet(from: Ipv4Net, used: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_pools().skip_while(|pool| *pool != from).find(|pool| !used.iter().any(|u| overlaps(*u, *pool)))
}

/// The addresses of `net` that are in use: gateway and `endpoints`.
pub fn in_use(net: &Network, endpoints: impl Iterator<Item = Ipv4Addr>) -> HashSet<Ipv4Addr> {
    std::iter::once(net.gateway).chain(endpoints).collect()
}

/// The lowest free address of the network's ip-range (or subnet).
pub fn allocate(net: &Network, taken: &HashSet<Ipv4Addr>) -> Result<Ipv4Addr, String> {
    let range = net.ip_range.unwrap_or(net.subnet);
    let (first, last) = (u32::from(range.network()), u32::from(range.broadcast()));
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| is_host_of(net.subnet, *ip) && !taken.contains(ip))
        .ok_or_else(|| format!("address pool of network {} ({range}) is exhausted", net.name))
}

/// Check an address asked for with --ip.
pub fn check_requested(net: &Network, ip: Ipv4Addr, taken: &HashSet<Ipv4Addr>) -> Result<(), String> {
    if !is_host_of(net.subnet, ip) {
        return Err(format!("address {ip} is not a host address of network {} ({})", net.name, net.subnet));
    }
    if taken.contains(&ip) {
        return Err(format!("address {ip} is already in use on network {}", net.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(subnet: &str, range: Option<&str>) -> Network {
        let subnet = parse_subnet(subnet).unwrap();
        Network {
            id: "x".into(),
            name: "n".into(),
            created: String::new(),
            subnet,
            gateway: first_host(subnet),
            ip_range: range.map(|r| r.parse().unwrap()),
            mtu: 1500,
            index: 1,
            internal: false,
            icc: true,
            masquerade: true,
            ipv6: None,
            overlay: None,
        }
    }

    #[test]
    fn parses_subnets_strictly() {
        assert_eq!(parse_subnet("10.1.0.0/16").unwrap().to_string(), "10.1.0.0/16");
        assert!(parse_subnet("10.1.0.1/16").unwrap_err().contains("host bits"));
        assert!(parse_subnet("10.1.0.0/31").is_err());
        assert!(parse_subnet("bogus").unwrap_err().contains("bogus"));
        assert!(parse_subnet("10.1.0.0").is_err());
    }

    #[test]
    fn gateway_is_first_host() {
        assert_eq!(first_host("172.17.0.0/16".parse().unwrap()), Ipv4Addr::new(172, 17, 0, 1));
    }

    #[test]
    fn validates_gateway_and_range() {
        let s: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        assert!(validate(s, "10.0.0.1".parse().unwrap(), None).is_ok());
        assert!(validate(s, "10.0.0.0".parse().unwrap(), None).is_err());
        assert!(validate(s, "10.0.1.1".parse().unwrap(), None).is_err());
        assert!(validate(s, "10.0.0.1".parse().unwrap(), Some("10.0.1.0/25".parse().unwrap())).is_err());
        assert!(validate(s, "10.0.0.1".parse().unwrap(), Some("10.0.0.128/25".parse().unwrap())).is_ok());
    }

    #[test]
    fn picks_the_next_free_pool() {
        let from = "172.18.0.0/16".parse().unwrap();
        assert_eq!(pick_free_subnet(from, &[]), Some(from));
        let used = ["172.18.0.0/16".parse().unwrap(), "172.19.5.0/24".parse().unwrap()];
        assert_eq!(pick_free_subnet(from, &used).unwrap().to_string(), "172.20.0.0/16");
        // A host route covering all of 172.16/12 pushes us to 192.168.
        let used = ["172.16.0.0/12".parse().unwrap()];
        assert_eq!(pick_free_subnet(from, &used).unwrap().to_string(), "192.168.0.0/20");
    }

    #[test]
    fn allocates_lowest_free_address_skipping_gateway() {
        let n = net("10.0.0.0/29", None);
        let mut taken = in_use(&n, std::iter::empty());
        let mut got = vec![];
        while let Ok(ip) = allocate(&n, &taken) {
            taken.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert!(allocate(&n, &taken).unwrap_err().contains("exhausted"));
    }

    #[test]
    fn allocates_from_ip_range() {
        let n = net("10.0.0.0/24", Some("10.0.0.128/25"));
        let taken = in_use(&n, std::iter::empty());
        assert_eq!(allocate(&n, &taken).unwrap(), Ipv4Addr::new(10, 0, 0, 128));
    }

    #[test]
    fn checks_requested_addresses() {
        let n = net("10.0.0.0/24", None);
        let taken = in_use(&n, ["10.0.0.5".parse().unwrap()].into_iter());
        assert!(check_requested(&n, "10.0.0.6".parse().unwrap(), &taken).is_ok());
        assert!(check_requested(&n, "10.0.0.5".parse().unwrap(), &taken).unwrap_err().contains("in use"));
        assert!(check_requested(&n, "10.0.0.1".parse().unwrap(), &taken).is_err());
        assert!(check_requested(&n, "10.0.0.255".parse().unwrap(), &taken).is_err());
        assert!(check_requested(&n, "10.0.1.5".parse().unwrap(), &taken).unwrap_err().contains("not a host"));
    }
}
