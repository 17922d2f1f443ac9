//! The iptables rules Docker installs, as data.
//!
//! The layout is Docker 20.10's (libnetwork vendored at c5aa85f9b25f, `setup_ip_tables.go`,
//! `iptables/iptables.go`, `firewall_linux.go`), checked against what a real dockerd 20.10.24
//! leaves in `iptables-save` after starting on empty tables: the captures are kept under
//! `tests/golden/docker-20.10/` and `tests/firewall_docker.rs` compares them with
//! [`bridge_rules`], [`port_rules`] and [`link_rules`].
//!
//! Everything is pure: a [`Rule`] is written in the canonical order and spelling that
//! `iptables-save` prints, so that a rule can be looked up in a [`Listing`] (parsed from
//! `iptables-save`) by plain text comparison. [`plan_add`] and [`plan_remove`] turn the
//! difference between the wanted rules and a listing into a [`Batch`] for
//! `iptables-restore --noflush`, and [`undo_of`] takes back exactly what a batch of
//! [`plan_add`] did.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::ports::Proto;

/// An iptables table we write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Table {
    Filter,
    Nat,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }

    /// Both tables, in the order `iptables-save` prints them.
    pub const ALL: [Table; 2] = [Table::Filter, Table::Nat];

    /// The table's built-in chains, in the order `iptables-save` prints them.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        }
    }

    /// True for a built-in chain of this table.
    pub fn is_builtin(self, chain: &str) -> bool {
        self.builtin_chains().contains(&chain)
    }

    /// The table named `name` (`filter`, `nat`), if it is one we write to.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A built-in chain's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    Accept,
    Drop,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Accept => "ACCEPT",
            Policy::Drop => "DROP",
        }
    }

    /// The policy named `name` (`ACCEPT`, `DROP`).
    pub fn from_name(name: &str) -> Option<Policy> {
        match name {
            "ACCEPT" => Some(Policy::Accept),
            "DROP" => Some(Policy::Drop),
            _ => None,
        }
    }
}

/// One atomic change to one table: the body of an `iptables-restore --noflush` input
/// (lines such as `:DOCKER - [0:0]`, `-A DOCKER ...`, `-I FORWARD 1 ...`, `-D ...`, `-X DOCKER`),
/// without the `*table` header and `COMMIT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub table: Table,
    pub lines: Vec<String>,
}

impl Batch {
    /// True when the batch only adds (chains, `-A`, `-I`): its [`undo_of`] is then safe to
    /// run whether or not the batch was applied (deleting what is not there fails
    /// atomically), which is what lets several such batches share one `iptables-restore`
    /// even though tables are committed one by one.
    pub fn is_additive(&self) -> bool {
        self.lines.iter().all(|l| {
            l.starts_with(':') || l.starts_with("-A ") || l.starts_with("-I ") || l.starts_with('#')
        })
    }

    /// The complete `iptables-restore --noflush` input: `*table`, the lines, `COMMIT`.
    pub fn render(&self) -> String {
        let mut out = format!("*{}\n", self.table);
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Rules

/// The chain Docker creates in both `nat` and `filter`.
pub const DOCKER_CHAIN: &str = "DOCKER";
/// Docker 20.10's first isolation stage (dropped in Docker 29, moby commit 1ad9599da7).
pub const ISOLATION_STAGE_1: &str = "DOCKER-ISOLATION-STAGE-1";
/// Docker 20.10's second isolation stage.
pub const ISOLATION_STAGE_2: &str = "DOCKER-ISOLATION-STAGE-2";
/// The chain where users put their own forwarding rules; Docker only creates it, gives it a
/// `-j RETURN` and jumps to it first thing in FORWARD (moby/moby#35043).
pub const USER_CHAIN: &str = "DOCKER-USER";

/// The comment [`plan_add`] writes before a `-D` line: the 1-based position the deleted rule
/// had, so that [`undo_of`] can put it back where it was. iptables-restore skips `#` lines.
const POSITION_COMMENT: &str = "# position ";

/// Where a rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Place {
    /// At the end (`-A`).
    Append,
    /// At the head: Docker inserts it with `-I`. The `Top` rules of a chain end up first, in
    /// the order they are listed, above whatever else the chain holds.
    Top,
}

/// What to do with a rule, as an `iptables` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Append,
    /// Insert at the head (`-I CHAIN`, i.e. position 1).
    Insert,
    Delete,
    Check,
}

impl Op {
    pub fn flag(self) -> &'static str {
        match self {
            Op::Append => "-A",
            Op::Insert => "-I",
            Op::Delete => "-D",
            Op::Check => "-C",
        }
    }
}

/// One rule, with its arguments in `iptables-save`'s canonical order and spelling
/// (`-s`, `-d`, `-i`, `-o`, `-p`, then `-m` matches, then `-j`; addresses masked, hosts as
/// `/32`; `-m tcp` after `-p tcp`), so that it compares textually with a saved listing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    pub table: Table,
    pub chain: String,
    pub args: Vec<String>,
    pub place: Place,
}

impl Rule {
    /// A rule from its arguments, given as `&str`s.
    pub fn new(table: Table, chain: &str, place: Place, args: &[&str]) -> Self {
        Self {
            table,
            chain: chain.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            place,
        }
    }

    /// A rule from its specification as `iptables-save` prints it (split on whitespace, so no
    /// argument may contain any: true of every rule here, as interface names, addresses and
    /// chain names cannot).
    pub fn from_spec(table: Table, chain: &str, place: Place, spec: &str) -> Self {
        Self {
            table,
            chain: chain.to_owned(),
            args: spec.split_whitespace().map(str::to_owned).collect(),
            place,
        }
    }

    /// The rule specification as `iptables-save` prints it after `-A CHAIN `.
    pub fn spec(&self) -> String {
        self.args.join(" ")
    }

    /// The rule as an `iptables-save` line: `-A CHAIN args`.
    pub fn save_line(&self) -> String {
        join_line("-A", &self.chain, &self.spec())
    }

    /// The full `iptables` argument vector, e.g. `["-t", "nat", "-A", "POSTROUTING", ...]`.
    pub fn argv(&self, op: Op) -> Vec<String> {
        let mut v = vec![
            "-t".to_owned(),
            self.table.name().to_owned(),
            op.flag().to_owned(),
            self.chain.clone(),
        ];
        v.extend(self.args.iter().cloned());
        v
    }

    /// The chain this rule jumps or goes to (`-j X` / `-g X`), if any.
    pub fn target(&self) -> Option<&str> {
        self.args
            .windows(2)
            .find(|w| w[0] == "-j" || w[0] == "-g")
            .map(|w| w[1].as_str())
    }

    /// Same table, chain and specification (the place does not matter for identity).
    pub fn same_as(&self, other: &Rule) -> bool {
        self.table == other.table && self.chain == other.chain && self.args == other.args
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-t {} {}", self.table, self.save_line())
    }
}

/// `-I CHAIN n spec`.
fn insert_line(chain: &str, position: usize, spec: &str) -> String {
    join_line("-I", &format!("{chain} {position}"), spec)
}

fn join_line(flag: &str, chain: &str, spec: &str) -> String {
    if spec.is_empty() {
        format!("{flag} {chain}")
    } else {
        format!("{flag} {chain} {spec}")
    }
}

/// The parameters of the default bridge's rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeFirewall {
    /// The bridge interface, e.g. `docker0`.
    pub bridge: String,
    /// The bridge's network. [`bridge_rules`] masks it (`172.17.0.1/16` → `172.17.0.0/16`),
    /// as Docker does since libnetwork; 1.x wrote the unmasked address.
    pub subnet: Ipv4Net,
    /// `--icc`.
    pub icc: bool,
    /// `--ip-masq`.
    pub ip_masq: bool,
    /// Hairpin NAT: `--userland-proxy=false`.
    pub hairpin: bool,
}

impl BridgeFirewall {
    /// The parameters for a configuration and the bridge's address (masked here).
    pub fn from_config(config: &Config, bridge: &str, addr: Ipv4Net) -> Self {
        Self {
            bridge: bridge.to_owned(),
            subnet: addr.trunc(),
            icc: config.icc,
            ip_masq: config.ip_masq,
            hairpin: !config.userland_proxy,
        }
    }
}

/// The chains and rules of a bridge network, for both tables.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuleSet {
    /// The chains to create, in creation order.
    pub chains: Vec<(Table, String)>,
    /// The rules, in the order they are planned (this order decides the order of `Top` rules).
    pub rules: Vec<Rule>,
    /// Rules the same bridge has under *other* options (the `-j ACCEPT` ICC rule when icc is
    /// now false, the hairpin rules when the proxy is back on, ...). [`plan_add`] deletes them
    /// when present, as Docker's `setIcc` deletes the opposite ICC rule: left in place, an old
    /// `-i br -o br -j ACCEPT` above a new appended `-j DROP` would silently keep ICC on.
    /// (Docker 20.10 itself leaks the hairpin MASQUERADE rule when restarted with
    /// `--ip-masq=false` after `--userland-proxy=false`; see tests/golden/docker-20.10/README.md.)
    pub superseded: Vec<Rule>,
}

impl RuleSet {
    /// The rules of one table, in order.
    pub fn rules_in(&self, table: Table) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.table == table)
    }

    /// The chains of one table, in creation order.
    pub fn chains_in(&self, table: Table) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .filter(move |(t, _)| *t == table)
            .map(|(_, c)| c.as_str())
    }
}

impl From<Vec<Rule>> for RuleSet {
    /// Rules that go into existing chains (per-port and link rules).
    fn from(rules: Vec<Rule>) -> Self {
        Self {
            chains: Vec::new(),
            rules,
            superseded: Vec::new(),
        }
    }
}

/// The complete set of chains and rules Docker 20.10 installs for its default bridge.
///
/// After Docker 20.10.24 starts on empty tables, `iptables-save` shows (docker0,
/// 172.17.0.0/16, all defaults):
///
/// ```text
/// *filter
/// -A FORWARD -j DOCKER-USER
/// -A FORWARD -j DOCKER-ISOLATION-STAGE-1
/// -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
/// -A FORWARD -o docker0 -j DOCKER
/// -A FORWARD -i docker0 ! -o docker0 -j ACCEPT
/// -A FORWARD -i docker0 -o docker0 -j ACCEPT
/// -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
/// -A DOCKER-ISOLATION-STAGE-1 -j RETURN
/// -A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
/// -A DOCKER-ISOLATION-STAGE-2 -j RETURN
/// -A DOCKER-USER -j RETURN
/// *nat
/// -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
/// -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
/// -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
/// -A DOCKER -i docker0 -j RETURN
/// ```
///
/// `--icc=false` turns the last FORWARD rule into an *appended* `-j DROP` (1.x inserted it);
/// `--ip-masq=false` drops the MASQUERADE and the `DOCKER -i docker0 -j RETURN` rules;
/// `--userland-proxy=false` drops the `! -d 127.0.0.0/8` and the `-j RETURN`, and puts
/// `-o docker0 -m addrtype --src-type LOCAL -j MASQUERADE` at the head of POSTROUTING (even
/// with `--ip-masq=false`). The FORWARD policy is not part of the rule set: see
/// [`forward_policy`].
pub fn bridge_rules(fw: &BridgeFirewall) -> RuleSet {
    let mut set = core_rules(fw, fw.icc, fw.ip_masq, fw.hairpin);
    for icc in [true, false] {
        for ip_masq in [true, false] {
            for hairpin in [true, false] {
                if (icc, ip_masq, hairpin) == (fw.icc, fw.ip_masq, fw.hairpin) {
                    continue;
                }
                for rule in core_rules(fw, icc, ip_masq, hairpin).rules {
                    let known = set.rules.iter().chain(&set.superseded);
                    if !known.into_iter().any(|r| r.same_as(&rule)) {
                        set.superseded.push(rule);
                    }
                }
            }
        }
    }
    set
}

fn core_rules(fw: &BridgeFirewall, icc: bool, ip_masq: bool, hairpin: bool) -> RuleSet {
    use Place::{Append, Top};
    use Table::{Filter, Nat};
    let br = fw.bridge.as_str();
    let subnet = fw.subnet.trunc();
    // One rule per line, the way iptables-save shows them.
    let f = |chain: &str, place, spec: String| Rule::from_spec(Filter, chain, place, &spec);
    let n = |chain: &str, place, spec: String| Rule::from_spec(Nat, chain, place, &spec);
    let mut rules = vec![
        // firewall_linux.go arrangeUserFilterRule → EnsureJumpRule: first in FORWARD.
        f("FORWARD", Top, format!("-j {USER_CHAIN}")),
        // setupIPChains → EnsureJumpRule(FORWARD, STAGE-1).
        f("FORWARD", Top, format!("-j {ISOLATION_STAGE_1}")),
        // ProgramChain(filter): both inserted.
        f(
            "FORWARD",
            Top,
            format!("-o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        ),
        f("FORWARD", Top, format!("-o {br} -j {DOCKER_CHAIN}")),
        // setupIPTablesInternal outRule, inserted.
        f("FORWARD", Top, format!("-i {br} ! -o {br} -j ACCEPT")),
        // setIcc: ACCEPT is inserted, DROP is appended (1.x inserted both).
        if icc {
            f("FORWARD", Top, format!("-i {br} -o {br} -j ACCEPT"))
        } else {
            f("FORWARD", Append, format!("-i {br} -o {br} -j DROP"))
        },
        // setINC: the per-network isolation rules are inserted above the chains' RETURN.
        f(
            ISOLATION_STAGE_1,
            Top,
            format!("-i {br} ! -o {br} -j {ISOLATION_STAGE_2}"),
        ),
        f(ISOLATION_STAGE_1, Append, "-j RETURN".into()),
        f(ISOLATION_STAGE_2, Top, format!("-o {br} -j DROP")),
        f(ISOLATION_STAGE_2, Append, "-j RETURN".into()),
        f(USER_CHAIN, Append, "-j RETURN".into()),
        // ProgramChain(nat): both appended; hairpin mode lets containers reach the host's
        // loopback-published ports, so the OUTPUT jump then covers 127.0.0.0/8 too.
        n(
            "PREROUTING",
            Append,
            format!("-m addrtype --dst-type LOCAL -j {DOCKER_CHAIN}"),
        ),
        if hairpin {
            n(
                "OUTPUT",
                Append,
                format!("-m addrtype --dst-type LOCAL -j {DOCKER_CHAIN}"),
            )
        } else {
            n(
                "OUTPUT",
                Append,
                format!("! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j {DOCKER_CHAIN}"),
            )
        },
    ];
    // hpNatRule (inserted after natRule, so it ends up above it), programmed even without
    // --ip-masq.
    if hairpin {
        rules.push(n(
            "POSTROUTING",
            Top,
            format!("-o {br} -m addrtype --src-type LOCAL -j MASQUERADE"),
        ));
    }
    if ip_masq {
        rules.push(n(
            "POSTROUTING",
            Top,
            format!("-s {subnet} ! -o {br} -j MASQUERADE"),
        ));
        // skipDNAT: only with masquerading and without hairpin.
        if !hairpin {
            rules.push(n(DOCKER_CHAIN, Top, format!("-i {br} -j RETURN")));
        }
    }
    RuleSet {
        chains: [
            (Filter, DOCKER_CHAIN),
            (Filter, ISOLATION_STAGE_1),
            (Filter, ISOLATION_STAGE_2),
            (Filter, USER_CHAIN),
            (Nat, DOCKER_CHAIN),
        ]
        .into_iter()
        .map(|(t, c)| (t, c.to_owned()))
        .collect(),
        rules,
        superseded: Vec::new(),
    }
}

/// The FORWARD policy to set after the `ip_forward` step, if any.
///
/// Docker 20.10 (`setup_ip_forwarding.go`): only when Docker itself turns `ip_forward` on
/// (it was 0) and iptables is enabled, FORWARD's policy becomes DROP, so that enabling
/// forwarding does not turn the host into a router for everyone. When forwarding was already
/// on, the policy is left alone (checked with dockerd 20.10.24: ACCEPT stays ACCEPT).
/// `ip-forward-no-drop` is the later opt-out (Docker 27).
pub fn forward_policy(config: &Config, ip_forward_was_on: bool) -> Option<Policy> {
    (config.iptables && config.ip_forward && !ip_forward_was_on && !config.ip_forward_no_drop)
        .then_some(Policy::Drop)
}

/// A published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// 0.0.0.0 for all host addresses.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    pub proto: Proto,
}

/// The rules for one published port, in Docker 20.10's order (`ChainInfo.Forward`): the nat
/// DNAT, the filter ACCEPT, the nat hairpin MASQUERADE; all appended.
///
/// `-d <host ip>/32` only when the host IP is not 0.0.0.0 (Docker passes `-d 0/0`, which
/// iptables drops); `! -i <bridge>` only with the userland proxy (in hairpin mode containers
/// must reach published ports through the DNAT too).
///
/// Docker also adds `-t mangle -A POSTROUTING -p sctp --sport N -j CHECKSUM --checksum-fill`
/// for SCTP (a kernel ≤ 4.9 veth workaround); we write only `filter` and `nat`, so that rule is
/// not produced.
pub fn port_rules(bridge: &str, m: &PortMapping, hairpin: bool) -> Vec<Rule> {
    let p = m.proto;
    let (c, cport) = (m.container_ip, m.container_port);
    let mut dnat = String::new();
    if !m.host_ip.is_unspecified() {
        dnat.push_str(&format!("-d {}/32 ", m.host_ip));
    }
    if !hairpin {
        dnat.push_str(&format!("! -i {bridge} "));
    }
    dnat.push_str(&format!(
        "-p {p} -m {p} --dport {} -j DNAT --to-destination {c}:{cport}",
        m.host_port
    ));
    vec![
        Rule::from_spec(Table::Nat, DOCKER_CHAIN, Place::Append, &dnat),
        Rule::from_spec(
            Table::Filter,
            DOCKER_CHAIN,
            Place::Append,
            &format!("-d {c}/32 ! -i {bridge} -o {bridge} -p {p} -m {p} --dport {cport} -j ACCEPT"),
        ),
        Rule::from_spec(
            Table::Nat,
            "POSTROUTING",
            Place::Append,
            &format!("-s {c}/32 -d {c}/32 -p {p} -m {p} --dport {cport} -j MASQUERADE"),
        ),
    ]
}

/// The pair of rules for one port of a legacy link (`--link`), in the filter DOCKER chain as
/// Docker ≥ 1.5 puts them (1.x used FORWARD and `-I`): parent → child on the destination port,
/// then child → parent from the source port; both appended (20.10 `ChainInfo.Link`). Docker
/// programs them only with `--icc=false`.
pub fn link_rules(
    bridge: &str,
    parent: Ipv4Addr,
    child: Ipv4Addr,
    port: u16,
    proto: Proto,
) -> Vec<Rule> {
    let p = proto;
    let pair = |src: Ipv4Addr, dst: Ipv4Addr, dir: &str| {
        Rule::from_spec(
            Table::Filter,
            DOCKER_CHAIN,
            Place::Append,
            &format!(
                "-s {src}/32 -d {dst}/32 -i {bridge} -o {bridge} -p {p} -m {p} {dir} {port} -j ACCEPT"
            ),
        )
    };
    vec![
        pair(parent, child, "--dport"),
        pair(child, parent, "--sport"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Listings

/// Why a listing could not be read or a batch could not be applied to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// A line of `iptables-save` output that is not what iptables-save prints.
    #[error("iptables-save line {line}: {reason}: {text:?}")]
    Parse {
        line: usize,
        text: String,
        reason: String,
    },
    /// A line of a batch that iptables-restore would refuse (the whole batch is refused).
    #[error("iptables-restore line {line}: {reason}: {text:?}")]
    Apply {
        line: usize,
        text: String,
        reason: String,
    },
}

/// One chain of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainListing {
    pub name: String,
    /// `Some` for a built-in chain, `None` for a user chain (`-` in iptables-save).
    pub policy: Option<Policy>,
    /// The rule specifications in order, as printed after `-A CHAIN `.
    pub rules: Vec<String>,
}

/// One table as `iptables-save` prints it: its chains with their policies, and their rules in
/// order. Chains are kept in `iptables-save`'s order: built-ins first, then user chains sorted
/// by name (both iptables-nft 1.8.9 and iptables-legacy sort them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub table: Table,
    pub chains: Vec<ChainListing>,
}

impl Listing {
    /// A table as the kernel creates it: the built-in chains, policy ACCEPT, no rules.
    pub fn empty(table: Table) -> Self {
        Self {
            table,
            chains: table
                .builtin_chains()
                .iter()
                .map(|c| ChainListing {
                    name: (*c).to_owned(),
                    policy: Some(Policy::Accept),
                    rules: Vec::new(),
                })
                .collect(),
        }
    }

    /// Reads `table` from `iptables-save` output. Other tables' sections are skipped, so the
    /// whole output of `iptables-save` may be given; text without a section for `table` (the
    /// table does not exist yet) gives [`Listing::empty`]. Comments and counters are ignored.
    pub fn parse(table: Table, text: &str) -> Result<Listing, FirewallError> {
        let mut found: Option<Listing> = None;
        // The section being read: its name, and whether it is ours.
        let mut section: Option<(String, bool)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let err = |reason: &str| FirewallError::Parse {
                line: i + 1,
                text: raw.to_owned(),
                reason: reason.to_owned(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if section.is_some() {
                    return Err(err("table section starts before the previous COMMIT"));
                }
                let ours = name == table.name();
                if ours {
                    if found.is_some() {
                        return Err(err("table listed twice"));
                    }
                    found = Some(Listing {
                        table,
                        chains: Vec::new(),
                    });
                }
                section = Some((name.to_owned(), ours));
                continue;
            }
            let Some((_, ours)) = &section else {
                return Err(err("line outside a *table section"));
            };
            if line == "COMMIT" {
                section = None;
                continue;
            }
            if !ours {
                continue;
            }
            let Some(listing) = found.as_mut() else {
                return Err(err("line outside a *table section"));
            };
            if let Some(decl) = line.strip_prefix(':') {
                let mut parts = decl.split_whitespace();
                let (Some(name), Some(policy)) = (parts.next(), parts.next()) else {
                    return Err(err("a chain line is `:NAME POLICY [packets:bytes]`"));
                };
                let policy = match (table.is_builtin(name), policy) {
                    (false, "-") => None,
                    (true, p) => Some(Policy::from_name(p).ok_or_else(|| err("unknown policy"))?),
                    (false, _) => return Err(err("a user chain has no policy")),
                };
                if listing.chain(name).is_some() {
                    return Err(err("chain listed twice"));
                }
                listing.chains.push(ChainListing {
                    name: name.to_owned(),
                    policy,
                    rules: Vec::new(),
                });
                continue;
            }
            // `iptables-save -c` prefixes each rule with its counters.
            let rule = match line.strip_prefix('[') {
                Some(rest) => rest.split_once(']').map_or(line, |(_, r)| r.trim_start()),
                None => line,
            };
            let Some(rest) = rule.strip_prefix("-A ") else {
                return Err(err("expected `:CHAIN`, `-A CHAIN ...` or COMMIT"));
            };
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let Some(c) = listing.chain_mut(chain) else {
                return Err(err("rule for a chain that was not declared"));
            };
            c.rules.push(spec.trim().to_owned());
        }
        if let Some((name, _)) = section {
            return Err(FirewallError::Parse {
                line: text.lines().count(),
                text: format!("*{name}"),
                reason: "section without COMMIT".to_owned(),
            });
        }
        let mut listing = found.unwrap_or_else(|| Listing::empty(table));
        // iptables-nft lists a built-in chain only once it exists; the kernel hook is there
        // all the same, with policy ACCEPT.
        for name in table.builtin_chains() {
            if listing.chain(name).is_none() {
                listing.chains.push(ChainListing {
                    name: (*name).to_owned(),
                    policy: Some(Policy::Accept),
                    rules: Vec::new(),
                });
            }
        }
        listing.sort_chains();
        Ok(listing)
    }

    /// The listing as `iptables-save` prints it (without the comment lines and with zero
    /// counters): `*table`, the chains, the rules, `COMMIT`.
    pub fn render(&self) -> String {
        let mut out = format!("*{}\n", self.table);
        for c in &self.chains {
            let policy = c.policy.map_or("-", Policy::name);
            out.push_str(&format!(":{} {} [0:0]\n", c.name, policy));
        }
        for c in &self.chains {
            for r in &c.rules {
                out.push_str(&join_line("-A", &c.name, r));
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
        out
    }

    /// A chain by name.
    pub fn chain(&self, name: &str) -> Option<&ChainListing> {
        self.chains.iter().find(|c| c.name == name)
    }

    fn chain_mut(&mut self, name: &str) -> Option<&mut ChainListing> {
        self.chains.iter_mut().find(|c| c.name == name)
    }

    /// The policy of a built-in chain.
    pub fn policy(&self, chain: &str) -> Option<Policy> {
        self.chain(chain).and_then(|c| c.policy)
    }

    /// How many times the rule is in the listing (0 for another table).
    pub fn count(&self, rule: &Rule) -> usize {
        if rule.table != self.table {
            return 0;
        }
        let spec = rule.spec();
        self.chain(&rule.chain)
            .map_or(0, |c| c.rules.iter().filter(|r| **r == spec).count())
    }

    /// True when the rule is in the listing.
    pub fn contains(&self, rule: &Rule) -> bool {
        self.count(rule) > 0
    }

    /// True when some rule jumps or goes to `chain`.
    pub fn is_referenced(&self, chain: &str) -> bool {
        self.chains
            .iter()
            .flat_map(|c| &c.rules)
            .any(|r| spec_target(r) == Some(chain))
    }

    fn sort_chains(&mut self) {
        let builtins = self.table.builtin_chains();
        self.chains.sort_by(|a, b| {
            let key = |c: &ChainListing| {
                builtins
                    .iter()
                    .position(|n| *n == c.name)
                    .unwrap_or(builtins.len())
            };
            key(a)
                .cmp(&key(b))
                .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
        });
    }

    /// The listing after `iptables-restore --noflush` applied `batch`, or why iptables-restore
    /// would refuse it (then nothing is applied). Understands the lines batches are made of:
    /// `:CHAIN POLICY [c]`, `-A`, `-I CHAIN [n]`, `-D CHAIN spec|n`, `-N`, `-X CHAIN`, `-F`,
    /// `-P`, and `#` comments. As iptables does, it refuses to jump to a chain that does not
    /// exist, to delete a rule that is not there, and to delete a chain that still holds rules
    /// or is jumped to.
    pub fn apply(&self, batch: &Batch) -> Result<Listing, FirewallError> {
        let mut work = self.clone();
        if batch.table != self.table {
            return Err(FirewallError::Apply {
                line: 0,
                text: format!("*{}", batch.table),
                reason: format!(
                    "batch for table {} applied to table {}",
                    batch.table, self.table
                ),
            });
        }
        for (i, line) in batch.lines.iter().enumerate() {
            work.apply_line(line)
                .map_err(|reason| FirewallError::Apply {
                    line: i + 1,
                    text: line.clone(),
                    reason,
                })?;
        }
        Ok(work)
    }

    fn apply_line(&mut self, line: &str) -> Result<(), String> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let (Some(name), Some(policy)) = (parts.next(), parts.next()) else {
                return Err("a chain line is `:NAME POLICY [packets:bytes]`".to_owned());
            };
            if self.table.is_builtin(name) {
                let p = Policy::from_name(policy).ok_or("bad built-in chain policy")?;
                if let Some(c) = self.chain_mut(name) {
                    c.policy = Some(p);
                }
                return Ok(());
            }
            if policy != "-" {
                return Err("a user chain has no policy".to_owned());
            }
            // With --noflush, declaring an existing user chain flushes it.
            match self.chain_mut(name) {
                Some(c) => c.rules.clear(),
                None => self.new_chain(name)?,
            }
            return Ok(());
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
        let spec = spec.trim();
        if chain.is_empty() {
            return Err(format!("{cmd} needs a chain"));
        }
        match cmd {
            "-A" | "-I" => {
                let (pos, spec) = match spec.split_once(' ') {
                    Some((n, s)) if cmd == "-I" && n.parse::<usize>().is_ok() => {
                        (n.parse::<usize>().ok(), s)
                    }
                    _ if cmd == "-I" && spec.parse::<usize>().is_ok() => {
                        (spec.parse::<usize>().ok(), "")
                    }
                    _ => (None, spec),
                };
                self.check_target(spec)?;
                let c = self
                    .chain_mut(chain)
                    .ok_or_else(|| format!("no chain {chain}"))?;
                let at = match (cmd, pos) {
                    ("-A", _) => c.rules.len(),
                    (_, None) => 0,
                    (_, Some(n)) if n >= 1 && n <= c.rules.len() + 1 => n - 1,
                    (_, Some(_)) => return Err("index of insertion too big".to_owned()),
                };
                c.rules.insert(at, spec.to_owned());
            }
            "-D" => {
                let c = self
                    .chain_mut(chain)
                    .ok_or_else(|| format!("no chain {chain}"))?;
                let at = match spec.parse::<usize>() {
                    Ok(n) if n >= 1 && n <= c.rules.len() => n - 1,
                    Ok(_) => return Err("index of deletion too big".to_owned()),
                    Err(_) => c
                        .rules
                        .iter()
                        .position(|r| r == spec)
                        .ok_or("bad rule (does a matching rule exist in that chain?)")?,
                };
                c.rules.remove(at);
            }
            "-N" => self.new_chain(chain)?,
            "-X" => {
                if self.table.is_builtin(chain) {
                    return Err("cannot delete a built-in chain".to_owned());
                }
                let c = self
                    .chain(chain)
                    .ok_or_else(|| format!("no chain {chain}"))?;
                if !c.rules.is_empty() {
                    return Err("directory not empty: the chain holds rules".to_owned());
                }
                if self.is_referenced(chain) {
                    return Err("too many links: the chain is jumped to".to_owned());
                }
                self.chains.retain(|c| c.name != chain);
            }
            "-F" => {
                let c = self
                    .chain_mut(chain)
                    .ok_or_else(|| format!("no chain {chain}"))?;
                c.rules.clear();
            }
            "-P" => {
                let p = Policy::from_name(spec).ok_or("bad policy")?;
                let c = self
                    .chain_mut(chain)
                    .ok_or_else(|| format!("no chain {chain}"))?;
                if c.policy.is_none() {
                    return Err("a user chain has no policy".to_owned());
                }
                c.policy = Some(p);
            }
            other => return Err(format!("unknown command {other}")),
        }
        Ok(())
    }

    fn new_chain(&mut self, name: &str) -> Result<(), String> {
        if self.chain(name).is_some() {
            return Err("chain already exists".to_owned());
        }
        // XT_EXTENSION_MAXNAMELEN - 1.
        if name.len() > 28 || name.starts_with('-') || name.starts_with('!') {
            return Err("invalid chain name".to_owned());
        }
        self.chains.push(ChainListing {
            name: name.to_owned(),
            policy: None,
            rules: Vec::new(),
        });
        self.sort_chains();
        Ok(())
    }

    fn check_target(&self, spec: &str) -> Result<(), String> {
        let Some(target) = spec_target(spec) else {
            return Ok(());
        };
        if self.table.is_builtin(target) {
            return Err(format!("cannot jump to built-in chain {target}"));
        }
        if KNOWN_TARGETS.contains(&target) || self.chain(target).is_some() {
            return Ok(());
        }
        Err(format!("couldn't load target `{target}'"))
    }
}

/// Verdicts and the extension targets a batch of ours (or a user's rule) may name.
const KNOWN_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "QUEUE",
    "MASQUERADE",
    "DNAT",
    "SNAT",
    "REDIRECT",
    "NETMAP",
    "REJECT",
    "LOG",
    "NFLOG",
    "MARK",
    "CONNMARK",
    "TCPMSS",
    "CT",
    "NOTRACK",
    "TRACE",
    "CHECKSUM",
    "NFQUEUE",
];

/// The `-j`/`-g` target of a rule specification.
fn spec_target(spec: &str) -> Option<&str> {
    let mut words = spec.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-j" || w == "-g" {
            return words.next();
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Plans

/// The batch that adds to `current` (the listing of `table`) what `set` wants there and is
/// missing, or `None` when everything is present (so a second run adds nothing).
///
/// - Only missing chains are declared: with `--noflush`, declaring an existing chain
///   (`:DOCKER - [0:0]`) flushes it, which would wipe the container rules.
/// - A missing `Append` rule is appended. A missing `Top` rule is inserted right after the
///   previous `Top` rule of its chain (or at position 1), so the `Top` rules end up at the head
///   in the listed order, above the user's own rules.
/// - Present [`RuleSet::superseded`] rules are deleted first (each `-D` is preceded by a
///   `# position N` comment that [`undo_of`] uses to put the rule back).
pub fn plan_add(set: &RuleSet, table: Table, current: &Listing) -> Option<Batch> {
    if current.table != table {
        tracing::warn!("plan_add: listing of {} used as {}", current.table, table);
    }
    let mut sim: BTreeMap<String, Vec<String>> = current
        .chains
        .iter()
        .map(|c| (c.name.clone(), c.rules.clone()))
        .collect();
    let mut lines = Vec::new();

    for chain in set.chains_in(table) {
        if !sim.contains_key(chain) {
            lines.push(format!(":{chain} - [0:0]"));
            sim.insert(chain.to_owned(), Vec::new());
        }
    }

    for rule in set.superseded.iter().filter(|r| r.table == table) {
        let spec = rule.spec();
        if let Some(rules) = sim.get_mut(&rule.chain) {
            while let Some(at) = rules.iter().position(|r| *r == spec) {
                rules.remove(at);
                lines.push(format!("{POSITION_COMMENT}{}", at + 1));
                lines.push(join_line("-D", &rule.chain, &spec));
            }
        }
    }

    // The last Top rule seen per chain: the next missing one goes right after it.
    let mut last_top: BTreeMap<&str, String> = BTreeMap::new();
    for rule in set.rules_in(table) {
        let spec = rule.spec();
        let rules = sim.entry(rule.chain.clone()).or_default();
        let present = rules.contains(&spec);
        match rule.place {
            Place::Append if !present => {
                lines.push(join_line("-A", &rule.chain, &spec));
                rules.push(spec);
            }
            Place::Append => {}
            Place::Top => {
                if !present {
                    let at = last_top
                        .get(rule.chain.as_str())
                        .and_then(|prev| rules.iter().position(|r| r == prev))
                        .map_or(0, |p| p + 1);
                    lines.push(insert_line(&rule.chain, at + 1, &spec));
                    rules.insert(at, spec.clone());
                }
                last_top.insert(rule.chain.as_str(), spec);
            }
        }
    }

    tracing::debug!(table = %table, lines = lines.len(), "planned firewall additions");
    (!lines.is_empty()).then_some(Batch { table, lines })
}

/// The batch that removes from `current` (the listing of `table`) the rules and chains of
/// `set` (including present [`RuleSet::superseded`] rules), or `None` when none is there.
///
/// Nothing of the user's is touched:
/// - each of our rules is deleted by its specification (every copy present);
/// - one of our chains is deleted (`-X`) only when it is empty afterwards and nothing else
///   jumps to it;
/// - [`USER_CHAIN`] is the user's hook: when it holds any rule besides our `-j RETURN`, it is
///   kept together with that `-j RETURN` and the `FORWARD -j DOCKER-USER` jump, so the user's
///   filtering keeps applying to forwarded traffic exactly as they wrote it (removing only the
///   jump would silently switch their rules off; Docker itself never removes DOCKER-USER).
pub fn plan_remove(set: &RuleSet, table: Table, current: &Listing) -> Option<Batch> {
    if current.table != table {
        tracing::warn!(
            "plan_remove: listing of {} used as {}",
            current.table,
            table
        );
    }
    let ours: Vec<&Rule> = set
        .rules_in(table)
        .chain(set.superseded.iter().filter(|r| r.table == table))
        .collect();
    let keep_user_hook = table == Table::Filter
        && current.chain(USER_CHAIN).is_some_and(|c| {
            c.rules
                .iter()
                .any(|r| !ours.iter().any(|o| o.chain == USER_CHAIN && o.spec() == *r))
        });

    let mut sim = current.clone();
    let mut lines = Vec::new();
    // Jumps into our chains come first in the set; deleting in reverse takes each chain's
    // contents out before the jumps into it, like Docker's teardown.
    for rule in ours.iter().rev() {
        if keep_user_hook && (rule.chain == USER_CHAIN || rule.target() == Some(USER_CHAIN)) {
            continue;
        }
        let spec = rule.spec();
        let Some(c) = sim.chain_mut(&rule.chain) else {
            continue;
        };
        while let Some(at) = c.rules.iter().position(|r| *r == spec) {
            c.rules.remove(at);
            lines.push(join_line("-D", &rule.chain, &spec));
        }
    }
    for chain in set.chains_in(table).collect::<Vec<_>>().into_iter().rev() {
        let removable = sim
            .chain(chain)
            .is_some_and(|c| c.rules.is_empty() && c.policy.is_none());
        if removable && !sim.is_referenced(chain) {
            sim.chains.retain(|c| c.name != chain);
            lines.push(format!("-X {chain}"));
        }
    }

    tracing::debug!(table = %table, lines = lines.len(), "planned firewall removals");
    (!lines.is_empty()).then_some(Batch { table, lines })
}

/// The batch that takes back exactly what `batch` (from [`plan_add`]) did, applied right
/// after it: its lines in reverse order, each inverted: `-A`/`-I` → `-D`, a chain declaration
/// → `-X`, `-N` → `-X`, `-X` → an empty declaration, and a `-D` → `-I` at the position its
/// `# position N` comment recorded (`-A` without one). `-F` and `-P` cannot be inverted from
/// the batch alone; plans never contain them, and they are skipped with a warning.
pub fn undo_of(batch: &Batch) -> Batch {
    let mut inverted = Vec::new();
    let mut position: Option<usize> = None;
    for line in &batch.lines {
        let line = line.trim();
        if let Some(n) = line.strip_prefix(POSITION_COMMENT) {
            position = n.trim().parse().ok();
            continue;
        }
        let pending = position.take();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next()
                && !batch.table.is_builtin(name)
            {
                inverted.push(format!("-X {name}"));
            } else {
                tracing::warn!("undo_of: cannot invert policy line {line:?}");
            }
            continue;
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
        match cmd {
            "-A" => inverted.push(join_line("-D", chain, spec)),
            "-I" => {
                let spec = match spec.split_once(' ') {
                    Some((n, s)) if n.parse::<usize>().is_ok() => s,
                    _ => spec,
                };
                inverted.push(join_line("-D", chain, spec));
            }
            "-D" => match pending {
                Some(n) => inverted.push(insert_line(chain, n, spec)),
                None => inverted.push(join_line("-A", chain, spec)),
            },
            "-N" => inverted.push(format!("-X {chain}")),
            "-X" => inverted.push(format!(":{chain} - [0:0]")),
            _ => tracing::warn!("undo_of: cannot invert {line:?}"),
        }
    }
    inverted.reverse();
    Batch {
        table: batch.table,
        lines: inverted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(table: Table, lines: &[&str]) -> Batch {
        Batch {
            table,
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    #[test]
    fn rule_renders_as_save_line_and_argv() {
        let r = Rule::new(
            Table::Nat,
            "POSTROUTING",
            Place::Top,
            &[
                "-s",
                "172.17.0.0/16",
                "!",
                "-o",
                "docker0",
                "-j",
                "MASQUERADE",
            ],
        );
        assert_eq!(
            r.save_line(),
            "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"
        );
        assert_eq!(
            r.argv(Op::Check),
            [
                "-t",
                "nat",
                "-C",
                "POSTROUTING",
                "-s",
                "172.17.0.0/16",
                "!",
                "-o",
                "docker0",
                "-j",
                "MASQUERADE"
            ]
        );
        assert_eq!(r.argv(Op::Insert)[2], "-I");
        assert_eq!(r.argv(Op::Delete)[2], "-D");
        assert_eq!(r.argv(Op::Append)[2], "-A");
        assert_eq!(r.target(), Some("MASQUERADE"));
        assert_eq!(
            r.to_string(),
            "-t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"
        );
    }

    #[test]
    fn batch_renders_for_iptables_restore() {
        let b = batch(
            Table::Nat,
            &[":DOCKER - [0:0]", "-A DOCKER -i docker0 -j RETURN"],
        );
        assert_eq!(
            b.render(),
            "*nat\n:DOCKER - [0:0]\n-A DOCKER -i docker0 -j RETURN\nCOMMIT\n"
        );
    }

    #[test]
    fn parse_reads_one_table_of_a_full_save() {
        let text = "# Generated by iptables-save v1.8.9 (nf_tables)\n*filter\n:INPUT ACCEPT [5:300]\n\
                    :FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
                    [3:180] -A FORWARD -o docker0 -j DOCKER\n-A DOCKER\nCOMMIT\n# Completed\n\
                    *nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                    -A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n";
        let f = Listing::parse(Table::Filter, text).expect("parses");
        assert_eq!(f.policy("FORWARD"), Some(Policy::Drop));
        assert_eq!(
            f.chain("FORWARD").expect("built-in").rules,
            ["-o docker0 -j DOCKER"]
        );
        assert_eq!(f.chain("DOCKER").expect("declared").rules, [""]);
        assert_eq!(f.chain("DOCKER").expect("declared").policy, None);
        let n = Listing::parse(Table::Nat, text).expect("parses");
        // Built-ins iptables-nft did not print are there, in iptables-save's order.
        let names: Vec<&str> = n.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]);
        assert_eq!(
            n.chain("POSTROUTING").expect("built-in").rules,
            ["-o eth0 -j MASQUERADE"]
        );
        // No section for the table: it does not exist yet.
        assert_eq!(
            Listing::parse(Table::Nat, "").expect("empty"),
            Listing::empty(Table::Nat)
        );
    }

    #[test]
    fn parse_round_trips_render() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n\
                    :DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A A -j RETURN\n-A DOCKER-USER -j RETURN\nCOMMIT\n";
        assert_eq!(
            Listing::parse(Table::Filter, text)
                .expect("parses")
                .render(),
            text
        );
    }

    #[test]
    fn parse_refuses_what_iptables_save_never_prints() {
        let cases = [
            ("*filter\n-A FORWARD -j ACCEPT\nCOMMIT\n", "not declared"),
            ("*filter\n:FORWARD ACCEPT [0:0]\n", "without COMMIT"),
            ("-A FORWARD -j ACCEPT\n", "outside"),
            (
                "*filter\n:FORWARD ACCEPT [0:0]\n-I FORWARD 1 -j ACCEPT\nCOMMIT\n",
                "expected",
            ),
            ("*filter\n:DOCKER ACCEPT [0:0]\nCOMMIT\n", "no policy"),
            ("*filter\n:FORWARD REJECT [0:0]\nCOMMIT\n", "unknown policy"),
            (
                "*filter\n:DOCKER - [0:0]\n:DOCKER - [0:0]\nCOMMIT\n",
                "twice",
            ),
            ("*filter\nCOMMIT\n*filter\nCOMMIT\n", "twice"),
            ("*filter\n*nat\nCOMMIT\n", "before the previous COMMIT"),
        ];
        for (text, why) in cases {
            match Listing::parse(Table::Filter, text) {
                Err(FirewallError::Parse { reason, .. }) => {
                    assert!(reason.contains(why), "{text:?}: {reason}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn apply_refuses_what_iptables_restore_refuses() {
        let base = Listing::empty(Table::Filter)
            .apply(&batch(
                Table::Filter,
                &[
                    ":DOCKER - [0:0]",
                    ":USED - [0:0]",
                    "-A FORWARD -j USED",
                    "-A DOCKER -j RETURN",
                ],
            ))
            .expect("applies");
        let cases: [(&[&str], &str); 10] = [
            (&["-D FORWARD -j ACCEPT"], "matching rule"),
            (&["-X DOCKER"], "holds rules"),
            (&["-X USED"], "jumped to"),
            (&["-X FORWARD"], "built-in"),
            (&["-A FORWARD -j NOWHERE"], "couldn't load target"),
            (&["-A FORWARD -j INPUT"], "built-in chain"),
            (&["-I FORWARD 3 -j ACCEPT"], "too big"),
            (&["-A NOWHERE -j ACCEPT"], "no chain"),
            (&["-N DOCKER"], "already exists"),
            (&["-Z FORWARD"], "unknown command"),
        ];
        for (lines, why) in cases {
            match base.apply(&batch(Table::Filter, lines)) {
                Err(FirewallError::Apply { reason, line, .. }) => {
                    assert!(reason.contains(why), "{lines:?}: {reason}");
                    assert_eq!(line, 1);
                }
                other => panic!("{lines:?}: {other:?}"),
            }
        }
        // All or nothing: a failing second line leaves the first unapplied (the result is an
        // error, the original is untouched).
        let err = base.apply(&batch(
            Table::Filter,
            &["-A DOCKER -j ACCEPT", "-D DOCKER -j DROP"],
        ));
        assert!(
            matches!(err, Err(FirewallError::Apply { line: 2, .. })),
            "{err:?}"
        );
        assert!(base.apply(&batch(Table::Nat, &[])).is_err());
    }

    #[test]
    fn apply_models_noflush_semantics() {
        let base = Listing::empty(Table::Filter)
            .apply(&batch(
                Table::Filter,
                &[":DOCKER - [0:0]", "-A DOCKER -j RETURN"],
            ))
            .expect("applies");
        // Declaring an existing chain flushes it: why plan_add never declares one.
        let flushed = base
            .apply(&batch(Table::Filter, &[":DOCKER - [0:0]"]))
            .expect("applies");
        assert!(flushed.chain("DOCKER").expect("kept").rules.is_empty());
        let l = base
            .apply(&batch(
                Table::Filter,
                &[
                    ":FORWARD DROP [0:0]",
                    "# a comment",
                    "-I DOCKER -j ACCEPT",
                    "-I DOCKER 3 -j DROP",
                    "-D DOCKER 2",
                    "-N ZZ",
                    "-P INPUT DROP",
                ],
            ))
            .expect("applies");
        assert_eq!(l.policy("FORWARD"), Some(Policy::Drop));
        assert_eq!(l.policy("INPUT"), Some(Policy::Drop));
        assert_eq!(
            l.chain("DOCKER").expect("kept").rules,
            ["-j ACCEPT", "-j DROP"]
        );
        assert!(l.chain("ZZ").is_some());
        let cleared = l
            .apply(&batch(Table::Filter, &["-F DOCKER", "-X DOCKER"]))
            .expect("applies");
        assert!(cleared.chain("DOCKER").is_none());
    }

    #[test]
    fn forward_policy_only_when_docker_enables_forwarding() {
        let cfg = Config::default();
        assert_eq!(forward_policy(&cfg, false), Some(Policy::Drop));
        assert_eq!(forward_policy(&cfg, true), None);
        let no_ipt = Config {
            iptables: false,
            ..Config::default()
        };
        assert_eq!(forward_policy(&no_ipt, false), None);
        let no_fwd = Config {
            ip_forward: false,
            ..Config::default()
        };
        assert_eq!(forward_policy(&no_fwd, false), None);
        let no_drop = Config {
            ip_forward_no_drop: true,
            ..Config::default()
        };
        assert_eq!(forward_policy(&no_drop, false), None);
    }

    #[test]
    fn undo_of_inverts_each_kind_of_line() {
        let b = batch(
            Table::Filter,
            &[
                ":X - [0:0]",
                "-N Y",
                "-A X -j RETURN",
                "-I FORWARD 2 -j X",
                "-I FORWARD -j Y",
                "# position 4",
                "-D FORWARD -j DROP",
                "-D FORWARD -j REJECT",
                "-X Z",
            ],
        );
        assert_eq!(
            undo_of(&b).lines,
            [
                ":Z - [0:0]",
                "-A FORWARD -j REJECT",
                "-I FORWARD 4 -j DROP",
                "-D FORWARD -j Y",
                "-D FORWARD -j X",
                "-D X -j RETURN",
                "-X Y",
                "-X X",
            ]
        );
    }

    #[test]
    fn from_config_masks_and_maps_the_proxy_flag() {
        let cfg = Config {
            userland_proxy: false,
            icc: false,
            ..Config::default()
        };
        let fw = BridgeFirewall::from_config(&cfg, "br0", "192.168.5.1/24".parse().expect("valid"));
        assert_eq!(fw.subnet.to_string(), "192.168.5.0/24");
        assert!(fw.hairpin && !fw.icc && fw.ip_masq);
        assert_eq!(fw.bridge, "br0");
    }
}
