//! RFC 9457 problem details (`application/problem+json`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem document. `type` is a stable URI per kind of problem, so that
/// clients can branch on it without parsing `detail`.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Where in the request the problem is: `line 3`, `values.temp`, `record 2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The quota a `429` is about, by name (`messages_per_sec`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// That quota's value in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str) -> Self {
        Self {
            kind: format!("https://tributary.dev/problems/{kind}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: None,
            location: None,
            quota: None,
            limit: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Names the quota a refusal is about, and its value.
    pub fn quota(mut self, quota: &str, limit: u64) -> Self {
        self.quota = Some(quota.to_owned());
        self.limit = Some(limit);
        self
    }

    pub fn location(mut self, location: &str) -> Self {
        self.location = Some(location.to_string());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r
    }
}
