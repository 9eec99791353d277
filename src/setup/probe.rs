//! Testing a provider before it is saved: its model list, fetched with the key, over the
//! gateway's own HTTP client (so a proxy and the system CA store apply as they will later).

use std::time::Duration;

use crate::agent::Protocol;
use crate::gateway::scan::discover;

/// What the provider said.
pub enum Probe {
    /// It answered with this many models (ids in its own listing order).
    Listed(Vec<String>),
    /// It refused the key.
    Refused(String),
    /// It could not be reached, or answered something else.
    Failed(String),
}

pub fn list_models(base_url: &str, format: Protocol, key: Option<&str>) -> Probe {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return Probe::Failed(format!("cannot start the HTTP client: {e}")),
    };
    runtime.block_on(async {
        let client = crate::gateway::upstream::client(&crate::config::GatewayConfig::default());
        let timeout = Duration::from_secs(15);
        match discover::list(&client, base_url, format, key, timeout).await {
            Ok(listed) => Probe::Listed(listed.into_iter().map(|m| m.id).collect()),
            Err(down) if down.refused => Probe::Refused(down.message),
            Err(down) => Probe::Failed(down.message),
        }
    })
}
