//! The operator command service: `tributary.v1.CommandService` over gRPC.
//!
//! An operator sends a command to one device (`SendCommand`) and gets the
//! device's reply, or a clear status: the device is offline, not
//! subscribed to its commands, slow to answer, or offline with a persistent
//! session that queued the command until its TTL.
//!
//! The service authorizes each call (operator JWT, [`Role::Operator`] at
//! least, tenant scoping as in the query service), checks the request
//! against [`CommandConfig`] and the device against the [`DeviceCatalog`],
//! and hands the command to a [`CommandSink`]. It never talks to devices
//! itself: in standalone the sink is the in-process MQTT server; with
//! several frontend replicas it is a [`RoutedCommandSink`], which sends the
//! command through the commands log to the [`CommandRelay`] of the
//! frontend replica that holds the device's session (see [`routing`]).
//!
//! What this crate must not do: depend on a protocol crate, or wait for a
//! reply longer than the request's timeout.
//!
//! ```no_run
//! # async fn run(
//! #     sink: std::sync::Arc<dyn tributary_core::commands::CommandSink>,
//! #     catalog: std::sync::Arc<dyn tributary_core::directory::DeviceCatalog>,
//! #     keys: tributary_auth::JwtKeys,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use tributary_commands::{CommandConfig, CommandGrpc};
//!
//! let commands = CommandGrpc::new(sink, catalog, keys).with_config(CommandConfig::default())?;
//! tonic::transport::Server::builder()
//!     .add_service(commands.server())
//!     .serve("127.0.0.1:7443".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Role::Operator`]: tributary_auth::Role::Operator
//! [`DeviceCatalog`]: tributary_core::directory::DeviceCatalog
//! [`CommandSink`]: tributary_core::commands::CommandSink

mod config;
mod error;
mod metrics;
pub mod routing;
mod service;

pub use config::CommandConfig;
pub use error::CommandServiceError;
pub use metrics::{CommandMetrics, RoutingMetrics};
pub use routing::{CommandRelay, RelayConfig, RoutedCommandSink, RouterConfig};
pub use service::CommandGrpc;
