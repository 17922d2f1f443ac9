//! Parsers for the two `/proc/<thread>/net` files this backend reads. Pure functions over
//! text, so they are tested without a kernel.

use std::net::Ipv4Addr;

/// A line of a `/proc` file that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {reason}: {text:?}")]
pub struct ProcParseError {
    pub file: &'static str,
    /// 1-based.
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Interface names from `net/dev`, in file order.
///
/// The file has two header lines, then one `  name: counters...` line per device. Device
/// names cannot contain `:` (the kernel's `dev_valid_name()` refuses it), so the name is
/// everything before the first colon.
pub fn parse_net_dev(text: &str) -> Result<Vec<String>, ProcParseError> {
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason| ProcParseError {
            file: "net/dev",
            line: i + 1,
            reason,
            text: line.to_owned(),
        };
        let (name, _) = line.split_once(':').ok_or_else(|| err("no ':'"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(err("empty interface name"));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// One line of `net/route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcRoute<'a> {
    /// `None` for `*`: a route without an output device (blackhole, unreachable,
    /// prohibit). A multipath route shows its first nexthop's device and gateway.
    pub iface: Option<&'a str>,
    pub dst: Ipv4Addr,
    /// Set only when the line has `RTF_GATEWAY`.
    pub gateway: Option<Ipv4Addr>,
    pub mask: Ipv4Addr,
}

/// `RTF_GATEWAY` in `<linux/route.h>`.
const RTF_GATEWAY: u32 = 0x0002;

/// Routes from `net/route`.
///
/// The kernel (`fib_route_seq_show`) prints the main table only, skipping broadcast and
/// multicast entries, so local-table routes and other tables never appear; there is no route
/// cache to exclude since Linux 3.6. Addresses are `__be32` values printed with `%08X` as
/// host integers, so the integer's native-endian bytes are the address in network order.
pub fn parse_routes(text: &str) -> Result<Vec<ProcRoute<'_>>, ProcParseError> {
    let mut routes = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason| ProcParseError {
            file: "net/route",
            line: i + 1,
            reason,
            text: line.to_owned(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(err("fewer than 8 fields"));
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).map_err(|_| err("bad hex field"));
        let addr = |s: &str| hex(s).map(|v| Ipv4Addr::from(v.to_ne_bytes()));
        let dst = addr(fields[1])?;
        let gw = addr(fields[2])?;
        let flags = hex(fields[3])?;
        let mask = addr(fields[7])?;
        routes.push(ProcRoute {
            iface: (fields[0] != "*").then_some(fields[0]),
            dst,
            gateway: (flags & RTF_GATEWAY != 0).then_some(gw),
            mask,
        });
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host integer the kernel prints for an address, in this machine's byte order.
    fn k(a: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(a))
    }

    #[test]
    fn net_dev_names_in_order() {
        let text = "Inter-|   Receive                            |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
             lo:       0       0    0    0    0     0          0         0        0\n\
             br-0123456789ab:  1 2 3\n  veth1:0 0 0\n";
        assert_eq!(
            parse_net_dev(text),
            Ok(vec!["lo".into(), "br-0123456789ab".into(), "veth1".into()])
        );
        let bad = "h1\nh2\n  nocolon 1 2\n";
        assert_eq!(parse_net_dev(bad).map_err(|e| e.line), Err(3));
    }

    #[test]
    fn routes_decode_kernel_hex() {
        let text = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t{}\t{}\t0003\t0\t0\t100\t{}\t0\t0\t0   \n\
             br0\t{}\t{}\t0001\t0\t0\t0\t{}\t0\t0\t0\n\
             *\t{}\t{}\t0201\t0\t0\t0\t{}\t0\t0\t0\n",
            k([0, 0, 0, 0]),
            k([192, 168, 1, 1]),
            k([0, 0, 0, 0]),
            k([172, 17, 0, 0]),
            k([0, 0, 0, 0]),
            k([255, 255, 0, 0]),
            k([10, 12, 0, 0]),
            k([0, 0, 0, 0]),
            k([255, 255, 255, 0]),
        );
        let routes = parse_routes(&text).expect("parses");
        assert_eq!(
            routes,
            vec![
                ProcRoute {
                    iface: Some("eth0"),
                    dst: Ipv4Addr::UNSPECIFIED,
                    gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
                    mask: Ipv4Addr::UNSPECIFIED,
                },
                ProcRoute {
                    iface: Some("br0"),
                    dst: Ipv4Addr::new(172, 17, 0, 0),
                    gateway: None,
                    mask: Ipv4Addr::new(255, 255, 0, 0),
                },
                ProcRoute {
                    iface: None,
                    dst: Ipv4Addr::new(10, 12, 0, 0),
                    gateway: None,
                    mask: Ipv4Addr::new(255, 255, 255, 0),
                },
            ]
        );
    }

    #[test]
    fn routes_reject_garbage_with_line_number() {
        let text = "header\neth0\tZZZZZZZZ\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n";
        let err = parse_routes(text).expect_err("bad hex");
        assert_eq!((err.line, err.reason), (2, "bad hex field"));
        let short = "header\neth0\t00000000\n";
        assert_eq!(
            parse_routes(short).map_err(|e| e.reason),
            Err("fewer than 8 fields")
        );
    }
}
