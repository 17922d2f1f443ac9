//! The iptables rules Docker installs, as data.
//!
//! (Skeleton: the shared types. The rule set, rendering and diffing are filled in below.)

use std::fmt;

use serde::{Deserialize, Serialize};

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
}

/// One atomic change to one table: the body of an `iptables-restore --noflush` input
/// (lines such as `:DOCKER - [0:0]`, `-A DOCKER ...`, `-I FORWARD 1 ...`, `-D ...`, `-X DOCKER`),
/// without the `*table` header and `COMMIT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub table: Table,
    pub lines: Vec<String>,
}
