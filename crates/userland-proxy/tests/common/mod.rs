//! Shared by the test files: a runtime like the daemon's and loopback addresses.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// A multi-threaded runtime with IO and timers, as the daemon runs its proxies on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// 127.0.0.1:`port`.
pub fn loopback(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// Polls `check` until it holds or `limit` passes; whether it held. The proxy's tasks run
/// asynchronously to the test thread, so their effects are awaited this way, never slept for.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
