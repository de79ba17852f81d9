//! The gRPC surface: authorize, validate, hand the command to the sink, map
//! the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tributary_auth::{JwtKeys, Role, authorize};
use tributary_core::Limits;
use tributary_core::commands::{
    Command, CommandOutcome, CommandSink, validate_command_name, validate_content_type,
};
use tributary_core::directory::DeviceCatalog;
use tributary_core::model::{validate_device_id, validate_tenant};
use tributary_core::quota::{Quota, TenantCounter};
use tributary_proto::v1 as pb;
use tributary_proto::v1::command_service_server::{CommandService, CommandServiceServer};

use crate::config::CommandConfig;
use crate::error::CommandServiceError;
use crate::metrics::CommandMetrics;

/// Room for the request's other fields besides the payload, in bytes.
const REQUEST_OVERHEAD: usize = 16 * 1024;

/// The `tributary.v1.CommandService` implementation.
///
/// Every call authorizes the `authorization: Bearer <jwt>` metadata,
/// requires the operator role and acts in the token's tenant (or, for
/// admins, in the tenant named by `tenant`). The device must exist in the
/// tenant and be enabled.
#[derive(Debug, Clone)]
pub struct CommandGrpc {
    sink: Arc<dyn CommandSink>,
    catalog: Arc<dyn DeviceCatalog>,
    keys: JwtKeys,
    config: CommandConfig,
    limits: Limits,
    pending: Arc<Semaphore>,
    /// Commands of each tenant waiting for a reply on this server.
    tenant_pending: TenantCounter,
    metrics: CommandMetrics,
}

impl CommandGrpc {
    /// A service sending commands through `sink`, checking devices in
    /// `catalog`, with the default [`CommandConfig`] and unregistered
    /// metrics.
    pub fn new(sink: Arc<dyn CommandSink>, catalog: Arc<dyn DeviceCatalog>, keys: JwtKeys) -> Self {
        let config = CommandConfig::default();
        Self {
            pending: Arc::new(Semaphore::new(config.max_pending)),
            tenant_pending: TenantCounter::default(),
            sink,
            catalog,
            keys,
            config,
            limits: Limits::default(),
            metrics: CommandMetrics::default(),
        }
    }

    /// Replaces the limits, once they are validated.
    pub fn with_config(mut self, config: CommandConfig) -> Result<Self, CommandServiceError> {
        config.validate()?;
        self.pending = Arc::new(Semaphore::new(config.max_pending));
        self.config = config;
        Ok(self)
    }

    /// Device ids are checked against these limits (the ingest limits of
    /// the platform, so that every device that can connect can be named).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Reports outcomes to `metrics` (see [`CommandMetrics::register`]).
    pub fn with_metrics(mut self, metrics: CommandMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The tonic service, ready for `Server::add_service`.
    pub fn server(self) -> CommandServiceServer<CommandGrpc> {
        let max_request = self
            .config
            .max_payload_bytes
            .saturating_add(REQUEST_OVERHEAD);
        CommandServiceServer::new(self).max_decoding_message_size(max_request)
    }

    /// Authorizes and validates a request, and turns it into a command.
    async fn command(
        &self,
        request: &Request<pb::SendCommandRequest>,
    ) -> Result<Command, CommandServiceError> {
        let claims = authorize(&self.keys, request).map_err(CommandServiceError::from_auth)?;
        claims
            .require(Role::Operator)
            .map_err(CommandServiceError::from_auth)?;
        let req = request.get_ref();
        if !req.tenant.is_empty() {
            validate_tenant(&req.tenant)
                .map_err(|e| CommandServiceError::invalid("tenant", e.message))?;
        }
        let tenant = claims
            .tenant_for(&req.tenant)
            .map_err(CommandServiceError::from_auth)?;
        validate_device_id(&req.device, &self.limits)
            .map_err(|e| CommandServiceError::invalid("device", e.message))?;
        validate_command_name(&req.name)
            .map_err(|e| CommandServiceError::invalid("name", e.message))?;
        validate_content_type(&req.content_type)
            .map_err(|e| CommandServiceError::invalid("content_type", e.message))?;
        if req.payload.len() > self.config.max_payload_bytes {
            return Err(CommandServiceError::invalid(
                "payload",
                format!(
                    "{} bytes; at most {}",
                    req.payload.len(),
                    self.config.max_payload_bytes
                ),
            ));
        }
        let timeout = self.config.timeout(req.timeout_ms)?;
        let ttl = self.config.ttl(req.ttl_seconds)?.max(timeout);
        match self.catalog.device(&tenant, &req.device).await? {
            None => return Err(CommandServiceError::DeviceNotFound(req.device.clone())),
            Some(d) if d.disabled => {
                return Err(CommandServiceError::DeviceDisabled(req.device.clone()));
            }
            Some(_) => {}
        }
        Ok(Command {
            tenant,
            device: req.device.clone(),
            name: req.name.clone(),
            payload: req.payload.clone(),
            content_type: req.content_type.clone(),
            timeout,
            ttl,
        })
    }

    async fn send(
        &self,
        request: Request<pb::SendCommandRequest>,
    ) -> Result<pb::SendCommandResponse, CommandServiceError> {
        let command = self.command(&request).await?;
        // The tenant's `pending_commands` quota, then the server's limit.
        let quotas = self.catalog.tenant_quotas(&command.tenant).await?;
        let _slot = self
            .tenant_pending
            .try_acquire(
                &command.tenant,
                Quota::PendingCommands,
                quotas.get(Quota::PendingCommands),
            )
            .map_err(CommandServiceError::Quota)?;
        let _permit = Arc::clone(&self.pending).try_acquire_owned().map_err(|_| {
            CommandServiceError::ResourceExhausted(format!(
                "this server already waits for {} replies",
                self.config.max_pending
            ))
        })?;
        let (tenant, device, name) = (
            command.tenant.clone(),
            command.device.clone(),
            command.name.clone(),
        );
        let started = Instant::now();
        let outcome = self.sink.send_command(command).await?;
        let waited = started.elapsed();
        self.metrics.sent(&tenant, &device, &name, &outcome, waited);
        Ok(response(outcome, waited))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn response(outcome: CommandOutcome, waited: Duration) -> pb::SendCommandResponse {
    use pb::CommandStatus as S;
    let mut resp = pb::SendCommandResponse {
        latency_us: micros(waited),
        ..Default::default()
    };
    let status = match outcome {
        CommandOutcome::Replied(reply) => {
            resp.reply_payload = reply.payload;
            resp.reply_content_type = reply.content_type;
            resp.latency_us = micros(reply.latency);
            S::DeliveredReplied
        }
        CommandOutcome::Timeout => S::Timeout,
        CommandOutcome::Offline => S::Offline,
        CommandOutcome::NotSubscribed => S::NotSubscribed,
        CommandOutcome::Queued { ttl } => {
            resp.ttl_seconds = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
            S::Queued
        }
    };
    resp.status = status as i32;
    resp
}

#[tonic::async_trait]
impl CommandService for CommandGrpc {
    async fn send_command(
        &self,
        request: Request<pb::SendCommandRequest>,
    ) -> Result<Response<pb::SendCommandResponse>, Status> {
        match self.send(request).await {
            Ok(resp) => Ok(Response::new(resp)),
            Err(e) => {
                self.metrics.failed(&e);
                Err(e.into())
            }
        }
    }
}
