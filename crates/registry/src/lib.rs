//! The device registry: tenants, devices, credentials and presence.
//!
//! The crate is layered so that each layer can be replaced or tested alone:
//!
//! * [`store`]: the storage seam, a set of small per-aggregate traits
//!   ([`TenantStore`], [`DeviceStore`], [`CredentialStore`],
//!   [`PresenceStore`]) gathered as [`RegistryStore`]. Storage only: no
//!   validation, no business rules.
//! * [`embedded`]: [`EmbeddedRegistryStore`], the durable single-file engine
//!   of standalone mode, on redb.
//! * [`conformance`]: the suite every [`RegistryStore`] passes, the embedded
//!   one here and the ScyllaDB one of distributed mode alike.
//! * [`service`]: [`Registry`], the business rules over any store:
//!   validation, uniqueness, token issue and revocation, authentication,
//!   presence, and the [`RegistryEvent`]s that tell caches what changed.
//! * [`grpc`]: [`RegistryGrpc`], the `tributary.v1.RegistryService` gRPC
//!   server, with operator JWT authorization.
//! * [`directory`]: the cached implementation of the
//!   `tributary_core::directory` traits that ingest frontends and the query
//!   service use, one caching layer with two sources: [`LocalDirectory`], in
//!   process over the [`Registry`] (standalone mode), and
//!   [`remote`]'s [`RemoteDirectory`], over gRPC (distributed mode).
//! * [`directory_grpc`]: [`DirectoryGrpc`], the internal
//!   `tributary.v1.DirectoryService` a [`RemoteDirectory`] calls, for
//!   service tokens (platform admins) only.
//! * [`events`]: [`RegistryEvent`]s across processes:
//!   [`events::publish_events`] forwards them to the log topic
//!   `tributary.device-events.v1`, [`events::tail_events`] reads them back as
//!   a remote directory's invalidation channel.
//!
//! What must not live here: ingest protocols, time-series storage, or
//! anything that needs a frontend. Frontends depend on the
//! `tributary_core::directory` traits, never on this crate.
//!
//! Standalone wiring, end to end (run with `cargo test -p tributary-registry --doc`):
//!
//! ```
//! use std::sync::Arc;
//! use tributary_core::directory::{Authenticator, Principal};
//! use tributary_registry::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data_dir = tempfile::tempdir()?;
//! let store = EmbeddedRegistryStore::open(&data_dir.path().join("registry.redb"))?;
//! let registry = Arc::new(Registry::new(store, RegistryConfig::default()));
//! let keys = tributary_auth::JwtKeys::from_secret(&[1u8; 32])?;
//! let admin_token = registry.bootstrap(&keys, data_dir.path()).await?;
//! assert!(admin_token.is_some(), "printed once by the binary");
//!
//! let new = NewDevice { tenant: DEFAULT_TENANT.into(), id: "pump-1".into(), issue_token: true, ..NewDevice::default() };
//! let (_, token) = registry.create_device(new).await?;
//! let secret = token.expect("asked for").secret;
//!
//! // What an ingest frontend holds: a cached directory over the registry.
//! let directory = LocalDirectory::new(Arc::clone(&registry), DirectoryConfig::default());
//! let principal = directory.authenticate(&secret).await?;
//! assert_eq!(principal, Principal::Device { tenant: "default".into(), device: "pump-1".into() });
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod batch;
pub mod certificate;
pub mod conformance;
pub mod directory;
pub mod directory_grpc;
pub mod embedded;
mod error;
pub mod events;
pub mod grpc;
pub mod presence;
pub mod remote;
pub mod rules;
pub mod rules_grpc;
pub mod service;
pub mod silences;
pub mod store;
pub mod webhooks;

pub use directory::{DirectoryConfig, LocalDirectory};
pub use directory_grpc::DirectoryGrpc;
pub use embedded::EmbeddedRegistryStore;
pub use error::{Entity, RegistryError};
pub use grpc::RegistryGrpc;
pub use remote::{RemoteConfig, RemoteDirectory};
pub use rules_grpc::RulesGrpc;
pub use service::{
    Authenticated, AuthenticatedApplication, DEFAULT_TENANT, Device, DevicePage, DeviceUpdate,
    IssuedToken, ListOrder, NewApplication, NewCertificate, NewDevice, NewTenant, NewToken,
    Registry, RegistryConfig, RegistryEvent, format_fingerprint, parse_fingerprint,
};
pub use store::{
    ApplicationGrants, CredentialKind, CredentialRecord, CredentialStore, DeviceRecord,
    DeviceStore, Expect, PresenceRecord, PresenceStore, RegistryStore, Rule, RuleStore,
    SilenceStore, TenantRecord, TenantSettings, TenantStore, TokenHash, WebhookRecord,
    WebhookStore,
};
