//! The JSON shapes users' scripts read: `docker network inspect` for
//! networks, and a flat object for endpoints.

use serde_json::{json, Map, Value};
use switch::model::{Endpoint, Network};

/// `docker network inspect NAME`: an array holding one network object.
pub fn network(net: &Network, endpoints: &[&Endpoint]) -> Value {
    let mut config = json!({ "Subnet": net.subnet.to_string(), "Gateway": net.gateway.to_string() });
    if let Some(range) = net.ip_range {
        config["IPRange"] = json!(range.to_string());
    }
    let containers: Map<String, Value> = endpoints
        .iter()
        .map(|e| {
            let entry = json!({
                "Name": e.name,
                "EndpointID": e.id,
                "MacAddress": e.mac.to_string(),
                "IPv4Address": format!("{}/{}", e.ipv4, net.subnet.prefix_len()),
                "IPv6Address": "",
            });
            (e.id.clone(), entry)
        })
        .collect();
    json!([{
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": {}, "Config": [config] },
        "Internal": net.internal,
        "Attachable": false,
        "Containers": containers,
        "Options": {
            "com.docker.network.driver.mtu": net.mtu.to_string(),
            "com.docker.network.bridge.enable_icc": net.icc.to_string(),
            "com.docker.network.bridge.enable_ip_masquerade": net.masquerade.to_string(),
        },
        "Labels": {},
    }])
}

/// One row of `list-nets --json`.
pub fn network_summary(net: &Network) -> Value {
    json!({
        "Id": net.id,
        "Name": net.name,
        "Driver": "bridge",
        "Scope": "local",
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
        "Interface": e.ifname,
        "MacAddress": e.mac.to_string(),
        "IPv4Address": format!("{}/{}", e.ipv4, net.subnet.prefix_len()),
        "Gateway": net.gateway.to_string(),
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
        };
        let ep = Endpoint {
            id: "e".repeat(64),
            network: "lab".into(),
            netns: "ns1".into(),
            name: "web".into(),
            ifname: "eth0".into(),
            mac: "02:42:0a:09:01:00".parse().unwrap(),
            ipv4: "10.9.1.0".parse().unwrap(),
            owns_netns: true,
            published: vec![],
        };
        let v = network(&net, &[&ep]);
        let n = &v[0];
        assert_eq!(n["Name"], "lab");
        assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.9.0.0/16");
        assert_eq!(n["IPAM"]["Config"][0]["IPRange"], "10.9.1.0/24");
        assert_eq!(n["Options"]["com.docker.network.driver.mtu"], "1400");
        let c = &n["Containers"][&ep.id];
        assert_eq!(c["IPv4Address"], "10.9.1.0/16");
        assert_eq!(c["MacAddress"], "02:42:0a:09:01:00");
        assert_eq!(n["EnableIPv6"], false);
    }
}
