//! The init the daemon runs before serving: the same sequence as `dockerd-net init`.

use std::path::Path;

use anyhow::{Context, Result};
use netcore::config::Config;
use netcore::init::{self, HostFacts, Plan};
use netcore::teardown::InitRecord;

use crate::backend::Backends;
use crate::record;

/// What init did.
#[derive(Debug)]
pub struct Initialised {
    pub plan: Plan,
    pub applied: init::Applied,
    pub record: InitRecord,
}

/// Builds the bridge network (idempotently: on a configured host the plan is empty) and
/// saves the merged init record, so that `teardown` knows what to undo.
pub fn init_host(
    b: &mut Backends,
    data_root: &Path,
    resolv_conf: &str,
    config: &Config,
) -> Result<Initialised> {
    let facts = HostFacts::gather(config, resolv_conf, &mut *b.link, &mut *b.fw, &mut *b.sys)
        .context("reading the host")?;
    let plan = init::plan(config, &facts, rand::random()).context("planning init")?;
    let earlier = record::load(data_root)?;
    let applied = init::apply(&plan, &mut *b.link, &mut *b.fw, &mut *b.sys)
        .context("init failed; the host was restored to its previous state")?;
    for w in &applied.warnings {
        tracing::warn!("{w}");
    }
    for step in &applied.done {
        tracing::debug!("init: {}", step.to_string().trim_end());
    }
    let params = config
        .iptables
        .then(|| netcore::firewall::BridgeFirewall::from_config(config, &plan.bridge, plan.addr));
    let rec = InitRecord::after_init(&plan, &applied, params, earlier.as_ref());
    if let Err(e) = record::save(data_root, &rec) {
        // Without the record, teardown could not know what to undo: undo now instead.
        let errors = init::rollback(&applied.done, &mut *b.link, &mut *b.fw, &mut *b.sys);
        for err in &errors {
            tracing::error!("rollback: {err}");
        }
        return Err(e.context("init was rolled back because its record could not be saved"));
    }
    tracing::info!(bridge = %plan.bridge, address = %plan.addr, "bridge network ready");
    Ok(Initialised {
        plan,
        applied,
        record: rec,
    })
}

/// The resolv.conf text, or nothing: Docker ignores an unreadable resolv.conf.
pub fn read_resolv_conf(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        tracing::debug!(
            "cannot read {}: {e}; assuming no nameservers",
            path.display()
        );
        String::new()
    })
}
