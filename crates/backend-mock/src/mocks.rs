//! mockall mocks of netcore's traits, for tests that care about the exact calls made rather
//! than their effect (use [`crate::FakeHost`] for the effect).
//!
//! ```
//! use backend_mock::MockSysctlOps;
//! use netcore::ops::{SysctlOps, IP_FORWARD};
//!
//! let mut sysctl = MockSysctlOps::new();
//! sysctl
//!     .expect_read()
//!     .withf(|key| key == IP_FORWARD)
//!     .times(1)
//!     .returning(|_| Ok("0".to_owned()));
//! assert_eq!(sysctl.read(IP_FORWARD).unwrap(), "0");
//! ```

use ipnet::Ipv4Net;
use mockall::mock;
use netcore::firewall::{Batch, Policy, Table};
use netcore::ops::{BridgeSpec, LinkInfo, OpsError, RouteV4};

mock! {
    /// A mock of [`netcore::ops::LinkOps`].
    pub LinkOps {}

    impl netcore::ops::LinkOps for LinkOps {
        fn links(&mut self) -> Result<Vec<LinkInfo>, OpsError>;
        fn routes_v4(&mut self) -> Result<Vec<RouteV4>, OpsError>;
        fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<(), OpsError>;
        fn add_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError>;
        fn del_addr(&mut self, link: &str, addr: Ipv4Net) -> Result<(), OpsError>;
        fn set_mtu(&mut self, link: &str, mtu: u32) -> Result<(), OpsError>;
        fn set_up(&mut self, link: &str) -> Result<(), OpsError>;
        fn set_down(&mut self, link: &str) -> Result<(), OpsError>;
        fn delete_link(&mut self, link: &str) -> Result<(), OpsError>;
    }
}

mock! {
    /// A mock of [`netcore::ops::FirewallOps`].
    pub FirewallOps {}

    impl netcore::ops::FirewallOps for FirewallOps {
        fn save(&mut self, table: Table) -> Result<String, OpsError>;
        fn apply(&mut self, batch: &Batch) -> Result<(), OpsError>;
        fn set_policy(&mut self, table: Table, chain: &str, policy: Policy) -> Result<(), OpsError>;
    }
}

mock! {
    /// A mock of [`netcore::ops::SysctlOps`].
    pub SysctlOps {}

    impl netcore::ops::SysctlOps for SysctlOps {
        fn read(&mut self, key: &str) -> Result<String, OpsError>;
        fn write(&mut self, key: &str, value: &str) -> Result<(), OpsError>;
    }
}
