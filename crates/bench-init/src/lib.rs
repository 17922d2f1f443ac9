//! Shared by the `cargo xtask bench` binaries: order statistics of timings.

pub mod stats;
