//! The crate's error type.

/// Why a run could not start, or could not finish its report.
///
/// Failures of single messages or connections are not errors: they are
/// counted, by reason, in the report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario file or a flag is invalid.
    #[error("scenario: {0}")]
    Scenario(String),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file is malformed.
    #[error("credentials file, line {line}: {message}")]
    Credentials {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// No operator token was found for the registry or the query API.
    #[error(
        "no operator token: pass --admin-token, set TRIBUTARY_TOKEN, or point --admin-token-file at the server's admin.token ({0})"
    )]
    NoAdminToken(String),
    /// The gRPC endpoint could not be reached.
    #[error("gRPC endpoint {url}: {message}")]
    Grpc {
        /// The endpoint.
        url: String,
        /// What failed.
        message: String,
    },
    /// A registry call failed while provisioning devices or tokens.
    #[error("provisioning: {0}")]
    Provision(String),
    /// The query API failed during verification.
    #[error("verify: {0}")]
    Verify(String),
    /// TLS could not be set up (CA file, server name).
    #[error("TLS: {0}")]
    Tls(String),
    /// A worker process failed.
    #[error("worker {index}: {message}")]
    Worker {
        /// Which worker.
        index: usize,
        /// What happened.
        message: String,
    },
    /// The plot could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// A report could not be encoded or decoded.
    #[error("report: {0}")]
    Report(String),
}

impl Error {
    /// An I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
