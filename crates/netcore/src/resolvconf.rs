//! The nameservers a resolv.conf names, parsed as Docker 1.x's `pkg/networkfs/resolvconf` did.
//!
//! Docker split the file on `\n`, cut each line at its first `#`, and matched what remained
//! against `^\s*nameserver\s*(([0-9]+\.){3}([0-9]+))\s*$`. The matcher below is that regular
//! expression written out by hand (no regex engine for one fixed pattern). Its consequences are
//! kept on purpose:
//! - `\s` is RE2's `[\t\n\f\r ]` (no vertical tab), which is exactly
//!   [`u8::is_ascii_whitespace`];
//! - `\s*` after `nameserver` allows no space at all, so `nameserver1.2.3.4` matches;
//! - only dotted-quad IPv4 addresses match: IPv6 nameservers and `;` comments are ignored;
//! - `nameserver` is case-sensitive.
//!
//! A dotted quad whose parts exceed 255 matched Docker's regex, but Docker's later `ParseCIDR`
//! of it failed; it names no address, so it is dropped here. Each part is read as a decimal
//! number, leading zeros included, as Go's `net.ParseIP` of that era (before Go 1.17) did.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The IPv4 nameservers named in a resolv.conf's text, in file order (duplicates kept).
pub fn nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.split('\n')
        .map(|line| line.find('#').map_or(line, |hash| &line[..hash]))
        .filter_map(match_nameserver_line)
        .collect()
}

/// The same nameservers as `/32` networks: Docker's `GetNameserversAsCIDR`.
pub fn nameservers_as_cidr(text: &str) -> Vec<Ipv4Net> {
    nameservers(text).into_iter().map(Ipv4Net::from).collect()
}

/// `^\s*nameserver\s*(([0-9]+\.){3}([0-9]+))\s*$` over one comment-stripped line.
fn match_nameserver_line(line: &str) -> Option<Ipv4Addr> {
    let rest = line.trim_start_matches(is_re2_space);
    let rest = rest.strip_prefix("nameserver")?;
    let rest = rest.trim_start_matches(is_re2_space);
    // The address is followed only by whitespace up to the end of the line. Because `[0-9]` and
    // `.` are not whitespace, trimming the end cannot eat into the address.
    let quad = rest.trim_end_matches(is_re2_space);
    parse_dotted_quad(quad)
}

/// RE2's `\s`: `[\t\n\f\r ]`.
fn is_re2_space(c: char) -> bool {
    c.is_ascii_whitespace()
}

/// `([0-9]+\.){3}([0-9]+)` in full, each part a decimal of at most 255.
fn parse_dotted_quad(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        *octet = parse_decimal_octet(parts.next()?)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// `[0-9]+` with a value of at most 255 (leading zeros allowed).
fn parse_decimal_octet(part: &str) -> Option<u8> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = part.trim_start_matches('0');
    if digits.len() > 3 {
        return None;
    }
    // `digits` is empty for an all-zero part; `u16` holds any three digits.
    let value = digits
        .bytes()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test IP")
    }

    // resolvconf_test.go TestGetNameservers.
    #[test]
    fn upstream_get_nameservers_cases() {
        assert_eq!(nameservers(""), Vec::<Ipv4Addr>::new());
        assert_eq!(nameservers("  nameserver 1.2.3.4   "), vec![ip("1.2.3.4")]);
        assert_eq!(
            nameservers("search example.com\nnameserver 1.2.3.4\nnameserver 4.3.2.1"),
            vec![ip("1.2.3.4"), ip("4.3.2.1")]
        );
        assert_eq!(
            nameservers("search example.com\nnameserver 1.2.3.4\n#nameserver 4.3.2.1"),
            vec![ip("1.2.3.4")]
        );
        assert_eq!(
            nameservers("search example.com\nnameserver 1.2.3.4 # not 4.3.2.1"),
            vec![ip("1.2.3.4")]
        );
    }

    // resolvconf_test.go TestGetNameserversAsCIDR.
    #[test]
    fn upstream_get_nameservers_as_cidr_cases() {
        let cidr = |s: &str| -> Ipv4Net { s.parse().expect("test CIDR") };
        assert_eq!(nameservers_as_cidr(""), Vec::<Ipv4Net>::new());
        assert_eq!(
            nameservers_as_cidr("  nameserver 1.2.3.4   "),
            vec![cidr("1.2.3.4/32")]
        );
        assert_eq!(
            nameservers_as_cidr("search example.com\nnameserver 1.2.3.4\nnameserver 4.3.2.1"),
            vec![cidr("1.2.3.4/32"), cidr("4.3.2.1/32")]
        );
        assert_eq!(
            nameservers_as_cidr("search example.com\nnameserver 1.2.3.4 # not 4.3.2.1"),
            vec![cidr("1.2.3.4/32")]
        );
        assert_eq!(
            nameservers_as_cidr("  nameserver 1.2.3.4   ")
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["1.2.3.4/32"]
        );
    }

    #[test]
    fn the_regex_quirks_are_kept() {
        // `\s*` allows no space between the keyword and the address.
        assert_eq!(nameservers("nameserver1.2.3.4"), vec![ip("1.2.3.4")]);
        // Tabs, CR (a CRLF file) and form feeds are `\s`.
        assert_eq!(
            nameservers("\tnameserver\t8.8.8.8\r\n"),
            vec![ip("8.8.8.8")]
        );
        assert_eq!(
            nameservers("\x0cnameserver 8.8.4.4\x0c"),
            vec![ip("8.8.4.4")]
        );
        // A vertical tab is not RE2's `\s`.
        assert_eq!(nameservers("nameserver\x0b8.8.8.8"), Vec::<Ipv4Addr>::new());
        // Leading zeros are decimal, as old Go's ParseIP read them.
        assert_eq!(nameservers("nameserver 010.001.0.09"), vec![ip("10.1.0.9")]);
    }

    #[test]
    fn non_matching_lines_are_ignored() {
        let text = [
            "nameserver ::1",
            "nameserver 2001:4860:4860::8888",
            "Nameserver 1.1.1.1",
            "nameserver 1.2.3",
            "nameserver 1.2.3.4.5",
            "nameserver 1.2.3.4 extra",
            "nameserver 1.2.3.4; comment",
            "nameserver 256.1.1.1",
            "nameserver 1..2.3",
            "nameserver +1.2.3.4",
            "domain nameserver 1.2.3.4",
            "options ndots:2",
        ]
        .join("\n");
        assert_eq!(nameservers(&text), Vec::<Ipv4Addr>::new());
    }

    #[test]
    fn order_and_duplicates_are_kept() {
        assert_eq!(
            nameservers("nameserver 9.9.9.9\nnameserver 1.1.1.1\nnameserver 9.9.9.9"),
            vec![ip("9.9.9.9"), ip("1.1.1.1"), ip("9.9.9.9")]
        );
    }

    #[test]
    fn octet_bounds() {
        assert_eq!(parse_decimal_octet("255"), Some(255));
        assert_eq!(parse_decimal_octet("0000255"), Some(255));
        assert_eq!(parse_decimal_octet("000"), Some(0));
        assert_eq!(parse_decimal_octet("256"), None);
        assert_eq!(parse_decimal_octet("1000"), None);
        assert_eq!(parse_decimal_octet(""), None);
    }
}
