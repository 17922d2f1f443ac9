//! An in-memory model of the iptables `filter` and `nat` tables: what `iptables-save` prints
//! and what `iptables-restore --noflush` accepts.
//!
//! Rules are stored in the canonical form `iptables-save` prints, because the kernel stores a
//! parsed entry, not the text it was given: `-s 172.17.42.1/16` is saved as `-s 172.17.0.0/16`,
//! a host address gains `/32`, `-d 0/0` disappears, the address and interface matches move in
//! front of the `-m` matches, and `-p tcp ... --dport 80` gains its implicit `-m tcp`.
//! Canonicalising on the way in makes `-D` match the way the kernel does (a rule added as
//! `-s 172.17.42.1/16` is deleted by the same text) and makes [`FwTable::render`] print what a
//! real host prints for the same commands (checked against the reference's replayed output in
//! `tests/firewall.rs`).
//!
//! Only the parts of the syntax Docker's rules use are understood in depth; other match and
//! target options are kept verbatim, in the order given.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netcore::firewall::{Policy, Table};

/// `XT_EXTENSION_MAXNAMELEN - 1`: the longest chain name iptables accepts.
pub const MAX_CHAIN_NAME: usize = 28;

/// The built-in chains of a table, in the order `iptables-save` prints them.
pub fn builtin_chains(table: Table) -> &'static [&'static str] {
    match table {
        Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
        Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
    }
}

/// Verdicts every table accepts.
const VERDICTS: &[&str] = &["ACCEPT", "DROP", "RETURN", "QUEUE"];

/// Extension targets valid in any table we model.
const ANY_TABLE_TARGETS: &[&str] = &[
    "REJECT", "LOG", "NFLOG", "MARK", "CONNMARK", "TCPMSS", "CT", "NOTRACK", "TRACE", "AUDIT",
    "CHECKSUM", "NFQUEUE", "CLASSIFY", "TEE", "DSCP", "TOS", "TTL", "SET",
];

/// Extension targets the kernel accepts only in the `nat` table.
const NAT_TARGETS: &[&str] = &["MASQUERADE", "DNAT", "SNAT", "REDIRECT", "NETMAP"];

/// Options of the protocol matches (`-m tcp`, `-m udp`, ...), which iptables loads implicitly
/// after `-p <proto>`. Long aliases are canonicalised to the short form iptables-save prints.
fn proto_option(opt: &str) -> Option<&'static str> {
    Some(match opt {
        "--dport" | "--destination-port" => "--dport",
        "--sport" | "--source-port" => "--sport",
        "--tcp-flags" => "--tcp-flags",
        "--syn" => "--syn",
        "--tcp-option" => "--tcp-option",
        "--icmp-type" => "--icmp-type",
        "--chunk-types" => "--chunk-types",
        _ => return None,
    })
}

/// Protocols whose match module iptables loads on its own.
const IMPLICIT_PROTO_MATCHES: &[&str] = &["tcp", "udp", "udplite", "sctp", "dccp", "icmp"];

/// The base (`ipt_entry`) matches, in the order iptables-save prints them.
const BASE_ORDER: [&str; 6] = ["-s", "-d", "-i", "-o", "-p", "-f"];

fn base_option(opt: &str) -> Option<usize> {
    Some(match opt {
        "-s" | "--source" | "--src" => 0,
        "-d" | "--destination" | "--dst" => 1,
        "-i" | "--in-interface" => 2,
        "-o" | "--out-interface" => 3,
        "-p" | "--protocol" => 4,
        "-f" | "--fragment" => 5,
        _ => return None,
    })
}

/// One token of a line, and whether it was quoted (a quoted token is never an option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub text: String,
    pub quoted: bool,
}

impl Token {
    fn is_option(&self) -> bool {
        !self.quoted
            && self.text.len() > 1
            && self.text.starts_with('-')
            && !self.text[1..].starts_with(|c: char| c.is_ascii_digit())
    }

    fn is_bang(&self) -> bool {
        !self.quoted && self.text == "!"
    }
}

/// Splits a line on whitespace; double quotes group, `\"` and `\\` escape inside them.
pub(crate) fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut text = String::new();
        let mut quoted = false;
        if first == '"' {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted string".to_owned()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => text.push(c),
                        Some(c) => {
                            text.push('\\');
                            text.push(c);
                        }
                        None => return Err("unterminated quoted string".to_owned()),
                    },
                    Some(c) => text.push(c),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err("text directly after a closing quote".to_owned());
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                text.push(c);
            }
        }
        out.push(Token { text, quoted });
    }
}

/// Quotes a token the way iptables-save does when it contains blanks or quotes.
fn render_token(t: &str) -> String {
    if !t.is_empty() && !t.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
        return t.to_owned();
    }
    let mut s = String::with_capacity(t.len() + 2);
    s.push('"');
    for c in t.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// A rule specification (everything after `-A CHAIN`), in canonical form.
///
/// Two rules are equal when the kernel would consider them the same entry, as far as this
/// model can tell.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    tokens: Vec<String>,
    target: Option<String>,
}

impl Rule {
    /// Parses and canonicalises a rule specification such as
    /// `-s 172.17.42.1/16 ! -o docker0 -j MASQUERADE`.
    pub fn parse(spec: &str) -> Result<Rule, String> {
        Rule::from_tokens(&tokenize(spec)?)
    }

    pub(crate) fn from_tokens(tokens: &[Token]) -> Result<Rule, String> {
        canonical(tokens)
    }

    /// The canonical tokens, unquoted.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The `-j`/`-g` target, if the rule has one.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in &self.tokens {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(&render_token(t))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rule({:?})", self.to_string())
    }
}

/// One option with its negation and values, e.g. `! --dst-type LOCAL`.
#[derive(Debug)]
struct Item {
    neg: bool,
    opt: String,
    vals: Vec<String>,
}

impl Item {
    fn push_into(&self, out: &mut Vec<String>) {
        if self.neg {
            out.push("!".to_owned());
        }
        out.push(self.opt.clone());
        out.extend(self.vals.iter().cloned());
    }

    fn single(&self) -> Result<&str, String> {
        match self.vals.as_slice() {
            [v] => Ok(v),
            _ => Err(format!("option {} needs exactly one argument", self.opt)),
        }
    }
}

fn items(tokens: &[Token]) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut neg = false;
    while let Some(t) = tokens.get(i) {
        if t.is_bang() {
            if neg {
                return Err("multiple consecutive ! not allowed".to_owned());
            }
            neg = true;
            i += 1;
            continue;
        }
        if !t.is_option() {
            return Err(format!("bad argument `{}'", t.text));
        }
        i += 1;
        let mut vals = Vec::new();
        while let Some(v) = tokens.get(i).filter(|v| !v.is_option() && !v.is_bang()) {
            vals.push(v.text.clone());
            i += 1;
        }
        out.push(Item {
            neg,
            opt: t.text.clone(),
            vals,
        });
        neg = false;
    }
    if neg {
        return Err("! at the end of the rule".to_owned());
    }
    Ok(out)
}

/// `-s`/`-d` as iptables-save prints them: the masked network, `/32` for a host, and `None`
/// for "anything" (`0/0`), which iptables-save omits.
fn canonical_addr(v: &str) -> Result<Option<String>, String> {
    let bad = || format!("host/network `{v}' not found");
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().map_err(|_| bad())?),
        None => (v, 32),
    };
    let addr: Ipv4Addr = if addr == "0" {
        Ipv4Addr::UNSPECIFIED
    } else {
        addr.parse().map_err(|_| bad())?
    };
    let net = Ipv4Net::new(addr, len).map_err(|_| bad())?.trunc();
    Ok((net.prefix_len() != 0).then(|| net.to_string()))
}

fn canonical_proto(v: &str) -> Option<String> {
    let lower = v.to_ascii_lowercase();
    let name = match lower.as_str() {
        "all" | "0" => return None,
        "1" => "icmp",
        "6" => "tcp",
        "17" => "udp",
        "132" => "sctp",
        other => other,
    };
    Some(name.to_owned())
}

/// conntrack/state lists are printed in the kernel's bit order, whatever order they were given in.
fn canonical_states(v: &str) -> String {
    const ORDER: &[&str] = &[
        "INVALID",
        "NEW",
        "RELATED",
        "ESTABLISHED",
        "UNTRACKED",
        "SNAT",
        "DNAT",
    ];
    let mut parts: Vec<String> = v.split(',').map(|s| s.to_ascii_uppercase()).collect();
    parts.sort_by_key(|p| ORDER.iter().position(|o| o == p).unwrap_or(ORDER.len()));
    parts.dedup();
    parts.join(",")
}

struct Group {
    name: String,
    items: Vec<Item>,
}

enum Owner {
    None,
    Group(usize),
    Target,
}

fn canonical(tokens: &[Token]) -> Result<Rule, String> {
    // (negated, value as printed); `-f` has an empty value.
    let mut base: [Option<(bool, String)>; 6] = Default::default();
    let mut groups: Vec<Group> = Vec::new();
    let mut target: Option<(String, String, Vec<Item>)> = None;
    let mut owner = Owner::None;

    for mut item in items(tokens)? {
        if let Some(slot) = base_option(&item.opt) {
            if base[slot].is_some() {
                return Err(format!("multiple {} flags not allowed", BASE_ORDER[slot]));
            }
            let value = match slot {
                0 | 1 => canonical_addr(item.single()?)?,
                4 => canonical_proto(item.single()?),
                5 => {
                    if !item.vals.is_empty() {
                        return Err("-f takes no argument".to_owned());
                    }
                    Some(String::new())
                }
                _ => Some(item.single()?.to_owned()),
            };
            match value {
                Some(v) => base[slot] = Some((item.neg, v)),
                // A match on "anything" is no match: iptables-save prints nothing for it.
                // Negated, it matches nothing, and is kept with an explicit "anything".
                None if item.neg => {
                    let any = if slot == 4 { "all" } else { "0.0.0.0/0" };
                    base[slot] = Some((true, any.to_owned()));
                }
                None => {}
            }
            continue;
        }
        match item.opt.as_str() {
            "-m" | "--match" => {
                if item.neg {
                    return Err("cannot negate -m".to_owned());
                }
                groups.push(Group {
                    name: item.single()?.to_owned(),
                    items: Vec::new(),
                });
                owner = Owner::Group(groups.len() - 1);
                continue;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                if item.neg {
                    return Err("cannot negate -j".to_owned());
                }
                if target.is_some() {
                    return Err("multiple -j flags not allowed".to_owned());
                }
                let flag = if item.opt.starts_with("-g") || item.opt == "--goto" {
                    "-g"
                } else {
                    "-j"
                };
                target = Some((flag.to_owned(), item.single()?.to_owned(), Vec::new()));
                owner = Owner::Target;
                continue;
            }
            _ => {}
        }
        if let Some(canon) = proto_option(&item.opt) {
            item.opt = canon.to_owned();
            // iptables hands a protocol option to the match of the `-p` protocol, loading it
            // on first use if no `-m tcp` was given; the loaded match is appended to the list.
            let proto = base[4]
                .as_ref()
                .filter(|(neg, _)| !neg)
                .map(|(_, p)| p.as_str())
                .filter(|p| IMPLICIT_PROTO_MATCHES.contains(p));
            if let Some(p) = proto {
                let idx = match groups.iter().position(|g| g.name == p) {
                    Some(idx) => idx,
                    None => {
                        groups.push(Group {
                            name: p.to_owned(),
                            items: Vec::new(),
                        });
                        groups.len() - 1
                    }
                };
                if let Some(g) = groups.get_mut(idx) {
                    g.items.push(item);
                }
                continue;
            }
        }
        if matches!(item.opt.as_str(), "--ctstate" | "--state") {
            item.vals = item.vals.iter().map(|v| canonical_states(v)).collect();
        }
        match owner {
            Owner::Group(g) => {
                if let Some(g) = groups.get_mut(g) {
                    g.items.push(item);
                }
            }
            Owner::Target => {
                if let Some((_, _, opts)) = target.as_mut() {
                    opts.push(item);
                }
            }
            Owner::None => return Err(format!("unknown option \"{}\"", item.opt)),
        }
    }

    let mut out = Vec::new();
    for (slot, value) in base.iter().enumerate() {
        if let Some((neg, value)) = value {
            if *neg {
                out.push("!".to_owned());
            }
            out.push(BASE_ORDER[slot].to_owned());
            if !value.is_empty() {
                out.push(value.clone());
            }
        }
    }
    for g in &groups {
        out.push("-m".to_owned());
        out.push(g.name.clone());
        for item in &g.items {
            item.push_into(&mut out);
        }
    }
    let target_name = target.as_ref().map(|(_, name, _)| name.clone());
    if let Some((flag, name, opts)) = target {
        out.push(flag);
        out.push(name);
        for item in &opts {
            item.push_into(&mut out);
        }
    }
    Ok(Rule {
        tokens: out,
        target: target_name,
    })
}

/// One chain: its policy (built-ins only) and its rules in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `Some` for a built-in chain, `None` for a user chain.
    pub policy: Option<Policy>,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn is_builtin(&self) -> bool {
        self.policy.is_some()
    }
}

/// One table: the built-in chains in iptables order, then the user chains by name (the order
/// iptables-save prints them in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwTable {
    table: Table,
    chains: Vec<Chain>,
}

/// Why one line of a batch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreErrorReason {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("no chain/target/match by that name: {0}")]
    NoSuchChain(String),
    #[error("chain already exists: {0}")]
    ChainExists(String),
    #[error("chain {0} is not empty")]
    ChainNotEmpty(String),
    #[error("chain {0} is referenced by a jump")]
    ChainReferenced(String),
    #[error("chain {0} is built in")]
    BuiltinChain(String),
    #[error("chain {0} is not built in: it has no policy")]
    NotBuiltin(String),
    #[error("bad rule (does a matching rule exist in that chain?)")]
    NoSuchRule,
    #[error("index of {verb} too big: {index}")]
    BadIndex { verb: &'static str, index: usize },
    #[error("couldn't load target `{0}'")]
    UnknownTarget(String),
    #[error("target {target} is only valid in the nat table")]
    WrongTable { target: String },
    #[error("invalid chain name `{0}'")]
    BadChainName(String),
}

/// A batch line that `iptables-restore --noflush` would have refused. Nothing of the batch was
/// applied. `line` is 1-based within [`netcore::firewall::Batch::lines`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("iptables-restore (fake): line {line} failed: {reason}: `{text}`")]
pub struct RestoreError {
    pub line: usize,
    pub text: String,
    pub reason: RestoreErrorReason,
}

impl FwTable {
    /// A table as the kernel creates it: the built-in chains, empty, with policy ACCEPT.
    pub fn new(table: Table) -> Self {
        FwTable {
            table,
            chains: builtin_chains(table)
                .iter()
                .map(|name| Chain {
                    name: (*name).to_owned(),
                    policy: Some(Policy::Accept),
                    rules: Vec::new(),
                })
                .collect(),
        }
    }

    pub fn table(&self) -> Table {
        self.table
    }

    pub fn chains(&self) -> &[Chain] {
        &self.chains
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    fn chain_mut(&mut self, name: &str) -> Result<&mut Chain, RestoreErrorReason> {
        self.chains
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| RestoreErrorReason::NoSuchChain(name.to_owned()))
    }

    /// The table in `iptables-save` format, without the `# Generated by` comments.
    pub fn render(&self) -> String {
        let mut s = format!("*{}\n", self.table.name());
        for c in &self.chains {
            let policy = c.policy.map_or("-", Policy::name);
            s.push_str(&format!(":{} {} [0:0]\n", c.name, policy));
        }
        for c in &self.chains {
            for r in &c.rules {
                if r.tokens().is_empty() {
                    s.push_str(&format!("-A {}\n", c.name));
                } else {
                    s.push_str(&format!("-A {} {}\n", c.name, r));
                }
            }
        }
        s.push_str("COMMIT\n");
        s
    }

    /// Sets a built-in chain's policy.
    pub fn set_policy(&mut self, chain: &str, policy: Policy) -> Result<(), RestoreErrorReason> {
        let c = self.chain_mut(chain)?;
        if !c.is_builtin() {
            return Err(RestoreErrorReason::NotBuiltin(chain.to_owned()));
        }
        c.policy = Some(policy);
        Ok(())
    }

    /// Applies the lines of an `iptables-restore --noflush` body, all or nothing.
    pub fn apply<'a>(
        &mut self,
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), RestoreError> {
        let mut work = self.clone();
        for (i, line) in lines.into_iter().enumerate() {
            work.apply_line(line).map_err(|reason| RestoreError {
                line: i + 1,
                text: line.to_owned(),
                reason,
            })?;
        }
        *self = work;
        Ok(())
    }

    fn apply_line(&mut self, line: &str) -> Result<(), RestoreErrorReason> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        if let Some(decl) = line.strip_prefix(':') {
            return self.declare(decl);
        }
        if line.starts_with('*') || line == "COMMIT" {
            return Err(RestoreErrorReason::Syntax(
                "a batch is a table body: no `*table` header or COMMIT".to_owned(),
            ));
        }
        let tokens = tokenize(line).map_err(RestoreErrorReason::Syntax)?;
        let Some((cmd, rest)) = tokens.split_first() else {
            return Ok(());
        };
        if rest
            .iter()
            .any(|t| !t.quoted && (t.text == "-t" || t.text == "--table"))
        {
            return Err(RestoreErrorReason::Syntax(
                "the -t option cannot be used in iptables-restore".to_owned(),
            ));
        }
        let chain_arg = rest.first().map(|t| t.text.as_str());
        let need_chain = || {
            chain_arg
                .ok_or_else(|| RestoreErrorReason::Syntax(format!("{} needs a chain", cmd.text)))
        };
        match cmd.text.as_str() {
            "-A" | "--append" => {
                let chain = need_chain()?;
                let rule = self.rule(&rest[1..])?;
                self.chain_mut(chain)?.rules.push(rule);
            }
            "-I" | "--insert" => {
                let chain = need_chain()?;
                let (index, spec) = match rest.get(1).and_then(|t| t.text.parse::<usize>().ok()) {
                    Some(n) => (n, &rest[2..]),
                    None => (1, &rest[1..]),
                };
                let rule = self.rule(spec)?;
                let c = self.chain_mut(chain)?;
                if index == 0 || index > c.rules.len() + 1 {
                    return Err(RestoreErrorReason::BadIndex {
                        verb: "insertion",
                        index,
                    });
                }
                c.rules.insert(index - 1, rule);
            }
            "-D" | "--delete" => {
                let chain = need_chain()?;
                let by_number = match rest.get(1..) {
                    Some([n]) => n.text.parse::<usize>().ok(),
                    _ => None,
                };
                if let Some(index) = by_number {
                    let c = self.chain_mut(chain)?;
                    if index == 0 || index > c.rules.len() {
                        return Err(RestoreErrorReason::BadIndex {
                            verb: "deletion",
                            index,
                        });
                    }
                    c.rules.remove(index - 1);
                } else {
                    // The spec of a rule to delete is parsed like one to add, so a jump to a
                    // chain that does not exist fails the same way it does in iptables.
                    let rule = self.rule(&rest[1..])?;
                    let c = self.chain_mut(chain)?;
                    let pos = c
                        .rules
                        .iter()
                        .position(|r| *r == rule)
                        .ok_or(RestoreErrorReason::NoSuchRule)?;
                    c.rules.remove(pos);
                }
            }
            "-F" | "--flush" => match chain_arg {
                Some(_) if rest.len() > 1 => {
                    return Err(RestoreErrorReason::Syntax("-F takes one chain".to_owned()));
                }
                Some(chain) => self.chain_mut(chain)?.rules.clear(),
                None => self.chains.iter_mut().for_each(|c| c.rules.clear()),
            },
            "-N" | "--new-chain" => {
                let chain = need_chain()?;
                self.only_args(rest, 1)?;
                self.new_chain(chain)?;
            }
            "-X" | "--delete-chain" => {
                let chain = need_chain()?;
                self.only_args(rest, 1)?;
                self.delete_chain(chain)?;
            }
            "-P" | "--policy" => {
                let chain = need_chain()?;
                self.only_args(rest, 2)?;
                let policy = rest
                    .get(1)
                    .and_then(|t| parse_policy(&t.text))
                    .ok_or_else(|| {
                        RestoreErrorReason::Syntax("-P needs ACCEPT or DROP".to_owned())
                    })?;
                self.set_policy(chain, policy)?;
            }
            other => {
                return Err(RestoreErrorReason::Syntax(format!(
                    "unsupported command `{other}'"
                )));
            }
        }
        Ok(())
    }

    fn only_args(&self, rest: &[Token], n: usize) -> Result<(), RestoreErrorReason> {
        if rest.len() == n {
            Ok(())
        } else {
            Err(RestoreErrorReason::Syntax(format!(
                "expected {n} argument(s), got {}",
                rest.len()
            )))
        }
    }

    /// `:NAME POLICY [packets:bytes]`.
    fn declare(&mut self, decl: &str) -> Result<(), RestoreErrorReason> {
        let mut parts = decl.split_whitespace();
        let name = parts
            .next()
            .ok_or_else(|| RestoreErrorReason::Syntax("empty chain declaration".to_owned()))?;
        let policy = parts
            .next()
            .ok_or_else(|| RestoreErrorReason::Syntax(format!("no policy for chain {name}")))?;
        if let Some(counters) = parts.next()
            && !(counters.starts_with('[') && counters.ends_with(']') && counters.contains(':'))
        {
            return Err(RestoreErrorReason::Syntax(format!(
                "bad counters `{counters}'"
            )));
        }
        if builtin_chains(self.table).contains(&name) {
            if policy != "-" {
                let policy = parse_policy(policy)
                    .ok_or_else(|| RestoreErrorReason::Syntax(format!("bad policy `{policy}'")))?;
                self.set_policy(name, policy)?;
            }
            return Ok(());
        }
        if policy != "-" {
            return Err(RestoreErrorReason::NotBuiltin(name.to_owned()));
        }
        // With --noflush, declaring an existing user chain flushes it (iptables-restore.c).
        match self.chains.iter_mut().find(|c| c.name == name) {
            Some(c) => c.rules.clear(),
            None => self.new_chain(name)?,
        }
        Ok(())
    }

    fn new_chain(&mut self, name: &str) -> Result<(), RestoreErrorReason> {
        if name.is_empty()
            || name.len() > MAX_CHAIN_NAME
            || name.starts_with(['-', '!'])
            || name.contains(char::is_whitespace)
            || VERDICTS.contains(&name)
        {
            return Err(RestoreErrorReason::BadChainName(name.to_owned()));
        }
        if self.chain(name).is_some() {
            return Err(RestoreErrorReason::ChainExists(name.to_owned()));
        }
        let pos = self
            .chains
            .iter()
            .position(|c| !c.is_builtin() && c.name.as_str() > name)
            .unwrap_or(self.chains.len());
        self.chains.insert(
            pos,
            Chain {
                name: name.to_owned(),
                policy: None,
                rules: Vec::new(),
            },
        );
        Ok(())
    }

    fn delete_chain(&mut self, name: &str) -> Result<(), RestoreErrorReason> {
        let pos = self
            .chains
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| RestoreErrorReason::NoSuchChain(name.to_owned()))?;
        let chain = &self.chains[pos];
        if chain.is_builtin() {
            return Err(RestoreErrorReason::BuiltinChain(name.to_owned()));
        }
        if !chain.rules.is_empty() {
            return Err(RestoreErrorReason::ChainNotEmpty(name.to_owned()));
        }
        if self.is_referenced(name) {
            return Err(RestoreErrorReason::ChainReferenced(name.to_owned()));
        }
        self.chains.remove(pos);
        Ok(())
    }

    /// Whether any rule jumps (or goes) to `chain`.
    pub fn is_referenced(&self, chain: &str) -> bool {
        self.chains
            .iter()
            .flat_map(|c| &c.rules)
            .any(|r| r.target() == Some(chain))
    }

    /// Parses a rule and checks its target exists in this table.
    fn rule(&self, spec: &[Token]) -> Result<Rule, RestoreErrorReason> {
        let rule = Rule::from_tokens(spec).map_err(RestoreErrorReason::Syntax)?;
        if let Some(target) = rule.target() {
            self.check_target(target)?;
        }
        Ok(rule)
    }

    fn check_target(&self, target: &str) -> Result<(), RestoreErrorReason> {
        if VERDICTS.contains(&target) || ANY_TABLE_TARGETS.contains(&target) {
            return Ok(());
        }
        if NAT_TARGETS.contains(&target) {
            return if self.table == Table::Nat {
                Ok(())
            } else {
                Err(RestoreErrorReason::WrongTable {
                    target: target.to_owned(),
                })
            };
        }
        match self.chain(target) {
            Some(c) if !c.is_builtin() => Ok(()),
            // iptables refuses a jump to a built-in chain as an unknown target.
            _ => Err(RestoreErrorReason::UnknownTarget(target.to_owned())),
        }
    }
}

pub(crate) fn parse_policy(s: &str) -> Option<Policy> {
    match s {
        "ACCEPT" => Some(Policy::Accept),
        "DROP" => Some(Policy::Drop),
        _ => None,
    }
}

/// Why an `iptables-save` text could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveTextError {
    #[error("the text is for table {found}, not {expected}")]
    WrongTable { expected: Table, found: String },
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// Builds a table from `iptables-save` text (as [`FwTable::render`] prints it, with or without
/// the `*table` header, `COMMIT` and `#` comments). The result holds exactly what the text says.
pub fn table_from_save(table: Table, text: &str) -> Result<FwTable, SaveTextError> {
    let mut body = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('*') {
            if name != table.name() {
                return Err(SaveTextError::WrongTable {
                    expected: table,
                    found: name.to_owned(),
                });
            }
        } else if line == "COMMIT" {
            break;
        } else {
            body.push(line);
        }
    }
    let mut t = FwTable::new(table);
    t.apply(body)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(spec: &str) -> String {
        Rule::parse(spec).unwrap().to_string()
    }

    #[test]
    fn tokenizer_respects_quotes() {
        let t = tokenize(r#"-m comment --comment "a \"b\" c" -j X"#).unwrap();
        let texts: Vec<_> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            texts,
            ["-m", "comment", "--comment", "a \"b\" c", "-j", "X"]
        );
        assert!(t[3].quoted);
        assert!(tokenize("\"open").is_err());
    }

    #[test]
    fn addresses_are_masked_and_hosts_get_32() {
        assert_eq!(
            canon("-s 172.17.42.1/16 ! -o docker0 -j MASQUERADE"),
            "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"
        );
        assert_eq!(
            canon("-d 172.17.0.2 -j ACCEPT"),
            "-d 172.17.0.2/32 -j ACCEPT"
        );
        assert_eq!(canon("-d 0/0 -j ACCEPT"), "-j ACCEPT");
        assert_eq!(canon("-d 0.0.0.0/0 -j ACCEPT"), "-j ACCEPT");
        assert!(Rule::parse("-s 300.1.1.1 -j ACCEPT").is_err());
    }

    #[test]
    fn base_matches_move_before_extension_matches() {
        assert_eq!(
            canon("-m addrtype --dst-type LOCAL ! --dst 127.0.0.0/8 -j DOCKER"),
            "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER"
        );
        assert_eq!(
            canon("! -i docker0 -o docker0 -p tcp -d 172.17.0.2 --dport 80 -j ACCEPT"),
            "-d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT"
        );
    }

    #[test]
    fn proto_options_join_the_explicit_proto_match() {
        assert_eq!(
            canon("-p udp -m udp --destination-port 53 -j ACCEPT"),
            "-p udp -m udp --dport 53 -j ACCEPT"
        );
        assert_eq!(
            canon("-p tcp -m conntrack --ctstate ESTABLISHED,RELATED --dport 80 -j ACCEPT"),
            "-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -m tcp --dport 80 -j ACCEPT"
        );
        assert!(Rule::parse("--dport 80 -j ACCEPT").is_err());
    }

    #[test]
    fn target_options_stay_with_the_target() {
        let r = Rule::parse("-p tcp --dport 1 -j DNAT --to-destination 172.17.0.2:80").unwrap();
        assert_eq!(r.target(), Some("DNAT"));
        assert_eq!(
            r.to_string(),
            "-p tcp -m tcp --dport 1 -j DNAT --to-destination 172.17.0.2:80"
        );
    }

    #[test]
    fn quoted_values_are_requoted() {
        assert_eq!(
            canon(r#"-m comment --comment "two words" -j ACCEPT"#),
            r#"-m comment --comment "two words" -j ACCEPT"#
        );
    }

    #[test]
    fn user_chains_are_kept_sorted() {
        let mut t = FwTable::new(Table::Filter);
        t.apply([":ZED - [0:0]", "-N ALPHA", ":MID - [0:0]"])
            .unwrap();
        let names: Vec<_> = t.chains().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["INPUT", "FORWARD", "OUTPUT", "ALPHA", "MID", "ZED"]);
    }

    #[test]
    fn apply_is_all_or_nothing_on_the_table_itself() {
        let mut t = FwTable::new(Table::Filter);
        t.apply(["-A INPUT -j ACCEPT"]).unwrap();
        let before = t.clone();
        let err = t
            .apply(["-N NEW", "-A INPUT -j NEW", "-D INPUT -j DROP"])
            .unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.reason, RestoreErrorReason::NoSuchRule);
        assert_eq!(t, before);
    }

    #[test]
    fn empty_rules_render_without_a_trailing_blank() {
        let mut t = FwTable::new(Table::Filter);
        t.apply(["-A INPUT"]).unwrap();
        assert!(t.render().contains("\n-A INPUT\n"), "{}", t.render());
    }
}
