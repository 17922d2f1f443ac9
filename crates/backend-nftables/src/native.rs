//! dockerd-net's own nftables table (`--firewall-backend nftables`, see
//! `netcore::nftables`) turned into nf_tables netlink, and its set elements read back.
//!
//! Every message is what `nft` 1.0.6 sends for the same text (checked with `strace` on
//! `nft -f`; `nft --debug=netlink` shows the expressions): the same expressions, registers,
//! set key types and set user data. That is what makes `nft list table ip docker-bridges`
//! print exactly [`NftTable::render`] for a table made here, and what lets an administrator
//! read, and `nft` edit, our table as if `nft` had made it. Two framing details differ and
//! change nothing the kernel keeps: nests are sent without `NLA_F_NESTED` (the kernel ignores
//! the flag, and the encoders shared with the iptables path leave it off to match dumps), and
//! a `bitwise` carries `NFTA_BITWISE_OP` = bool, the kernel's default when it is absent.
//!
//! A slice of [`NftOp`]s is one nf_tables transaction: the kernel applies all of it or none.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use netcore::nftables::{
    self, Action, Cmp, Element, Field, Hook, Match, NftChain, NftOp, NftRule, NftTable, Sel,
    SetDef, Val,
};
use netcore::ports::Proto;

use crate::expr::{
    self, NF_ACCEPT, NF_DROP, NFT_JUMP, NFT_META_IIFNAME, NFT_META_L4PROTO, NFT_META_OIFNAME,
    NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER, REG_1,
};
use crate::nl::{self, Attrs, NlError, Request};
use crate::nl::{
    NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY, NFTA_CHAIN_TABLE, NFTA_CHAIN_TYPE,
    NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_TABLE,
    NFTA_TABLE_NAME,
};

// <linux/netfilter/nf_tables.h>
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFT_SET_MAP: u32 = 0x8;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_FIB_F_SADDR: u32 = 1 << 0;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFT_NAT_DNAT: u32 = 1;
/// `NFT_REG32_00`: the first of the 4-byte registers that overlay `NFT_REG_1`..`NFT_REG_4`.
const NFT_REG32_00: u32 = 8;
/// `RTN_LOCAL` (`<linux/rtnetlink.h>`), what `fib ... type local` compares with.
const RTN_LOCAL: u32 = 2;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
const CT_ESTABLISHED_RELATED: u32 = (1 << 1) | (1 << 2);
/// `IFNAMSIZ`: nft compares an interface name as a NUL-padded 16-byte string.
const IFNAMSIZ: usize = 16;
const NFPROTO_IPV4: u32 = nl::NFPROTO_IPV4 as u32;

// nft's datatype ids (`enum datatypes` in nftables' `datatype.h`) and the bits per id in a
// concatenated type (`TYPE_BITS`).
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

// nft's set user data (`NFTNL_UDATA_SET_*`), which `nft list` reads back to print the
// elements' byte order and the `type` line as it was written.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
/// nft's `enum byteorder`: a concatenation has none (`BYTEORDER_INVALID`), addresses and
/// ports are big-endian.
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// What nft 1.0.6 stores as the "typeof" of a concatenated key or data declared with `type`:
/// one sub-nest whose type is the concatenation (`EXPR_CONCAT`) and whose data is empty. The
/// bytes are the same whatever the fields (checked for several concatenations).
const UDATA_CONCAT_TYPEOF: [u8; 8] = [0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x00];

fn hook_num(h: Hook) -> u32 {
    // NF_INET_PRE_ROUTING 0, LOCAL_IN 1, FORWARD 2, LOCAL_OUT 3, POST_ROUTING 4.
    match h {
        Hook::NatPrerouting => 0,
        Hook::FilterForward => 2,
        Hook::NatOutput => 3,
        Hook::NatPostrouting => 4,
    }
}

fn type_id(f: Field) -> u32 {
    match f {
        Field::Ipv4Addr => TYPE_IPADDR,
        Field::InetProto => TYPE_INET_PROTOCOL,
        Field::InetService => TYPE_INET_SERVICE,
    }
}

/// nft's id of a (possibly concatenated) type: each field's id shifted in, first field
/// highest (`concat_type_alloc`).
fn concat_type(fields: &[Field]) -> u32 {
    fields
        .iter()
        .fold(0, |id, f| (id << TYPE_BITS) | type_id(*f))
}

/// A key's or data's length: one field takes its own size, a concatenation rounds each field
/// up to a 4-byte register.
fn fields_len(fields: &[Field]) -> u32 {
    match fields {
        [one] => one.byte_len() as u32,
        many => many
            .iter()
            .map(|f| f.byte_len().next_multiple_of(4) as u32)
            .sum(),
    }
}

/// nft's byte order of a key or data (see [`BYTEORDER_INVALID`]); a lone `inet_proto` is one
/// byte and has none either.
fn byteorder(fields: &[Field]) -> u32 {
    match fields {
        [Field::Ipv4Addr | Field::InetService] => BYTEORDER_BIG_ENDIAN,
        _ => BYTEORDER_INVALID,
    }
}

/// The set's `NFTA_SET_USERDATA`, as nft 1.0.6 writes it for a `type` declaration: key byte
/// order, for a map data byte order, the concatenations' "typeof" marks, and for a map "data
/// is not an interval".
fn set_userdata(set: &SetDef) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
        out.push(ty);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }
    let mut out = Vec::new();
    put(
        &mut out,
        UDATA_SET_KEYBYTEORDER,
        &byteorder(&set.key).to_ne_bytes(),
    );
    if let Some(data) = &set.data {
        put(
            &mut out,
            UDATA_SET_DATABYTEORDER,
            &byteorder(data).to_ne_bytes(),
        );
    }
    if set.key.len() > 1 {
        put(&mut out, UDATA_SET_KEY_TYPEOF, &UDATA_CONCAT_TYPEOF);
    }
    if let Some(data) = &set.data {
        if data.len() > 1 {
            put(&mut out, UDATA_SET_DATA_TYPEOF, &UDATA_CONCAT_TYPEOF);
        }
        put(&mut out, UDATA_SET_DATA_INTERVAL, &0u32.to_ne_bytes());
    }
    out
}

/// The register of the `n`th 4-byte field of a concatenation, numbered as nft sends it
/// (`netlink_put_register`): a field that starts a 16-byte register is named by that register
/// (`NFT_REG_1`, `NFT_REG_2`...), any other by its 4-byte register (`NFT_REG32_01`...).
fn reg32(n: u32) -> u32 {
    if n.is_multiple_of(4) {
        REG_1 + n / 4
    } else {
        NFT_REG32_00 + n
    }
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Sctp => 132,
    }
}

fn proto_of(n: u8) -> Option<Proto> {
    match n {
        6 => Some(Proto::Tcp),
        17 => Some(Proto::Udp),
        132 => Some(Proto::Sctp),
        _ => None,
    }
}

/// A key's or data's bytes: one value as is, a concatenation with each value padded to 4.
fn values_bytes(vals: &[Val]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * vals.len());
    for v in vals {
        match v {
            Val::Addr(a) => out.extend_from_slice(&a.octets()),
            Val::Proto(p) => out.push(proto_number(*p)),
            Val::Port(p) => out.extend_from_slice(&p.to_be_bytes()),
        }
        if vals.len() > 1 {
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
    }
    out
}

/// The values of a key or data read back, by the set's fields (the inverse of
/// [`values_bytes`]); `None` when the bytes do not fit the fields.
fn values_of(fields: &[Field], bytes: &[u8]) -> Option<Vec<Val>> {
    let stride = |f: Field| {
        if fields.len() > 1 {
            f.byte_len().next_multiple_of(4)
        } else {
            f.byte_len()
        }
    };
    let mut out = Vec::with_capacity(fields.len());
    let mut rest = bytes;
    for f in fields {
        let b = rest.get(..f.byte_len())?;
        out.push(match f {
            Field::Ipv4Addr => Val::Addr(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            Field::InetProto => Val::Proto(proto_of(b[0])?),
            Field::InetService => Val::Port(u16::from_be_bytes([b[0], b[1]])),
        });
        rest = rest.get(stride(*f)..)?;
    }
    rest.is_empty().then_some(out)
}

fn ifname(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    // A name of 16 bytes or more is sent whole: the kernel refuses it, as nft does.
    if v.len() < IFNAMSIZ {
        v.resize(IFNAMSIZ, 0);
    }
    v
}

/// Loads each selector into consecutive 4-byte registers, starting at `NFT_REG_1`: the
/// concatenated key a lookup reads.
fn load_concat(list: &mut Attrs, sels: &[Sel]) {
    for (n, sel) in (0u32..).zip(sels) {
        let reg = reg32(n);
        match sel {
            Sel::IpSaddr => expr::payload_into(list, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, reg),
            Sel::IpDaddr => expr::payload_into(list, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, reg),
            Sel::L4Proto => expr::meta_into(list, NFT_META_L4PROTO, reg),
            Sel::ThSport => expr::payload_into(list, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, reg),
            Sel::ThDport => expr::payload_into(list, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg),
        }
    }
}

fn lookup(list: &mut Attrs, set: &str, set_id: Option<u32>, map: bool) {
    let mut d = Attrs::new();
    d.be32(NFTA_LOOKUP_SREG, REG_1);
    if map {
        d.be32(NFTA_LOOKUP_DREG, REG_1);
    }
    d.str(NFTA_LOOKUP_SET, set);
    // A set created in the same transaction is found by its id too (as nft sends it).
    if let Some(id) = set_id {
        d.be32(NFTA_LOOKUP_SET_ID, id);
    }
    expr::expr(list, "lookup", &d);
}

fn fib_local(list: &mut Attrs, flag: u32) {
    let mut d = Attrs::new();
    d.be32(NFTA_FIB_FLAGS, flag)
        .be32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
        .be32(NFTA_FIB_DREG, REG_1);
    expr::expr(list, "fib", &d);
    // The address type is a host-order u32 in the register.
    expr::cmp(list, false, &RTN_LOCAL.to_ne_bytes());
}

/// A rule's expressions. `set_ids` names the sets created by the same transaction.
fn rule_exprs(rule: &NftRule, set_ids: &HashMap<&str, u32>) -> Attrs {
    let mut list = Attrs::new();
    for m in &rule.matches {
        match m {
            Match::Iifname(c, n) => {
                expr::meta(&mut list, NFT_META_IIFNAME);
                expr::cmp(&mut list, *c == Cmp::Ne, &ifname(n));
            }
            Match::Oifname(c, n) => {
                expr::meta(&mut list, NFT_META_OIFNAME);
                expr::cmp(&mut list, *c == Cmp::Ne, &ifname(n));
            }
            // nft, like iptables-nft, loads only a byte-aligned prefix's bytes and masks the
            // others: the shared encoder does exactly that.
            Match::Saddr(c, net) => {
                expr::address(&mut list, 12, *c == Cmp::Ne, net.addr(), net.prefix_len());
            }
            Match::Daddr(c, net) => {
                expr::address(&mut list, 16, *c == Cmp::Ne, net.addr(), net.prefix_len());
            }
            Match::CtEstablishedRelated => {
                let mut d = Attrs::new();
                d.be32(NFTA_CT_KEY, NFT_CT_STATE).be32(NFTA_CT_DREG, REG_1);
                expr::expr(&mut list, "ct", &d);
                // The state bits are a host-order u32.
                expr::bitwise(&mut list, &CT_ESTABLISHED_RELATED.to_ne_bytes());
                expr::cmp(&mut list, true, &[0; 4]);
            }
            Match::FibDaddrLocal => fib_local(&mut list, NFTA_FIB_F_DADDR),
            Match::FibSaddrLocal => fib_local(&mut list, NFTA_FIB_F_SADDR),
            Match::InSet(sels, set) => {
                load_concat(&mut list, sels);
                lookup(&mut list, set, set_ids.get(set).copied(), false);
            }
        }
    }
    match &rule.action {
        Action::Accept => expr::immediate(&mut list, NF_ACCEPT, None),
        Action::Drop => expr::immediate(&mut list, NF_DROP, None),
        Action::Jump(chain) => expr::immediate(&mut list, NFT_JUMP, Some(chain)),
        Action::Masquerade => expr::expr(&mut list, "masq", &Attrs::new()),
        Action::DnatMap(sels, map) => {
            load_concat(&mut list, sels);
            lookup(&mut list, map, set_ids.get(map).copied(), true);
            // The map's data `ipv4_addr . inet_service` lands in REG_1 and the 4-byte
            // register after it. No NFTA_NAT_FLAGS: the kernel sets MAP_IPS and
            // PROTO_SPECIFIED itself from the registers given, and nft sends none.
            let mut d = Attrs::new();
            d.be32(NFTA_NAT_TYPE, NFT_NAT_DNAT)
                .be32(NFTA_NAT_FAMILY, NFPROTO_IPV4)
                .be32(NFTA_NAT_REG_ADDR_MIN, REG_1)
                .be32(NFTA_NAT_REG_PROTO_MIN, reg32(1));
            expr::expr(&mut list, "nat", &d);
        }
    }
    list
}

fn table_req(msg: u16, what: &str) -> Request {
    let mut a = Attrs::new();
    a.str(NFTA_TABLE_NAME, nftables::TABLE);
    Request {
        msg,
        flags: if msg == nl::NFT_MSG_NEWTABLE {
            nl::NLM_F_CREATE
        } else {
            0
        },
        attrs: a,
        what: format!("{what} table ip {}", nftables::TABLE),
    }
}

fn set_req(set: &SetDef, id: u32) -> Request {
    let mut a = Attrs::new();
    a.str(NFTA_SET_TABLE, nftables::TABLE)
        .str(NFTA_SET_NAME, set.name)
        .be32(
            NFTA_SET_FLAGS,
            if set.data.is_some() { NFT_SET_MAP } else { 0 },
        )
        .be32(NFTA_SET_KEY_TYPE, concat_type(&set.key))
        .be32(NFTA_SET_KEY_LEN, fields_len(&set.key));
    if let Some(data) = &set.data {
        a.be32(NFTA_SET_DATA_TYPE, concat_type(data))
            .be32(NFTA_SET_DATA_LEN, fields_len(data));
    }
    a.be32(NFTA_SET_ID, id)
        .put(NFTA_SET_USERDATA, &set_userdata(set));
    Request {
        msg: nl::NFT_MSG_NEWSET,
        flags: nl::NLM_F_CREATE,
        attrs: a,
        what: format!(
            "add {} {}",
            if set.data.is_some() { "map" } else { "set" },
            set.name
        ),
    }
}

fn chain_req(chain: &NftChain) -> Request {
    let mut a = Attrs::new();
    a.str(NFTA_CHAIN_TABLE, nftables::TABLE)
        .str(NFTA_CHAIN_NAME, &chain.name);
    if let Some(hook) = chain.hook {
        let (prio, _) = hook.priority();
        let mut h = Attrs::new();
        h.be32(NFTA_HOOK_HOOKNUM, hook_num(hook))
            .be32(NFTA_HOOK_PRIORITY, prio as u32);
        a.str(NFTA_CHAIN_TYPE, hook.chain_type())
            .be32(NFTA_CHAIN_POLICY, NF_ACCEPT as u32)
            .nest(NFTA_CHAIN_HOOK, &h);
    }
    Request {
        msg: nl::NFT_MSG_NEWCHAIN,
        flags: nl::NLM_F_CREATE,
        attrs: a,
        what: format!("add chain {}", chain.name),
    }
}

fn rule_req(chain: &str, rule: &NftRule, set_ids: &HashMap<&str, u32>) -> Request {
    let mut a = Attrs::new();
    a.str(NFTA_RULE_TABLE, nftables::TABLE)
        .str(NFTA_RULE_CHAIN, chain)
        .nest(NFTA_RULE_EXPRESSIONS, &rule_exprs(rule, set_ids));
    Request {
        msg: nl::NFT_MSG_NEWRULE,
        flags: nl::NLM_F_CREATE | nl::NLM_F_APPEND,
        attrs: a,
        what: format!("add rule to chain {chain}: {}", rule.render()),
    }
}

/// One `NEWSETELEM`/`DELSETELEM` per set, in the order the sets first appear. An add is
/// exclusive (`NLM_F_EXCL`): an element already there fails the transaction, because the
/// caller's idea of the kernel is then wrong.
fn elem_reqs(add: bool, elements: &[Element], set_ids: &HashMap<&str, u32>) -> Vec<Request> {
    let mut by_set: Vec<(&'static str, Vec<&Element>)> = Vec::new();
    for e in elements {
        match by_set.iter_mut().find(|(s, _)| *s == e.set) {
            Some((_, v)) => v.push(e),
            None => by_set.push((e.set, vec![e])),
        }
    }
    by_set
        .into_iter()
        .map(|(set, elems)| {
            let mut list = Attrs::new();
            for e in &elems {
                let mut key = Attrs::new();
                key.put(expr::NFTA_DATA_VALUE, &values_bytes(&e.key));
                let mut elem = Attrs::new();
                elem.nest(NFTA_SET_ELEM_KEY, &key);
                if add && !e.data.is_empty() {
                    let mut data = Attrs::new();
                    data.put(expr::NFTA_DATA_VALUE, &values_bytes(&e.data));
                    elem.nest(NFTA_SET_ELEM_DATA, &data);
                }
                list.nest(expr::NFTA_LIST_ELEM, &elem);
            }
            let mut a = Attrs::new();
            a.str(NFTA_SET_ELEM_LIST_TABLE, nftables::TABLE)
                .str(NFTA_SET_ELEM_LIST_SET, set);
            if let Some(id) = set_ids.get(set) {
                a.be32(NFTA_SET_ELEM_LIST_SET_ID, *id);
            }
            a.nest(NFTA_SET_ELEM_LIST_ELEMENTS, &list);
            // The kernel stops at the first element it refuses and does not say which one
            // (that would take extended acks): with one element, the text names it exactly.
            let rendered: Vec<String> = elems.iter().map(|e| e.render()).collect();
            let (verb, prep) = if add {
                ("add", "to")
            } else {
                ("delete", "from")
            };
            let noun = if elems.len() == 1 {
                "element"
            } else {
                "elements"
            };
            Request {
                msg: if add {
                    nl::NFT_MSG_NEWSETELEM
                } else {
                    nl::NFT_MSG_DELSETELEM
                },
                flags: if add {
                    nl::NLM_F_CREATE | nl::NLM_F_EXCL
                } else {
                    0
                },
                attrs: a,
                what: format!("{verb} {noun} {} {prep} {set}", rendered.join(", ")),
            }
        })
        .collect()
}

/// The requests of one transaction for `ops`, in order.
pub(crate) fn requests(ops: &[NftOp]) -> Vec<Request> {
    let mut reqs = Vec::new();
    // Sets created by this transaction, by name: rules and elements refer to them by id too.
    let mut set_ids: HashMap<&str, u32> = HashMap::new();
    let mut next_id = 0u32;
    for op in ops {
        match op {
            NftOp::ReplaceTable { table, elements } => {
                replace(&mut reqs, table, &mut set_ids, &mut next_id);
                reqs.extend(elem_reqs(true, elements, &set_ids));
            }
            NftOp::DeleteTable => {
                // Creating it first makes the delete succeed whether or not it existed.
                reqs.push(table_req(nl::NFT_MSG_NEWTABLE, "create"));
                reqs.push(table_req(nl::NFT_MSG_DELTABLE, "delete"));
                set_ids.clear();
            }
            NftOp::AddElements(e) => reqs.extend(elem_reqs(true, e, &set_ids)),
            NftOp::DelElements(e) => reqs.extend(elem_reqs(false, e, &set_ids)),
        }
    }
    reqs
}

fn replace<'a>(
    reqs: &mut Vec<Request>,
    table: &'a NftTable,
    set_ids: &mut HashMap<&'a str, u32>,
    next_id: &mut u32,
) {
    // Create-then-delete removes any old table with everything in it (the delete of an
    // absent table would fail); the table made after it starts empty.
    reqs.push(table_req(nl::NFT_MSG_NEWTABLE, "create"));
    reqs.push(table_req(nl::NFT_MSG_DELTABLE, "delete"));
    reqs.push(table_req(nl::NFT_MSG_NEWTABLE, "create"));
    set_ids.clear();
    for set in &table.sets {
        *next_id += 1;
        set_ids.insert(set.name, *next_id);
        reqs.push(set_req(set, *next_id));
    }
    // Every chain before any rule: a rule may jump to a chain listed after its own.
    reqs.extend(table.chains.iter().map(chain_req));
    for chain in &table.chains {
        for rule in &chain.rules {
            reqs.push(rule_req(&chain.name, rule, set_ids));
        }
    }
}

/// Why the elements could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Nl(#[from] NlError),
    /// An element whose bytes do not fit its set's fields (someone else's element).
    #[error("set {set}: an element does not decode as {fields}")]
    Undecodable { set: &'static str, fields: String },
}

/// The sets and maps of our table: the same for every option set, so any options do.
pub(crate) fn our_sets() -> Vec<SetDef> {
    nftables::sets()
}

/// The dump request for a set's elements.
pub(crate) fn elements_dump(set: &str) -> Attrs {
    let mut a = Attrs::new();
    a.str(NFTA_SET_ELEM_LIST_TABLE, nftables::TABLE)
        .str(NFTA_SET_ELEM_LIST_SET, set);
    a
}

/// Decodes the replies to [`elements_dump`] of `set`.
pub(crate) fn decode_elements(
    set: &SetDef,
    replies: &[Vec<u8>],
) -> Result<Vec<Element>, ReadError> {
    let bad = || ReadError::Undecodable {
        set: set.name,
        fields: set
            .key
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(" . "),
    };
    let mut out = Vec::new();
    for r in replies {
        if nl::attr(r, NFTA_SET_ELEM_LIST_SET).map(nl::str_of) != Some(set.name) {
            continue;
        }
        let Some(list) = nl::attr(r, NFTA_SET_ELEM_LIST_ELEMENTS) else {
            continue;
        };
        for elem in nl::attrs(list).filter(|a| a.ty == expr::NFTA_LIST_ELEM) {
            let value =
                |ty| nl::attr(elem.payload, ty).and_then(|d| nl::attr(d, expr::NFTA_DATA_VALUE));
            let key = value(NFTA_SET_ELEM_KEY)
                .and_then(|k| values_of(&set.key, k))
                .ok_or_else(bad)?;
            let data = match &set.data {
                Some(fields) => value(NFTA_SET_ELEM_DATA)
                    .and_then(|d| values_of(fields, d))
                    .ok_or_else(bad)?,
                None => Vec::new(),
            };
            out.push(Element {
                set: set.name,
                key,
                data,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_types_are_numbered_as_nft_numbers_them() {
        use Field::*;
        // Values from `nft --debug=netlink` / strace of nft 1.0.6.
        assert_eq!(concat_type(&[InetProto, InetService]), 0x30d);
        assert_eq!(concat_type(&[Ipv4Addr, InetProto, InetService]), 0x730d);
        assert_eq!(
            concat_type(&[Ipv4Addr, Ipv4Addr, InetProto, InetService]),
            0x1c730d
        );
        assert_eq!(concat_type(&[Ipv4Addr, InetService]), 0x1cd);
        assert_eq!(fields_len(&[Ipv4Addr, InetProto, InetService]), 12);
        assert_eq!(fields_len(&[InetService]), 2);
    }

    #[test]
    fn set_userdata_is_what_nft_writes() {
        use Field::*;
        let map = SetDef {
            name: "m",
            key: vec![InetProto, InetService],
            data: Some(vec![Ipv4Addr, InetService]),
        };
        let hex: String = set_userdata(&map)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "000400000000010400000000030800040d0000000100040800040d0000000100060400000000"
        );
        let set = SetDef {
            name: "s",
            key: vec![Ipv4Addr, InetProto, InetService],
            data: None,
        };
        let hex: String = set_userdata(&set)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "000400000000030800040d0000000100");
    }

    #[test]
    fn registers_follow_nft_numbering() {
        assert_eq!(
            [reg32(0), reg32(1), reg32(2), reg32(3), reg32(4)],
            [1, 9, 10, 11, 2]
        );
    }

    #[test]
    fn element_values_round_trip() {
        use Field::*;
        let vals = [
            Val::Addr(std::net::Ipv4Addr::new(172, 17, 0, 2)),
            Val::Proto(Proto::Sctp),
            Val::Port(8080),
        ];
        let b = values_bytes(&vals);
        assert_eq!(b, [172, 17, 0, 2, 132, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(
            values_of(&[Ipv4Addr, InetProto, InetService], &b),
            Some(vals.to_vec())
        );
        assert_eq!(values_of(&[Ipv4Addr, InetProto], &b), None);
        assert_eq!(values_bytes(&[Val::Port(80)]), [0, 80]);
    }
}
