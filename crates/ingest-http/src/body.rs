//! Reading request bodies within limits, with gzip support.

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tributary_ingest::{InflightPermit, IngestError, Ingestor, Rejection};

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Too large, invalid, or no room in the in-flight budget.
    Ingest(IngestError),
    /// It arrived slower than the listener's minimum body rate.
    TooSlow(String),
}

impl From<IngestError> for BodyError {
    fn from(e: IngestError) -> Self {
        Self::Ingest(e)
    }
}

/// Reads the whole body, refusing more than `max` bytes before or after
/// decompression, and reserves what it holds in the ingest in-flight budget
/// as the bytes arrive: a declared `Content-Length` reserves nothing until
/// its bytes come, so clients that declare large bodies and send nothing
/// cannot spend the budget of everyone else.
pub(crate) async fn read(
    ingestor: &Ingestor,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<(Bytes, InflightPermit), BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|len| *len > max) {
        let e = IngestError::TooLarge(format!(
            "body of {len} bytes exceeds the limit of {max} bytes"
        ));
        ingestor.metrics().rejected(Rejection::TooLarge, &e);
        return Err(e.into());
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("identity") => false,
        Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => true,
        Some(other) => {
            return Err(BodyError::Ingest(IngestError::Invalid(
                tributary_core::formats::ParseError::new(
                    "Content-Encoding",
                    format!("unsupported encoding {other:?}; use gzip or none"),
                ),
            )));
        }
    };
    // Reserve what we hold, 64 KiB at a time as the body arrives.
    const STEP: usize = 64 * 1024;
    let mut permit = ingestor.reserve(declared.unwrap_or(STEP).min(STEP).min(max))?;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8192).min(STEP).min(max));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) if tributary_http_server::BodyTooSlow::is(&e) => {
                return Err(BodyError::TooSlow(e.to_string()));
            }
            Err(e) => {
                return Err(BodyError::Ingest(IngestError::Invalid(
                    tributary_core::formats::ParseError::new(
                        "body",
                        format!("could not read: {e}"),
                    ),
                )));
            }
        };
        if buf.len() + chunk.len() > max {
            let e = IngestError::TooLarge(format!("body exceeds the limit of {max} bytes"));
            ingestor.metrics().rejected(Rejection::TooLarge, &e);
            return Err(e.into());
        }
        if buf.len() + chunk.len() > permit.bytes() {
            ingestor.reserve_more(
                &mut permit,
                (buf.len() + chunk.len()).next_multiple_of(STEP).min(max),
            )?;
        }
        buf.extend_from_slice(&chunk);
    }
    let raw = buf.freeze();
    if !gzip {
        return Ok((raw, permit));
    }
    let decoded = tokio::task::block_in_place(|| gunzip(&raw, max))?;
    ingestor.reserve_more(&mut permit, raw.len() + decoded.len())?;
    Ok((decoded, permit))
}

/// Decompresses, stopping at `max` output bytes (no zip bombs).
fn gunzip(raw: &[u8], max: usize) -> Result<Bytes, IngestError> {
    let mut out = Vec::with_capacity((raw.len() * 4).min(max));
    let mut dec = flate2::read::MultiGzDecoder::new(raw).take(max as u64 + 1);
    dec.read_to_end(&mut out).map_err(|e| {
        IngestError::Invalid(tributary_core::formats::ParseError::new(
            "body",
            format!("invalid gzip: {e}"),
        ))
    })?;
    if out.len() > max {
        return Err(IngestError::TooLarge(format!(
            "decompressed body exceeds the limit of {max} bytes"
        )));
    }
    Ok(Bytes::from(out))
}
