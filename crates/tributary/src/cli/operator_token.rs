//! `tributary operator-token`: mints an operator token from the platform's
//! JWT secret, offline, for least-privilege clients (a Grafana data source
//! with a viewer's token of one tenant, a script with an operator's).

use std::path::PathBuf;

use anyhow::Context;
use tributary_auth::{JwtKeys, OperatorClaims, Role};

/// Flags of `tributary operator-token`.
#[derive(Debug, clap::Args)]
pub struct OperatorTokenArgs {
    /// The JWT secret the services share (standalone: `data/jwt.secret`).
    #[arg(
        long,
        env = "TRIBUTARY_JWT_SECRET_FILE",
        default_value = "data/jwt.secret"
    )]
    pub jwt_secret_file: PathBuf,
    /// The tenant the token acts in.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// `viewer` (reads), `operator` (also manages devices, rules and
    /// credentials) or `admin` (every tenant: give it sparingly).
    #[arg(long, default_value = "viewer")]
    pub role: String,
    /// Who holds it, for the audit trail (the token's subject).
    #[arg(long, default_value = "operator")]
    pub subject: String,
    /// How long it is valid: `30d`, `12h`; at most 10 years.
    #[arg(long, default_value = "90d")]
    pub ttl: String,
}

/// Prints a new operator token on stdout.
#[allow(clippy::print_stdout)]
pub fn run(args: OperatorTokenArgs) -> anyhow::Result<()> {
    let role: Role = args.role.parse().map_err(anyhow::Error::msg)?;
    let ttl_ns = tributary_core::time::parse_duration(&args.ttl)
        .with_context(|| format!("--ttl {:?}: a duration such as 90d or 12h", args.ttl))?;
    let ttl = u64::try_from(ttl_ns / 1_000_000_000).unwrap_or(u64::MAX);
    anyhow::ensure!(
        (1..=10 * 365 * 86_400).contains(&ttl),
        "--ttl: from 1 s to 10 years"
    );
    anyhow::ensure!(
        !args.tenant.is_empty() || role == Role::Admin,
        "--tenant: required"
    );
    let secret = std::fs::read(&args.jwt_secret_file)
        .with_context(|| format!("reading {}", args.jwt_secret_file.display()))?;
    let keys = JwtKeys::from_secret(secret.trim_ascii())?;
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = keys.issue(&OperatorClaims {
        sub: args.subject,
        tenant: args.tenant,
        role,
        iat,
        exp: iat.saturating_add(ttl),
    })?;
    println!("{token}");
    Ok(())
}
