//! Shared by the `cargo xtask bench` binaries: release builds of `dockerd-net`, fresh network
//! namespaces, and order statistics of timings.

pub mod build;
pub mod netns;
pub mod stats;
