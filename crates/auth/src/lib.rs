//! Credentials and authorization.
//!
//! * Operators authenticate with an HS256 JWT ([`OperatorClaims`]) that
//!   carries their tenant and [`Role`]. [`JwtKeys`] issues and verifies them;
//!   [`authorize`] pulls them from a gRPC request's `authorization: Bearer`
//!   metadata; [`OperatorClaims::tenant_for`] applies the tenant-scoping rule:
//!   a request acts in the token's tenant unless it names another, and only an
//!   admin may name another.
//! * Devices and ingest agents authenticate with opaque random tokens
//!   ([`generate_token`]): 256 random bits, shown once, stored only as a
//!   SHA-256 hash ([`hash_token`]). A fast hash is right here because the
//!   tokens are high-entropy: there is nothing to brute-force.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read devices and data of the token's tenant.
    Viewer,
    /// Also manage devices and credentials of the token's tenant.
    Operator,
    /// Everything, in every tenant, including creating tenants.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (viewer, operator, admin)")),
        }
    }
}

/// The claims of an operator JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorClaims {
    /// Who: a user or service name, for audit.
    pub sub: String,
    /// The operator's home tenant.
    pub tenant: String,
    pub role: Role,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

impl OperatorClaims {
    /// The tenant a request acts in: `requested` if non-empty, else the
    /// token's own. Naming another tenant needs the admin role.
    #[allow(clippy::result_large_err)]
    pub fn tenant_for(&self, requested: &str) -> Result<String, tonic::Status> {
        if requested.is_empty() || requested == self.tenant {
            Ok(self.tenant.clone())
        } else if self.role == Role::Admin {
            Ok(requested.to_string())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "token of tenant {:?} may not act in tenant {requested:?}",
                self.tenant
            )))
        }
    }

    /// Fails unless the operator has at least `role`.
    #[allow(clippy::result_large_err)]
    pub fn require(&self, role: Role) -> Result<(), tonic::Status> {
        if self.role >= role {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "role {:?} required, token has {:?}",
                role, self.role
            )))
        }
    }
}

/// Why a credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    InvalidToken(#[from] jsonwebtoken::errors::Error),
    #[error("signing key file: {0}")]
    KeyFile(#[from] std::io::Error),
    #[error("signing key must be at least 32 bytes")]
    WeakKey,
    #[error("the system clock is before 1970")]
    Clock,
}

/// How long a [`JwtKeys::service_token`] is valid: ten years, as the
/// bootstrap admin token.
pub const SERVICE_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// The HS256 key that signs and verifies operator JWTs.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    /// Keys from a shared secret of at least 32 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < 32 {
            return Err(AuthError::WeakKey);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token that is not valid yet (`nbf` in the future) is refused,
        // with the same clock leeway as `exp`.
        validation.validate_nbf = true;
        validation.leeway = 30;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// Loads the secret from `path`, which must exist (services other than
    /// the registry read the secret the registry created, or a Kubernetes
    /// Secret).
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let secret = std::fs::read(path)?;
        Self::from_secret(trim_ascii(&secret))
    }

    /// Loads the secret from `path`, creating a random one (mode 0600) if the
    /// file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        match std::fs::read(path) {
            Ok(secret) => Self::from_secret(trim_ascii(&secret)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 48];
                rand::rng().fill_bytes(&mut raw);
                let secret = URL_SAFE_NO_PAD.encode(raw);
                write_private(path, secret.as_bytes())?;
                Self::from_secret(secret.as_bytes())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Signs claims.
    pub fn issue(&self, claims: &OperatorClaims) -> Result<String, AuthError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// A token for one Tributary service to call another's internal API
    /// (the registry's `DirectoryService`): a platform admin (role admin,
    /// no tenant), subject `svc:<service_name>`, valid for
    /// [`SERVICE_TOKEN_LIFETIME`].
    ///
    /// Services share the JWT secret, so each mints its own at start-up and
    /// keeps it in memory only; it is never written anywhere. The long life
    /// spares a refresh path in every client: rotating the shared secret is
    /// what revokes service tokens, as it does every operator token.
    pub fn service_token(&self, service_name: &str) -> Result<String, AuthError> {
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| AuthError::Clock)?
            .as_secs();
        self.issue(&OperatorClaims {
            sub: format!("svc:{service_name}"),
            tenant: String::new(),
            role: Role::Admin,
            iat,
            exp: iat.saturating_add(SERVICE_TOKEN_LIFETIME.as_secs()),
        })
    }

    /// Verifies a token's signature and expiry.
    pub fn verify(&self, token: &str) -> Result<OperatorClaims, AuthError> {
        Ok(jsonwebtoken::decode::<OperatorClaims>(token, &self.decoding, &self.validation)?.claims)
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Writes a file readable only by its owner (mode 0600), durably.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Verifies the `authorization: Bearer <jwt>` metadata of a gRPC request.
#[allow(clippy::result_large_err)]
pub fn authorize<T>(
    keys: &JwtKeys,
    req: &tonic::Request<T>,
) -> Result<OperatorClaims, tonic::Status> {
    let header = req.metadata().get("authorization").ok_or_else(|| {
        tonic::Status::unauthenticated("missing authorization metadata (Bearer token)")
    })?;
    let value = header
        .to_str()
        .map_err(|_| tonic::Status::unauthenticated("authorization metadata is not ASCII"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| tonic::Status::unauthenticated("authorization must be `Bearer <token>`"))?;
    keys.verify(token.trim())
        .map_err(|e| tonic::Status::unauthenticated(format!("operator token rejected: {e}")))
}

/// The kind of an opaque token, visible in its prefix so leaked tokens are
/// easy to recognise (and to scan for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `tbd_…`: one device.
    Device,
    /// `tbi_…`: tenant ingest.
    TenantIngest,
    /// `tba_…`: a tenant application (MQTT user name `app:<name>`).
    Application,
}

/// The registry's secret for DTLS pre-shared keys (CoAP over DTLS).
///
/// A PSK handshake needs the key itself on the server side, so a PSK
/// cannot be kept only as a hash the way a token is. Instead the registry
/// stores no key at all: a device's key is derived from this secret and the
/// credential's tenant and id (HMAC-SHA-256), when it is issued and again
/// at each handshake. A copy of the registry's database therefore holds no
/// key; this secret, which never leaves the registry process, does.
/// Rotating it changes every PSK.
#[derive(Clone)]
pub struct PskKeys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for PskKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PskKeys(..)")
    }
}

impl PartialEq for PskKeys {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

impl Eq for PskKeys {}

impl PskKeys {
    /// Keys from a secret of at least 32 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < 32 {
            return Err(AuthError::WeakKey);
        }
        Ok(Self {
            secret: secret.to_vec(),
        })
    }

    /// Loads the secret from `path`, creating a random one (mode 0600) if
    /// the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        match std::fs::read(path) {
            Ok(secret) => Self::from_secret(trim_ascii(&secret)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 48];
                rand::rng().fill_bytes(&mut raw);
                let secret = URL_SAFE_NO_PAD.encode(raw);
                write_private(path, secret.as_bytes())?;
                Self::from_secret(secret.as_bytes())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The key of credential `credential_id` of `tenant`: `tbk_` and 43
    /// characters of base64url, printable so that it can be given to any
    /// DTLS client as it is. The device uses these ASCII bytes as its PSK.
    pub fn derive(&self, tenant: &str, credential_id: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"tributary-psk-v1\0");
        mac.update(tenant.as_bytes());
        mac.update(b"\0");
        mac.update(credential_id.as_bytes());
        format!(
            "tbk_{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }
}

/// The PSK identity of a device's PSK credential: `<tenant>/<device>/<id>`.
/// It names the device, and the registry finds the credential by it.
pub fn psk_identity(tenant: &str, device: &str, credential_id: &str) -> String {
    format!("{tenant}/{device}/{credential_id}")
}

/// Splits a PSK identity into tenant, device and credential id. The tenant
/// and the id hold no `/`; the device may.
pub fn parse_psk_identity(identity: &str) -> Option<(&str, &str, &str)> {
    let (rest, id) = identity.rsplit_once('/')?;
    let (tenant, device) = rest.split_once('/')?;
    if tenant.is_empty() || device.is_empty() || id.is_empty() {
        return None;
    }
    Some((tenant, device, id))
}

/// A freshly generated token: the secret to show once and the hash to store.
#[derive(Debug, Clone)]
pub struct GeneratedToken {
    pub secret: String,
    pub hash: [u8; 32],
}

/// Generates a token with 256 random bits.
pub fn generate_token(kind: TokenKind) -> GeneratedToken {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let prefix = match kind {
        TokenKind::Device => "tbd_",
        TokenKind::TenantIngest => "tbi_",
        TokenKind::Application => "tba_",
    };
    let secret = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw));
    let hash = hash_token(&secret);
    GeneratedToken { secret, hash }
}

/// The stored form of a token.
pub fn hash_token(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A short random identifier (credential ids and the like): 16 hex chars.
pub fn random_id() -> String {
    let mut raw = [0u8; 8];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_keys_are_printable_and_depend_on_secret_tenant_and_id() {
        let a = PskKeys::from_secret(&[1u8; 32]).unwrap();
        let b = PskKeys::from_secret(&[2u8; 32]).unwrap();
        let key = a.derive("acme", "00aa");
        assert!(key.starts_with("tbk_") && key.len() == 47, "{key}");
        assert!(key.bytes().all(|c| c.is_ascii_graphic()));
        assert_eq!(key, a.derive("acme", "00aa"), "deterministic");
        assert_ne!(key, b.derive("acme", "00aa"));
        assert_ne!(key, a.derive("acme", "00ab"));
        assert_ne!(key, a.derive("acmf", "00aa"));
        // No ambiguity between the parts.
        assert_ne!(a.derive("ab", "c"), a.derive("a", "bc"));
        assert!(PskKeys::from_secret(&[1u8; 31]).is_err());
        assert_eq!(format!("{a:?}"), "PskKeys(..)");
    }

    #[test]
    fn psk_identities_round_trip_with_slashes_in_the_device() {
        let id = psk_identity("acme", "site/7/pump", "0123456789abcdef");
        assert_eq!(
            parse_psk_identity(&id),
            Some(("acme", "site/7/pump", "0123456789abcdef"))
        );
        for bad in ["", "acme", "acme/x", "/d/id", "acme//id", "acme/d/"] {
            assert_eq!(parse_psk_identity(bad), None, "{bad}");
        }
    }

    fn claims(role: Role, exp_in: i64) -> OperatorClaims {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        OperatorClaims {
            sub: "alice".into(),
            tenant: "acme".into(),
            role,
            iat: now as u64,
            exp: (now + exp_in) as u64,
        }
    }

    #[test]
    fn jwt_round_trip_and_rejections() {
        let keys = JwtKeys::from_secret(&[7u8; 32]).unwrap();
        let c = claims(Role::Operator, 3600);
        assert_eq!(keys.verify(&keys.issue(&c).unwrap()).unwrap(), c);

        let expired = keys.issue(&claims(Role::Admin, -3600)).unwrap();
        assert!(keys.verify(&expired).is_err());

        let other = JwtKeys::from_secret(&[8u8; 32]).unwrap();
        assert!(other.verify(&keys.issue(&c).unwrap()).is_err());
        assert!(keys.verify("not.a.jwt").is_err());
        assert!(JwtKeys::from_secret(b"short").is_err());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        #[derive(Serialize)]
        struct WithNbf {
            #[serde(flatten)]
            claims: OperatorClaims,
            nbf: u64,
        }
        let keys = JwtKeys::from_secret(&[7u8; 32]).unwrap();
        let c = claims(Role::Admin, 7200);
        let sign = |nbf: u64| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &WithNbf {
                    claims: c.clone(),
                    nbf,
                },
                &EncodingKey::from_secret(&[7u8; 32]),
            )
            .unwrap()
        };
        let err = keys
            .verify(&sign(c.iat + 3600))
            .expect_err("nbf in an hour");
        assert!(err.to_string().contains("ImmatureSignature"), "{err}");
        assert_eq!(keys.verify(&sign(c.iat - 10)).unwrap(), c);
    }

    #[test]
    fn service_tokens_are_platform_admins_named_after_the_service() {
        let keys = JwtKeys::from_secret(&[7u8; 32]).unwrap();
        let token = keys.service_token("ingest-mqtt").unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, "svc:ingest-mqtt");
        assert_eq!(claims.tenant, "");
        assert_eq!(claims.role, Role::Admin);
        assert!(claims.exp >= claims.iat + SERVICE_TOKEN_LIFETIME.as_secs());
        let other = JwtKeys::from_secret(&[8u8; 32]).unwrap();
        assert!(other.verify(&token).is_err(), "another secret refuses it");
    }

    #[test]
    fn tenant_scoping() {
        let op = claims(Role::Operator, 60);
        assert_eq!(op.tenant_for("").unwrap(), "acme");
        assert_eq!(op.tenant_for("acme").unwrap(), "acme");
        assert_eq!(
            op.tenant_for("other").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let admin = claims(Role::Admin, 60);
        assert_eq!(admin.tenant_for("other").unwrap(), "other");
        assert!(op.require(Role::Admin).is_err());
        assert!(op.require(Role::Viewer).is_ok());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token(TokenKind::Device);
        let b = generate_token(TokenKind::Device);
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("tbd_"));
        assert!(a.secret.len() >= 4 + 43);
        assert_eq!(hash_token(&a.secret), a.hash);
        assert!(
            generate_token(TokenKind::TenantIngest)
                .secret
                .starts_with("tbi_")
        );
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.secret");
        let k1 = JwtKeys::load_or_create(&path).unwrap();
        let token = k1.issue(&claims(Role::Viewer, 60)).unwrap();
        let k2 = JwtKeys::load_or_create(&path).unwrap();
        assert!(k2.verify(&token).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
