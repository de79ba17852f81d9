//! Reading request bodies within limits, with gzip support.

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tributary_ingest::{InflightPermit, IngestError, Ingestor, Rejection};

/// Reads the whole body, refusing more than `max` bytes before or after
/// decompression, and reserves its size in the ingest in-flight budget.
pub(crate) async fn read(
    ingestor: &Ingestor,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<(Bytes, InflightPermit), IngestError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|len| *len > max) {
        let e = IngestError::TooLarge(format!(
            "body of {len} bytes exceeds the limit of {max} bytes"
        ));
        ingestor.metrics().rejected(Rejection::TooLarge, &e);
        return Err(e);
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("identity") => false,
        Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => true,
        Some(other) => {
            return Err(IngestError::Invalid(
                tributary_core::formats::ParseError::new(
                    "Content-Encoding",
                    format!("unsupported encoding {other:?}; use gzip or none"),
                ),
            ));
        }
    };
    // Reserve what we will hold: the declared size, or, when the length is
    // unknown, 64 KiB at a time as the body arrives.
    const STEP: usize = 64 * 1024;
    let mut permit = ingestor.reserve(declared.unwrap_or(STEP).min(max))?;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8192).min(max));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            IngestError::Invalid(tributary_core::formats::ParseError::new(
                "body",
                format!("could not read: {e}"),
            ))
        })?;
        if buf.len() + chunk.len() > max {
            let e = IngestError::TooLarge(format!("body exceeds the limit of {max} bytes"));
            ingestor.metrics().rejected(Rejection::TooLarge, &e);
            return Err(e);
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
