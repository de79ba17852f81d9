//! The gRPC surface: authorize, validate, call the engine, map errors.

use std::sync::Arc;
use tributary_core::retention::RetentionPolicy;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tributary_auth::{JwtKeys, Role, authorize};
use tributary_core::directory::DeviceCatalog;
use tributary_core::live::LiveHub;
use tributary_core::model::validate_tenant;
use tributary_core::quota::{Quota, TenantCounter};
use tributary_core::time::now_ns;
use tributary_proto::v1 as pb;
use tributary_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use tributary_store::Store;

use crate::aggregate::AggregateQuery;
use crate::config::QueryConfig;
use crate::engine::Engine;
use crate::error::QueryError;
use crate::range::RangeQuery;
use crate::subscribe::{Filter, SubscribeStream, Subscription};
use crate::target::{TargetSpec, parse_metrics};

/// Largest request message accepted, in bytes. Requests are small: a target,
/// a list of metric names and a few scalars.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The `tributary.v1.QueryService` implementation.
///
/// Every call authorizes the `authorization: Bearer <jwt>` metadata, requires
/// the viewer role and acts in the token's tenant (or, for admins, in the
/// tenant named by `target.tenant`).
#[derive(Debug, Clone)]
pub struct QueryGrpc {
    engine: Engine,
    live: LiveHub,
    keys: JwtKeys,
    subscriptions: Arc<Semaphore>,
    /// The tenant's `live_streams` quota needs the catalog's quotas.
    catalog: Arc<dyn DeviceCatalog>,
    /// Live streams of each tenant on this server.
    tenant_streams: TenantCounter,
}

impl QueryGrpc {
    /// A service reading `store`, resolving targets with `catalog` and
    /// streaming live points from `live`. Validate `config` at start-up with
    /// [`QueryConfig::validate`].
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<dyn DeviceCatalog>,
        live: LiveHub,
        keys: JwtKeys,
        config: QueryConfig,
    ) -> Self {
        let subscriptions = Arc::new(Semaphore::new(config.max_subscriptions.max(1)));
        Self {
            engine: Engine::new(store, Arc::clone(&catalog), config),
            live,
            keys,
            subscriptions,
            catalog,
            tenant_streams: TenantCounter::default(),
        }
    }

    /// How long each tenant's data is kept (`--retention` and the tenants'
    /// settings): a `QueryRange` reaching further back says where its data
    /// ends, and `Aggregate` reads no tier past its retention. Without it,
    /// everything is taken to be kept for ever.
    pub fn with_retention(mut self, policy: Arc<RetentionPolicy>) -> Self {
        self.engine.set_retention(policy);
        self
    }

    /// The tonic service, ready for `Server::add_service`.
    pub fn server(self) -> QueryServiceServer<QueryGrpc> {
        QueryServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// Authorizes a request and returns the tenant it acts in and its target.
    fn scope<T>(
        &self,
        request: &Request<T>,
        target: Option<&pb::Target>,
    ) -> Result<(String, TargetSpec), QueryError> {
        let claims = authorize(&self.keys, request).map_err(QueryError::from_auth)?;
        claims
            .require(Role::Viewer)
            .map_err(QueryError::from_auth)?;
        let requested = target.map_or("", |t| t.tenant.as_str());
        if !requested.is_empty() {
            validate_tenant(requested)
                .map_err(|e| QueryError::invalid("target.tenant", e.message))?;
        }
        let tenant = claims
            .tenant_for(requested)
            .map_err(QueryError::from_auth)?;
        Ok((tenant, TargetSpec::parse(target)?))
    }

    fn config(&self) -> &QueryConfig {
        self.engine.config()
    }
}

/// When a token whose `exp` is `exp_secs` (seconds since the epoch)
/// expires, as an instant of this process's clock.
fn token_expiry(exp_secs: u64) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = std::time::Duration::from_secs(exp_secs).saturating_sub(now);
    tokio::time::Instant::now() + left
}

#[tonic::async_trait]
impl QueryService for QueryGrpc {
    async fn list_metrics(
        &self,
        request: Request<pb::ListMetricsRequest>,
    ) -> Result<Response<pb::ListMetricsResponse>, Status> {
        let (tenant, target) = self.scope(&request, request.get_ref().target.as_ref())?;
        Ok(Response::new(
            self.engine.list_metrics(&tenant, &target).await?,
        ))
    }

    async fn query_range(
        &self,
        request: Request<pb::QueryRangeRequest>,
    ) -> Result<Response<pb::QueryRangeResponse>, Status> {
        let req = request.get_ref();
        let (tenant, target) = self.scope(&request, req.target.as_ref())?;
        let query =
            RangeQuery::from_pb(&tenant, &target, req, self.config().max_metrics, now_ns())?;
        Ok(Response::new(
            self.engine.range(&tenant, &target, &query).await?,
        ))
    }

    async fn aggregate(
        &self,
        request: Request<pb::AggregateRequest>,
    ) -> Result<Response<pb::AggregateResponse>, Status> {
        let req = request.get_ref();
        let (tenant, target) = self.scope(&request, req.target.as_ref())?;
        let query = AggregateQuery::from_pb(
            req,
            self.config().max_metrics,
            self.config().max_buckets,
            now_ns(),
        )?;
        Ok(Response::new(
            self.engine.aggregate(&tenant, &target, &query).await?,
        ))
    }

    async fn test_rule(
        &self,
        request: Request<pb::TestRuleRequest>,
    ) -> Result<Response<pb::TestRuleResponse>, Status> {
        let claims = authorize(&self.keys, &request).map_err(QueryError::from_auth)?;
        claims
            .require(Role::Viewer)
            .map_err(QueryError::from_auth)?;
        let req = request.into_inner();
        let Some(wire) = req.rule else {
            return Err(QueryError::invalid("rule", "missing").into());
        };
        let tenant = claims
            .tenant_for(&wire.tenant)
            .map_err(QueryError::from_auth)?;
        let rule = tributary_rules::convert::rule_from_pb(
            &wire,
            &tenant,
            &tributary_core::limits::Limits::default(),
        )
        .map_err(|e| QueryError::invalid(format!("rule.{}", e.field), e.message))?;
        let now = now_ns();
        let to_ns = if req.to_ns == 0 { now } else { req.to_ns };
        let from_ns = if req.from_ns == 0 {
            to_ns.saturating_sub(crate::rule_test::DEFAULT_SPAN_NS)
        } else {
            req.from_ns
        };
        if from_ns >= to_ns {
            return Err(QueryError::invalid("from_ns", "must be before to_ns").into());
        }
        let max = match req.max_transitions {
            0 => 1000,
            n if n > crate::rule_test::MAX_TRANSITIONS => {
                return Err(QueryError::invalid(
                    "max_transitions",
                    format!("at most {}", crate::rule_test::MAX_TRANSITIONS),
                )
                .into());
            }
            n => n,
        } as usize;
        Ok(Response::new(
            self.engine
                .test_rule(&tenant, &rule, (from_ns, to_ns), max)
                .await?,
        ))
    }

    async fn latest(
        &self,
        request: Request<pb::LatestRequest>,
    ) -> Result<Response<pb::LatestResponse>, Status> {
        let req = request.get_ref();
        let (tenant, target) = self.scope(&request, req.target.as_ref())?;
        let metrics = parse_metrics(&req.metrics, self.config().max_metrics)?;
        Ok(Response::new(
            self.engine.latest(&tenant, &target, &metrics).await?,
        ))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.get_ref();
        let (tenant, target) = self.scope(&request, req.target.as_ref())?;
        // The stream ends when the token that opened it expires.
        let expires = authorize(&self.keys, &request)
            .map_err(QueryError::from_auth)?
            .exp;
        let metrics = parse_metrics(&req.metrics, self.config().max_metrics)?;
        // The tenant's quota first, then the server's own limit.
        let quotas = self
            .catalog
            .tenant_quotas(&tenant)
            .await
            .map_err(QueryError::Directory)?;
        let (slot, _) = self
            .tenant_streams
            .try_acquire(&tenant, Quota::LiveStreams, quotas.get(Quota::LiveStreams))
            .map_err(|e| QueryError::ResourceExhausted {
                subject: "live_streams",
                message: format!("{e}; close a stream or ask for a higher quota"),
            })?;
        let permit = Arc::clone(&self.subscriptions)
            .try_acquire_owned()
            .map_err(|_| QueryError::ResourceExhausted {
                subject: "subscriptions",
                message: format!(
                    "the server already serves {} subscriptions; retry later",
                    self.config().max_subscriptions
                ),
            })?;
        // Listen before resolving, so that nothing stored meanwhile is missed.
        let feed = self.live.subscribe();
        let devices = self.engine.resolve(&tenant, &target).await?;
        let subscription = Subscription {
            engine: self.engine.clone(),
            target,
            filter: Filter::new(tenant, &devices, metrics),
            refresh: self.config().subscribe_refresh(),
            expires_at: token_expiry(expires),
        };
        Ok(Response::new(subscription.spawn(
            feed,
            self.config().subscribe_buffer,
            Some((permit, slot)),
        )))
    }
}
