//! Kernel release strings (`uname -r`), parsed as Docker's `pkg/parsers/kernel` does.
//!
//! Docker 1.x used the version to decide whether to give the bridge its own MAC address
//! (`kv.Kernel >= 3 && kv.Major >= 3`), a gate that wrongly refused 4.0-4.2, 5.0-5.2 and so on.
//! libnetwork PR #421 dropped the gate and so does this project: the bridge MAC is set whatever
//! the kernel. The version is kept for logging and diagnostics only.

use std::cmp::Ordering;
use std::fmt;

/// A parsed kernel release: `Kernel.Major.Minor` plus whatever followed (the flavor).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelVersion {
    /// The first number (`3` in `3.8.0-19-generic`).
    pub kernel: u32,
    /// The second number (`8`).
    pub major: u32,
    /// The third number (`0`), or 0 when the release has none.
    pub minor: u32,
    /// The rest (`-19-generic`), empty when nothing followed.
    pub flavor: String,
}

/// A release string that does not start with `<number>.<number>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Can't parse kernel version {0}")]
pub struct KernelVersionError(pub String);

impl KernelVersion {
    /// Parses a release as Docker does: `Sscanf(release, "%d.%d%s")`, at least two numbers
    /// required, then `Sscanf(rest, ".%d%s")`; when that second scan finds no number, the whole
    /// rest is the flavor and the minor is 0.
    ///
    /// Like Go's `%s`, the flavor stops at the first whitespace, and like Go's `%d`, each number
    /// may be preceded by spaces. Numbers are unsigned here: no kernel release is negative.
    pub fn parse(release: &str) -> Result<Self, KernelVersionError> {
        let err = || KernelVersionError(release.to_owned());
        let (kernel, rest) = scan_number(release).ok_or_else(err)?;
        let rest = rest.strip_prefix('.').ok_or_else(err)?;
        let (major, rest) = scan_number(rest).ok_or_else(err)?;
        let partial = scan_token(rest);

        let (minor, flavor) = match partial.strip_prefix('.').and_then(scan_number) {
            Some((minor, after)) => (minor, scan_token(after)),
            None => (0, partial),
        };
        Ok(Self {
            kernel,
            major,
            minor,
            flavor: flavor.to_owned(),
        })
    }

    /// Docker's `CompareKernelVersion`: by kernel, then major, then minor; the flavor is ignored.
    pub fn compare(&self, other: &Self) -> Ordering {
        (self.kernel, self.major, self.minor).cmp(&(other.kernel, other.major, other.minor))
    }

    /// True when this kernel is at least `kernel.major.minor` (flavor ignored).
    pub fn at_least(&self, kernel: u32, major: u32, minor: u32) -> bool {
        (self.kernel, self.major, self.minor) >= (kernel, major, minor)
    }
}

impl std::str::FromStr for KernelVersion {
    type Err = KernelVersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for KernelVersion {
    /// Docker's `KernelVersionInfo.String`: `%d.%d.%d%s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}{}",
            self.kernel, self.major, self.minor, self.flavor
        )
    }
}

/// Go's `%d` (unsigned): optional leading spaces, then one or more decimal digits.
/// Returns the number and what follows it.
fn scan_number(s: &str) -> Option<(u32, &str)> {
    let s = s.trim_start_matches([' ', '\t']);
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let value = s[..end].parse().ok()?;
    Some((value, &s[end..]))
}

/// Go's `%s`: skip leading spaces, then everything up to the next whitespace.
fn scan_token(s: &str) -> &str {
    let s = s.trim_start_matches([' ', '\t']);
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(kernel: u32, major: u32, minor: u32, flavor: &str) -> KernelVersion {
        KernelVersion {
            kernel,
            major,
            minor,
            flavor: flavor.to_owned(),
        }
    }

    // kernel_test.go TestParseRelease.
    #[test]
    fn upstream_release_table() {
        let cases = [
            ("3.8.0", kv(3, 8, 0, "")),
            ("3.4.54.longterm-1", kv(3, 4, 54, ".longterm-1")),
            ("3.8.0-19-generic", kv(3, 8, 0, "-19-generic")),
            ("3.12.8tag", kv(3, 12, 8, "tag")),
            ("3.12-1-amd64", kv(3, 12, 0, "-1-amd64")),
        ];
        for (release, want) in cases {
            assert_eq!(KernelVersion::parse(release), Ok(want), "{release}");
        }
    }

    #[test]
    fn modern_releases() {
        assert_eq!(
            KernelVersion::parse("6.8.0-45-generic"),
            Ok(kv(6, 8, 0, "-45-generic"))
        );
        assert_eq!(KernelVersion::parse("5.10"), Ok(kv(5, 10, 0, "")));
        assert_eq!(
            KernelVersion::parse("4.19.0+"),
            Ok(kv(4, 19, 0, "+")),
            "a plus suffix is the flavor"
        );
        assert_eq!(
            KernelVersion::parse("6.1.0 extra"),
            Ok(kv(6, 1, 0, "")),
            "%s stops at whitespace"
        );
    }

    #[test]
    fn unparsable_releases_name_the_value() {
        for bad in ["", "3", "3.", "a.b.c", ".3.8", "3-8-0", "99999999999.1"] {
            let err = KernelVersion::parse(bad).expect_err(bad);
            assert_eq!(err.to_string(), format!("Can't parse kernel version {bad}"));
        }
    }

    // kernel_test.go TestCompareKernelVersion.
    #[test]
    fn upstream_compare_table() {
        let cases = [
            (kv(3, 8, 0, ""), kv(3, 8, 0, ""), Ordering::Equal),
            (kv(2, 6, 0, ""), kv(3, 8, 0, ""), Ordering::Less),
            (kv(3, 8, 0, ""), kv(2, 6, 0, ""), Ordering::Greater),
            (kv(3, 8, 0, ""), kv(3, 8, 0, ""), Ordering::Equal),
            (kv(3, 8, 5, ""), kv(3, 8, 0, ""), Ordering::Greater),
            (kv(3, 0, 20, ""), kv(3, 8, 0, ""), Ordering::Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.compare(&b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn compare_ignores_the_flavor() {
        assert_eq!(
            kv(3, 8, 0, "-19-generic").compare(&kv(3, 8, 0, "")),
            Ordering::Equal
        );
    }

    #[test]
    fn at_least_and_the_old_gate_it_replaces() {
        let k42 = kv(4, 2, 0, "");
        // Docker 1.x's `Kernel >= 3 && Major >= 3` said no to 4.2; ordering says yes.
        assert!(!(k42.kernel >= 3 && k42.major >= 3));
        assert!(k42.at_least(3, 3, 0));
        assert!(!kv(3, 2, 9, "").at_least(3, 3, 0));
    }

    #[test]
    fn display_round_trips_dockers_format() {
        assert_eq!(
            KernelVersion::parse("3.8.0-19-generic")
                .map(|k| k.to_string())
                .as_deref(),
            Ok("3.8.0-19-generic")
        );
        assert_eq!(kv(3, 12, 0, "-1-amd64").to_string(), "3.12.0-1-amd64");
    }
}
