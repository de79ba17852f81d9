//! ScyllaDB backends of distributed mode: the time-series [`Store`] and the
//! registry storage ([`tributary_registry::RegistryStore`]), with the schema
//! migrations they run at start-up.
//!
//! * [`ScyllaConfig`]: nodes, keyspace and replication, consistency, TTL,
//!   concurrency and timeouts; from a config file or from a URL such as
//!   `scylla://node1:9042,node2:9042/tributary?rf=3&consistency=local_quorum`.
//! * [`connect`] opens a session (token-aware routing, retries of idempotent
//!   statements, monotonic client timestamps); [`migrate`] creates the
//!   keyspace and tables and records the schema version.
//! * [`ScyllaStore`] implements [`Store`]; [`ScyllaRegistryStore`]
//!   implements the registry's four storage traits. Both pass the same
//!   conformance suites as the embedded engines. [`ScyllaSeriesGate`]
//!   admits new series within the tenants' `series` quota, for the ingest
//!   frontends; it passes the series-gate conformance suite
//!   (`tests/scylla_conformance.rs`, run when `TRIBUTARY_TEST_SCYLLA` names
//!   a node).
//!
//! What must not live here: business rules (the registry service and the
//! processor own them), wiring of services, or anything a frontend needs.
//! The data model, its partition-size bounds and the reasons behind them
//! are in `docs/scylla.md`.
//!
//! ```no_run
//! # async fn example() -> Result<(), tributary_scylla::ScyllaError> {
//! use tributary_scylla::{ScyllaConfig, ScyllaRegistryStore, ScyllaStore};
//!
//! let config = ScyllaConfig::from_url("scylla://127.0.0.1:9042/tributary?replication=simple&rf=1")?;
//! let session = tributary_scylla::connect(&config).await?;
//! tributary_scylla::migrate(&session, &config).await?;
//! let store = ScyllaStore::new(session.clone(), &config).await?;
//! let registry = ScyllaRegistryStore::new(session, &config).await?;
//! # let _ = (store, registry);
//! # Ok(())
//! # }
//! ```
//!
//! [`Store`]: tributary_store::Store

#![warn(missing_docs)]

mod alerts;
mod checkpoints;
pub mod config;
mod error;
mod registry;
mod retry;
pub mod rollups;
pub mod schema;
mod series_gate;
mod session;
mod store;

pub use alerts::ScyllaAlerts;
pub use checkpoints::ScyllaCheckpoints;
pub use config::{
    ConsistencyLevel, Credentials, Replication, ScyllaConfig, SerialConsistencyLevel,
};
pub use error::ScyllaError;
pub use registry::ScyllaRegistryStore;
pub use schema::{SCHEMA_VERSION, migrate};
/// The driver's session, shared by the store and the registry store.
pub use scylla::client::session::Session;
pub use series_gate::ScyllaSeriesGate;
pub use session::connect;
pub use store::ScyllaStore;
