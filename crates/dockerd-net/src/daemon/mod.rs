//! `dockerd-net daemon`: init, then serve the handlers over the API socket until SIGTERM or
//! SIGINT.
//!
//! Threads: the **worker** ([`service`]) owns the backends, the state, the store and the
//! proxies, and serves requests one at a time; a tokio runtime runs the HTTP server
//! ([`server`]) and the proxies' tasks. Start-up order: take the instance lock, start the
//! worker (init, load the state, reconcile the rules, restart the proxies), bind the socket,
//! announce readiness. Shutdown: stop accepting, finish the requests in flight, stop the
//! proxies, remove the socket. The state and the rules stay, as Docker leaves them;
//! `dockerd-net teardown` removes them.

pub mod host;
pub mod op;
#[cfg(feature = "daemon")]
pub mod proxy;
pub mod reconcile;
#[cfg(feature = "daemon")]
pub mod server;
#[cfg(feature = "daemon")]
pub mod service;
pub mod store;
pub mod sys;

#[cfg(feature = "daemon")]
mod run;
#[cfg(feature = "daemon")]
pub use run::{Options, run};
