//! vsctl: the command line of vswitchd. Verbs follow ovs-vsctl, options
//! follow `docker network`.

use clap::{Parser, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use vswitch::control::{self, NetSpec, Request, RuleSpec};
use vswitch::DEFAULT_SOCKET;

#[derive(Parser)]
#[command(version, about = "Configure vswitchd: networks, ports, tables")]
struct Args {
    /// vswitchd's control socket.
    #[arg(long, env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a network (a bridge, or an overlay over several hosts).
    AddNet(NetSpec),
    /// Add a static remote VTEP (another host's vswitchd uplink address) to an overlay network.
    AddPeer { network: String, ip: String },
    /// Remove a static remote VTEP from an overlay network.
    DelPeer { network: String, ip: String },
    /// Remove a network that has no ports.
    DelNet {
        name: String,
        #[arg(long)]
        if_exists: bool,
    },
    /// List networks like `docker network ls`.
    ListNets {
        #[arg(long)]
        json: bool,
    },
    /// Show a network as `docker network inspect` does.
    ShowNet { name: String },
    /// Attach a network namespace (created if missing) to a network.
    AddPort {
        network: String,
        netns: String,
        #[arg(long)]
        ip: Option<String>,
        /// IPv6 address on a dual-stack network (default: the subnet's prefix and the MAC).
        #[arg(long)]
        ip6: Option<String>,
        #[arg(long)]
        mac: Option<String>,
        /// Endpoint name, its DNS name on the network (default: the namespace name).
        #[arg(long)]
        name: Option<String>,
        /// A further DNS name on the network (repeatable; Docker's --network-alias).
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
        /// Publish a port on the uplink address: [HOSTIP:][HOSTPORT:]PORT[/tcp|/udp] (repeatable).
        #[arg(long, short = 'p', value_name = "SPEC")]
        publish: Vec<String>,
        #[arg(long)]
        may_exist: bool,
    },
    /// Publish a port of a live endpoint.
    Publish { network: String, netns: String, spec: String },
    /// Withdraw a published port.
    Unpublish { network: String, netns: String, spec: String },
    /// List a namespace's published ports, like `docker port`.
    Port { netns: String },
    /// Give a live endpoint a further DNS name on its network.
    Alias { network: String, netns: String, name: String },
    /// Take one of an endpoint's DNS aliases away.
    Unalias { network: String, netns: String, name: String },
    /// Detach a namespace from a network.
    DelPort {
        network: String,
        netns: String,
        #[arg(long)]
        if_exists: bool,
    },
    /// List ports, of one network or all.
    ListPorts {
        network: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a network's MAC table.
    FdbShow {
        network: String,
        #[arg(long)]
        json: bool,
    },
    /// The connection table of masqueraded flows.
    Conntrack {
        #[arg(long)]
        net: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add a filter rule, evaluated before the switch's own, in order (Docker's DOCKER-USER).
    AddRule(RuleSpec),
    /// List the filter rules in the order they are evaluated.
    ListRules {
        #[arg(long)]
        json: bool,
    },
    /// Remove a filter rule.
    DelRule { id: u32 },
    /// Per-port and per-worker counters.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let (request, print): (Request, fn(&Value)) = match args.command {
        Command::AddNet(spec) => (Request::AddNet(spec), print_plain),
        Command::AddPeer { network, ip } => (Request::AddPeer { network, ip }, print_plain),
        Command::DelPeer { network, ip } => (Request::DelPeer { network, ip }, print_plain),
        Command::DelNet { name, if_exists } => (Request::DelNet { name, if_exists }, print_plain),
        Command::ListNets { json } => (Request::ListNets, if json { print_json } else { print_nets }),
        Command::ShowNet { name } => (Request::ShowNet { name }, print_json),
        Command::AddPort { network, netns, ip, ip6, mac, name, aliases, publish, may_exist } => {
            (Request::AddPort { network, netns, ip, ip6, mac, name, aliases, publish, may_exist }, print_json)
        }
        Command::Publish { network, netns, spec } => (Request::Publish { network, netns, spec }, print_lines),
        Command::Unpublish { network, netns, spec } => (Request::Unpublish { network, netns, spec }, print_plain),
        Command::Port { netns } => (Request::Port { netns }, print_lines),
        Command::Alias { network, netns, name } => (Request::Alias { network, netns, name }, print_plain),
        Command::Unalias { network, netns, name } => (Request::Unalias { network, netns, name }, print_plain),
        Command::DelPort { network, netns, if_exists } => (Request::DelPort { network, netns, if_exists }, print_plain),
        Command::ListPorts { network, json } => {
            (Request::ListPorts { network }, if json { print_json } else { print_ports })
        }
        Command::FdbShow { network, json } => (Request::FdbShow { network }, if json { print_json } else { print_fdb }),
        Command::Conntrack { net, json } => {
            (Request::Conntrack { network: net }, if json { print_json } else { print_conntrack })
        }
        Command::AddRule(spec) => (Request::AddRule(spec), print_plain),
        Command::ListRules { json } => (Request::ListRules, if json { print_json } else { print_rules }),
        Command::DelRule { id } => (Request::DelRule { id }, print_plain),
        Command::Stats { json } => (Request::Stats, if json { print_json } else { print_stats }),
    };
    let response = control::call(&args.socket, &request)?;
    if !response.ok {
        return Err(response.error.unwrap_or_else(|| "request refused".into()));
    }
    print(&response.result);
    Ok(())
}

fn print_plain(v: &Value) {
    match v {
        Value::Null => {}
        Value::String(s) => println!("{s}"),
        other => println!("{other}"),
    }
}

fn print_lines(v: &Value) {
    for line in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        print_plain(line);
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Print rows as left-aligned columns.
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("   ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    rows.into_iter().for_each(line);
}

fn field(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn rows(v: &Value, keys: &[&str]) -> Vec<Vec<String>> {
    let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
    items.iter().map(|item| keys.iter().map(|k| field(item, k)).collect()).collect()
}

fn print_nets(v: &Value) {
    let mut rows = rows(v, &["Id", "Name", "Driver", "Scope", "Subnet"]);
    for row in &mut rows {
        row[0].truncate(12);
    }
    print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"], rows);
}

fn print_ports(v: &Value) {
    let keys = ["Network", "Netns", "Interface", "Name", "MacAddress", "IPv4Address"];
    print_table(&["NETWORK", "NETNS", "IFACE", "NAME", "MAC", "IPV4"], rows(v, &keys));
}

fn print_fdb(v: &Value) {
    print_table(&["MAC", "PORT", "TYPE", "AGE(s)"], rows(v, &["mac", "port", "type", "age_secs"]));
}

fn print_rules(v: &Value) {
    let mut rows = rows(v, &["id", "network", "src", "dst", "proto", "dport", "action"]);
    let uplink = v.as_array().map(|a| a.iter().map(|r| r["uplink"] == true).collect::<Vec<_>>()).unwrap_or_default();
    for (row, is_uplink) in rows.iter_mut().zip(uplink) {
        if row[1].is_empty() {
            row[1] = if is_uplink { "(uplink)" } else { "(all)" }.to_string();
        }
        for cell in &mut row[2..6] {
            if cell.is_empty() {
                *cell = "*".into();
            }
        }
    }
    print_table(&["ID", "SCOPE", "SRC", "DST", "PROTO", "DPORT", "ACTION"], rows);
}

fn print_conntrack(v: &Value) {
    let keys = ["network", "proto", "src", "dst", "nat_src", "state", "age_secs"];
    print_table(&["NETWORK", "PROTO", "SOURCE", "DESTINATION", "TRANSLATED SOURCE", "STATE", "AGE(s)"], rows(v, &keys));
}

fn print_stats(v: &Value) {
    let keys = ["name", "network", "rx_packets", "rx_bytes", "rx_drops", "tx_packets", "tx_bytes", "tx_drops"];
    print_table(
        &["PORT", "NETWORK", "RX PKTS", "RX BYTES", "RX DROP", "TX PKTS", "TX BYTES", "TX DROP"],
        rows(&v["ports"], &keys),
    );
    println!();
    let mut workers = rows(&v["workers"], &["index", "ports", "packets", "busy_percent"]);
    for row in &mut workers {
        if let Ok(busy) = row[3].parse::<f64>() {
            row[3] = format!("{busy:.2}%");
        }
    }
    print_table(&["WORKER", "PORTS", "PACKETS", "BUSY"], workers);
    println!();
    if let Some(drops) = v["drops"].as_object() {
        let summary: Vec<String> = drops.iter().map(|(k, n)| format!("{k}={n}")).collect();
        println!("drops: {}", summary.join(" "));
    }
    let conntrack = &v["conntrack"];
    println!("conntrack: entries={} evictions={}", conntrack["entries"], conntrack["evictions"]);
}
