//! Shared by the `cargo xtask bench` binaries: release builds of `dockerd-net`, and order
//! statistics of timings.

pub mod build;
pub mod stats;
