//! The operator query service: `tributary.v1.QueryService` over gRPC.
//!
//! Operators read what the processor stored: the series of a device or of a
//! label selector over the tenant's devices ([`ListMetrics`]), raw points with
//! paging ([`QueryRange`]), windowed aggregates optionally merged by a label
//! ([`Aggregate`]), the newest values ([`Latest`]) and a live feed of points
//! as they are stored ([`Subscribe`]).
//!
//! The crate is layered so that the gRPC surface stays thin:
//!
//! * `service` authorizes each call (operator JWT, [`Role::Viewer`] at least,
//!   tenant scoping), turns the protobuf request into a validated query and
//!   maps every error to a [`tonic::Status`] in one place ([`QueryError`]).
//! * `target`, `range`, `aggregate` and `subscribe` hold the query logic on
//!   plain types, and are unit-tested without a network.
//! * It reads through the [`Store`] and [`DeviceCatalog`] traits only, so the
//!   same code serves the embedded store and a distributed one.
//!
//! What this crate must not do: write to the store, or resolve devices any
//! other way than through the catalog.
//!
//! ```no_run
//! # async fn run(
//! #     store: std::sync::Arc<dyn tributary_store::Store>,
//! #     catalog: std::sync::Arc<dyn tributary_core::directory::DeviceCatalog>,
//! #     keys: tributary_auth::JwtKeys,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use tributary_core::live::LiveHub;
//! use tributary_query::{QueryConfig, QueryGrpc};
//!
//! let live = LiveHub::default();
//! let query = QueryGrpc::new(store, catalog, live, keys, QueryConfig::default());
//! tonic::transport::Server::builder()
//!     .add_service(query.server())
//!     .serve("127.0.0.1:7443".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`ListMetrics`]: tributary_proto::v1::query_service_server::QueryService::list_metrics
//! [`QueryRange`]: tributary_proto::v1::query_service_server::QueryService::query_range
//! [`Aggregate`]: tributary_proto::v1::query_service_server::QueryService::aggregate
//! [`Latest`]: tributary_proto::v1::query_service_server::QueryService::latest
//! [`Subscribe`]: tributary_proto::v1::query_service_server::QueryService::subscribe
//! [`Role::Viewer`]: tributary_auth::Role::Viewer
//! [`Store`]: tributary_store::Store
//! [`DeviceCatalog`]: tributary_core::directory::DeviceCatalog

mod aggregate;
mod alert_history;
mod alerts;
mod config;
mod engine;
mod error;
mod range;
mod rule_test;
mod service;
mod subscribe;
mod target;

#[cfg(test)]
mod testkit;

pub use alert_history::{DEFAULT_KEEP, HISTORY_GROUP, HistoryError, keep_history};
pub use alerts::AlertsGrpc;
pub use config::QueryConfig;
pub use error::QueryError;
pub use service::QueryGrpc;
