//! An iptables rule specification, as netcore writes it (`iptables-save` spelling), turned into
//! the nf_tables expressions iptables-nft 1.8 makes for it, so that `iptables-save` prints the
//! rule exactly as if `iptables` had added it, and a rule added either way can be found and
//! deleted either way.
//!
//! The expressions, in iptables-nft's order (`nft_ipv4_add` in iptables' `nft-ipv4.c`):
//! `-i`, `-o` (meta iifname/oifname + cmp), `-p` (meta l4proto + cmp), `-s`, `-d` (payload +
//! [bitwise] + cmp), the `-m tcp|udp` ports (payload on the transport header + cmp), the
//! other `-m` matches as xtables compat `match` expressions, a `counter`, and the target:
//! an `immediate` verdict for ACCEPT/DROP/RETURN/a chain, a compat `target` otherwise.
//!
//! Each expression is encoded the way the kernel dumps it (attribute order, nests without
//! `NLA_F_NESTED`, data lengths), so that a dumped rule compares byte for byte, counters
//! aside. `tests/kernel.rs` holds every rule shape netcore writes against what the kernel
//! dumps for the same rule added by `iptables-nft`.
//!
//! Anything else (another match, SCTP's compat match, a comment...) is [`Unsupported`]: the
//! caller then hands the batch to `iptables-restore`, which knows every extension.

use std::net::Ipv4Addr;

use crate::nl::Attrs;

/// A rule argument this encoder does not know: the batch goes through `iptables-restore`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not encoded natively: {0}")]
pub struct Unsupported(pub String);

// <linux/netfilter/nf_tables.h>
pub(crate) const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
pub(crate) const NFT_META_IIFNAME: u32 = 6;
pub(crate) const NFT_META_OIFNAME: u32 = 7;
pub(crate) const NFT_META_L4PROTO: u32 = 16;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
pub(crate) const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
pub(crate) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(crate) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_BITWISE_OP: u16 = 6;
/// `NFT_BITWISE_BOOL` (`NFT_BITWISE_MASK_XOR` in 6.13+ headers): `(reg & mask) ^ xor`.
const NFT_BITWISE_BOOL: u32 = 0;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// `NFTA_MATCH_*` and `NFTA_TARGET_*` share their numbers.
const NFTA_COMPAT_NAME: u16 = 1;
const NFTA_COMPAT_REV: u16 = 2;
const NFTA_COMPAT_INFO: u16 = 3;

/// `NFT_REG_VERDICT` and `NFT_REG_1`, the registers iptables-nft uses.
pub(crate) const REG_VERDICT: u32 = 0;
pub(crate) const REG_1: u32 = 1;

// Verdict codes (`<linux/netfilter.h>`, `<linux/netfilter/nf_tables.h>`), as signed 32-bit.
pub(crate) const NF_DROP: i32 = 0;
pub(crate) const NF_ACCEPT: i32 = 1;
pub(crate) const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A rule's expressions (the payload of `NFTA_RULE_EXPRESSIONS`) and its layer-4 protocol
/// (for `NFTA_RULE_COMPAT`, which the kernel's xtables compat layer checks matches against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub exprs: Attrs,
    pub proto: Option<u8>,
}

#[derive(Debug, Default)]
struct Spec {
    iif: Option<(bool, String)>,
    oif: Option<(bool, String)>,
    proto: Option<u8>,
    src: Option<(bool, Ipv4Addr, u8)>,
    dst: Option<(bool, Ipv4Addr, u8)>,
    sport: Option<u16>,
    dport: Option<u16>,
    /// Compat matches in order: (name, revision, info).
    matches: Vec<(&'static str, u32, Vec<u8>)>,
    target: Option<Target>,
}

#[derive(Debug)]
enum Target {
    Verdict(i32, Option<String>),
    Compat(&'static str, u32, Vec<u8>),
}

/// Encodes a rule's arguments (`Rule::args`).
pub fn encode(args: &[String]) -> Result<Encoded, Unsupported> {
    let spec = parse(args)?;
    let mut list = Attrs::new();
    if let Some((neg, name)) = &spec.iif {
        meta(&mut list, NFT_META_IIFNAME);
        cmp(&mut list, *neg, &ifname_bytes(name));
    }
    if let Some((neg, name)) = &spec.oif {
        meta(&mut list, NFT_META_OIFNAME);
        cmp(&mut list, *neg, &ifname_bytes(name));
    }
    if let Some(p) = spec.proto {
        meta(&mut list, NFT_META_L4PROTO);
        cmp(&mut list, false, &[p]);
    }
    for (off, a) in [(12, &spec.src), (16, &spec.dst)] {
        if let Some((neg, addr, prefix)) = a {
            address(&mut list, off, *neg, *addr, *prefix);
        }
    }
    for (off, port) in [(0, spec.sport), (2, spec.dport)] {
        if let Some(p) = port {
            payload(&mut list, NFT_PAYLOAD_TRANSPORT_HEADER, off, 2);
            cmp(&mut list, false, &p.to_be_bytes());
        }
    }
    for (name, rev, info) in &spec.matches {
        compat(&mut list, "match", name, *rev, info);
    }
    counter(&mut list);
    match spec.target {
        Some(Target::Verdict(code, chain)) => immediate(&mut list, code, chain.as_deref()),
        Some(Target::Compat(name, rev, info)) => compat(&mut list, "target", name, rev, &info),
        // No -j: iptables-nft adds no verdict expression.
        None => {}
    }
    Ok(Encoded {
        exprs: list,
        proto: spec.proto,
    })
}

fn unsupported(what: impl Into<String>) -> Unsupported {
    Unsupported(what.into())
}

fn parse(args: &[String]) -> Result<Spec, Unsupported> {
    let mut spec = Spec::default();
    let mut it = args.iter().map(String::as_str).peekable();
    // The module of the last `-m`: decides what `--dport` and friends mean.
    let mut module: Option<&str> = None;
    let mut neg = false;
    while let Some(a) = it.next() {
        let mut value = |what: &str| -> Result<&str, Unsupported> {
            it.next()
                .ok_or_else(|| unsupported(format!("{what} without a value")))
        };
        match a {
            "!" => {
                neg = true;
                continue;
            }
            "-i" => spec.iif = Some((neg, value(a)?.to_owned())),
            "-o" => spec.oif = Some((neg, value(a)?.to_owned())),
            "-s" | "-d" => {
                let (addr, prefix) = cidr(value(a)?)?;
                let slot = if a == "-s" {
                    &mut spec.src
                } else {
                    &mut spec.dst
                };
                *slot = Some((neg, addr, prefix));
            }
            "-p" => {
                if neg {
                    return Err(unsupported("! -p"));
                }
                spec.proto = Some(match value(a)? {
                    "tcp" => IPPROTO_TCP,
                    "udp" => IPPROTO_UDP,
                    other => return Err(unsupported(format!("-p {other}"))),
                });
            }
            "-m" => {
                let m = value(a)?;
                // `-m tcp` and `-m udp` are what iptables-save prints after `-p tcp|udp`; on
                // their own they would be compat matches, which are not encoded here.
                let ok = match m {
                    "tcp" => spec.proto == Some(IPPROTO_TCP),
                    "udp" => spec.proto == Some(IPPROTO_UDP),
                    // Their options follow; the match is pushed when they are read.
                    "addrtype" | "conntrack" => true,
                    _ => false,
                };
                if neg || !ok {
                    return Err(unsupported(format!("-m {m} here")));
                }
                module = Some(m);
            }
            "--dport" | "--sport" => {
                if neg || !matches!(module, Some("tcp" | "udp")) {
                    return Err(unsupported(format!("{a} here")));
                }
                let v = value(a)?;
                let p: u16 = v.parse().map_err(|_| unsupported(format!("{a} {v}")))?;
                if a == "--dport" {
                    spec.dport = Some(p);
                } else {
                    spec.sport = Some(p);
                }
            }
            "--dst-type" | "--src-type" => {
                if neg || module != Some("addrtype") {
                    return Err(unsupported(format!("{a} here")));
                }
                let v = value(a)?;
                if v != "LOCAL" {
                    return Err(unsupported(format!("{a} {v}")));
                }
                spec.matches
                    .push(("addrtype", 1, addrtype_info(a == "--src-type")));
            }
            "--ctstate" => {
                if neg || module != Some("conntrack") {
                    return Err(unsupported("--ctstate here"));
                }
                let v = value(a)?;
                spec.matches.push(("conntrack", 3, conntrack_info(v)?));
            }
            "-j" | "-g" => {
                if neg {
                    return Err(unsupported("! -j"));
                }
                let t = value(a)?;
                spec.target = Some(match (a, t) {
                    ("-j", "ACCEPT") => Target::Verdict(NF_ACCEPT, None),
                    ("-j", "DROP") => Target::Verdict(NF_DROP, None),
                    ("-j", "RETURN") => Target::Verdict(NFT_RETURN, None),
                    ("-j", "MASQUERADE") => Target::Compat("MASQUERADE", 0, masquerade_info()),
                    ("-j", "DNAT") => {
                        if it.next() != Some("--to-destination") {
                            return Err(unsupported("DNAT without --to-destination"));
                        }
                        let to = it
                            .next()
                            .ok_or_else(|| unsupported("--to-destination without a value"))?;
                        Target::Compat("DNAT", 2, dnat_info(to)?)
                    }
                    (_, chain) if is_chain_name(chain) => {
                        let code = if a == "-g" { NFT_GOTO } else { NFT_JUMP };
                        Target::Verdict(code, Some(chain.to_owned()))
                    }
                    (_, other) => return Err(unsupported(format!("-j {other}"))),
                });
            }
            other => return Err(unsupported(other.to_owned())),
        }
        neg = false;
    }
    if neg {
        return Err(unsupported("a trailing !"));
    }
    Ok(spec)
}

/// User chains: what `iptables -N` accepts, minus upper-case-only names, which iptables
/// reads as targets (`-j MASQUERADE`). Docker's chains have a dash or are `DOCKER`.
fn is_chain_name(name: &str) -> bool {
    name.starts_with("DOCKER") && name.len() < 29 && !name.contains(char::is_whitespace)
}

fn cidr(text: &str) -> Result<(Ipv4Addr, u8), Unsupported> {
    let (a, p) = text.split_once('/').unwrap_or((text, "32"));
    let addr: Ipv4Addr = a.parse().map_err(|_| unsupported(text.to_owned()))?;
    let prefix: u8 = p.parse().map_err(|_| unsupported(text.to_owned()))?;
    if prefix > 32 {
        return Err(unsupported(text.to_owned()));
    }
    Ok((addr, prefix))
}

/// iptables-nft compares an exact name with its NUL (so `docker0` does not match
/// `docker01`) and a `+` wildcard without it (a prefix match).
fn ifname_bytes(name: &str) -> Vec<u8> {
    match name.strip_suffix('+') {
        Some(prefix) => prefix.as_bytes().to_vec(),
        None => {
            let mut v = name.as_bytes().to_vec();
            v.push(0);
            v
        }
    }
}

pub(crate) fn expr(list: &mut Attrs, name: &str, data: &Attrs) {
    let mut elem = Attrs::new();
    elem.str(NFTA_EXPR_NAME, name);
    elem.nest(NFTA_EXPR_DATA, data);
    list.nest(NFTA_LIST_ELEM, &elem);
}

pub(crate) fn meta(list: &mut Attrs, key: u32) {
    meta_into(list, key, REG_1);
}

/// `meta load KEY => reg`: native nftables rules load several keys side by side (a set
/// lookup on a concatenation), iptables-nft only ever into `REG_1`.
pub(crate) fn meta_into(list: &mut Attrs, key: u32, reg: u32) {
    let mut d = Attrs::new();
    d.be32(NFTA_META_KEY, key).be32(NFTA_META_DREG, reg);
    expr(list, "meta", &d);
}

pub(crate) fn value(bytes: &[u8]) -> Attrs {
    let mut v = Attrs::new();
    v.put(NFTA_DATA_VALUE, bytes);
    v
}

pub(crate) fn cmp(list: &mut Attrs, neg: bool, bytes: &[u8]) {
    let mut d = Attrs::new();
    d.be32(NFTA_CMP_SREG, REG_1)
        .be32(NFTA_CMP_OP, if neg { NFT_CMP_NEQ } else { NFT_CMP_EQ })
        .nest(NFTA_CMP_DATA, &value(bytes));
    expr(list, "cmp", &d);
}

pub(crate) fn payload(list: &mut Attrs, base: u32, offset: u32, len: u32) {
    payload_into(list, base, offset, len, REG_1);
}

/// `payload load LEN @ BASE + OFFSET => reg` (see [`meta_into`] for why a register).
pub(crate) fn payload_into(list: &mut Attrs, base: u32, offset: u32, len: u32, reg: u32) {
    let mut d = Attrs::new();
    d.be32(NFTA_PAYLOAD_DREG, reg)
        .be32(NFTA_PAYLOAD_BASE, base)
        .be32(NFTA_PAYLOAD_OFFSET, offset)
        .be32(NFTA_PAYLOAD_LEN, len);
    expr(list, "payload", &d);
}

/// An address match, as iptables-nft 1.8 builds it: a byte-aligned prefix loads and compares
/// only its bytes (`/16` is 2 bytes, `/8` 1); any other prefix loads 4 bytes and masks them.
/// `/0` matches everything and makes no expression (iptables-save omits it too).
pub(crate) fn address(list: &mut Attrs, offset: u32, neg: bool, addr: Ipv4Addr, prefix: u8) {
    if prefix == 0 {
        return;
    }
    let mask = u32::MAX << (32 - u32::from(prefix));
    let net = (u32::from(addr) & mask).to_be_bytes();
    if prefix.is_multiple_of(8) {
        let n = usize::from(prefix / 8);
        payload(list, NFT_PAYLOAD_NETWORK_HEADER, offset, n as u32);
        cmp(list, neg, &net[..n]);
    } else {
        payload(list, NFT_PAYLOAD_NETWORK_HEADER, offset, 4);
        bitwise(list, &mask.to_be_bytes());
        cmp(list, neg, &net);
    }
}

/// `reg 1 = (reg 1 & mask) ^ 0`, over as many bytes as the mask has.
pub(crate) fn bitwise(list: &mut Attrs, mask: &[u8]) {
    let mut d = Attrs::new();
    d.be32(NFTA_BITWISE_SREG, REG_1)
        .be32(NFTA_BITWISE_DREG, REG_1)
        .be32(NFTA_BITWISE_LEN, mask.len() as u32)
        .be32(NFTA_BITWISE_OP, NFT_BITWISE_BOOL)
        .nest(NFTA_BITWISE_MASK, &value(mask))
        .nest(NFTA_BITWISE_XOR, &value(&vec![0; mask.len()]));
    expr(list, "bitwise", &d);
}

fn counter(list: &mut Attrs) {
    let mut d = Attrs::new();
    d.be64(NFTA_COUNTER_BYTES, 0).be64(NFTA_COUNTER_PACKETS, 0);
    expr(list, "counter", &d);
}

pub(crate) fn immediate(list: &mut Attrs, code: i32, chain: Option<&str>) {
    let mut verdict = Attrs::new();
    verdict.be32(NFTA_VERDICT_CODE, code as u32);
    if let Some(c) = chain {
        verdict.str(NFTA_VERDICT_CHAIN, c);
    }
    let mut data = Attrs::new();
    data.nest(NFTA_DATA_VERDICT, &verdict);
    let mut d = Attrs::new();
    d.be32(NFTA_IMMEDIATE_DREG, REG_VERDICT)
        .nest(NFTA_IMMEDIATE_DATA, &data);
    expr(list, "immediate", &d);
}

fn compat(list: &mut Attrs, kind: &str, name: &str, rev: u32, info: &[u8]) {
    let mut d = Attrs::new();
    d.str(NFTA_COMPAT_NAME, name)
        .be32(NFTA_COMPAT_REV, rev)
        .put(NFTA_COMPAT_INFO, info);
    expr(list, kind, &d);
}

/// `XT_ALIGN`: xtables blobs are padded to 8 bytes, and the kernel dumps them so.
fn xt_align(mut v: Vec<u8>) -> Vec<u8> {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
    v
}

/// `struct xt_addrtype_info_v1 { __u16 source, dest; __u32 flags; }` with
/// `XT_ADDRTYPE_LOCAL` (`1 << RTN_LOCAL`) on one side.
fn addrtype_info(source: bool) -> Vec<u8> {
    const XT_ADDRTYPE_LOCAL: u16 = 1 << 2;
    let (s, d) = if source {
        (XT_ADDRTYPE_LOCAL, 0)
    } else {
        (0, XT_ADDRTYPE_LOCAL)
    };
    let mut v = Vec::with_capacity(8);
    v.extend_from_slice(&s.to_ne_bytes());
    v.extend_from_slice(&d.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    xt_align(v)
}

/// `struct xt_conntrack_mtinfo3` with only `--ctstate`: eight `union nf_inet_addr` (128
/// bytes), `expires_min/max`, `l4proto`, four ports, `match_flags`, `invert_flags`,
/// `state_mask`, `status_mask`, four `*_port_high`: 162 bytes, 164 with the struct's padding.
fn conntrack_info(states: &str) -> Result<Vec<u8>, Unsupported> {
    const XT_CONNTRACK_STATE: u16 = 1 << 0;
    // XT_CONNTRACK_STATE_BIT(ctinfo) = 1 << (ctinfo + 1); IP_CT_ESTABLISHED 0, RELATED 1,
    // NEW 2; INVALID is bit 0.
    let mut mask: u16 = 0;
    for s in states.split(',') {
        mask |= match s {
            "INVALID" => 1 << 0,
            "ESTABLISHED" => 1 << 1,
            "RELATED" => 1 << 2,
            "NEW" => 1 << 3,
            other => return Err(unsupported(format!("--ctstate {other}"))),
        };
    }
    let mut v = vec![0u8; 164];
    v[146..148].copy_from_slice(&XT_CONNTRACK_STATE.to_ne_bytes()); // match_flags
    v[150..152].copy_from_slice(&mask.to_ne_bytes()); // state_mask
    Ok(xt_align(v))
}

/// `struct nf_nat_ipv4_multi_range_compat` with one empty range: MASQUERADE without options.
fn masquerade_info() -> Vec<u8> {
    let mut v = vec![0u8; 24];
    v[0..4].copy_from_slice(&1u32.to_ne_bytes()); // rangesize
    xt_align(v)
}

/// `struct nf_nat_range2` for `--to-destination ADDR[:PORT]`: flags, min/max address (16
/// bytes each), min/max/base proto (2 each); 44 bytes with padding.
fn dnat_info(to: &str) -> Result<Vec<u8>, Unsupported> {
    const NF_NAT_RANGE_MAP_IPS: u32 = 1 << 0;
    const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
    let (addr, port) = match to.rsplit_once(':') {
        Some((a, p)) => (
            a,
            Some(
                p.parse::<u16>()
                    .map_err(|_| unsupported(format!("--to-destination {to}")))?,
            ),
        ),
        None => (to, None),
    };
    let ip: Ipv4Addr = addr
        .parse()
        .map_err(|_| unsupported(format!("--to-destination {to}")))?;
    let mut v = vec![0u8; 44];
    let mut flags = NF_NAT_RANGE_MAP_IPS;
    v[4..8].copy_from_slice(&ip.octets());
    v[20..24].copy_from_slice(&ip.octets());
    if let Some(p) = port {
        flags |= NF_NAT_RANGE_PROTO_SPECIFIED;
        v[36..38].copy_from_slice(&p.to_be_bytes());
        v[38..40].copy_from_slice(&p.to_be_bytes());
    }
    v[0..4].copy_from_slice(&flags.to_ne_bytes());
    Ok(xt_align(v))
}

/// A rule's identity: each expression's name and data, counters' data left out.
pub type Key = Vec<(String, Vec<u8>)>;

/// The expressions of a rule with each `counter`'s values dropped: what two rules are
/// compared by (`iptables -D` semantics: same matches and target, whatever they counted).
pub fn without_counters(exprs: &[u8]) -> Key {
    crate::nl::attrs(exprs)
        .filter(|a| a.ty == NFTA_LIST_ELEM)
        .map(|elem| {
            let name = crate::nl::attr(elem.payload, NFTA_EXPR_NAME)
                .map(crate::nl::str_of)
                .unwrap_or("")
                .to_owned();
            let data = if name == "counter" {
                Vec::new()
            } else {
                crate::nl::attr(elem.payload, NFTA_EXPR_DATA)
                    .unwrap_or(&[])
                    .to_vec()
            };
            (name, data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn names(s: &str) -> Vec<String> {
        let e = encode(&args(s)).expect("encodes");
        without_counters(&e.exprs.buf)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn expressions_come_in_iptables_nft_order() {
        assert_eq!(
            names(
                "-s 172.17.0.3/32 -d 172.17.0.2/32 -i docker0 -o docker0 -p tcp -m tcp --dport 5432 -j ACCEPT"
            ),
            [
                "meta",
                "cmp",
                "meta",
                "cmp",
                "meta",
                "cmp",
                "payload",
                "cmp",
                "payload",
                "cmp",
                "payload",
                "cmp",
                "counter",
                "immediate"
            ]
        );
        assert_eq!(
            names("-s 10.1.16.0/20 ! -o docker0 -j MASQUERADE"),
            [
                "meta", "cmp", "payload", "bitwise", "cmp", "counter", "target"
            ]
        );
        assert_eq!(
            names("! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER"),
            ["payload", "cmp", "match", "counter", "immediate"]
        );
        assert_eq!(names("-j RETURN"), ["counter", "immediate"]);
    }

    #[test]
    fn unknown_arguments_are_unsupported_not_guessed() {
        for bad in [
            "-p sctp -m sctp --dport 80 -j ACCEPT",
            "-m comment --comment x -j ACCEPT",
            "-j LOG",
            "! -p tcp -j ACCEPT",
            "-m tcp --dport 80 -j ACCEPT",
            "-d 300.1.1.1 -j ACCEPT",
            "-j DNAT",
            "!",
        ] {
            assert!(encode(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_interfaces_compare_a_prefix() {
        assert_eq!(ifname_bytes("docker0"), b"docker0\0");
        assert_eq!(ifname_bytes("br-+"), b"br-");
    }

    #[test]
    fn counters_do_not_take_part_in_comparisons() {
        let a = encode(&args("-o docker0 -j DOCKER")).expect("encodes");
        let mut counted = Attrs::new();
        for elem in crate::nl::attrs(&a.exprs.buf) {
            let name = crate::nl::attr(elem.payload, NFTA_EXPR_NAME).map(crate::nl::str_of);
            if name == Some("counter") {
                let mut d = Attrs::new();
                d.be64(NFTA_COUNTER_BYTES, 1500)
                    .be64(NFTA_COUNTER_PACKETS, 3);
                expr(&mut counted, "counter", &d);
            } else {
                counted.put(NFTA_LIST_ELEM, elem.payload);
            }
        }
        assert_ne!(counted.buf, a.exprs.buf);
        assert_eq!(
            without_counters(&counted.buf),
            without_counters(&a.exprs.buf)
        );
    }

    #[test]
    fn dnat_carries_address_and_port() {
        let info = dnat_info("172.17.0.2:80").expect("parses");
        assert_eq!(info.len(), 48);
        assert_eq!(&info[4..8], &[172, 17, 0, 2]);
        assert_eq!(&info[36..38], &80u16.to_be_bytes());
        assert_eq!(u32::from_ne_bytes(info[0..4].try_into().expect("4")), 3);
    }
}
