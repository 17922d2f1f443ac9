//! `dockerd-net daemon`: init, then serve the handlers over the API socket until SIGTERM or
//! SIGINT.
//!
//! Threads: the **worker** ([`service`]) owns the backends, the state, the store and the
//! proxies, and serves requests one at a time; the **reaper** ([`reaper`]) deletes the
//! veths that `detach` unplugged, in batches, with a link backend of its own; a tokio
//! runtime runs the HTTP server ([`server`]) and the proxies' tasks. Start-up order: take
//! the instance lock, start the reaper, start the worker (init, load the state, delete the
//! veths a previous run left retired, reconcile the rules, restart the proxies), bind the
//! socket, announce readiness. Shutdown: stop accepting, finish the requests in flight, let
//! the reaper delete what is retired, stop the proxies, remove the socket. The state and
//! the rules stay, as Docker leaves them; `dockerd-net teardown` removes them.

pub mod host;
pub mod op;
#[cfg(feature = "daemon")]
pub mod proxy;
#[cfg(feature = "daemon")]
pub mod reaper;
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
