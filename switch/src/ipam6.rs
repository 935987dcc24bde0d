//! IPv6 address management for dual-stack networks, following Docker:
//! the gateway is the subnet's ::1 by default, and an endpoint's address
//! ends in its MAC address when the subnet leaves room for one (/80 or
//! wider), else it is the lowest free one. Like IPv4 IPAM it keeps no table
//! of its own: the addresses in use are the gateway and the endpoints'.

use ipnet::Ipv6Net;
use std::collections::HashSet;
use std::net::Ipv6Addr;

use crate::model::Ipv6Config;
use proto::MacAddr;

/// Widest prefix whose host part holds a whole MAC address (48 bits).
const MAC_FITS_PREFIX: u8 = 80;

/// Parse an IPv6 CIDR such as 2001:db8:1::/64; host bits must be zero.
pub fn parse_subnet(text: &str) -> Result<Ipv6Net, String> {
    let net: Ipv6Net =
        text.parse().map_err(|_| format!("invalid IPv6 subnet {text:?}: want a CIDR like 2001:db8:1::/64"))?;
    if net.trunc() != net {
        return Err(format!("invalid IPv6 subnet {text}: host bits set (did you mean {}?)", net.trunc()));
    }
    if net.prefix_len() > 126 {
        return Err(format!(
            "invalid IPv6 subnet {text}: a /{} has no room for a gateway and an endpoint",
            net.prefix_len()
        ));
    }
    let a = net.addr();
    if a.is_multicast() || a.is_loopback() || a.is_unspecified() || a.is_unicast_link_local() {
        return Err(format!("invalid IPv6 subnet {text}: not a unicast range"));
    }
    Ok(net)
}

/// Parse an IPv6 address, naming the option it came from in the error.
pub fn parse_addr(what: &str, text: &str) -> Result<Ipv6Addr, String> {
    text.parse().map_err(|_| format!("invalid {what} {text:?}: want an IPv6 address"))
}

pub fn overlaps(a: Ipv6Net, b: Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The subnet's ::1, Docker's default IPv6 gateway.
pub fn first_host(subnet: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(subnet.network()) + 1)
}

/// A unique local /64 (RFC 4193: fd00::/8 and a random 40-bit global ID),
/// for `--ipv6` without `--subnet6`.
pub fn random_ula_subnet(random: [u8; 5]) -> Ipv6Net {
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&random);
    Ipv6Net::new(Ipv6Addr::from(octets), 64).expect("a /64 is a valid prefix")
}

/// An address the gateway or an endpoint may hold: inside the subnet and
/// not its first address (the subnet-router anycast address, RFC 4291).
fn is_host_of(subnet: Ipv6Net, ip: Ipv6Addr) -> bool {
    subnet.contains(&ip) && ip != subnet.network()
}

/// Check a network's IPv6 definition.
pub fn validate(config: &Ipv6Config) -> Result<(), String> {
    if !is_host_of(config.subnet, config.gateway) {
        return Err(format!("IPv6 gateway {} is not a host address of subnet {}", config.gateway, config.subnet));
    }
    Ok(())
}

/// The addresses of a network that are in use: gateway and `endpoints`.
pub fn in_use(config: &Ipv6Config, endpoints: impl Iterator<Item = Ipv6Addr>) -> HashSet<Ipv6Addr> {
    std::iter::once(config.gateway).chain(endpoints).collect()
}

/// The subnet's prefix with `mac` in the low 48 bits (2001:db8:1::242:ac11:2).
fn with_mac(subnet: Ipv6Net, mac: MacAddr) -> Ipv6Addr {
    let m = mac.octets();
    let low = u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]]) as u128;
    Ipv6Addr::from(u128::from(subnet.network()) | low)
}

/// An address for an endpoint with `mac`: the MAC-derived one when the
/// subnet has room and it is free, else the lowest free one.
pub fn allocate(config: &Ipv6Config, mac: MacAddr, taken: &HashSet<Ipv6Addr>) -> Result<Ipv6Addr, String> {
    let subnet = config.subnet;
    if subnet.prefix_len() <= MAC_FITS_PREFIX {
        let ip = with_mac(subnet, mac);
        if is_host_of(subnet, ip) && !taken.contains(&ip) {
            return Ok(ip);
        }
    }
    let first = u128::from(subnet.network());
    let size = 1u128.checked_shl(128 - subnet.prefix_len() as u32).unwrap_or(u128::MAX);
    // Bounded: a pool this full is out of room in practice.
    (1..size.min(1 << 20))
        .map(|offset| Ipv6Addr::from(first + offset))
        .find(|ip| !taken.contains(ip))
        .ok_or_else(|| format!("IPv6 address pool {subnet} is exhausted"))
}

/// Check an address asked for with --ip6.
pub fn check_requested(config: &Ipv6Config, ip: Ipv6Addr, taken: &HashSet<Ipv6Addr>) -> Result<(), String> {
    if !is_host_of(config.subnet, ip) {
        return Err(format!("address {ip} is not a host address of IPv6 subnet {}", config.subnet));
    }
    if taken.contains(&ip) {
        return Err(format!("address {ip} is already in use"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(subnet: &str) -> Ipv6Config {
        let subnet = parse_subnet(subnet).unwrap();
        Ipv6Config { subnet, gateway: first_host(subnet) }
    }

    const MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);

    #[test]
    fn parses_subnets_strictly() {
        assert_eq!(parse_subnet("2001:db8:1::/64").unwrap().to_string(), "2001:db8:1::/64");
        assert!(parse_subnet("2001:db8:1::1/64").unwrap_err().contains("host bits"));
        assert!(parse_subnet("2001:db8::/127").is_err());
        assert!(parse_subnet("ff00::/8").is_err());
        assert!(parse_subnet("fe80::/64").is_err());
        assert!(parse_subnet("10.0.0.0/8").is_err());
    }

    #[test]
    fn gateway_is_colon_colon_one() {
        assert_eq!(config("2001:db8:1::/64").gateway, "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn endpoint_address_ends_in_its_mac() {
        let c = config("2001:db8:1::/64");
        let ip = allocate(&c, MAC, &in_use(&c, std::iter::empty())).unwrap();
        assert_eq!(ip, "2001:db8:1::242:ac11:2".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn narrow_subnets_and_collisions_take_the_lowest_free() {
        let c = config("2001:db8:1::/120");
        let mut taken = in_use(&c, std::iter::empty());
        let a = allocate(&c, MAC, &taken).unwrap();
        assert_eq!(a, "2001:db8:1::2".parse::<Ipv6Addr>().unwrap());
        taken.insert(a);
        assert_eq!(allocate(&c, MAC, &taken).unwrap(), "2001:db8:1::3".parse::<Ipv6Addr>().unwrap());
        let wide = config("2001:db8:2::/64");
        let taken = in_use(&wide, ["2001:db8:2::242:ac11:2".parse().unwrap()].into_iter());
        assert_eq!(allocate(&wide, MAC, &taken).unwrap(), "2001:db8:2::2".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn a_full_pool_is_an_error() {
        let c = config("2001:db8::/126");
        let taken = in_use(&c, ["2001:db8::2".parse().unwrap(), "2001:db8::3".parse().unwrap()].into_iter());
        assert!(allocate(&c, MAC, &taken).unwrap_err().contains("exhausted"));
    }

    #[test]
    fn checks_requested_addresses() {
        let c = config("2001:db8::/64");
        let taken = in_use(&c, ["2001:db8::5".parse().unwrap()].into_iter());
        assert!(check_requested(&c, "2001:db8::6".parse().unwrap(), &taken).is_ok());
        assert!(check_requested(&c, "2001:db8::5".parse().unwrap(), &taken).unwrap_err().contains("in use"));
        assert!(check_requested(&c, "2001:db8::1".parse().unwrap(), &taken).is_err());
        assert!(check_requested(&c, "2001:db8::".parse().unwrap(), &taken).is_err());
        assert!(check_requested(&c, "2001:db9::6".parse().unwrap(), &taken).unwrap_err().contains("not a host"));
    }

    #[test]
    fn ula_subnets_are_fd_slash_64() {
        let s = random_ula_subnet([1, 2, 3, 4, 5]);
        assert_eq!(s.to_string(), "fd01:203:405::/64");
    }
}
