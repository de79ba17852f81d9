//! The registry's one error type, shared by the storage seam and the service.
//!
//! Errors reach users in exactly two places: gRPC (`From<RegistryError> for
//! tonic::Status` in [`crate::grpc`]) and the directory traits
//! (`From<RegistryError> for DirectoryError` below). Both hide internal
//! details and log them instead.

use std::fmt;

use tributary_core::directory::DirectoryError;
use tributary_core::model::ValidationError;

/// The kind of record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A tenant.
    Tenant,
    /// A device of a tenant.
    Device,
    /// A device token, tenant ingest token or device certificate.
    Credential,
    /// A rule of a tenant.
    Rule,
    /// An alert webhook of a tenant.
    Webhook,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Tenant => "tenant",
            Entity::Device => "device",
            Entity::Credential => "credential",
            Entity::Rule => "rule",
            Entity::Webhook => "webhook",
        })
    }
}

/// Why a registry or registry-store call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A request field is invalid; [`ValidationError::field`] names it.
    #[error("invalid {0}")]
    Invalid(#[from] ValidationError),
    /// The record to create exists already.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// What kind of record.
        kind: Entity,
        /// Its name or id.
        name: String,
    },
    /// The record does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What kind of record.
        kind: Entity,
        /// Its name or id.
        name: String,
    },
    /// A quota was reached (too many tokens, too many results to list).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// Over one of the tenant's quotas (`devices`).
    #[error("{0}")]
    Quota(tributary_core::quota::QuotaExceeded),
    /// A conditional write found the record changed since it was read, or
    /// present when it should be absent. Store-level; the service turns it
    /// into [`RegistryError::AlreadyExists`] or retries.
    #[error("concurrent modification: {0}")]
    Conflict(String),
    /// The storage backend could not be reached or could not do I/O. Retry later.
    #[error("registry storage unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupt data. The message is for logs, not for clients.
    #[error("registry internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// A [`RegistryError::NotFound`].
    pub fn not_found(kind: Entity, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    /// A [`RegistryError::AlreadyExists`].
    pub fn already_exists(kind: Entity, name: impl Into<String>) -> Self {
        Self::AlreadyExists {
            kind,
            name: name.into(),
        }
    }

    /// A [`RegistryError::Invalid`] naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(ValidationError::new(field, message))
    }
}

impl From<RegistryError> for DirectoryError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(v) => DirectoryError::Invalid(v.to_string()),
            e @ RegistryError::NotFound { .. } => DirectoryError::NotFound(e.to_string()),
            e @ (RegistryError::AlreadyExists { .. } | RegistryError::LimitExceeded(_)) => {
                DirectoryError::Invalid(e.to_string())
            }
            RegistryError::Quota(q) => DirectoryError::Forbidden(q.to_string()),
            RegistryError::Conflict(_) => {
                DirectoryError::Unavailable("registry is busy with concurrent changes".into())
            }
            RegistryError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "registry storage unavailable");
                DirectoryError::Unavailable("registry storage unavailable".into())
            }
            RegistryError::Internal(detail) => {
                tracing::error!(error = %detail, "registry internal error");
                DirectoryError::Unavailable("registry internal error".into())
            }
        }
    }
}
