//! What the native nftables firewall looks like (`--firewall-backend nftables`).
//!
//! Docker 29 added `--firewall-backend=nftables`: its rules live in its own table,
//! `ip docker-bridges`, with base chains named after iptables' (`filter-FORWARD`,
//! `nat-PREROUTING`, ...) and per-bridge chains (`filter-forward-in__docker0`, ...). We keep
//! that table name and that chain layout, so Docker 29 users find their way around, with
//! one deliberate difference: **published ports and links are elements of sets and maps,
//! not rules**.
//!
//! Why: every nf_tables commit that adds or deletes a rule re-validates the whole table
//! (every rule reachable from a base chain, because rules with `meta iifname`, `dnat`, jumps
//! ... carry a validate hook) and rebuilds the changed chain. With one DNAT rule per port,
//! as iptables and Docker 29 both do, publishing the 1000th port costs ~2.8 ms more than the
//! 10th on our 2-core VM (`cargo xtask bench attach`, issue 5). Adding a map element is a
//! hash insert: the table is not re-validated and no chain is rebuilt, so the cost of a
//! container does not depend on how many there are. Users complained about one rule per
//! port for years (moby/moby#14288, #19017, #36214).
//!
//! Other choices, each following Docker 29 (docs.docker.com "Docker with nftables"):
//! - No DOCKER-USER chain: users add their own table with a base chain on the same hook.
//! - No counters and no comments: rules are compared as text by the golden tests, and a
//!   counter changes with traffic.
//! - dockerd-net does not enable IPv4 forwarding in this mode and sets no FORWARD policy
//!   (see `init.rs`).
//!
//! This file decides *what* the table holds; a backend turns [`NftOp`]s into netlink
//! (`backend-nftables`) or a model (`backend-mock`). [`NftTable::render`] prints a table as
//! `nft list table ip docker-bridges` does, which is what the golden files hold.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::firewall::{BridgeFirewall, PortMapping};
use crate::ports::Proto;

/// The table, in family `ip` (Docker 29's name).
pub const TABLE: &str = "docker-bridges";

/// Published ports on the wildcard host address: `proto . host port : container ip . port`.
pub const DNAT_PORTS: &str = "nat-dnat-ports";
/// Published ports on one host address: `host ip . proto . host port : container ip . port`.
pub const DNAT_ADDR_PORTS: &str = "nat-dnat-addr-ports";
/// What the forward chain lets in from outside: `container ip . proto . container port`.
pub const PUBLISHED: &str = "filter-published";
/// Legacy links under `--icc=false`: `parent ip . child ip . proto . port`.
pub const LINKS: &str = "filter-links";
/// A container reaching its own published port through the host (Docker 1.x's per-port
/// `-s ip -d ip -p proto --dport port -j MASQUERADE`): `ip . ip . proto . container port`.
pub const HAIRPIN: &str = "nat-hairpin";

/// The type of one field of a set key or map value (nft's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `ipv4_addr`: 4 bytes, network order.
    Ipv4Addr,
    /// `inet_proto`: 1 byte (IPPROTO_*), padded to 4 in a register.
    InetProto,
    /// `inet_service`: 2 bytes, network order, padded to 4 in a register.
    InetService,
}

impl Field {
    /// nft's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Field::Ipv4Addr => "ipv4_addr",
            Field::InetProto => "inet_proto",
            Field::InetService => "inet_service",
        }
    }
    /// The field's length in bytes, unpadded.
    pub fn byte_len(self) -> usize {
        match self {
            Field::Ipv4Addr => 4,
            Field::InetProto => 1,
            Field::InetService => 2,
        }
    }
}

/// A set (`data: None`) or a map (`data: Some(..)`), keyed by a concatenation of fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    pub name: &'static str,
    pub key: Vec<Field>,
    pub data: Option<Vec<Field>>,
}

/// Where a base chain hooks, and with which type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `type filter hook forward priority filter` (0).
    FilterForward,
    /// `type nat hook prerouting priority dstnat` (-100).
    NatPrerouting,
    /// `type nat hook output priority -100`.
    NatOutput,
    /// `type nat hook postrouting priority srcnat` (100).
    NatPostrouting,
}

impl Hook {
    /// The chain type (`filter` or `nat`).
    pub fn chain_type(self) -> &'static str {
        match self {
            Hook::FilterForward => "filter",
            _ => "nat",
        }
    }
    /// The hook's name.
    pub fn hook(self) -> &'static str {
        match self {
            Hook::FilterForward => "forward",
            Hook::NatPrerouting => "prerouting",
            Hook::NatOutput => "output",
            Hook::NatPostrouting => "postrouting",
        }
    }
    /// The priority, and nft's name for it.
    pub fn priority(self) -> (i32, &'static str) {
        match self {
            Hook::FilterForward => (0, "filter"),
            Hook::NatPrerouting => (-100, "dstnat"),
            // nft names `dstnat` only at prerouting; at output it prints the number.
            Hook::NatOutput => (-100, "-100"),
            Hook::NatPostrouting => (100, "srcnat"),
        }
    }
}

/// A packet field that rules match on or look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sel {
    /// `ip saddr`
    IpSaddr,
    /// `ip daddr`
    IpDaddr,
    /// `meta l4proto`
    L4Proto,
    /// `th sport` (transport header offset 0: TCP, UDP and SCTP alike)
    ThSport,
    /// `th dport` (transport header offset 2)
    ThDport,
}

impl Sel {
    /// nft's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Sel::IpSaddr => "ip saddr",
            Sel::IpDaddr => "ip daddr",
            Sel::L4Proto => "meta l4proto",
            Sel::ThSport => "th sport",
            Sel::ThDport => "th dport",
        }
    }
    /// The set field this selector fills.
    pub fn field(self) -> Field {
        match self {
            Sel::IpSaddr | Sel::IpDaddr => Field::Ipv4Addr,
            Sel::L4Proto => Field::InetProto,
            Sel::ThSport | Sel::ThDport => Field::InetService,
        }
    }
}

/// Equal or not equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `iifname [!=] "name"`
    Iifname(Cmp, String),
    /// `oifname [!=] "name"`
    Oifname(Cmp, String),
    /// `ip saddr [!=] net` (a /32 prints as an address)
    Saddr(Cmp, Ipv4Net),
    /// `ip daddr [!=] net`
    Daddr(Cmp, Ipv4Net),
    /// `ct state established,related`
    CtEstablishedRelated,
    /// `fib daddr type local`
    FibDaddrLocal,
    /// `fib saddr type local`
    FibSaddrLocal,
    /// `sel . sel ... @set`
    InSet(Vec<Sel>, &'static str),
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    Jump(String),
    Masquerade,
    /// `dnat ip to sel . sel ... map @map`: the map's value is `ipv4_addr . inet_service`.
    DnatMap(Vec<Sel>, &'static str),
}

/// A rule: every match, then the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    pub matches: Vec<Match>,
    pub action: Action,
}

/// A chain; base chains have a hook and policy accept (Docker 29's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftChain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<NftRule>,
}

/// The whole table (its sets first, then its chains), without elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftTable {
    pub sets: Vec<SetDef>,
    pub chains: Vec<NftChain>,
}

/// One value of an element's key or data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Val {
    Addr(Ipv4Addr),
    Proto(Proto),
    Port(u16),
}

impl Val {
    /// The value as nft prints it.
    pub fn render(&self) -> String {
        match self {
            Val::Addr(a) => a.to_string(),
            Val::Proto(p) => p.name().to_owned(),
            Val::Port(p) => p.to_string(),
        }
    }
}

/// An element of a set (`data` empty) or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    pub set: &'static str,
    pub key: Vec<Val>,
    pub data: Vec<Val>,
}

impl Element {
    /// `key . key [: data . data]`, as in `nft add element`.
    pub fn render(&self) -> String {
        let join = |v: &[Val]| v.iter().map(Val::render).collect::<Vec<_>>().join(" . ");
        if self.data.is_empty() {
            join(&self.key)
        } else {
            format!("{} : {}", join(&self.key), join(&self.data))
        }
    }
}

/// One change to the kernel's ruleset. A backend applies a slice of them as one
/// transaction: all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftOp {
    /// Creates the table as given with these elements, replacing any table of that name
    /// (and whatever it held) in the same transaction.
    ReplaceTable {
        table: NftTable,
        elements: Vec<Element>,
    },
    /// Deletes the table if it exists.
    DeleteTable,
    /// Adds elements (an element already present is an error: the caller's state is wrong).
    AddElements(Vec<Element>),
    /// Deletes elements (an element not present is an error).
    DelElements(Vec<Element>),
}

impl NftOp {
    /// The op that reverses this one, given what was there before (`None`: no table).
    /// `ReplaceTable` and `DeleteTable` are undone by the caller that knows the old table.
    pub fn undo_of_elements(&self) -> Option<NftOp> {
        match self {
            NftOp::AddElements(e) => Some(NftOp::DelElements(e.clone())),
            NftOp::DelElements(e) => Some(NftOp::AddElements(e.clone())),
            _ => None,
        }
    }
}

/// The sets and maps, the same for every option set.
pub fn sets() -> Vec<SetDef> {
    use Field::*;
    vec![
        SetDef {
            name: DNAT_PORTS,
            key: vec![InetProto, InetService],
            data: Some(vec![Ipv4Addr, InetService]),
        },
        SetDef {
            name: DNAT_ADDR_PORTS,
            key: vec![Ipv4Addr, InetProto, InetService],
            data: Some(vec![Ipv4Addr, InetService]),
        },
        SetDef {
            name: PUBLISHED,
            key: vec![Ipv4Addr, InetProto, InetService],
            data: None,
        },
        SetDef {
            name: LINKS,
            key: vec![Ipv4Addr, Ipv4Addr, InetProto, InetService],
            data: None,
        },
        SetDef {
            name: HAIRPIN,
            key: vec![Ipv4Addr, Ipv4Addr, InetProto, InetService],
            data: None,
        },
    ]
}

fn rule(matches: Vec<Match>, action: Action) -> NftRule {
    NftRule { matches, action }
}

/// The table for one bridge network. The options map as in iptables mode:
/// - `--icc=false`: traffic between containers is dropped, except what a link opens;
/// - `--ip-masq`: the masquerade rule for traffic leaving the bridge's subnet;
/// - `--userland-proxy=false` (hairpin): DNAT also applies to traffic from the bridge,
///   to 127.0.0.0/8 from the host, and host-local sources are masqueraded to containers.
pub fn bridge_table(fw: &BridgeFirewall) -> NftTable {
    use Action::*;
    use Cmp::*;
    use Match::*;
    let br = fw.bridge.as_str();
    let fwd_in = format!("filter-forward-in__{br}");
    let fwd_out = format!("filter-forward-out__{br}");
    let post_in = format!("nat-postrouting-in__{br}");
    let post_out = format!("nat-postrouting-out__{br}");
    let dnat = "nat-prerouting-and-output".to_owned();
    let port = [Sel::L4Proto, Sel::ThDport];

    let mut output_matches = Vec::new();
    if !fw.hairpin {
        // Docker: `OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER`; with the
        // proxy on, connections to 127.0.0.1 are the proxy's.
        output_matches.push(Daddr(Ne, loopback_net()));
    }
    output_matches.push(FibDaddrLocal);

    // Docker's DNAT rules carry `! -i docker0` unless hairpin NAT is on.
    let from_outside = |m: Vec<Match>| {
        let mut all = Vec::new();
        if !fw.hairpin {
            all.push(Iifname(Ne, br.to_owned()));
        }
        all.extend(m);
        all
    };
    let dnat_rules = vec![
        rule(
            from_outside(vec![]),
            DnatMap(
                vec![Sel::IpDaddr, Sel::L4Proto, Sel::ThDport],
                DNAT_ADDR_PORTS,
            ),
        ),
        rule(from_outside(vec![]), DnatMap(port.to_vec(), DNAT_PORTS)),
    ];

    let mut in_rules = vec![rule(vec![CtEstablishedRelated], Accept)];
    if fw.icc {
        in_rules.push(rule(vec![Iifname(Eq, br.to_owned())], Accept));
    } else {
        // Docker 1.x: `-A DOCKER -i br -o br -p P -s parent -d child --dport N -j ACCEPT`
        // and the reply direction with `--sport`, then `-i br -o br -j DROP`.
        in_rules.push(rule(
            vec![
                Iifname(Eq, br.to_owned()),
                InSet(
                    vec![Sel::IpSaddr, Sel::IpDaddr, Sel::L4Proto, Sel::ThDport],
                    LINKS,
                ),
            ],
            Accept,
        ));
        in_rules.push(rule(
            vec![
                Iifname(Eq, br.to_owned()),
                InSet(
                    vec![Sel::IpDaddr, Sel::IpSaddr, Sel::L4Proto, Sel::ThSport],
                    LINKS,
                ),
            ],
            Accept,
        ));
        in_rules.push(rule(vec![Iifname(Eq, br.to_owned())], Drop));
    }
    in_rules.push(rule(
        vec![InSet(
            vec![Sel::IpDaddr, Sel::L4Proto, Sel::ThDport],
            PUBLISHED,
        )],
        Accept,
    ));

    let mut post_in_rules = vec![rule(
        vec![InSet(
            vec![Sel::IpSaddr, Sel::IpDaddr, Sel::L4Proto, Sel::ThDport],
            HAIRPIN,
        )],
        Masquerade,
    )];
    if fw.hairpin {
        // Docker: `POSTROUTING -o br -m addrtype --src-type LOCAL -j MASQUERADE`.
        post_in_rules.push(rule(vec![FibSaddrLocal], Masquerade));
    }
    let mut post_out_rules = Vec::new();
    if fw.ip_masq {
        // Docker: `POSTROUTING -s subnet ! -o br -j MASQUERADE`.
        post_out_rules.push(rule(
            vec![Oifname(Ne, br.to_owned()), Saddr(Eq, fw.subnet.trunc())],
            Masquerade,
        ));
    }

    let base = |name: &str, hook: Hook, rules: Vec<NftRule>| NftChain {
        name: name.to_owned(),
        hook: Some(hook),
        rules,
    };
    let regular = |name: &str, rules: Vec<NftRule>| NftChain {
        name: name.to_owned(),
        hook: None,
        rules,
    };
    NftTable {
        sets: sets(),
        chains: vec![
            base(
                "filter-FORWARD",
                Hook::FilterForward,
                vec![
                    rule(vec![Oifname(Eq, br.to_owned())], Jump(fwd_in.clone())),
                    rule(vec![Iifname(Eq, br.to_owned())], Jump(fwd_out.clone())),
                ],
            ),
            base(
                "nat-OUTPUT",
                Hook::NatOutput,
                vec![rule(output_matches, Jump(dnat.clone()))],
            ),
            base(
                "nat-POSTROUTING",
                Hook::NatPostrouting,
                vec![
                    rule(vec![Iifname(Eq, br.to_owned())], Jump(post_out.clone())),
                    rule(vec![Oifname(Eq, br.to_owned())], Jump(post_in.clone())),
                ],
            ),
            base(
                "nat-PREROUTING",
                Hook::NatPrerouting,
                vec![rule(vec![FibDaddrLocal], Jump(dnat.clone()))],
            ),
            regular(&dnat, dnat_rules),
            regular(&fwd_in, in_rules),
            regular(
                &fwd_out,
                vec![
                    rule(vec![CtEstablishedRelated], Accept),
                    rule(vec![], Accept),
                ],
            ),
            regular(&post_in, post_in_rules),
            regular(&post_out, post_out_rules),
        ],
    }
}

fn loopback_net() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default()
}

/// The DNAT element of a published port: which map depends on the host address.
pub fn dnat_element(m: &PortMapping) -> Element {
    let data = vec![Val::Addr(m.container_ip), Val::Port(m.container_port)];
    if m.host_ip.is_unspecified() {
        Element {
            set: DNAT_PORTS,
            key: vec![Val::Proto(m.proto), Val::Port(m.host_port)],
            data,
        }
    } else {
        Element {
            set: DNAT_ADDR_PORTS,
            key: vec![
                Val::Addr(m.host_ip),
                Val::Proto(m.proto),
                Val::Port(m.host_port),
            ],
            data,
        }
    }
}

/// The elements a mapping shares with every other mapping to the same container port (two
/// host ports may publish one container port): the forward accept and the hairpin NAT.
/// [`port_elements`]' callers add these for the first such mapping and delete them with the
/// last (see `handlers.rs`).
pub fn shared_port_elements(m: &PortMapping) -> Vec<Element> {
    let ip = Val::Addr(m.container_ip);
    let proto = Val::Proto(m.proto);
    let port = Val::Port(m.container_port);
    vec![
        Element {
            set: PUBLISHED,
            key: vec![ip, proto, port],
            data: vec![],
        },
        Element {
            set: HAIRPIN,
            key: vec![ip, ip, proto, port],
            data: vec![],
        },
    ]
}

/// The element of a legacy link (used under `--icc=false` only).
pub fn link_element(parent: Ipv4Addr, child: Ipv4Addr, port: u16, proto: Proto) -> Element {
    Element {
        set: LINKS,
        key: vec![
            Val::Addr(parent),
            Val::Addr(child),
            Val::Proto(proto),
            Val::Port(port),
        ],
        data: vec![],
    }
}

impl NftTable {
    /// The chain of that name.
    pub fn chain(&self, name: &str) -> Option<&NftChain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The table as `nft list table ip docker-bridges` prints it (nftables 1.0.6), with
    /// the given elements in their sets. nft prints elements in its own order; the golden
    /// files are written with none, and the kernel tests compare sets separately.
    pub fn render(&self) -> String {
        let mut s = format!("table ip {TABLE} {{\n");
        let mut first = true;
        for set in &self.sets {
            if !first {
                s.push('\n');
            }
            first = false;
            let key = join_types(&set.key);
            match &set.data {
                Some(data) => {
                    let _ = writeln!(s, "\tmap {} {{", set.name);
                    let _ = writeln!(s, "\t\ttype {key} : {}", join_types(data));
                }
                None => {
                    let _ = writeln!(s, "\tset {} {{", set.name);
                    let _ = writeln!(s, "\t\ttype {key}");
                }
            }
            s.push_str("\t}\n");
        }
        for chain in &self.chains {
            if !first {
                s.push('\n');
            }
            first = false;
            let _ = writeln!(s, "\tchain {} {{", chain.name);
            if let Some(hook) = chain.hook {
                let (_, prio) = hook.priority();
                let _ = writeln!(
                    s,
                    "\t\ttype {} hook {} priority {prio}; policy accept;",
                    hook.chain_type(),
                    hook.hook()
                );
            }
            for r in &chain.rules {
                let _ = writeln!(s, "\t\t{}", r.render());
            }
            s.push_str("\t}\n");
        }
        s.push_str("}\n");
        s
    }
}

fn join_types(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(" . ")
}

fn join_sels(sels: &[Sel]) -> String {
    sels.iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(" . ")
}

fn net(n: &Ipv4Net) -> String {
    if n.prefix_len() == 32 {
        n.addr().to_string()
    } else {
        n.trunc().to_string()
    }
}

fn op(c: Cmp) -> &'static str {
    match c {
        Cmp::Eq => "",
        Cmp::Ne => "!= ",
    }
}

impl NftRule {
    /// The rule as nft lists it.
    pub fn render(&self) -> String {
        let mut parts: Vec<String> = self
            .matches
            .iter()
            .map(|m| match m {
                Match::Iifname(c, n) => format!("iifname {}\"{n}\"", op(*c)),
                Match::Oifname(c, n) => format!("oifname {}\"{n}\"", op(*c)),
                Match::Saddr(c, n) => format!("ip saddr {}{}", op(*c), net(n)),
                Match::Daddr(c, n) => format!("ip daddr {}{}", op(*c), net(n)),
                Match::CtEstablishedRelated => "ct state established,related".to_owned(),
                Match::FibDaddrLocal => "fib daddr type local".to_owned(),
                Match::FibSaddrLocal => "fib saddr type local".to_owned(),
                Match::InSet(sels, set) => format!("{} @{set}", join_sels(sels)),
            })
            .collect();
        parts.push(match &self.action {
            Action::Accept => "accept".to_owned(),
            Action::Drop => "drop".to_owned(),
            Action::Jump(c) => format!("jump {c}"),
            Action::Masquerade => "masquerade".to_owned(),
            Action::DnatMap(sels, map) => format!("dnat ip to {} map @{map}", join_sels(sels)),
        });
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(icc: bool, ip_masq: bool, hairpin: bool) -> BridgeFirewall {
        BridgeFirewall {
            bridge: "docker0".to_owned(),
            subnet: "172.17.0.1/16".parse().unwrap(),
            icc,
            ip_masq,
            hairpin,
        }
    }

    #[test]
    fn every_set_a_rule_names_exists_with_a_matching_key() {
        for (icc, masq, hairpin) in [(true, true, false), (false, false, true)] {
            let t = bridge_table(&fw(icc, masq, hairpin));
            for c in &t.chains {
                for r in &c.rules {
                    let mut lookups: Vec<(&Vec<Sel>, &str, bool)> = Vec::new();
                    for m in &r.matches {
                        if let Match::InSet(sels, set) = m {
                            lookups.push((sels, set, false));
                        }
                    }
                    if let Action::DnatMap(sels, map) = &r.action {
                        lookups.push((sels, map, true));
                    }
                    for (sels, name, is_map) in lookups {
                        let set = t.sets.iter().find(|s| s.name == name).expect(name);
                        let fields: Vec<Field> = sels.iter().map(|s| s.field()).collect();
                        assert_eq!(fields, set.key, "{name}");
                        assert_eq!(set.data.is_some(), is_map, "{name}");
                    }
                    if let Action::Jump(target) = &r.action {
                        assert!(t.chain(target).is_some(), "jump to {target}");
                    }
                }
            }
        }
    }

    #[test]
    fn options_change_the_rules_as_in_iptables_mode() {
        let on = bridge_table(&fw(true, true, false));
        let off = bridge_table(&fw(false, false, true));
        let text = |t: &NftTable, c: &str| -> Vec<String> {
            t.chain(c)
                .unwrap()
                .rules
                .iter()
                .map(|r| r.render())
                .collect()
        };
        assert_eq!(
            text(&on, "nat-postrouting-out__docker0"),
            ["oifname != \"docker0\" ip saddr 172.17.0.0/16 masquerade"]
        );
        assert!(text(&off, "nat-postrouting-out__docker0").is_empty());
        assert!(
            text(&on, "filter-forward-in__docker0")
                .contains(&"iifname \"docker0\" accept".to_owned())
        );
        assert!(
            text(&off, "filter-forward-in__docker0")
                .contains(&"iifname \"docker0\" drop".to_owned())
        );
        assert_eq!(
            text(&on, "nat-OUTPUT"),
            ["ip daddr != 127.0.0.0/8 fib daddr type local jump nat-prerouting-and-output"]
        );
        assert_eq!(
            text(&off, "nat-OUTPUT"),
            ["fib daddr type local jump nat-prerouting-and-output"]
        );
        assert_eq!(
            text(&off, "nat-prerouting-and-output")[1],
            "dnat ip to meta l4proto . th dport map @nat-dnat-ports"
        );
        assert_eq!(
            text(&on, "nat-prerouting-and-output")[1],
            "iifname != \"docker0\" dnat ip to meta l4proto . th dport map @nat-dnat-ports"
        );
    }

    #[test]
    fn a_port_on_a_specific_address_goes_to_the_address_map() {
        let mut m = PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 8080,
            container_ip: "172.17.0.2".parse().unwrap(),
            container_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(dnat_element(&m).set, DNAT_PORTS);
        assert_eq!(dnat_element(&m).render(), "tcp . 8080 : 172.17.0.2 . 80");
        m.host_ip = Ipv4Addr::LOCALHOST;
        assert_eq!(dnat_element(&m).set, DNAT_ADDR_PORTS);
        assert_eq!(
            dnat_element(&m).render(),
            "127.0.0.1 . tcp . 8080 : 172.17.0.2 . 80"
        );
        let shared = shared_port_elements(&m);
        assert_eq!(shared[0].render(), "172.17.0.2 . tcp . 80");
        assert_eq!(shared[1].render(), "172.17.0.2 . 172.17.0.2 . tcp . 80");
    }
}
