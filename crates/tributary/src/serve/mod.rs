//! The service subcommands: `standalone` runs every service in one process
//! with embedded storage; `registry`, `ingest`, `processor` and `query` run
//! one role each, against Kafka and (for the store) Scylla. Every role is
//! the same library code; these modules only wire it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tributary_store::Store;

pub mod args;
pub mod backends;
pub mod config_file;
pub mod frontends;
pub mod ingest;
pub mod ops;
pub mod print_config;
pub mod processor;
pub mod query;
pub mod registry;
pub mod standalone;

/// gRPC reflection over every Tributary and health service, so grpcurl and
/// other stock clients work.
pub fn reflection() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tributary_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")
}

/// The registry as a service that is not the registry sees it: cached,
/// over gRPC, evicted by `events` (a tail of the device-events topic).
pub fn remote_directory(
    registry_url: &str,
    keys: &tributary_auth::JwtKeys,
    role: &str,
    events: tokio::sync::broadcast::Receiver<tributary_core::events::RegistryEvent>,
) -> anyhow::Result<Arc<tributary_registry::RemoteDirectory>> {
    let token = keys
        .service_token(role)
        .context("minting the service token")?;
    let directory = tributary_registry::RemoteDirectory::connect(
        registry_url,
        token,
        events,
        Default::default(),
    )
    .with_context(|| format!("registry at {registry_url}"))?;
    Ok(Arc::new(directory))
}

/// Applies retention hourly, and once at start, until `stop`.
pub async fn retention_loop(store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    loop {
        match store.apply_retention(tributary_core::time::now_ns()).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "retention removed expired data"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
