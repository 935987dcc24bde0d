//! The JSON shapes users' scripts read: `docker network inspect` for
//! networks, and a flat object for endpoints.

use serde_json::{json, Map, Value};
use std::net::Ipv4Addr;
use switch::model::{Endpoint, Network};

/// `docker network inspect NAME`: an array holding one network object.
/// `peers` are the VTEPs an overlay network has tunnels to (static peers
/// and the cluster's hosts with endpoints on it).
pub fn network(net: &Network, endpoints: &[&Endpoint], peers: &[Ipv4Addr]) -> Value {
    let mut config = json!({ "Subnet": net.subnet.to_string(), "Gateway": net.gateway.to_string() });
    if let Some(range) = net.ip_range {
        config["IPRange"] = json!(range.to_string());
    }
    let mut configs = vec![config];
    if let Some(v6) = net.ipv6 {
        configs.push(json!({ "Subnet": v6.subnet.to_string(), "Gateway": v6.gateway.to_string() }));
    }
    let containers: Map<String, Value> = endpoints
        .iter()
        .map(|e| {
            let entry = json!({
                "Name": e.name,
                "EndpointID": e.id,
                "MacAddress": e.mac.to_string(),
                "IPv4Address": format!("{}/{}", e.ipv4, net.subnet.prefix_len()),
                "IPv6Address": ipv6_address(e, net),
            });
            (e.id.clone(), entry)
        })
        .collect();
    let mut inspect = json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope(),
        "Driver": net.driver(),
        "EnableIPv6": net.ipv6.is_some(),
        "IPAM": { "Driver": "default", "Options": {}, "Config": configs },
        "Internal": net.internal,
        "Attachable": false,
        "Containers": containers,
        "Options": {
            "com.docker.network.driver.mtu": net.mtu.to_string(),
            "com.docker.network.bridge.enable_icc": net.icc.to_string(),
            "com.docker.network.bridge.enable_ip_masquerade": net.masquerade.to_string(),
        },
        "Labels": {},
    });
    if let Some(overlay) = &net.overlay {
        inspect["Options"]["com.docker.network.driver.overlay.vxlanid_list"] = json!(overlay.vni.to_string());
        let peers: Vec<Value> =
            peers.iter().map(|ip| json!({ "Name": ip.to_string(), "IP": ip.to_string() })).collect();
        inspect["Peers"] = json!(peers);
    }
    json!([inspect])
}

/// "ADDR/PREFIX" as Docker prints it, or "" without IPv6.
fn ipv6_address(e: &Endpoint, net: &Network) -> String {
    match (e.ipv6, net.ipv6) {
        (Some(ip), Some(v6)) => format!("{ip}/{}", v6.subnet.prefix_len()),
        _ => String::new(),
    }
}

/// One row of `list-nets --json`.
pub fn network_summary(net: &Network) -> Value {
    json!({
        "Id": net.id,
        "Name": net.name,
        "Driver": net.driver(),
        "Scope": net.scope(),
        "Subnet": net.subnet.to_string(),
        "Gateway": net.gateway.to_string(),
    })
}

/// What `add-port` prints and `list-ports --json` lists.
pub fn endpoint(e: &Endpoint, net: &Network) -> Value {
    json!({
        "Id": e.id,
        "Network": e.network,
        "Netns": e.netns,
        "Name": e.name,
        "Aliases": e.aliases,
        "Interface": e.ifname,
        "MacAddress": e.mac.to_string(),
        "IPv4Address": format!("{}/{}", e.ipv4, net.subnet.prefix_len()),
        "Gateway": net.gateway.to_string(),
        "IPv6Address": ipv6_address(e, net),
        "IPv6Gateway": net.ipv6.map(|v6| v6.gateway.to_string()).unwrap_or_default(),
        "Ports": e.published,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_has_dockers_shape() {
        let net = Network {
            id: "f".repeat(64),
            name: "lab".into(),
            created: "2026-11-25T00:00:00Z".into(),
            subnet: "10.9.0.0/16".parse().unwrap(),
            gateway: "10.9.0.1".parse().unwrap(),
            ip_range: Some("10.9.1.0/24".parse().unwrap()),
            mtu: 1400,
            index: 3,
            internal: false,
            icc: true,
            masquerade: true,
            ipv6: None,
            overlay: None,
        };
        let ep = Endpoint {
            id: "e".repeat(64),
            network: "lab".into(),
            netns: "ns1".into(),
            name: "web".into(),
            aliases: vec![],
            ifname: "eth0".into(),
            mac: "02:42:0a:09:01:00".parse().unwrap(),
            ipv4: "10.9.1.0".parse().unwrap(),
            ipv6: None,
            owns_netns: true,
            published: vec![],
        };
        let v = network(&net, &[&ep], &[]);
        let n = &v[0];
        assert_eq!(n["Name"], "lab");
        assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.9.0.0/16");
        assert_eq!(n["IPAM"]["Config"][0]["IPRange"], "10.9.1.0/24");
        assert_eq!(n["Options"]["com.docker.network.driver.mtu"], "1400");
        let c = &n["Containers"][&ep.id];
        assert_eq!(c["IPv4Address"], "10.9.1.0/16");
        assert_eq!(c["MacAddress"], "02:42:0a:09:01:00");
        assert_eq!(n["EnableIPv6"], false);
        assert_eq!(c["IPv6Address"], "");
    }

    #[test]
    fn dual_stack_fills_the_ipv6_fields() {
        let net = Network {
            id: "f".repeat(64),
            name: "v6".into(),
            created: String::new(),
            subnet: "10.9.0.0/16".parse().unwrap(),
            gateway: "10.9.0.1".parse().unwrap(),
            ip_range: None,
            mtu: 1500,
            index: 4,
            internal: false,
            icc: true,
            masquerade: true,
            ipv6: Some(switch::model::Ipv6Config {
                subnet: "2001:db8:1::/64".parse().unwrap(),
                gateway: "2001:db8:1::1".parse().unwrap(),
            }),
            overlay: None,
        };
        let ep = Endpoint {
            id: "e".repeat(64),
            network: "v6".into(),
            netns: "ns1".into(),
            name: "web".into(),
            aliases: vec![],
            ifname: "eth0".into(),
            mac: "02:42:0a:09:00:02".parse().unwrap(),
            ipv4: "10.9.0.2".parse().unwrap(),
            ipv6: Some("2001:db8:1::242:a09:2".parse().unwrap()),
            owns_netns: true,
            published: vec![],
        };
        let v = network(&net, &[&ep], &[]);
        let n = &v[0];
        assert_eq!(n["EnableIPv6"], true);
        assert_eq!(n["IPAM"]["Config"][1]["Subnet"], "2001:db8:1::/64");
        assert_eq!(n["IPAM"]["Config"][1]["Gateway"], "2001:db8:1::1");
        assert_eq!(n["Containers"][&ep.id]["IPv6Address"], "2001:db8:1::242:a09:2/64");
        assert_eq!(endpoint(&ep, &net)["IPv6Gateway"], "2001:db8:1::1");
    }
}
