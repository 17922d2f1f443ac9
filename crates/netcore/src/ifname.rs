//! Interface names: what the kernel accepts, checked before anything touches the host.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `IFNAMSIZ` in `<linux/if.h>`: names are at most 15 bytes plus the NUL.
pub const IFNAMSIZ: usize = 16;

/// Why a string is not a usable interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    #[error("invalid interface name {0:?}: empty")]
    Empty(String),
    /// Docker's own text for this case (`netlink.CreateBridge`).
    #[error("Interface name {0} too long")]
    TooLong(String),
    #[error("invalid interface name {0:?}: it may not contain '/', ':', whitespace or NUL")]
    BadChar(String),
    #[error("invalid interface name {0:?}: '.' and '..' are reserved")]
    Reserved(String),
}

/// A valid Linux interface name: 1 to 15 bytes, no `/`, `:`, whitespace or NUL (the
/// kernel's `dev_valid_name()` plus `:`, which `ip link add` refuses and which ioctls would
/// read as an alias label of another interface).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    /// Checks `name` against the kernel's `dev_valid_name()` rules.
    pub fn new(name: &str) -> Result<Self, IfNameError> {
        if name.is_empty() {
            return Err(IfNameError::Empty(name.to_owned()));
        }
        if name.len() >= IFNAMSIZ {
            return Err(IfNameError::TooLong(name.to_owned()));
        }
        if name == "." || name == ".." {
            return Err(IfNameError::Reserved(name.to_owned()));
        }
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        {
            return Err(IfNameError::BadChar(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IfName {
    type Err = IfNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for IfName {
    type Error = IfNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["docker0", "br-1234567890ab", "eth0.100", "x"] {
            assert_eq!(IfName::new(n).map(|n| n.to_string()), Ok(n.to_owned()));
        }
    }

    #[test]
    fn rejects_bad_names_naming_the_value() {
        let long = "a".repeat(16);
        assert_eq!(
            IfName::new(&long).map_err(|e| e.to_string()),
            Err(format!("Interface name {long} too long"))
        );
        assert!(IfName::new(&"a".repeat(15)).is_ok());
        for bad in ["a/b", "a b", "a\tb", "a\0b", "a\nb", "br0:1"] {
            let err = IfName::new(bad).expect_err(bad);
            assert!(matches!(err, IfNameError::BadChar(_)), "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")));
        }
        assert!(matches!(IfName::new(""), Err(IfNameError::Empty(_))));
        assert!(matches!(IfName::new(".."), Err(IfNameError::Reserved(_))));
    }

    #[test]
    fn serde_validates() {
        let ok: IfName = serde_json::from_str("\"docker0\"").expect("valid");
        assert_eq!(ok.as_str(), "docker0");
        assert!(serde_json::from_str::<IfName>("\"a/b\"").is_err());
    }
}
