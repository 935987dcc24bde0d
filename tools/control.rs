//! The control protocol: one JSON request per connection, one JSON response.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Requests larger than this are refused (a request is a few hundred bytes).
pub const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    AddNet(NetSpec),
    DelNet {
        name: String,
        #[serde(default)]
        if_exists: bool,
    },
    /// A static remote VTEP of an overlay network.
    AddPeer {
        network: String,
        ip: String,
    },
    DelPeer {
        network: String,
        ip: String,
    },
    ListNets,
    ShowNet {
        name: String,
    },
    AddPort {
        network: String,
        netns: String,
        ip: Option<String>,
        ip6: Option<String>,
        mac: Option<String>,
        name: Option<String>,
        #[serde(default)]
        aliases: Vec<String>,
        #[serde(default)]
        publish: Vec<String>,
        #[serde(default)]
        may_exist: bool,
    },
    DelPort {
        network: String,
        netns: String,
        #[serde(default)]
        if_exists: bool,
    },
    ListPorts {
        network: Option<String>,
    },
    FdbShow {
        network: String,
    },
    Conntrack {
        network: Option<String>,
    },
    Publish {
        network: String,
        netns: String,
        spec: String,
    },
    Unpublish {
        network: String,
        netns: String,
        spec: String,
    },
    Port {
        netns: String,
    },
    /// Add a DNS alias to a live endpoint.
    Alias {
        network: String,
        netns: String,
        name: String,
    },
    /// Remove one of an endpoint's DNS aliases.
    Unalias {
        network: String,
        netns: String,
        name: String,
    },
    AddRule(RuleSpec),
    ListRules,
    DelRule {
        id: u32,
    },
    Stats,
}

/// A network as `vsctl add-net` asks for it, before the daemon checks it:
/// vsctl's arguments and the request's fields are the same struct.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    pub name: String,
    /// Subnet in CIDR form (default: the next free /16 from 172.18.0.0).
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address the switch owns (default: the first host address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Allocate endpoint addresses from this sub-range.
    #[arg(long)]
    pub ip_range: Option<String>,
    #[arg(long)]
    pub mtu: Option<u32>,
    /// No way out of the network: nothing is routed beyond its gateway.
    #[arg(long)]
    #[serde(default)]
    pub internal: bool,
    /// Inter-container communication: --icc=false lets containers reach
    /// only the gateway and the outside.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    #[serde(default = "enabled")]
    pub icc: bool,
    /// Route out with the containers' own addresses (the world outside
    /// must route the subnet to the uplink address).
    #[arg(long)]
    #[serde(default)]
    pub no_masquerade: bool,
    /// Dual stack: give the network an IPv6 subnet too.
    #[arg(long)]
    #[serde(default)]
    pub ipv6: bool,
    /// IPv6 subnet (with --ipv6; default: a random unique local /64 in fd00::/8).
    #[arg(long, requires = "ipv6")]
    pub subnet6: Option<String>,
    /// IPv6 gateway address the switch owns besides fe80::1 (default: the subnet's ::1).
    #[arg(long, requires = "ipv6")]
    pub gateway6: Option<String>,
    /// bridge (default) or overlay: a network stretched over hosts with VXLAN (peers: add-peer).
    #[arg(long, value_parser = ["bridge", "overlay"])]
    pub driver: Option<String>,
    /// VXLAN network identifier of an overlay network (default: the first free from 4096).
    #[arg(long)]
    pub vni: Option<u32>,
    /// Succeed if the network already exists.
    #[arg(long)]
    #[serde(default)]
    pub may_exist: bool,
}

/// A filter rule as `vsctl add-rule` asks for it, before the daemon checks
/// it (vsctl's arguments and the request's fields, as for `NetSpec`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Only frames entering from this network's ports.
    #[arg(long = "net", value_name = "NET")]
    pub network: Option<String>,
    /// Only frames entering on the uplink (addressed to the uplink address and host port).
    #[arg(long, conflicts_with = "network")]
    #[serde(default)]
    pub uplink: bool,
    /// Source address or CIDR, IPv4 or IPv6 (a rule matches its family; without addresses, both).
    #[arg(long, value_name = "CIDR")]
    pub src: Option<String>,
    /// Destination address or CIDR, IPv4 or IPv6.
    #[arg(long, value_name = "CIDR")]
    pub dst: Option<String>,
    #[arg(long, value_parser = ["tcp", "udp", "icmp"])]
    pub proto: Option<String>,
    #[arg(long, value_name = "PORT")]
    pub dport: Option<u16>,
    #[arg(long, value_parser = ["allow", "drop"])]
    pub action: String,
}

fn enabled() -> bool {
    true
}

/// Either `ok` with a result, or an error message for the user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub result: Value,
}

impl Response {
    pub fn ok(result: Value) -> Response {
        Response { ok: true, error: None, result }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response { ok: false, error: Some(message.into()), result: Value::Null }
    }
}

/// Send one request to the daemon at `socket` and wait for its response.
pub fn call(socket: &Path, request: &Request) -> Result<Response, String> {
    let unreachable =
        |e: std::io::Error| format!("cannot reach vswitchd at {}: {e} (is vswitchd running?)", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    // add-port plumbs a namespace; leave it time, but never hang forever.
    stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(unreachable)?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(unreachable)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(|e| format!("no answer from vswitchd: {e}"))?;
    if reply.is_empty() {
        return Err("vswitchd closed the connection without answering".into());
    }
    serde_json::from_str(&reply).map_err(|e| format!("unreadable answer from vswitchd: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json() {
        let req = Request::AddPort {
            network: "n".into(),
            netns: "ns".into(),
            ip: Some("10.0.0.5".into()),
            ip6: Some("2001:db8::5".into()),
            mac: None,
            name: None,
            aliases: vec!["www".into()],
            publish: vec!["8080:80".into()],
            may_exist: true,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.contains(r#""command":"add-port""#));
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
    }

    #[test]
    fn unknown_commands_and_fields_are_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"command":"format-disk"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"del-net","name":"x","force":true}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"stats"}"#).is_ok());
        let rule =
            r#"{"command":"add-rule","network":null,"src":null,"dst":null,"proto":"tcp","dport":80,"action":"drop"}"#;
        assert!(matches!(serde_json::from_str::<Request>(rule), Ok(Request::AddRule(_))));
        let sneaky = r#"{"command":"add-rule","action":"drop","priority":1}"#;
        assert!(serde_json::from_str::<Request>(sneaky).is_err());
    }
}
