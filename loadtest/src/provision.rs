//! Devices and credentials: provisioned through Tributary's registry, read
//! from a credentials file, or made up for servers without authentication.

use std::collections::BTreeMap;
use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tributary_proto::v1 as pb;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_proto::v1::registry_service_client::RegistryServiceClient;

use crate::engine::Credential;
use crate::error::Error;

/// Registry calls in flight at once while provisioning.
const PROVISION_CONCURRENCY: usize = 16;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// An interceptor with this operator token.
    pub fn new(token: &str) -> Result<Self, Error> {
        format!("Bearer {token}")
            .parse()
            .map(Self)
            .map_err(|_| Error::NoAdminToken("the token is not valid header text".into()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A registry client with the operator token.
pub type Registry = RegistryServiceClient<InterceptedService<Channel, Bearer>>;
/// A query client with the operator token.
pub type Query = QueryServiceClient<InterceptedService<Channel, Bearer>>;

/// A connection to Tributary's gRPC API with an operator token.
#[derive(Debug, Clone)]
pub struct Grpc {
    channel: Channel,
    /// The registry's channel, when it is a service of its own.
    registry: Option<Channel>,
    bearer: Bearer,
}

impl Grpc {
    /// Connects to `url` (`http://host:port`).
    pub async fn connect(url: &str, token: &str) -> Result<Self, Error> {
        let err = |message: String| Error::Grpc {
            url: url.to_string(),
            message,
        };
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| err(e.to_string()))?
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| err(format!("{e}")))?;
        Ok(Self {
            channel,
            registry: None,
            bearer: Bearer::new(token)?,
        })
    }

    /// Sends registry calls to `url` instead (a registry service of its own).
    pub async fn with_registry(mut self, url: &str) -> Result<Self, Error> {
        if !url.is_empty() {
            self.registry = Some(Self::connect(url, "unused").await?.channel);
        }
        Ok(self)
    }

    /// The registry service.
    pub fn registry(&self) -> Registry {
        RegistryServiceClient::with_interceptor(
            self.registry.as_ref().unwrap_or(&self.channel).clone(),
            self.bearer.clone(),
        )
    }

    /// The query service.
    pub fn query(&self) -> Query {
        QueryServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}

/// The operator token: the flag or environment value if given, else the
/// token file's first line.
pub fn admin_token(given: Option<&str>, file: &Path) -> Result<String, Error> {
    if let Some(t) = given.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::NoAdminToken(format!("{}: {e}", file.display())))?;
    text.lines()
        .next()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::NoAdminToken(format!("{} is empty", file.display())))
}

/// Creates `ids` in the caller's tenant, with `labels`, each with a fresh
/// access token; `on_done` is called after each device.
pub async fn create_devices(
    registry: &Registry,
    ids: &[String],
    labels: &BTreeMap<String, String>,
    on_done: impl Fn() + Sync,
) -> Result<Vec<Credential>, Error> {
    let labels: std::collections::HashMap<String, String> =
        labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let on_done = &on_done;
    futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let mut registry = registry.clone();
            let labels = labels.clone();
            async move {
                let resp = registry
                    .create_device(pb::CreateDeviceRequest {
                        id: id.clone(),
                        labels,
                        issue_token: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| {
                        Error::Provision(format!("creating device {id}: {}", s.message()))
                    })?
                    .into_inner();
                let token = resp
                    .token
                    .map(|t| t.token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        Error::Provision(format!("the registry issued no token for {id}"))
                    })?;
                on_done();
                Ok(Credential { device: id, token })
            }
        })
        .buffered(PROVISION_CONCURRENCY)
        .try_collect()
        .await
}

/// Issues a tenant ingest token (for line protocol).
pub async fn issue_ingest_token(registry: &Registry, name: &str) -> Result<String, Error> {
    let resp = registry
        .clone()
        .issue_token(pb::IssueTokenRequest {
            kind: pb::CredentialKind::TenantIngestToken as i32,
            name: name.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|s| Error::Provision(format!("issuing an ingest token: {}", s.message())))?
        .into_inner();
    Ok(resp.token)
}

/// Reads a credentials file: one `device,token` per line (`#` comments and
/// blank lines skipped; the token may be empty for servers without
/// authentication).
pub fn read_credentials(path: &Path) -> Result<Vec<Credential>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    parse_credentials(&text)
}

/// Parses the text of a credentials file.
pub fn parse_credentials(text: &str) -> Result<Vec<Credential>, Error> {
    let limits = tributary_core::Limits::default();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (device, token) = line.split_once(',').unwrap_or((line, ""));
        let device = device.trim();
        tributary_core::model::validate_device_id(device, &limits).map_err(|e| {
            Error::Credentials {
                line: n + 1,
                message: e.to_string(),
            }
        })?;
        out.push(Credential {
            device: device.to_string(),
            token: token.trim().to_string(),
        });
    }
    Ok(out)
}

/// Writes a credentials file (mode 0600: it holds secrets).
pub fn write_credentials(path: &Path, creds: &[Credential]) -> Result<(), Error> {
    use std::io::Write;
    let mut text = String::from("# device,token (written by tributary-loadtest)\n");
    for c in creds {
        text.push_str(&c.device);
        text.push(',');
        text.push_str(&c.token);
        text.push('\n');
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.csv");
        let creds = vec![
            Credential {
                device: "d-1".into(),
                token: "secret".into(),
            },
            Credential {
                device: "d-2".into(),
                token: String::new(),
            },
        ];
        write_credentials(&path, &creds).unwrap();
        assert_eq!(read_credentials(&path).unwrap(), creds);
        let e = parse_credentials("ok,1\n\nbad/id,2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn admin_token_prefers_the_flag_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        assert!(admin_token(None, &file).is_err());
        std::fs::write(&file, "jwt-from-file\n").unwrap();
        assert_eq!(admin_token(None, &file).unwrap(), "jwt-from-file");
        assert_eq!(admin_token(Some("flag"), &file).unwrap(), "flag");
        assert_eq!(admin_token(Some(" "), &file).unwrap(), "jwt-from-file");
    }
}
