//! The operator CLI: gRPC calls to a running platform, printed as tables,
//! JSON or CSV.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tributary_proto::v1::alerts_service_client::AlertsServiceClient;
use tributary_proto::v1::command_service_client::CommandServiceClient;
use tributary_proto::v1::dead_letter_service_client::DeadLetterServiceClient;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_proto::v1::registry_service_client::RegistryServiceClient;
use tributary_proto::v1::rules_service_client::RulesServiceClient;

use crate::output::Format;

mod alerts;
mod commands;
mod dlq;
mod operator_token;
mod query;
mod registry;
mod rules;
mod webhooks;

/// Where and as whom the CLI connects. Global: usable after any subcommand.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// gRPC endpoint of the platform.
    #[arg(
        long,
        global = true,
        env = "TRIBUTARY_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    endpoint: String,
    /// Operator JWT. Without it (and without TRIBUTARY_TOKEN), the CLI reads
    /// ./data/admin.token, the token a local standalone wrote on first start.
    #[arg(long, global = true, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Act in this tenant instead of the token's own (admins only).
    #[arg(long, global = true, env = "TRIBUTARY_TENANT")]
    tenant: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// Operator commands.
#[derive(Debug, clap::Subcommand)]
pub enum CliCommand {
    /// Manage tenants (admin).
    #[command(subcommand)]
    Tenants(registry::TenantsCmd),
    /// Manage devices.
    #[command(subcommand)]
    Devices(registry::DevicesCmd),
    /// Issue, list and revoke device access tokens, tenant ingest tokens,
    /// application tokens and (listed, revoked) device certificates.
    #[command(subcommand)]
    Tokens(registry::TokensCmd),
    /// Query time series (ranges, aggregates, latest values, metric names).
    #[command(subcommand)]
    Series(query::QueryCmd),
    /// Follow live points as they are stored.
    Tail(query::TailArgs),
    /// Send commands to devices and print their replies.
    #[command(subcommand)]
    Commands(commands::CommandsCmd),
    /// Inspect and replay dead letters: records the processor could not
    /// store.
    #[command(subcommand)]
    Dlq(dlq::DlqCmd),
    /// Manage rules: thresholds, no data, rates of change and anomalies
    /// that raise alerts.
    #[command(subcommand)]
    Rules(rules::RulesCmd),
    /// List and follow the alerts the rules raise.
    #[command(subcommand)]
    Alerts(alerts::AlertsCmd),
    /// Manage webhooks: where alerts are POSTed, signed.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCmd),
    /// Mint an operator token from the JWT secret, offline: a viewer's
    /// token of one tenant for Grafana, an operator's for a script.
    OperatorToken(operator_token::OperatorTokenArgs),
}

/// Adds the operator token to every call.
#[derive(Debug, Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Intercepted = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// What every command needs.
#[derive(Debug)]
pub struct Ctx {
    pub registry: RegistryServiceClient<Intercepted>,
    pub query: QueryServiceClient<Intercepted>,
    pub commands: CommandServiceClient<Intercepted>,
    pub dlq: DeadLetterServiceClient<Intercepted>,
    pub rules: RulesServiceClient<Intercepted>,
    pub alerts: AlertsServiceClient<Intercepted>,
    /// The tenant to act in; empty = the token's own.
    pub tenant: String,
    pub output: Format,
}

impl Ctx {
    pub fn print(&self, rows: &crate::output::Rows) {
        use std::io::Write;
        let _ = std::io::stdout().write_all(rows.render(self.output).as_bytes());
    }
}

fn resolve_token(conn: &Connection) -> anyhow::Result<String> {
    if let Some(t) = &conn.token {
        return Ok(t.trim().to_string());
    }
    let fallback = PathBuf::from("data/admin.token");
    std::fs::read_to_string(&fallback).map(|t| t.trim().to_string()).map_err(|_| {
        anyhow::anyhow!("no operator token: pass --token, set TRIBUTARY_TOKEN, or run from the directory holding data/admin.token")
    })
}

pub async fn run(conn: Connection, cmd: CliCommand) -> anyhow::Result<()> {
    // Offline: needs the secret, not a server or a token.
    if let CliCommand::OperatorToken(args) = cmd {
        return operator_token::run(args);
    }
    let token = resolve_token(&conn)?;
    let header: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("the token contains characters not allowed in a header")?;
    let channel = Channel::from_shared(conn.endpoint.clone())
        .with_context(|| format!("invalid endpoint {:?}", conn.endpoint))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", conn.endpoint))?;
    let bearer = Bearer(header);
    let mut ctx = Ctx {
        registry: RegistryServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        query: QueryServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        commands: CommandServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        dlq: DeadLetterServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        rules: RulesServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        alerts: AlertsServiceClient::with_interceptor(channel, bearer),
        tenant: conn.tenant.unwrap_or_default(),
        output: conn.output,
    };
    let result = match cmd {
        CliCommand::Tenants(c) => registry::tenants(&mut ctx, c).await,
        CliCommand::Devices(c) => registry::devices(&mut ctx, c).await,
        CliCommand::Tokens(c) => registry::tokens(&mut ctx, c).await,
        CliCommand::Series(c) => query::query(&mut ctx, c).await,
        CliCommand::Tail(a) => query::tail(&mut ctx, a).await,
        CliCommand::Commands(c) => commands::commands(&mut ctx, c).await,
        CliCommand::Dlq(c) => dlq::dlq(&mut ctx, c).await,
        CliCommand::Rules(c) => rules::rules(&mut ctx, c).await,
        CliCommand::Alerts(c) => alerts::alerts(&mut ctx, c).await,
        CliCommand::Webhooks(c) => webhooks::webhooks(&mut ctx, c).await,
        CliCommand::OperatorToken(args) => operator_token::run(args),
    };
    result.map_err(|e| match e.downcast::<tonic::Status>() {
        Ok(status) => anyhow::anyhow!(describe_status(&status)),
        Err(e) => e,
    })
}

/// A gRPC error as a person reads it: the code, the message, and any field
/// violations from the status details.
fn describe_status(s: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let mut out = format!("{:?}: {}", s.code(), s.message());
    let details = s.get_error_details();
    if let Some(br) = details.bad_request() {
        for v in &br.field_violations {
            out.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    out
}

/// Parses repeated `k=v` flags.
pub fn parse_pairs(pairs: &[String], what: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("{what} {p:?}: expected key=value")
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}
