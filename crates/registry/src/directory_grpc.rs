//! [`DirectoryGrpc`]: the `tributary.v1.DirectoryService` gRPC server, what
//! [`crate::RemoteDirectory`] calls on a cache miss.
//!
//! Internal, not for operators: every call needs an operator JWT of a
//! platform admin (role admin, empty tenant), as
//! `tributary_auth::JwtKeys::service_token` mints. A missing or invalid token
//! is `UNAUTHENTICATED`, any other token `PERMISSION_DENIED`.
//!
//! Errors about the subject of a call are [`DirectoryError`]s and travel as
//! a status whose code matches and whose `google.rpc.ErrorInfo` detail
//! (domain [`ERROR_DOMAIN`]) names the variant, so the client rebuilds the
//! very same error (`status_from_error` and `error_from_status`, the one
//! place both directions are defined). A status without that detail (the
//! caller's own token refused, a transport failure, an older server) is
//! never taken for a verdict on a device: the client turns it into
//! [`DirectoryError::Unavailable`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tributary_auth::{JwtKeys, OperatorClaims, Role, authorize};
use tributary_core::directory::{DirectoryError, Principal, TenantPolicy};
use tributary_core::selector::Selector;
use tributary_proto::v1 as pb;
use tributary_proto::v1::directory_service_server::{DirectoryService, DirectoryServiceServer};

use crate::RegistryError;
use crate::directory::{MAX_SECRET_BYTES, ensure_device_uncached, presence_record};
use crate::service::{Authenticated, AuthenticatedApplication, Registry, parse_fingerprint};

/// The `ErrorInfo` domain of directory errors.
pub const ERROR_DOMAIN: &str = "directory.tributary";

/// The directory's gRPC service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DirectoryGrpc {
    registry: Arc<Registry>,
    keys: JwtKeys,
}

impl DirectoryGrpc {
    /// Serves `registry` to services whose tokens `keys` verifies.
    pub fn new(registry: Arc<Registry>, keys: JwtKeys) -> Self {
        Self { registry, keys }
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn server(self) -> DirectoryServiceServer<DirectoryGrpc> {
        DirectoryServiceServer::new(self)
    }

    /// `AuthenticateToken` of one token.
    async fn authenticate_one(
        &self,
        token: &str,
    ) -> Result<pb::DirectoryCredential, DirectoryError> {
        if token.is_empty() || token.len() > MAX_SECRET_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let hash = tributary_auth::hash_token(token);
        let resolved = self.registry.resolve_token_hash(&hash).await?;
        self.registry
            .check_device_enabled(&resolved.principal)
            .await?;
        Ok(credential_to_proto(resolved))
    }

    /// Admits platform admins (role admin, no tenant) only.
    #[allow(clippy::result_large_err)] // tonic's Status is what the trait returns.
    fn admit<T>(&self, request: &Request<T>) -> Result<OperatorClaims, Status> {
        let claims = authorize(&self.keys, request)?;
        if claims.role != Role::Admin || !claims.tenant.is_empty() {
            return Err(Status::permission_denied(
                "the directory serves Tributary services: a platform admin token \
                 (role admin, no tenant) is required",
            ));
        }
        Ok(claims)
    }
}

/// The `ErrorInfo` reason of each [`DirectoryError`] variant, with its code.
fn reason(e: &DirectoryError) -> (Code, &'static str) {
    match e {
        DirectoryError::Unauthenticated => (Code::Unauthenticated, "CREDENTIAL_REFUSED"),
        DirectoryError::Forbidden(_) => (Code::PermissionDenied, "FORBIDDEN"),
        DirectoryError::NotFound(_) => (Code::NotFound, "NOT_FOUND"),
        DirectoryError::Invalid(_) => (Code::InvalidArgument, "INVALID"),
        DirectoryError::Unavailable(_) => (Code::Unavailable, "UNAVAILABLE"),
    }
}

/// A directory error as a status that [`error_from_status`] turns back
/// into the same error.
pub(crate) fn status_from_error(e: DirectoryError) -> Status {
    let (code, reason) = reason(&e);
    let message = match e {
        DirectoryError::Unauthenticated => String::new(),
        DirectoryError::Forbidden(m)
        | DirectoryError::NotFound(m)
        | DirectoryError::Invalid(m)
        | DirectoryError::Unavailable(m) => m,
    };
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

/// The directory error an `ErrorInfo` reason and message stand for.
fn error_from_reason(reason: &str, message: &str) -> Option<DirectoryError> {
    let message = message.to_owned();
    Some(match reason {
        "CREDENTIAL_REFUSED" => DirectoryError::Unauthenticated,
        "FORBIDDEN" => DirectoryError::Forbidden(message),
        "NOT_FOUND" => DirectoryError::NotFound(message),
        "INVALID" => DirectoryError::Invalid(message),
        "UNAVAILABLE" => DirectoryError::Unavailable(message),
        _ => return None,
    })
}

/// A directory error as the error of one item of a batch.
pub(crate) fn item_error(e: DirectoryError) -> pb::DirectoryItemError {
    let status = status_from_error(e);
    let reason = reason_of(&status);
    pb::DirectoryItemError {
        reason,
        message: status.message().to_owned(),
    }
}

fn reason_of(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// The directory error of one item of a batch: the same error the single
/// call would have given, or [`DirectoryError::Unavailable`] for a reason
/// this client does not know.
pub(crate) fn error_from_item(rpc: &str, e: &pb::DirectoryItemError) -> DirectoryError {
    error_from_reason(&e.reason, &e.message).unwrap_or_else(|| {
        tracing::warn!(rpc, reason = %e.reason, message = %e.message, "unknown directory error");
        DirectoryError::Unavailable(format!("directory call {rpc} failed: {}", e.message))
    })
}

/// Most items in one batch call (`AuthenticateTokens`, `ReportPresences`).
pub const MAX_BATCH_ITEMS: usize = 1_024;

#[allow(clippy::result_large_err)]
fn check_batch(len: usize, what: &str) -> Result<(), Status> {
    if len > MAX_BATCH_ITEMS {
        return Err(status_from_error(DirectoryError::Invalid(format!(
            "{len} {what} in one call; at most {MAX_BATCH_ITEMS}"
        ))));
    }
    Ok(())
}

/// The directory error a status of `rpc` stands for: the very error the
/// server had when the status carries the directory's `ErrorInfo`,
/// [`DirectoryError::Unavailable`] for anything else.
pub(crate) fn error_from_status(rpc: &str, status: &Status) -> DirectoryError {
    let details = status.get_error_details();
    let reason = details
        .error_info()
        .filter(|info| info.domain == ERROR_DOMAIN)
        .map(|info| info.reason.as_str());
    match reason.and_then(|r| error_from_reason(r, status.message())) {
        Some(e) => e,
        None => match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => {
                tracing::error!(
                    rpc,
                    code = ?status.code(),
                    message = status.message(),
                    "the registry refused this service's token; check the shared JWT secret"
                );
                DirectoryError::Unavailable(format!(
                    "the registry refused this service's token: {}",
                    status.message()
                ))
            }
            code => {
                tracing::warn!(
                    rpc,
                    ?code,
                    message = status.message(),
                    "directory call failed"
                );
                DirectoryError::Unavailable(format!(
                    "directory call {rpc} failed: {code:?}: {}",
                    status.message()
                ))
            }
        },
    }
}

/// Converts a directory result for the wire.
#[allow(clippy::result_large_err)]
fn reply<T>(result: Result<T, DirectoryError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(status_from_error)
}

/// Converts a registry result for the wire, through [`DirectoryError`].
#[allow(clippy::result_large_err)]
fn reply_registry<T>(result: Result<T, RegistryError>) -> Result<Response<T>, Status> {
    reply(result.map_err(DirectoryError::from))
}

pub(crate) fn credential_to_proto(a: Authenticated) -> pb::DirectoryCredential {
    use pb::directory_credential::Principal as P;
    let principal = match a.principal {
        Principal::Device { tenant, device } => P::Device(pb::DeviceRef { tenant, device }),
        Principal::TenantIngest { tenant, .. } => {
            P::TenantIngest(pb::TenantIngestPrincipal { tenant })
        }
    };
    pb::DirectoryCredential {
        principal: Some(principal),
        credential_id: a.credential_id,
        expires_at_ns: a.expires_at_ns,
    }
}

pub(crate) fn application_to_proto(a: AuthenticatedApplication) -> pb::DirectoryApplication {
    let app = a.application;
    pb::DirectoryApplication {
        tenant: app.tenant,
        name: app.name,
        credential_id: app.credential_id,
        publish: app.grants.publish,
        subscribe: app.grants.subscribe,
        expires_at_ns: a.expires_at_ns,
    }
}

fn policy_to_proto(p: TenantPolicy) -> pb::TenantSettings {
    pb::TenantSettings {
        auto_provision: p.auto_provision,
        device_tag: p.device_tag,
        quotas: p
            .quotas
            .overrides()
            .map(|(q, v)| (q.name().to_owned(), v))
            .collect(),
        retention: p.retention.to_named().into_iter().collect(),
        lwm2m_metrics: p.lwm2m_metrics.to_named().into_iter().collect(),
    }
}

#[tonic::async_trait]
impl DirectoryService for DirectoryGrpc {
    async fn authenticate_token(
        &self,
        request: Request<pb::AuthenticateTokenRequest>,
    ) -> Result<Response<pb::DirectoryCredential>, Status> {
        self.admit(&request)?;
        let token = request.into_inner().token;
        reply(self.authenticate_one(&token).await)
    }

    async fn authenticate_certificate(
        &self,
        request: Request<pb::AuthenticateCertificateRequest>,
    ) -> Result<Response<pb::DirectoryCredential>, Status> {
        self.admit(&request)?;
        let fingerprint = request.into_inner().fingerprint;
        reply(
            async {
                let fingerprint =
                    parse_fingerprint(&fingerprint).map_err(|_| DirectoryError::Unauthenticated)?;
                let resolved = self.registry.resolve_certificate(&fingerprint).await?;
                self.registry
                    .check_device_enabled(&resolved.principal)
                    .await?;
                Ok(credential_to_proto(resolved))
            }
            .await,
        )
    }

    async fn authenticate_psk(
        &self,
        request: Request<pb::AuthenticatePskRequest>,
    ) -> Result<Response<pb::DirectoryPsk>, Status> {
        self.admit(&request)?;
        let identity = request.into_inner().identity;
        reply(
            async {
                let (resolved, key) = self.registry.resolve_psk(&identity).await?;
                self.registry
                    .check_device_enabled(&resolved.principal)
                    .await?;
                Ok(pb::DirectoryPsk {
                    credential: Some(credential_to_proto(resolved)),
                    key,
                })
            }
            .await,
        )
    }

    async fn authenticate_application(
        &self,
        request: Request<pb::AuthenticateApplicationRequest>,
    ) -> Result<Response<pb::DirectoryApplication>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        reply(
            async {
                if req.token.is_empty() || req.token.len() > MAX_SECRET_BYTES {
                    return Err(DirectoryError::Unauthenticated);
                }
                let hash = tributary_auth::hash_token(&req.token);
                let resolved = self.registry.resolve_application(&hash).await?;
                if resolved.application.name != req.name {
                    return Err(DirectoryError::Unauthenticated);
                }
                Ok(application_to_proto(resolved))
            }
            .await,
        )
    }

    async fn get_tenant_policy(
        &self,
        request: Request<pb::GetTenantPolicyRequest>,
    ) -> Result<Response<pb::TenantSettings>, Status> {
        self.admit(&request)?;
        let policy = self.registry.tenant_policy(&request.get_ref().tenant).await;
        reply_registry(policy.map(policy_to_proto))
    }

    async fn ensure_device(
        &self,
        request: Request<pb::EnsureDeviceRequest>,
    ) -> Result<Response<pb::EnsureDeviceResponse>, Status> {
        self.admit(&request)?;
        let req = request.into_inner();
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let ensured = ensure_device_uncached(&self.registry, &req.tenant, &req.device, &labels)
            .await
            .map(|()| pb::EnsureDeviceResponse {});
        reply(ensured)
    }

    async fn get_device(
        &self,
        request: Request<pb::DeviceRef>,
    ) -> Result<Response<pb::GetDeviceResponse>, Status> {
        self.admit(&request)?;
        let req = request.get_ref();
        let found = self.registry.find_device(&req.tenant, &req.device).await;
        reply_registry(found.map(|d| pb::GetDeviceResponse {
            device: d.map(|d| pb::DirectoryDevice {
                id: d.id,
                labels: d.labels.into_iter().collect(),
                disabled: d.disabled,
            }),
        }))
    }

    async fn select_devices(
        &self,
        request: Request<pb::SelectDevicesRequest>,
    ) -> Result<Response<pb::SelectDevicesResponse>, Status> {
        self.admit(&request)?;
        let req = request.get_ref();
        let selected = async {
            let selector = Selector::parse(&req.selector)?;
            self.registry.select_devices(&req.tenant, &selector).await
        }
        .await;
        reply_registry(selected.map(|devices| {
            pb::SelectDevicesResponse {
                devices: devices
                    .into_iter()
                    .map(|d| pb::DirectoryDevice {
                        id: d.id,
                        labels: d.labels.into_iter().collect(),
                        disabled: d.disabled,
                    })
                    .collect(),
            }
        }))
    }

    async fn authenticate_tokens(
        &self,
        request: Request<pb::AuthenticateTokensRequest>,
    ) -> Result<Response<pb::AuthenticateTokensResponse>, Status> {
        use pb::authenticate_token_result::Result as R;
        self.admit(&request)?;
        let tokens = request.into_inner().tokens;
        check_batch(tokens.len(), "tokens")?;
        let results = futures::future::join_all(tokens.iter().map(|t| self.authenticate_one(t)))
            .await
            .into_iter()
            .map(|r| pb::AuthenticateTokenResult {
                result: Some(match r {
                    Ok(c) => R::Credential(c),
                    Err(e) => R::Error(item_error(e)),
                }),
            })
            .collect();
        Ok(Response::new(pb::AuthenticateTokensResponse { results }))
    }

    async fn report_presences(
        &self,
        request: Request<pb::ReportPresencesRequest>,
    ) -> Result<Response<pb::ReportPresencesResponse>, Status> {
        use pb::report_presence_result::Result as R;
        self.admit(&request)?;
        let reports = request.into_inner().reports;
        check_batch(reports.len(), "reports")?;
        // Concurrent: the registry's presence writer takes them as groups.
        let results = futures::future::join_all(reports.iter().map(|r| {
            self.registry
                .report_presence(&r.tenant, &r.device, r.online, r.at_ns, &r.frontend)
        }))
        .await
        .into_iter()
        .map(|r| pb::ReportPresenceResult {
            result: Some(match r {
                Ok(p) => R::Presence(pb::Presence {
                    online: p.online,
                    last_seen_ns: p.last_seen_ns,
                    frontend: p.frontend,
                }),
                Err(e) => R::Error(item_error(DirectoryError::from(e))),
            }),
        })
        .collect();
        Ok(Response::new(pb::ReportPresencesResponse { results }))
    }

    async fn report_presence(
        &self,
        request: Request<pb::ReportPresenceRequest>,
    ) -> Result<Response<pb::Presence>, Status> {
        self.admit(&request)?;
        let r = request.get_ref();
        let reported = self
            .registry
            .report_presence(&r.tenant, &r.device, r.online, r.at_ns, &r.frontend)
            .await;
        reply_registry(reported.map(|p| pb::Presence {
            online: p.online,
            last_seen_ns: p.last_seen_ns,
            frontend: p.frontend,
        }))
    }

    async fn check_credential(
        &self,
        request: Request<pb::CheckCredentialRequest>,
    ) -> Result<Response<pb::CheckCredentialResponse>, Status> {
        self.admit(&request)?;
        let r = request.get_ref();
        let active = self
            .registry
            .credential_active(&r.tenant, &r.credential_id)
            .await
            .map_err(DirectoryError::from);
        reply(active.map(|active| pb::CheckCredentialResponse { active }))
    }

    async fn get_presence(
        &self,
        request: Request<pb::DeviceRef>,
    ) -> Result<Response<pb::GetPresenceResponse>, Status> {
        self.admit(&request)?;
        let r = request.get_ref();
        let presence = presence_record(&self.registry, &r.tenant, &r.device).await;
        reply(presence.map(|p| pb::GetPresenceResponse {
            presence: p.map(|p| pb::Presence {
                online: p.online,
                last_seen_ns: p.last_seen_ns,
                frontend: p.frontend,
            }),
        }))
    }

    type ListRuleTargetsStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::RuleTargets, Status>>>;

    async fn list_rule_targets(
        &self,
        request: Request<pb::ListRuleTargetsRequest>,
    ) -> Result<Response<Self::ListRuleTargetsStream>, Status> {
        self.admit(&request)?;
        let rules = reply_registry(self.registry.rules_with_targets().await)?.into_inner();
        let messages: Vec<Result<pb::RuleTargets, Status>> = rules
            .into_iter()
            .map(|(rule, devices)| {
                Ok(pb::RuleTargets {
                    rule: Some(tributary_rules::convert::rule_to_pb(&rule)),
                    devices,
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(messages)))
    }

    async fn list_all_webhooks(
        &self,
        request: Request<pb::ListAllWebhooksRequest>,
    ) -> Result<Response<pb::ListAllWebhooksResponse>, Status> {
        self.admit(&request)?;
        let hooks = reply_registry(self.registry.all_webhooks().await)?.into_inner();
        Ok(Response::new(pb::ListAllWebhooksResponse {
            webhooks: hooks
                .iter()
                .map(|h| pb::DirectoryWebhook {
                    webhook: Some(crate::rules_grpc::webhook_to_pb(h)),
                    secret: h.secret.clone(),
                })
                .collect(),
        }))
    }

    async fn list_all_silences(
        &self,
        request: Request<pb::ListAllSilencesRequest>,
    ) -> Result<Response<pb::ListSilencesResponse>, Status> {
        self.admit(&request)?;
        let silences = reply_registry(self.registry.all_silences().await)?.into_inner();
        Ok(Response::new(pb::ListSilencesResponse {
            silences: silences
                .iter()
                .map(tributary_rules::convert::silence_to_pb)
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_directory_error_survives_the_wire() {
        let errors = [
            DirectoryError::Unauthenticated,
            DirectoryError::Forbidden("device \"d\" is disabled".into()),
            DirectoryError::NotFound("device \"x\" not found".into()),
            DirectoryError::Invalid("invalid device: bad/id".into()),
            DirectoryError::Unavailable("registry storage unavailable".into()),
        ];
        for e in errors {
            let status = status_from_error(e.clone());
            assert_eq!(status.code(), reason(&e).0);
            assert_eq!(error_from_status("Test", &status), e);
        }
    }

    #[test]
    fn statuses_without_the_detail_are_never_a_verdict_on_a_device() {
        for status in [
            Status::unauthenticated("operator token rejected"),
            Status::permission_denied("platform admin required"),
            Status::not_found("no such method"),
            Status::invalid_argument("bad"),
            Status::unavailable("connection refused"),
        ] {
            assert!(
                matches!(
                    error_from_status("Test", &status),
                    DirectoryError::Unavailable(_)
                ),
                "{status:?}"
            );
        }
    }
}
