//! Retention in a running process: every tenant's settings, loaded from
//! the registry into the [`RetentionPolicy`] that the store, the processor
//! and the query service share, kept current, and applied to the store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tributary_core::events::RegistryEvent;
use tributary_core::retention::{Keep, RetentionPolicy, RetentionSettings};
use tributary_proto::v1 as pb;
use tributary_proto::v1::registry_service_client::RegistryServiceClient;
use tributary_store::Store;

use super::args::LimitsArgs;

/// How often the settings are read again from a remote registry.
const REFRESH: Duration = Duration::from_secs(30);
/// How often expired data is deleted from the store.
const APPLY: Duration = Duration::from_secs(3600);
/// Longest pause between attempts to load the settings at start.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// This process's defaults: `--retention` for raw points, for ever for the
/// rollups of `--rollup-tiers`; tenants' own settings are loaded later.
pub fn policy(limits: &LimitsArgs) -> anyhow::Result<Arc<RetentionPolicy>> {
    Ok(Arc::new(RetentionPolicy::new(
        Keep::from_duration(limits.retention()?),
        limits.tiers()?,
    )))
}

/// Where the tenants' settings come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The registry in this process (standalone).
    Local(Arc<tributary_registry::Registry>),
    /// `tributary registry`, over gRPC with a service token.
    Remote {
        url: String,
        keys: Box<tributary_auth::JwtKeys>,
        role: &'static str,
    },
}

impl Source {
    /// Every tenant that has settings of its own.
    async fn load(&self) -> anyhow::Result<Vec<(String, RetentionSettings)>> {
        match self {
            Self::Local(registry) => Ok(registry
                .list_tenants()
                .await
                .context("listing tenants")?
                .into_iter()
                .map(|t| (t.name, t.settings.retention))
                .collect()),
            Self::Remote { url, keys, role } => {
                let channel = tonic::transport::Endpoint::from_shared(url.clone())
                    .with_context(|| format!("registry URL {url:?}"))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(30))
                    .connect()
                    .await
                    .with_context(|| format!("connecting to the registry at {url}"))?;
                let token = keys
                    .service_token(role)
                    .context("minting the service token")?;
                let mut request = tonic::Request::new(pb::ListTenantsRequest {});
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}")
                        .parse()
                        .context("service token as a header")?,
                );
                let tenants = RegistryServiceClient::new(channel)
                    .list_tenants(request)
                    .await
                    .context("listing tenants")?
                    .into_inner()
                    .tenants;
                let mut out = Vec::new();
                for t in tenants {
                    let named = t.settings.map(|s| s.retention).unwrap_or_default();
                    match RetentionSettings::from_named(
                        named.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    ) {
                        Ok(settings) => out.push((t.name, settings)),
                        // The tenant keeps the defaults rather than stopping
                        // everyone's retention.
                        Err(e) => {
                            tracing::warn!(tenant = %t.name, error = %e, "ignoring a tenant's retention settings")
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// Loads the settings into `policy` once.
    async fn refresh(&self, policy: &RetentionPolicy) -> anyhow::Result<()> {
        let settings = self.load().await?;
        policy.replace(settings.iter().map(|(t, s)| (t.as_str(), s)));
        Ok(())
    }

    /// Loads the settings into `policy`, retrying until it works; false if
    /// `stop` came first. Until then nothing may be written or deleted
    /// under the defaults: a tenant may keep its data longer.
    pub async fn load_first(&self, policy: &RetentionPolicy, stop: &watch::Receiver<bool>) -> bool {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.refresh(policy).await {
                Ok(()) => return true,
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in = ?pause,
                    "cannot load the tenants' retention settings yet"
                ),
            }
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = until_stopped(&mut stop) => return false,
            }
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
}

/// Keeps `policy` current until `stop`: on every tenant change the local
/// registry announces, and every [`REFRESH`]. With a `store`, also deletes
/// its expired data, at start and every [`APPLY`].
pub async fn run(
    store: Option<Arc<dyn Store>>,
    policy: Arc<RetentionPolicy>,
    source: Source,
    mut stop: watch::Receiver<bool>,
) {
    let mut events = match &source {
        Source::Local(registry) => Some(registry.events()),
        Source::Remote { .. } => None,
    };
    let mut refresh = tokio::time::interval(REFRESH);
    let mut apply = tokio::time::interval(APPLY);
    loop {
        let changed = async {
            match events.as_mut() {
                Some(rx) => loop {
                    match rx.recv().await {
                        Ok(RegistryEvent::TenantChanged { .. })
                        | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = refresh.tick() => {}
            _ = apply.tick(), if store.is_some() => {
                let Some(store) = &store else { continue };
                match store.apply_retention(tributary_core::time::now_ns()).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "retention removed expired data"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
                }
                continue;
            }
            _ = until_stopped(&mut stop) => return,
        }
        if let Err(e) = source.refresh(&policy).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "cannot refresh the tenants' retention settings; keeping the last ones"
            );
        }
    }
}

async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|s| *s).await;
}
