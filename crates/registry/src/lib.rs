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
//! * [`directory`]: [`LocalDirectory`], the cached in-process implementation
//!   of the `tributary_core::directory` traits that ingest frontends and the
//!   query service use in standalone mode.
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

pub mod conformance;
pub mod directory;
pub mod embedded;
mod error;
pub mod grpc;
pub mod service;
pub mod store;

pub use directory::{DirectoryConfig, LocalDirectory};
pub use embedded::EmbeddedRegistryStore;
pub use error::{Entity, RegistryError};
pub use grpc::RegistryGrpc;
pub use service::{
    Authenticated, AuthenticatedApplication, DEFAULT_TENANT, Device, DevicePage, DeviceUpdate,
    IssuedToken, NewApplication, NewCertificate, NewDevice, NewTenant, NewToken, Registry,
    RegistryConfig, RegistryEvent, format_fingerprint, parse_fingerprint,
};
pub use store::{
    ApplicationGrants, CredentialKind, CredentialRecord, CredentialStore, DeviceRecord,
    DeviceStore, Expect, PresenceRecord, PresenceStore, RegistryStore, TenantRecord,
    TenantSettings, TenantStore, TokenHash,
};
