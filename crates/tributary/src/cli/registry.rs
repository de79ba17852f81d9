//! `tenants`, `devices` and `tokens` commands.

use serde_json::json;
use tributary_core::quota::Quota;
use tributary_core::retention::{DataKind, Keep};
use tributary_core::time::format_rfc3339;
use tributary_proto::v1 as pb;

use super::{Ctx, parse_pairs};
use crate::output::Rows;

#[derive(Debug, clap::Subcommand)]
pub enum TenantsCmd {
    /// Create a tenant.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        display_name: String,
        /// Refuse line-protocol writes for unknown devices instead of creating them.
        #[arg(long)]
        no_auto_provision: bool,
        /// Line-protocol tag that names the device.
        #[arg(long, default_value = "device")]
        device_tag: String,
    },
    /// List tenants.
    List,
    /// Set a tenant's quotas (admins only): `name=value` pairs, e.g.
    /// `connections=500 messages_per_sec=2000`. `tributary tenants quotas`
    /// lists the names.
    SetQuota {
        tenant: String,
        /// Quotas to set, `name=value` (whole numbers; rates per second).
        #[arg(value_name = "NAME=VALUE")]
        quotas: Vec<String>,
        /// Quota to return to the platform default (repeatable).
        #[arg(long)]
        clear: Vec<String>,
    },
    /// Show a tenant's quotas in force, and which it has of its own.
    Quotas { tenant: String },
    /// Set how long a tenant's data is kept (admins only): `kind=retention`
    /// pairs, where the kind is `raw` or a rollup tier (`1m`, `1h`, `1d`)
    /// and the retention a duration from 1h to 20y or `forever`, e.g.
    /// `raw=30d 1m=1y 1h=forever`. Kinds not set keep the platform default:
    /// the store's `--retention` for raw points, for ever for rollups.
    SetRetention {
        tenant: String,
        /// Retentions to set, `kind=retention`.
        #[arg(value_name = "KIND=RETENTION")]
        retentions: Vec<String>,
        /// Kind to return to the platform default (repeatable).
        #[arg(long)]
        clear: Vec<String>,
    },
    /// Show how long a tenant's data is kept.
    Retention { tenant: String },
    /// Show, set or clear a tenant's LwM2M metric names: which resource of
    /// an observed LwM2M client becomes which metric, beyond the IPSO
    /// defaults (docs/coap.md).
    Lwm2m {
        tenant: String,
        /// Entries to set, `OBJECT/RESOURCE=METRIC` (a Float resource),
        /// `OBJECT/RESOURCE=METRIC:integer`, or `OBJECT/RESOURCE=` to turn a
        /// default off.
        #[arg(value_name = "OBJECT/RESOURCE=METRIC")]
        entries: Vec<String>,
        /// An entry to remove, `OBJECT/RESOURCE` (repeatable).
        #[arg(long)]
        clear: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DevicesCmd {
    /// Create a device and print its first access token.
    Create {
        id: String,
        /// A label, `key=value` (repeatable).
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
        /// Metadata, `key=value` (repeatable).
        #[arg(long = "meta")]
        metadata: Vec<String>,
        /// Don't issue a token.
        #[arg(long)]
        no_token: bool,
    },
    /// List devices, optionally by label selector.
    List {
        /// Label selector, e.g. `fleet=West,model!=H-1`.
        #[arg(long, short = 's', default_value = "")]
        select: String,
        /// Only devices whose id starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// From the greatest id down.
        #[arg(long)]
        desc: bool,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one device.
    Get { id: String },
    /// Set or remove labels and metadata.
    Update {
        id: String,
        /// `key=value` labels to set (repeatable).
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
        /// Label keys to remove (repeatable).
        #[arg(long = "remove-label")]
        remove_labels: Vec<String>,
        #[arg(long = "meta")]
        metadata: Vec<String>,
        #[arg(long = "remove-meta")]
        remove_metadata: Vec<String>,
    },
    /// Refuse the device's credentials until enabled again.
    Disable { id: String },
    /// Accept the device's credentials again.
    Enable { id: String },
    /// Delete the device and revoke its tokens (its stored data stays).
    Delete { id: String },
    /// Client certificates that authenticate a device over MQTT with mutual TLS.
    #[command(subcommand)]
    Cert(CertCmd),
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCmd {
    /// Register a client certificate for a device. Its subject organization
    /// must be the tenant (`openssl req -subj "/O=acme/CN=truck-1" ...`).
    /// Listed and revoked with `tokens list` and `tokens revoke`.
    Add {
        /// The device the certificate authenticates.
        #[arg(long)]
        device: String,
        /// The certificate's PEM file (the first certificate in it counts).
        #[arg(long, value_name = "PEM_FILE")]
        certificate: std::path::PathBuf,
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime such as `365d`; until revoked when absent.
        #[arg(long)]
        ttl: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokensCmd {
    /// Issue a token and print its secret (shown only once).
    Issue {
        /// A device access token for this device.
        #[arg(
            long,
            conflicts_with_all = ["ingest", "app"],
            required_unless_present_any = ["ingest", "app"]
        )]
        device: Option<String>,
        /// A tenant ingest token (line protocol for any device of the tenant).
        #[arg(long, conflicts_with = "app")]
        ingest: bool,
        /// With `--device`: a DTLS pre-shared key for CoAP over DTLS instead
        /// of a token; prints the PSK identity and the key.
        #[arg(long, requires = "device")]
        psk: bool,
        /// A tenant application token: MQTT user name `app:<APP>`, any client
        /// id, publish and subscribe within `--publish` and `--subscribe`.
        #[arg(long)]
        app: Option<String>,
        /// MQTT topic filter the application may publish to (repeatable;
        /// none grants no publishing: name `#` for every topic).
        #[arg(long, requires = "app")]
        publish: Vec<String>,
        /// MQTT topic filter the application may subscribe within
        /// (repeatable; none grants no subscriptions: name `#` for every
        /// topic).
        #[arg(long, requires = "app")]
        subscribe: Vec<String>,
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime such as `30d`; never expires when absent.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long, default_value = "")]
        device: String,
    },
    /// Revoke a token by credential id.
    Revoke { id: String },
}

pub async fn tenants(ctx: &mut Ctx, cmd: TenantsCmd) -> anyhow::Result<()> {
    match cmd {
        TenantsCmd::Create {
            name,
            display_name,
            no_auto_provision,
            device_tag,
        } => {
            let t = ctx
                .registry
                .create_tenant(pb::CreateTenantRequest {
                    name,
                    display_name,
                    settings: Some(pb::TenantSettings {
                        auto_provision: !no_auto_provision,
                        device_tag,
                        quotas: Default::default(),
                        retention: Default::default(),
                        lwm2m_metrics: Default::default(),
                    }),
                })
                .await?
                .into_inner();
            ctx.print(&tenant_rows(&[t]));
        }
        TenantsCmd::List => {
            let list = ctx
                .registry
                .list_tenants(pb::ListTenantsRequest {})
                .await?
                .into_inner();
            ctx.print(&tenant_rows(&list.tenants));
        }
        TenantsCmd::SetQuota {
            tenant,
            quotas,
            clear,
        } => {
            if quotas.is_empty() && clear.is_empty() {
                anyhow::bail!("name at least one quota to set (name=value) or to --clear");
            }
            let mut set = std::collections::HashMap::new();
            for pair in &quotas {
                let (name, value) = pair.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("{pair:?}: expected name=value, e.g. connections=500")
                })?;
                let quota: Quota = name.parse()?;
                let value: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{pair:?}: the value must be a whole number"))?;
                set.insert(quota.name().to_owned(), value);
            }
            let t = ctx
                .registry
                .set_tenant_quotas(pb::SetTenantQuotasRequest { tenant, set, clear })
                .await?
                .into_inner();
            ctx.print(&quota_rows(&t));
        }
        TenantsCmd::SetRetention {
            tenant,
            retentions,
            clear,
        } => {
            if retentions.is_empty() && clear.is_empty() {
                anyhow::bail!(
                    "name at least one retention to set (kind=retention, e.g. raw=30d) or to --clear"
                );
            }
            let mut set = std::collections::HashMap::new();
            for pair in &retentions {
                let (kind, keep) = pair.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("{pair:?}: expected kind=retention, e.g. raw=30d or 1m=1y")
                })?;
                let kind: DataKind = kind.parse().map_err(anyhow::Error::msg)?;
                let keep: Keep = keep.parse().map_err(|e| anyhow::anyhow!("{pair:?}: {e}"))?;
                set.insert(kind.to_string(), keep.to_string());
            }
            let t = ctx
                .registry
                .set_tenant_retention(pb::SetTenantRetentionRequest { tenant, set, clear })
                .await?
                .into_inner();
            ctx.print(&retention_rows(&t));
        }
        TenantsCmd::Retention { tenant } => {
            let t = find_tenant(ctx, &tenant).await?;
            ctx.print(&retention_rows(&t));
        }
        TenantsCmd::Lwm2m {
            tenant,
            entries,
            clear,
        } => {
            let t = if entries.is_empty() && clear.is_empty() {
                find_tenant(ctx, &tenant).await?
            } else {
                let mut set = std::collections::HashMap::new();
                for pair in &entries {
                    let (key, value) = pair.split_once('=').ok_or_else(|| {
                        anyhow::anyhow!(
                            "{pair:?}: expected OBJECT/RESOURCE=METRIC, e.g. 3442/1120=flow_rate"
                        )
                    })?;
                    // `metric:integer` on the command line; the registry
                    // writes the type after a space.
                    let value = match value.rsplit_once(':') {
                        Some((m, t @ ("integer" | "float"))) => format!("{m} {t}"),
                        _ => value.to_owned(),
                    };
                    set.insert(key.to_owned(), value);
                }
                ctx.registry
                    .set_tenant_lwm2m_metrics(pb::SetTenantLwm2mMetricsRequest {
                        tenant,
                        set,
                        clear,
                    })
                    .await?
                    .into_inner()
            };
            let mut rows = Rows::new(vec!["resource", "metric"]);
            for (key, value) in t.settings.map(|s| s.lwm2m_metrics).unwrap_or_default() {
                rows.push(
                    vec![key.clone(), value.clone()],
                    json!({"resource": key, "metric": value}),
                );
            }
            ctx.print(&rows);
        }
        TenantsCmd::Quotas { tenant } => {
            let t = find_tenant(ctx, &tenant).await?;
            ctx.print(&quota_rows(&t));
        }
    }
    Ok(())
}

/// One tenant, as the registry lists it.
async fn find_tenant(ctx: &mut Ctx, tenant: &str) -> anyhow::Result<pb::Tenant> {
    let list = ctx
        .registry
        .list_tenants(pb::ListTenantsRequest {})
        .await?
        .into_inner();
    list.tenants
        .into_iter()
        .find(|t| t.name == tenant)
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant:?}"))
}

/// How long a tenant's data is kept: raw points and the default tiers,
/// then any other tier it names; what it does not set is the platform's.
fn retention_rows(t: &pb::Tenant) -> Rows {
    let set = t
        .settings
        .as_ref()
        .map(|s| s.retention.clone())
        .unwrap_or_default();
    let mut kinds: Vec<DataKind> = std::iter::once(DataKind::Raw)
        .chain(
            tributary_core::rollup::Tiers::default()
                .widths()
                .iter()
                .map(|w| DataKind::Rollup(*w)),
        )
        .collect();
    for name in set.keys() {
        if let Ok(kind) = name.parse::<DataKind>()
            && !kinds.contains(&kind)
        {
            kinds.push(kind);
        }
    }
    kinds.sort_unstable();
    let mut rows = Rows::new(vec!["tenant", "kind", "retention", "source"]);
    for kind in kinds {
        let name = kind.to_string();
        let (value, source) = match (set.get(&name), kind) {
            (Some(v), _) => (v.clone(), "tenant"),
            (None, DataKind::Raw) => ("the store's --retention".to_owned(), "default"),
            (None, DataKind::Rollup(_)) => ("forever".to_owned(), "default"),
        };
        rows.push(
            vec![
                t.name.clone(),
                name.clone(),
                value.clone(),
                source.to_owned(),
            ],
            json!({"tenant": t.name, "kind": name, "retention": value, "source": source}),
        );
    }
    rows
}

/// Every quota of a tenant: its value in force, and whether the tenant has
/// it set or gets the platform default.
fn quota_rows(t: &pb::Tenant) -> Rows {
    let set = t
        .settings
        .as_ref()
        .map(|s| s.quotas.clone())
        .unwrap_or_default();
    let mut rows = Rows::new(vec!["tenant", "quota", "value", "source"]);
    for quota in Quota::ALL {
        let (value, source) = match set.get(quota.name()) {
            Some(v) => (*v, "tenant"),
            None => (quota.default_value(), "default"),
        };
        rows.push(
            vec![
                t.name.clone(),
                quota.name().to_owned(),
                value.to_string(),
                source.to_owned(),
            ],
            json!({"tenant": t.name, "quota": quota.name(), "value": value, "source": source}),
        );
    }
    rows
}

fn tenant_rows(tenants: &[pb::Tenant]) -> Rows {
    let mut rows = Rows::new(vec![
        "name",
        "display_name",
        "auto_provision",
        "device_tag",
        "created",
    ]);
    for t in tenants {
        let s = t.settings.clone().unwrap_or_default();
        rows.push(
            vec![
                t.name.clone(),
                t.display_name.clone(),
                s.auto_provision.to_string(),
                s.device_tag.clone(),
                format_rfc3339(t.created_at_ns),
            ],
            json!({"name": t.name, "display_name": t.display_name, "auto_provision": s.auto_provision,
                   "device_tag": s.device_tag, "created_at": format_rfc3339(t.created_at_ns)}),
        );
    }
    rows
}

fn pairs_text(m: &std::collections::HashMap<String, String>) -> String {
    let mut v: Vec<_> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

fn device_rows(devices: &[pb::Device]) -> Rows {
    let mut rows = Rows::new(vec![
        "tenant",
        "id",
        "labels",
        "state",
        "online",
        "last_seen",
    ]);
    for d in devices {
        let p = d.presence.clone().unwrap_or_default();
        let last_seen = if p.last_seen_ns > 0 {
            format_rfc3339(p.last_seen_ns)
        } else {
            "never".into()
        };
        rows.push(
            vec![
                d.tenant.clone(),
                d.id.clone(),
                pairs_text(&d.labels),
                if d.disabled {
                    "disabled".into()
                } else {
                    "enabled".into()
                },
                p.online.to_string(),
                last_seen.clone(),
            ],
            json!({"tenant": d.tenant, "id": d.id, "labels": d.labels, "metadata": d.metadata,
                   "disabled": d.disabled, "online": p.online, "last_seen": last_seen,
                   "created_at": format_rfc3339(d.created_at_ns)}),
        );
    }
    rows
}

fn token_rows(issued: &pb::IssueTokenResponse) -> Rows {
    let c = issued.credential.clone().unwrap_or_default();
    if !issued.psk_identity.is_empty() {
        let mut rows = Rows::new(vec!["credential_id", "device", "psk_identity", "psk_key"]);
        rows.push(
            vec![
                c.id.clone(),
                c.device.clone(),
                issued.psk_identity.clone(),
                issued.token.clone(),
            ],
            json!({"credential_id": c.id, "device": c.device, "kind": kind_name(c.kind),
                   "psk_identity": issued.psk_identity, "token": issued.token}),
        );
        return rows;
    }
    let mut rows = Rows::new(vec!["credential_id", "device", "token"]);
    rows.push(
        vec![c.id.clone(), c.device.clone(), issued.token.clone()],
        json!({"credential_id": c.id, "device": c.device, "kind": kind_name(c.kind), "token": issued.token}),
    );
    rows
}

fn kind_name(kind: i32) -> &'static str {
    match pb::CredentialKind::try_from(kind) {
        Ok(pb::CredentialKind::DeviceToken) => "device",
        Ok(pb::CredentialKind::TenantIngestToken) => "ingest",
        Ok(pb::CredentialKind::DeviceCertificate) => "certificate",
        Ok(pb::CredentialKind::Application) => "application",
        Ok(pb::CredentialKind::DevicePsk) => "psk",
        _ => "unknown",
    }
}

fn device_ref(ctx: &Ctx, id: String) -> pb::DeviceRef {
    pb::DeviceRef {
        tenant: ctx.tenant.clone(),
        device: id,
    }
}

pub async fn devices(ctx: &mut Ctx, cmd: DevicesCmd) -> anyhow::Result<()> {
    match cmd {
        DevicesCmd::Create {
            id,
            labels,
            metadata,
            no_token,
        } => {
            let resp = ctx
                .registry
                .create_device(pb::CreateDeviceRequest {
                    tenant: ctx.tenant.clone(),
                    id,
                    labels: parse_pairs(&labels, "--label")?,
                    metadata: parse_pairs(&metadata, "--meta")?,
                    issue_token: !no_token,
                })
                .await?
                .into_inner();
            match (&resp.token, resp.device) {
                (Some(token), _) => ctx.print(&token_rows(token)),
                (None, Some(d)) => ctx.print(&device_rows(&[d])),
                (None, None) => {}
            }
        }
        DevicesCmd::List {
            select,
            prefix,
            desc,
            limit,
        } => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = ctx
                    .registry
                    .list_devices(pb::ListDevicesRequest {
                        tenant: ctx.tenant.clone(),
                        selector: select.clone(),
                        page_size: limit,
                        page_token: page_token.clone(),
                        id_prefix: prefix.clone(),
                        descending: desc,
                    })
                    .await?
                    .into_inner();
                all.extend(page.devices);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            ctx.print(&device_rows(&all));
        }
        DevicesCmd::Get { id } => {
            let d = ctx
                .registry
                .get_device(pb::GetDeviceRequest {
                    tenant: ctx.tenant.clone(),
                    device: id,
                })
                .await?
                .into_inner();
            ctx.print(&device_rows(&[d]));
        }
        DevicesCmd::Update {
            id,
            labels,
            remove_labels,
            metadata,
            remove_metadata,
        } => {
            let d = ctx
                .registry
                .update_device(pb::UpdateDeviceRequest {
                    tenant: ctx.tenant.clone(),
                    device: id,
                    set_labels: parse_pairs(&labels, "--label")?,
                    remove_labels,
                    set_metadata: parse_pairs(&metadata, "--meta")?,
                    remove_metadata,
                })
                .await?
                .into_inner();
            ctx.print(&device_rows(&[d]));
        }
        DevicesCmd::Disable { id } => {
            let d = ctx
                .registry
                .disable_device(device_ref(ctx, id))
                .await?
                .into_inner();
            ctx.print(&device_rows(&[d]));
        }
        DevicesCmd::Enable { id } => {
            let d = ctx
                .registry
                .enable_device(device_ref(ctx, id))
                .await?
                .into_inner();
            ctx.print(&device_rows(&[d]));
        }
        DevicesCmd::Delete { id } => {
            ctx.registry
                .delete_device(device_ref(ctx, id.clone()))
                .await?;
            eprintln!("deleted device {id}");
        }
        DevicesCmd::Cert(CertCmd::Add {
            device,
            certificate,
            name,
            ttl,
        }) => {
            let certificate_pem = read_certificate(&certificate)?;
            let c = ctx
                .registry
                .register_certificate(pb::RegisterCertificateRequest {
                    tenant: ctx.tenant.clone(),
                    device,
                    certificate_pem,
                    name,
                    ttl_seconds: ttl_seconds(ttl)?,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut rows = Rows::new(vec!["credential_id", "device", "fingerprint"]);
            rows.push(
                vec![c.id.clone(), c.device.clone(), c.fingerprint.clone()],
                json!({"credential_id": c.id, "device": c.device, "kind": kind_name(c.kind), "fingerprint": c.fingerprint}),
            );
            ctx.print(&rows);
        }
    }
    Ok(())
}

/// A certificate's PEM file, read with a size limit.
fn read_certificate(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let limit = tributary_registry::certificate::MAX_CERTIFICATE_PEM_BYTES;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit as u64 + 1).read_to_string(&mut text))
        .map_err(|e| anyhow::anyhow!("--certificate {}: {e}", path.display()))?;
    anyhow::ensure!(
        text.len() <= limit,
        "--certificate {}: larger than {limit} bytes; give the device certificate only",
        path.display()
    );
    Ok(text)
}

/// Seconds of a `--ttl` such as `30d`; 0 when absent.
fn ttl_seconds(ttl: Option<String>) -> anyhow::Result<u64> {
    let Some(t) = ttl else {
        return Ok(0);
    };
    let ns = tributary_core::time::parse_duration(&t)
        .ok_or_else(|| anyhow::anyhow!("--ttl {t:?}: expected a duration such as 30d"))?;
    Ok((ns / 1_000_000_000) as u64)
}

pub async fn tokens(ctx: &mut Ctx, cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Issue {
            device,
            ingest,
            app: Some(app),
            publish,
            subscribe,
            name: _,
            ttl,
            psk: _,
        } if !ingest && device.is_none() => {
            let resp = ctx
                .registry
                .issue_application_token(pb::IssueApplicationTokenRequest {
                    tenant: ctx.tenant.clone(),
                    name: app,
                    publish,
                    subscribe,
                    ttl_seconds: ttl_seconds(ttl)?,
                })
                .await?
                .into_inner();
            ctx.print(&token_rows(&resp));
        }
        TokensCmd::Issue {
            device,
            ingest,
            psk,
            name,
            ttl,
            ..
        } => {
            let ttl_seconds = ttl_seconds(ttl)?;
            let kind = if ingest {
                pb::CredentialKind::TenantIngestToken
            } else if psk {
                pb::CredentialKind::DevicePsk
            } else {
                pb::CredentialKind::DeviceToken
            };
            let resp = ctx
                .registry
                .issue_token(pb::IssueTokenRequest {
                    tenant: ctx.tenant.clone(),
                    kind: kind as i32,
                    device: device.unwrap_or_default(),
                    name,
                    ttl_seconds,
                })
                .await?
                .into_inner();
            ctx.print(&token_rows(&resp));
        }
        TokensCmd::List { device } => {
            let resp = ctx
                .registry
                .list_tokens(pb::ListTokensRequest {
                    tenant: ctx.tenant.clone(),
                    device,
                })
                .await?
                .into_inner();
            let mut rows = Rows::new(vec![
                "credential_id",
                "kind",
                "device",
                "name",
                "created",
                "expires",
                "revoked",
            ]);
            for c in resp.credentials {
                let expires = if c.expires_at_ns > 0 {
                    format_rfc3339(c.expires_at_ns)
                } else {
                    "never".into()
                };
                rows.push(
                    vec![
                        c.id.clone(),
                        kind_name(c.kind).into(),
                        c.device.clone(),
                        c.name.clone(),
                        format_rfc3339(c.created_at_ns),
                        expires.clone(),
                        c.revoked.to_string(),
                    ],
                    json!({"credential_id": c.id, "kind": kind_name(c.kind), "device": c.device, "name": c.name, "fingerprint": c.fingerprint,
                           "publish": c.publish, "subscribe": c.subscribe,
                           "created_at": format_rfc3339(c.created_at_ns), "expires": expires, "revoked": c.revoked}),
                );
            }
            ctx.print(&rows);
        }
        TokensCmd::Revoke { id } => {
            ctx.registry
                .revoke_token(pb::RevokeTokenRequest {
                    tenant: ctx.tenant.clone(),
                    credential_id: id.clone(),
                })
                .await?;
            eprintln!("revoked credential {id}");
        }
    }
    Ok(())
}
