//! `dockerd-net`: Docker's bridge networking daemon. This library holds the wiring (flags,
//! backends, persistence, API, client); every decision is `netcore`'s. The binary is
//! `main.rs`, one line.

pub mod api;
pub mod backend;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod flags;
pub mod record;
