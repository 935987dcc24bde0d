//! Published ports: Docker's `-p [HOSTIP:][HOSTPORT:]PORT[/tcp|/udp]`
//! syntax (ports may be ranges, `8000-8100:8000-8100`), host port choice,
//! and the lines `vsctl port` prints.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use switch::model::Mapping;

/// Host ports handed out when none is asked for, as Docker's ephemeral range.
pub const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// A parsed `--publish` spec, before a host port is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub host_ip: Option<Ipv4Addr>,
    /// First host port, if given (a range has as many as the container's).
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub count: u16,
    pub proto: String,
}

pub fn parse(text: &str) -> Result<Spec, String> {
    let bad = |why: &str| format!("invalid publish spec {text:?}: {why} (want [HOSTIP:][HOSTPORT:]PORT[/tcp|/udp])");
    let (ports, proto) = match text.rsplit_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(bad(&format!("protocol {proto:?} is neither tcp nor udp")));
    }
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => {
            let ip: Ipv4Addr = ip.parse().map_err(|_| bad(&format!("host IP {ip:?} is not an IPv4 address")))?;
            (Some(ip), Some(*h).filter(|h| !h.is_empty()), *c)
        }
        _ => return Err(bad("too many ':'")),
    };
    let (container_port, count) = port_range(container).map_err(|e| bad(&e))?;
    let host_port = match host {
        Some(h) => {
            let (first, host_count) = port_range(h).map_err(|e| bad(&e))?;
            if host_count != count {
                return Err(bad(&format!("host range has {host_count} ports, container range {count}")));
            }
            Some(first)
        }
        None => None,
    };
    Ok(Spec { host_ip, host_port, container_port, count, proto })
}

/// `80` or `8000-8100`: first port and how many.
fn port_range(text: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {p:?} is not a number from 1 to 65535")),
        Ok(n) => Ok(n),
    };
    match text.split_once('-') {
        None => Ok((port(text)?, 1)),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(format!("range {text} ends before it starts"));
            }
            Ok((a, b - a + 1))
        }
    }
}

/// Host ports already published, (proto, port) → who has it.
pub type Taken = HashMap<(String, u16), String>;

/// Choose the host ports of `spec`: the ones asked for if all are free,
/// else the lowest free run of the ephemeral range.
pub fn allocate(spec: &Spec, taken: &Taken) -> Result<Mapping, String> {
    let free = |first: u16| (0..spec.count).all(|i| !taken.contains_key(&(spec.proto.clone(), first + i)));
    let host_port = match spec.host_port {
        Some(first) => {
            if let Some(i) = (0..spec.count).find(|i| taken.contains_key(&(spec.proto.clone(), first + i))) {
                let port = first + i;
                let owner = &taken[&(spec.proto.clone(), port)];
                return Err(format!("host port {port}/{} is already published by {owner}", spec.proto));
            }
            first
        }
        None => {
            let last_start = EPHEMERAL.end().checked_sub(spec.count - 1).filter(|s| s >= EPHEMERAL.start());
            let starts = *EPHEMERAL.start()..=last_start.ok_or("range larger than the ephemeral port range")?;
            starts.into_iter().find(|s| free(*s)).ok_or("no free host ports left in 32768-60999")?
        }
    };
    Ok(Mapping { proto: spec.proto.clone(), host_port, container_port: spec.container_port, count: spec.count })
}

/// `80/tcp -> 192.0.2.2:8080`, as `docker port` prints it (ranges kept whole).
pub fn describe(m: &Mapping, host_ip: Option<Ipv4Addr>) -> String {
    let ip = host_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into());
    let span = |first: u16| if m.count == 1 { first.to_string() } else { format!("{first}-{}", first + m.count - 1) };
    format!("{}/{} -> {ip}:{}", span(m.container_port), m.proto, span(m.host_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host_ip: Option<&str>, host: Option<u16>, container: u16, count: u16, proto: &str) -> Spec {
        let host_ip = host_ip.map(|ip| ip.parse().unwrap());
        Spec { host_ip, host_port: host, container_port: container, count, proto: proto.into() }
    }

    #[test]
    fn parses_dockers_forms() {
        assert_eq!(parse("80").unwrap(), spec(None, None, 80, 1, "tcp"));
        assert_eq!(parse("8080:80").unwrap(), spec(None, Some(8080), 80, 1, "tcp"));
        assert_eq!(parse("53:53/udp").unwrap(), spec(None, Some(53), 53, 1, "udp"));
        assert_eq!(parse("192.0.2.2:8080:80/TCP").unwrap(), spec(Some("192.0.2.2"), Some(8080), 80, 1, "tcp"));
        assert_eq!(parse("192.0.2.2::80").unwrap(), spec(Some("192.0.2.2"), None, 80, 1, "tcp"));
        assert_eq!(parse("8000-8100:9000-9100").unwrap(), spec(None, Some(8000), 9000, 101, "tcp"));
        assert_eq!(parse("7000-7009").unwrap(), spec(None, None, 7000, 10, "tcp"));
    }

    #[test]
    fn refuses_bad_specs_saying_why() {
        for (text, why) in [
            ("", "not a number"),
            ("0", "not a number"),
            ("70000", "not a number"),
            ("80/sctp", "neither tcp nor udp"),
            ("a:b:c:d", "too many"),
            ("nope:80:80", "not an IPv4"),
            ("8000-8010:80", "host range has 1"),
            ("90-80", "ends before"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn allocates_asked_or_ephemeral_ports() {
        let mut taken = Taken::new();
        taken.insert(("tcp".into(), 8080), "ns1/eth0".into());
        taken.insert(("tcp".into(), 32768), "ns2/eth0".into());
        let e = allocate(&spec(None, Some(8079), 80, 3, "tcp"), &taken).unwrap_err();
        assert!(e.contains("8080/tcp is already published by ns1/eth0"), "{e}");
        assert_eq!(allocate(&spec(None, Some(8080), 80, 1, "udp"), &taken).unwrap().host_port, 8080);
        assert_eq!(allocate(&spec(None, None, 80, 1, "tcp"), &taken).unwrap().host_port, 32769);
        let range = allocate(&spec(None, None, 7000, 10_000, "tcp"), &taken).unwrap();
        assert_eq!((range.host_port, range.count), (32769, 10_000));
    }

    #[test]
    fn describes_like_docker_port() {
        let m = Mapping { proto: "tcp".into(), host_port: 8080, container_port: 80, count: 1 };
        assert_eq!(describe(&m, Some("192.0.2.2".parse().unwrap())), "80/tcp -> 192.0.2.2:8080");
        let r = Mapping { proto: "udp".into(), host_port: 9000, container_port: 7000, count: 3 };
        assert_eq!(describe(&r, None), "7000-7002/udp -> 0.0.0.0:9000-9002");
    }
}
