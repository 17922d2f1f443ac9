//! [`FirewallOps`] for hosts whose `iptables` is iptables-nft, speaking nf_tables netlink
//! directly instead of running `iptables-restore`.
//!
//! Why: every iptables-nft process pays for things that have nothing to do with the rule it
//! adds (measured on this project's 2-core VM, kernel 6.18, iptables 1.8.9):
//! - a process spawn and the download of the whole table into its cache (1.5-4 ms, growing
//!   with the number of rules: a thousand published ports make each `iptables -D` 8-30 ms);
//! - on exit, closing its netlink socket after a commit that queued work for after an RCU
//!   grace period (a chain policy change, any rule deletion) waits for that grace period
//!   (nf_tables' `NETLINK_URELEASE` handler flushes the destroy work): ~10-16 ms, 62% of a
//!   fresh `dockerd-net init`.
//!
//! This backend keeps one socket open for its lifetime and sends each [`Batch`] as one nf_tables
//! transaction (all tables of an `apply_batches` in one, which is more atomic than
//! `iptables-restore`, whose tables commit one by one). It keeps the handles of the rules it
//! has seen, keyed by the ruleset's generation id: while nobody else changes the ruleset, a
//! request costs a generation check and the transaction, with no dump; when someone does, the
//! chains involved are read again.
//!
//! The rules are the ones iptables-nft makes ([`expr`]), so `iptables-save`, `iptables -D`
//! and Docker itself see them as their own. What the encoder does not know (another match,
//! SCTP ports) goes through `iptables-restore` unchanged, as do saves: both through the
//! [`Iptables`] backend this one wraps.

#![forbid(unsafe_code)]

pub mod expr;
mod native;
pub mod nl;

use std::collections::HashMap;

use backend_iptables::{Flavor, Iptables};
use netcore::firewall::{Batch, Policy, Table};
use netcore::nftables::{Element, NftOp};
use netcore::ops::{FirewallOps, OpsError, OpsErrorKind};

use crate::expr::{Encoded, Key, Unsupported, encode, without_counters};
use crate::nl::{Attrs, Nfnl, NlError, Request};
use crate::nl::{
    NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY, NFTA_CHAIN_TABLE, NFTA_CHAIN_TYPE,
    NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_HANDLE, NFTA_RULE_TABLE, NFTA_TABLE_NAME,
};

// <linux/netfilter/nf_tables.h>
const NFTA_RULE_COMPAT: u16 = 5;
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_RULE_ID: u16 = 9;
const NFTA_RULE_POSITION_ID: u16 = 10;
const NFTA_RULE_COMPAT_PROTO: u16 = 1;
const NFTA_RULE_COMPAT_FLAGS: u16 = 2;

const ENOENT: i32 = 2;
const EPERM: i32 = 1;
const EEXIST: i32 = 17;
/// The batch was built from a generation that is gone (someone else committed).
const ERESTART: i32 = 85;
/// The most added rules a batch has the kernel echo back (~600 bytes each).
const ECHO_AT_MOST: usize = 64;
/// How often a batch is rebuilt after another writer changed the ruleset under it.
const RETRIES: usize = 5;

/// The rules a batch adds: table, chain and `NFTA_RULE_ID`, in request order.
type Added = Vec<(Table, String, u32)>;

/// A base chain as iptables-nft creates it: hook number, priority and type.
fn base_chain(table: Table, chain: &str) -> Option<(u32, i32, &'static str)> {
    // NF_INET_PRE_ROUTING 0, LOCAL_IN 1, FORWARD 2, LOCAL_OUT 3, POST_ROUTING 4;
    // NF_IP_PRI_NAT_DST -100, NF_IP_PRI_FILTER 0, NF_IP_PRI_NAT_SRC 100.
    match (table, chain) {
        (Table::Filter, "INPUT") => Some((1, 0, "filter")),
        (Table::Filter, "FORWARD") => Some((2, 0, "filter")),
        (Table::Filter, "OUTPUT") => Some((3, 0, "filter")),
        (Table::Nat, "PREROUTING") => Some((0, -100, "nat")),
        (Table::Nat, "INPUT") => Some((1, 100, "nat")),
        (Table::Nat, "OUTPUT") => Some((3, -100, "nat")),
        (Table::Nat, "POSTROUTING") => Some((4, 100, "nat")),
        _ => None,
    }
}

fn verdict(policy: Policy) -> u32 {
    match policy {
        Policy::Accept => 1,
        Policy::Drop => 0,
    }
}

/// A rule of a chain as this backend tracks it.
#[derive(Debug, Clone)]
enum Slot {
    /// In the kernel, with its handle.
    Old(u64),
    /// Added by the batch being built, with its `NFTA_RULE_ID`.
    New(u32),
}

#[derive(Debug, Clone, Default)]
struct TableState {
    exists: bool,
    /// Chains by name; the rules when they were read (`None`: not read yet).
    chains: HashMap<String, Option<Vec<(Slot, Key)>>>,
}

/// What this backend knows of the ruleset, valid for one generation.
#[derive(Debug, Clone, Default)]
struct Known {
    genid: u32,
    tables: HashMap<Table, TableState>,
}

/// One line of an `iptables-restore` batch, as far as this backend acts on it.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `:NAME POLICY [p:b]`; `-` for a user chain.
    Chain(String, Option<Policy>),
    Append(String, Vec<String>),
    Insert(String, usize, Vec<String>),
    Delete(String, Vec<String>),
    DeleteChain(String),
    Flush(String),
}

fn parse_line(line: &str) -> Result<Option<Line>, Unsupported> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let bad = || Unsupported(format!("line {line:?}"));
    if let Some(rest) = line.strip_prefix(':') {
        let mut w = rest.split_whitespace();
        let name = w.next().ok_or_else(bad)?;
        let policy = match w.next().ok_or_else(bad)? {
            "-" => None,
            p => Some(Policy::from_name(p).ok_or_else(bad)?),
        };
        return Ok(Some(Line::Chain(name.to_owned(), policy)));
    }
    let mut w = line.split_whitespace();
    let op = w.next().ok_or_else(bad)?;
    let chain = w.next().ok_or_else(bad)?.to_owned();
    let mut rest: Vec<String> = w.map(str::to_owned).collect();
    Ok(Some(match op {
        "-A" => Line::Append(chain, rest),
        "-I" => {
            let pos = match rest.first().and_then(|p| p.parse::<usize>().ok()) {
                Some(p) => {
                    rest.remove(0);
                    p
                }
                None => 1,
            };
            if pos == 0 {
                return Err(bad());
            }
            Line::Insert(chain, pos, rest)
        }
        "-D" if rest.first().is_some_and(|p| p.parse::<usize>().is_ok()) => return Err(bad()),
        "-D" => Line::Delete(chain, rest),
        "-X" if rest.is_empty() => Line::DeleteChain(chain),
        "-F" if rest.is_empty() => Line::Flush(chain),
        _ => return Err(bad()),
    }))
}

/// Why a batch was not applied natively.
#[derive(Debug, thiserror::Error)]
enum NativeError {
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    #[error(transparent)]
    Nl(#[from] NlError),
    /// A `-D` whose rule is not in its chain, or a position past the chain's end: the batch
    /// would fail in `iptables-restore` too.
    #[error("{0}")]
    Bad(String),
}

/// [`FirewallOps`] over nf_tables netlink, for iptables-nft hosts. Saves, and batches the
/// encoder does not know, go through `iptables-nft-save`/`-restore`.
#[derive(Debug)]
pub struct Nftables {
    nl: Nfnl,
    ipt: Iptables,
    known: Option<Known>,
    next_id: u32,
    /// Dumps made so far (chains and rules): what the cache saves.
    reads: u64,
    /// Batches handed to iptables-restore.
    fallbacks: u64,
}

impl Nftables {
    /// Opens the socket in the calling thread's network namespace; saves and fallbacks use
    /// `iptables-nft-save`/`iptables-nft-restore`. Nothing is run or looked up here, so this
    /// also serves hosts without any iptables program (`--firewall-backend nftables`): the
    /// native table ([`FirewallOps::nft_apply`]) never needs one.
    pub fn open() -> Result<Self, OpsError> {
        Self::with_iptables(Iptables::new(Flavor::Nft))
    }

    /// Like [`Nftables::open`], with the given tools for saves and fallbacks (which must be
    /// the nf_tables flavour: the rules made here are nf_tables rules).
    pub fn with_iptables(ipt: Iptables) -> Result<Self, OpsError> {
        let nl = Nfnl::open().map_err(|e| to_ops("open an nfnetlink socket", e))?;
        Ok(Self {
            nl,
            ipt,
            known: None,
            next_id: 0,
            reads: 0,
            fallbacks: 0,
        })
    }

    /// Sends batches larger than `bytes` through iptables-restore (by default: the largest
    /// message the socket can send, `net.core.wmem_max`).
    pub fn with_batch_limit(mut self, bytes: usize) -> Self {
        self.nl.set_batch_limit(bytes);
        self
    }

    /// How many dumps (of a table's chains or of a chain's rules) this backend has made:
    /// while it alone changes the ruleset, requests after the first read nothing.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// How many requests went through `iptables-restore` (a line the encoder does not know,
    /// or a batch too big for one netlink message).
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    fn load_table(&mut self, known: &mut Known, table: Table) -> Result<(), NlError> {
        if known.tables.contains_key(&table) {
            return Ok(());
        }
        let mut a = Attrs::new();
        a.str(NFTA_CHAIN_TABLE, table.name());
        let mut state = TableState::default();
        self.reads += 1;
        match self.nl.dump(nl::NFT_MSG_GETCHAIN, &a) {
            Ok(replies) => {
                for r in &replies {
                    // Chain dumps are not filtered by table: every table of the family comes.
                    if nl::attr(r, NFTA_CHAIN_TABLE).map(nl::str_of) != Some(table.name()) {
                        continue;
                    }
                    if let Some(name) = nl::attr(r, NFTA_CHAIN_NAME) {
                        state.chains.insert(nl::str_of(name).to_owned(), None);
                    }
                }
                state.exists = !state.chains.is_empty();
            }
            Err(e) if e.errno() == Some(ENOENT) => {}
            Err(e) => return Err(e),
        }
        // A table without chains still exists.
        if !state.exists {
            self.reads += 1;
            state.exists = self.table_exists(table)?;
        }
        known.tables.insert(table, state);
        Ok(())
    }

    fn table_exists(&mut self, table: Table) -> Result<bool, NlError> {
        let replies = self.nl.dump(nl::NFT_MSG_GETTABLE, &Attrs::new())?;
        Ok(replies
            .iter()
            .any(|r| nl::attr(r, NFTA_TABLE_NAME).map(nl::str_of) == Some(table.name())))
    }

    fn load_rules(
        &mut self,
        known: &mut Known,
        table: Table,
        chain: &str,
    ) -> Result<(), NativeError> {
        let state = known
            .tables
            .get(&table)
            .ok_or_else(|| NativeError::Bad(format!("table {table} not read")))?;
        match state.chains.get(chain) {
            Some(Some(_)) => return Ok(()),
            Some(None) => {}
            None => return Ok(()), // not there (yet): the batch creates it or fails
        }
        let mut a = Attrs::new();
        a.str(NFTA_RULE_TABLE, table.name())
            .str(NFTA_RULE_CHAIN, chain);
        self.reads += 1;
        let replies = self.nl.dump(nl::NFT_MSG_GETRULE, &a)?;
        let mut rules = Vec::with_capacity(replies.len());
        for r in &replies {
            // The filter is honoured by current kernels; older ones dump every chain.
            if nl::attr(r, NFTA_RULE_CHAIN).map(nl::str_of) != Some(chain) {
                continue;
            }
            let handle = nl::attr(r, NFTA_RULE_HANDLE)
                .and_then(nl::be64_of)
                .ok_or(NlError::Malformed("rule without handle"))?;
            let exprs = nl::attr(r, NFTA_RULE_EXPRESSIONS).unwrap_or(&[]);
            rules.push((Slot::Old(handle), without_counters(exprs)));
        }
        if let Some(t) = known.tables.get_mut(&table) {
            t.chains.insert(chain.to_owned(), Some(rules));
        }
        Ok(())
    }

    /// The requests for `batches` against `known` (updated to the state after them), and for
    /// each added rule, its table, chain and id, in order.
    fn build(
        &mut self,
        known: &mut Known,
        batches: &[Batch],
        policies: &[(Table, String, Policy)],
    ) -> Result<(Vec<Request>, Added), NativeError> {
        let mut reqs = Vec::new();
        let mut added = Vec::new();
        // Parse and encode everything first: an unknown line sends the whole batch to
        // iptables-restore before anything is read.
        let mut parsed: Vec<(Table, Line, Option<Encoded>)> = Vec::new();
        for b in batches {
            for l in &b.lines {
                if let Some(line) = parse_line(l)? {
                    let enc = match &line {
                        Line::Append(_, a) | Line::Insert(_, _, a) | Line::Delete(_, a) => {
                            Some(encode(a)?)
                        }
                        _ => None,
                    };
                    parsed.push((b.table, line, enc));
                }
            }
        }
        for (table, chain, policy) in policies {
            parsed.push((*table, Line::Chain(chain.clone(), Some(*policy)), None));
        }
        for (table, line, enc) in parsed {
            self.load_table(known, table)?;
            let chain = match &line {
                Line::Chain(c, _)
                | Line::Append(c, _)
                | Line::Insert(c, _, _)
                | Line::Delete(c, _)
                | Line::DeleteChain(c)
                | Line::Flush(c) => c.clone(),
            };
            // iptables-nft creates the table and a built-in chain when first used.
            let builtin = base_chain(table, &chain);
            let state = known.tables.entry(table).or_default();
            if !state.exists {
                let mut a = Attrs::new();
                a.str(NFTA_TABLE_NAME, table.name());
                reqs.push(Request {
                    msg: nl::NFT_MSG_NEWTABLE,
                    flags: nl::NLM_F_CREATE,
                    attrs: a,
                    what: format!("creating table {table}"),
                });
                state.exists = true;
            }
            if let Some((hook, prio, ty)) = builtin
                && !state.chains.contains_key(&chain)
            {
                let mut h = Attrs::new();
                h.be32(NFTA_HOOK_HOOKNUM, hook)
                    .be32(NFTA_HOOK_PRIORITY, prio as u32);
                let mut a = Attrs::new();
                a.str(NFTA_CHAIN_TABLE, table.name())
                    .str(NFTA_CHAIN_NAME, &chain)
                    .nest(NFTA_CHAIN_HOOK, &h)
                    .be32(NFTA_CHAIN_POLICY, verdict(Policy::Accept))
                    .str(NFTA_CHAIN_TYPE, ty);
                reqs.push(Request {
                    msg: nl::NFT_MSG_NEWCHAIN,
                    flags: nl::NLM_F_CREATE,
                    attrs: a,
                    what: format!("creating chain {table} {chain}"),
                });
                state.chains.insert(chain.clone(), Some(Vec::new()));
            }
            match line {
                Line::Chain(name, policy) => {
                    let exists = state.chains.contains_key(&name);
                    match (builtin, policy) {
                        (Some(_), Some(p)) => {
                            let mut a = Attrs::new();
                            a.str(NFTA_CHAIN_TABLE, table.name())
                                .str(NFTA_CHAIN_NAME, &name)
                                .be32(NFTA_CHAIN_POLICY, verdict(p));
                            reqs.push(Request {
                                msg: nl::NFT_MSG_NEWCHAIN,
                                flags: 0,
                                attrs: a,
                                what: format!("setting the policy of {table} {name}"),
                            });
                        }
                        (None, None) if exists => {
                            // iptables-restore --noflush flushes a user chain it is told
                            // to declare.
                            reqs.push(flush(table, &name));
                            state.chains.insert(name, Some(Vec::new()));
                        }
                        (None, None) => {
                            let mut a = Attrs::new();
                            a.str(NFTA_CHAIN_TABLE, table.name())
                                .str(NFTA_CHAIN_NAME, &name);
                            reqs.push(Request {
                                msg: nl::NFT_MSG_NEWCHAIN,
                                flags: nl::NLM_F_CREATE,
                                attrs: a,
                                what: format!("creating chain {table} {name}"),
                            });
                            state.chains.insert(name, Some(Vec::new()));
                        }
                        _ => return Err(Unsupported(format!(":{name} with that policy")).into()),
                    }
                }
                Line::Flush(name) => {
                    reqs.push(flush(table, &name));
                    state.chains.insert(name, Some(Vec::new()));
                }
                Line::DeleteChain(name) => {
                    let mut a = Attrs::new();
                    a.str(NFTA_CHAIN_TABLE, table.name())
                        .str(NFTA_CHAIN_NAME, &name);
                    reqs.push(Request {
                        msg: nl::NFT_MSG_DELCHAIN,
                        flags: 0,
                        attrs: a,
                        what: format!("deleting chain {table} {name}"),
                    });
                    state.chains.remove(&name);
                }
                Line::Append(name, args) | Line::Insert(name, _, args)
                    if !state.chains.contains_key(&name) =>
                {
                    return Err(NativeError::Bad(format!(
                        "{table} {name} {}: no chain by that name",
                        args.join(" ")
                    )));
                }
                Line::Append(name, _) => {
                    let enc = enc.ok_or_else(|| NativeError::Bad("unencoded rule".into()))?;
                    let id = self.id();
                    reqs.push(new_rule(table, &name, &enc, id, Where::End));
                    added.push((table, name.clone(), id));
                    if let Some(Some(rules)) = state.chains.get_mut(&name) {
                        rules.push((Slot::New(id), without_counters(&enc.exprs.buf)));
                    }
                }
                Line::Insert(name, pos, args) => {
                    let enc = enc.ok_or_else(|| NativeError::Bad("unencoded rule".into()))?;
                    if pos > 1 {
                        self.load_rules(known, table, &name)?;
                    }
                    let state = known.tables.entry(table).or_default();
                    let id = self.id();
                    let key = without_counters(&enc.exprs.buf);
                    let place = match state.chains.get_mut(&name) {
                        Some(Some(rules)) => {
                            if pos > rules.len() + 1 {
                                return Err(NativeError::Bad(format!(
                                    "-I {name} {pos} {}: index of insertion too big",
                                    args.join(" ")
                                )));
                            }
                            let place = if pos == 1 {
                                Where::Head
                            } else if pos == rules.len() + 1 {
                                Where::End
                            } else {
                                match &rules[pos - 1].0 {
                                    Slot::Old(h) => Where::Before(*h),
                                    Slot::New(i) => Where::BeforeNew(*i),
                                }
                            };
                            rules.insert(pos - 1, (Slot::New(id), key));
                            place
                        }
                        // Not read: only `-I CHAIN 1` gets here.
                        _ => Where::Head,
                    };
                    reqs.push(new_rule(table, &name, &enc, id, place));
                    added.push((table, name.clone(), id));
                }
                Line::Delete(name, args) => {
                    let enc = enc.ok_or_else(|| NativeError::Bad("unencoded rule".into()))?;
                    self.load_rules(known, table, &name)?;
                    let state = known.tables.entry(table).or_default();
                    let key = without_counters(&enc.exprs.buf);
                    let rules = match state.chains.get_mut(&name) {
                        Some(Some(rules)) => rules,
                        _ => {
                            return Err(NativeError::Bad(format!(
                                "-D {name} {}: no chain by that name",
                                args.join(" ")
                            )));
                        }
                    };
                    // `iptables -D` deletes the first rule that matches.
                    let Some(i) = rules.iter().position(|(_, k)| *k == key) else {
                        return Err(NativeError::Bad(format!(
                            "-D {name} {}: Bad rule (does a matching rule exist in that chain?)",
                            args.join(" ")
                        )));
                    };
                    let (slot, _) = rules.remove(i);
                    let Slot::Old(handle) = slot else {
                        // Deleting a rule the same batch adds: let iptables-restore do it.
                        return Err(
                            Unsupported("-D of a rule added by the same batch".into()).into()
                        );
                    };
                    let mut a = Attrs::new();
                    a.str(NFTA_RULE_TABLE, table.name())
                        .str(NFTA_RULE_CHAIN, &name)
                        .be64(NFTA_RULE_HANDLE, handle);
                    reqs.push(Request {
                        msg: nl::NFT_MSG_DELRULE,
                        flags: 0,
                        attrs: a,
                        what: format!("-D {name} {}", args.join(" ")),
                    });
                }
            }
        }
        // The kernel echoes each added rule with its handle, which keeps the cache valid
        // without a dump. Not for big batches (init, a restart's reconcile): a thousand
        // echoes would overflow the socket's buffer; the cache is then forgotten instead.
        if added.len() <= ECHO_AT_MOST {
            for r in reqs.iter_mut().filter(|r| r.msg == nl::NFT_MSG_NEWRULE) {
                r.flags |= nl::NLM_F_ECHO;
            }
        }
        Ok((reqs, added))
    }

    fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Applies `batches` (and policies) natively in one transaction, rebuilding it when
    /// another writer committed in between.
    fn native(
        &mut self,
        batches: &[Batch],
        policies: &[(Table, String, Policy)],
    ) -> Result<(), NativeError> {
        let mut last = None;
        for _ in 0..RETRIES {
            let genid = self.nl.genid()?;
            let mut known = match self.known.take() {
                Some(k) if k.genid == genid => k,
                _ => Known {
                    genid,
                    tables: HashMap::new(),
                },
            };
            let (reqs, added) = match self.build(&mut known, batches, policies) {
                Ok(r) => r,
                Err(e) => {
                    // What was read stays valid; what the failed build changed does not.
                    self.known = None;
                    return Err(e);
                }
            };
            match self.nl.batch(&reqs, Some(genid)) {
                Ok(done) => {
                    self.remember(known, genid, &added, &done);
                    return Ok(());
                }
                Err(NlError::TooBig(n)) => {
                    return Err(Unsupported(format!("a batch of {n} bytes")).into());
                }
                Err(e) if e.errno() == Some(ERESTART) => {
                    tracing::debug!("ruleset changed under the batch: rebuilding it");
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.unwrap_or(NlError::Malformed("no attempt")).into())
    }

    /// Keeps what the batch made known: the new generation and the handles of the rules it
    /// added. Anything unexpected forgets everything (the next request reads again).
    fn remember(&mut self, mut known: Known, genid: u32, added: &Added, done: &nl::Committed) {
        if done.rule_handles.len() != added.len() || done.rule_handles.contains(&0) {
            return;
        }
        let handles: HashMap<u32, u64> = added
            .iter()
            .zip(&done.rule_handles)
            .map(|((_, _, id), h)| (*id, *h))
            .collect();
        for state in known.tables.values_mut() {
            for rules in state.chains.values_mut().flatten() {
                for (slot, _) in rules.iter_mut() {
                    if let Slot::New(id) = slot {
                        match handles.get(id) {
                            Some(h) => *slot = Slot::Old(*h),
                            None => return,
                        }
                    }
                }
            }
        }
        known.genid = done.genid.unwrap_or(genid.wrapping_add(1));
        self.known = Some(known);
    }

    fn run(
        &mut self,
        op: &str,
        batches: &[Batch],
        policies: &[(Table, String, Policy)],
    ) -> Result<(), OpsError> {
        match self.native(batches, policies) {
            Ok(()) => Ok(()),
            Err(NativeError::Unsupported(u)) => {
                tracing::debug!("{op}: {u}; through iptables-restore");
                self.known = None;
                self.fallbacks += 1;
                for (table, chain, policy) in policies {
                    self.ipt.set_policy(*table, chain, *policy)?;
                }
                self.ipt.apply_batches(batches)
            }
            Err(NativeError::Nl(e)) => {
                self.known = None;
                Err(to_ops(op, e))
            }
            Err(NativeError::Bad(msg)) => Err(OpsError::new(op, OpsErrorKind::NotFound, msg)),
        }
    }
}

enum Where {
    End,
    Head,
    Before(u64),
    BeforeNew(u32),
}

fn flush(table: Table, chain: &str) -> Request {
    let mut a = Attrs::new();
    a.str(NFTA_RULE_TABLE, table.name())
        .str(NFTA_RULE_CHAIN, chain);
    Request {
        msg: nl::NFT_MSG_DELRULE,
        flags: 0,
        attrs: a,
        what: format!("flushing {table} {chain}"),
    }
}

fn new_rule(table: Table, chain: &str, enc: &Encoded, id: u32, place: Where) -> Request {
    let mut a = Attrs::new();
    a.str(NFTA_RULE_TABLE, table.name())
        .str(NFTA_RULE_CHAIN, chain);
    // ECHO is added by `build` for small batches.
    let mut flags = nl::NLM_F_CREATE;
    match place {
        Where::End => flags |= nl::NLM_F_APPEND,
        Where::Head => {}
        Where::Before(h) => {
            a.be64(NFTA_RULE_POSITION, h);
        }
        Where::BeforeNew(i) => {
            a.be32(NFTA_RULE_POSITION_ID, i);
        }
    }
    a.nest(NFTA_RULE_EXPRESSIONS, &enc.exprs);
    if let Some(p) = enc.proto {
        let mut c = Attrs::new();
        c.be32(NFTA_RULE_COMPAT_PROTO, u32::from(p))
            .be32(NFTA_RULE_COMPAT_FLAGS, 0);
        a.nest(NFTA_RULE_COMPAT, &c);
    }
    a.be32(NFTA_RULE_ID, id);
    Request {
        msg: nl::NFT_MSG_NEWRULE,
        flags,
        attrs: a,
        what: format!("adding a rule to {table} {chain}"),
    }
}

impl Nftables {
    fn nft_apply_inner(&mut self, ops: &[NftOp]) -> Result<(), OpsError> {
        let reqs = native::requests(ops);
        tracing::debug!(
            ops = ops.len(),
            messages = reqs.len(),
            "applying native nftables changes"
        );
        // The commit changes the ruleset's generation; the iptables path's cache of rule
        // handles is tied to a generation and would notice, but forgetting it here keeps
        // that correct without relying on the generation check.
        self.known = None;
        match self.nl.batch(&reqs, None) {
            Ok(_) => Ok(()),
            // The message the kernel refused names the op: "add element ... to ...".
            Err(NlError::Kernel { errno, what }) => Err(OpsError::from_io(
                what,
                std::io::Error::from_raw_os_error(errno),
            )),
            Err(e) => Err(to_ops("apply nftables changes", e)),
        }
    }

    fn nft_elements_inner(&mut self) -> Result<Option<Vec<Element>>, OpsError> {
        let mut all = Vec::new();
        for set in native::our_sets() {
            let op = format!("list elements of {}", set.name);
            match self
                .nl
                .dump(nl::NFT_MSG_GETSETELEM, &native::elements_dump(set.name))
            {
                Ok(replies) => {
                    let elems = native::decode_elements(&set, &replies)
                        .map_err(|e| OpsError::new(op, OpsErrorKind::Other, e))?;
                    all.extend(elems);
                }
                // No table: nothing was ever set up (or it was torn down). A table without
                // the set is not ours to describe.
                Err(e) if e.errno() == Some(ENOENT) => {
                    let exists = self
                        .nl
                        .dump(nl::NFT_MSG_GETTABLE, &Attrs::new())
                        .map_err(|e| to_ops(&op, e))?
                        .iter()
                        .any(|r| {
                            nl::attr(r, NFTA_TABLE_NAME).map(nl::str_of)
                                == Some(netcore::nftables::TABLE)
                        });
                    if !exists {
                        return Ok(None);
                    }
                    return Err(to_ops(&op, e));
                }
                Err(e) => return Err(to_ops(&op, e)),
            }
        }
        all.sort();
        Ok(Some(all))
    }
}

fn to_ops(op: &str, e: NlError) -> OpsError {
    let kind = match e.errno() {
        Some(ENOENT) => OpsErrorKind::NotFound,
        Some(EEXIST) => OpsErrorKind::AlreadyExists,
        Some(EPERM) => OpsErrorKind::PermissionDenied,
        _ => OpsErrorKind::Other,
    };
    OpsError::new(op, kind, e)
}

impl FirewallOps for Nftables {
    fn save(&mut self, table: Table) -> Result<String, OpsError> {
        self.ipt.save(table)
    }

    fn save_tables(&mut self, tables: &[Table]) -> Result<Vec<String>, OpsError> {
        self.ipt.save_tables(tables)
    }

    fn apply(&mut self, batch: &Batch) -> Result<(), OpsError> {
        let op = format!("apply nf_tables batch to table {}", batch.table);
        self.run(&op, std::slice::from_ref(batch), &[])
    }

    /// All batches in one transaction.
    fn apply_batches(&mut self, batches: &[Batch]) -> Result<(), OpsError> {
        let names: Vec<&str> = batches.iter().map(|b| b.table.name()).collect();
        let op = format!("apply nf_tables batches to tables {}", names.join(", "));
        self.run(&op, batches, &[])
    }

    fn set_policy(&mut self, table: Table, chain: &str, policy: Policy) -> Result<(), OpsError> {
        if base_chain(table, chain).is_none() {
            return self.ipt.set_policy(table, chain, policy);
        }
        let op = format!("set policy of {table} {chain} to {}", policy.name());
        self.run(&op, &[], &[(table, chain.to_owned(), policy)])
    }

    /// One nf_tables transaction for all of `ops` (see [`native`]).
    fn nft_apply(&mut self, ops: &[NftOp]) -> Result<(), OpsError> {
        self.nft_apply_inner(ops)
    }

    fn nft_elements(&mut self) -> Result<Option<Vec<Element>>, OpsError> {
        self.nft_elements_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_lines_parse() {
        assert_eq!(
            parse_line(":DOCKER - [0:0]").expect("ok"),
            Some(Line::Chain("DOCKER".into(), None))
        );
        assert_eq!(
            parse_line(":FORWARD DROP [0:0]").expect("ok"),
            Some(Line::Chain("FORWARD".into(), Some(Policy::Drop)))
        );
        assert_eq!(
            parse_line("-I FORWARD 3 -o docker0 -j DOCKER").expect("ok"),
            Some(Line::Insert(
                "FORWARD".into(),
                3,
                vec!["-o".into(), "docker0".into(), "-j".into(), "DOCKER".into()]
            ))
        );
        assert_eq!(
            parse_line("-I FORWARD -j X").expect("ok"),
            Some(Line::Insert(
                "FORWARD".into(),
                1,
                vec!["-j".into(), "X".into()]
            ))
        );
        assert_eq!(parse_line("# position 3").expect("ok"), None);
        assert_eq!(
            parse_line("-X DOCKER").expect("ok"),
            Some(Line::DeleteChain("DOCKER".into()))
        );
        for bad in [
            "-D FORWARD 3",
            "-Z FORWARD",
            "-I FORWARD 0 -j X",
            ":X",
            "-P FORWARD DROP",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }
}
