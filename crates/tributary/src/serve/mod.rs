//! The service subcommands: `standalone` runs every service in one process
//! with embedded storage; `registry`, `ingest`, `processor` and `query` run
//! one role each, against Kafka and (for the store) Scylla. Every role is
//! the same library code; these modules only wire it.

use std::sync::Arc;

use anyhow::Context;

pub mod alerts;
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
pub mod retention;
pub mod rules;
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
    registry: &args::RegistryClientArgs,
    keys: &tributary_auth::JwtKeys,
    role: &str,
    events: tokio::sync::broadcast::Receiver<tributary_core::events::RegistryEvent>,
    metrics: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<Arc<tributary_registry::RemoteDirectory>> {
    let token = keys
        .service_token(role)
        .context("minting the service token")?;
    let registry_url = &registry.registry_url;
    let directory = tributary_registry::RemoteDirectory::connect_with(
        registry_url,
        token,
        events,
        Default::default(),
        tributary_registry::RemoteConfig {
            max_batch: registry.registry_max_batch,
            ..Default::default()
        },
    )
    .with_context(|| format!("registry at {registry_url}"))?;
    let directory = Arc::new(directory);
    directory.register_metrics(metrics);
    Ok(directory)
}
