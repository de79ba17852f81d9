//! W3C trace context (`traceparent`, `tracestate`) in and out of `tracing`
//! spans. Parsing follows <https://www.w3.org/TR/trace-context/>; anything
//! invalid is ignored (an empty context), never an error or a panic: a
//! device's broken header must not fail its request.

use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Longest `traceparent` or `tracestate` considered (the W3C limit on
/// `tracestate` is 32 members of at most 256 bytes; frontends cap headers at
/// 512 bytes already).
const MAX_HEADER_LEN: usize = 512;

/// The OpenTelemetry context whose (remote) parent is the span named by a W3C
/// `traceparent`, carrying `tracestate`. Invalid `traceparent` gives an empty
/// context (no parent: a span under it starts a new trace); an invalid
/// `tracestate` alone is dropped and the parent kept.
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
/// let cx = tributary_otel::parent_from_traceparent(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
///     "vendor=x",
/// );
/// assert!(cx.span().span_context().is_sampled());
/// let none = tributary_otel::parent_from_traceparent("garbage", "");
/// assert!(!none.has_active_span());
/// ```
pub fn parent_from_traceparent(traceparent: &str, tracestate: &str) -> Context {
    match parse(traceparent, tracestate) {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// Whether `traceparent` is valid and has the sampled flag: what a consumer
/// checks before paying for a span of its own.
pub fn is_sampled_traceparent(traceparent: &str) -> bool {
    parse(traceparent, "").is_some_and(|sc| sc.is_sampled())
}

/// Makes the remote span named by `traceparent` the parent of `span`, which
/// must not have been entered yet. False (and `span` unchanged) when the
/// span is disabled, no OpenTelemetry layer is installed, or `traceparent` is
/// invalid.
pub fn set_remote_parent(span: &Span, traceparent: &str, tracestate: &str) -> bool {
    if span.is_disabled() {
        return false;
    }
    match parse(traceparent, tracestate) {
        Some(sc) => span
            .set_parent(Context::new().with_remote_span_context(sc))
            .is_ok(),
        None => false,
    }
}

/// `span`'s own context as `(traceparent, tracestate)`, to pass downstream
/// (a record header, an outgoing request). `None` when the span is disabled,
/// no OpenTelemetry layer is installed, or the span is not sampled. Starts
/// the span's OpenTelemetry side: set its parent before calling this.
pub fn span_traceparent(span: &Span) -> Option<(String, String)> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() || !sc.is_sampled() {
        return None;
    }
    Some((format(sc), sc.trace_state().header()))
}

/// The current span's context as `(traceparent, tracestate)`; see
/// [`span_traceparent`].
pub fn current_traceparent() -> Option<(String, String)> {
    span_traceparent(&Span::current())
}

fn format(sc: &SpanContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8()
    )
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `version-traceid-parentid-flags`, 2-32-16-2 lower-case hex digits.
fn parse(traceparent: &str, tracestate: &str) -> Option<SpanContext> {
    let tp = traceparent.trim();
    // ASCII first: every slice below is then on a character boundary.
    if tp.len() < 55 || tp.len() > MAX_HEADER_LEN || !tp.is_ascii() {
        return None;
    }
    let b = tp.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (version, trace_id, span_id, flags) = (&tp[0..2], &tp[3..35], &tp[36..52], &tp[53..55]);
    if ![version, trace_id, span_id, flags]
        .into_iter()
        .all(is_lower_hex)
    {
        return None;
    }
    match version {
        // Version ff is forbidden; version 00 has exactly four fields.
        "ff" => return None,
        "00" if tp.len() != 55 => return None,
        // A later version may append fields, after a dash.
        _ if tp.len() > 55 && b[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    // Only the sampled bit is defined; the others are dropped.
    let flags = u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8();
    let state = if tracestate.len() <= MAX_HEADER_LEN {
        TraceState::from_str(tracestate.trim()).unwrap_or_default()
    } else {
        TraceState::default()
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        state,
    ))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_through_a_context() {
        for (tp, ts) in [
            (TP, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                "",
            ),
        ] {
            let cx = parent_from_traceparent(tp, ts);
            let span = cx.span();
            let sc = span.span_context();
            assert!(sc.is_valid() && sc.is_remote(), "{tp}");
            assert_eq!(format(sc), tp);
            assert_eq!(sc.trace_state().header(), ts);
            assert_eq!(is_sampled_traceparent(tp), tp.ends_with("-01"));
        }
    }

    #[test]
    fn unknown_flags_and_later_versions_are_accepted_as_the_spec_says() {
        let cx = parent_from_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-future",
            "",
        );
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_sampled());
        // Re-emitted as version 00 with the sampled bit only.
        assert_eq!(format(sc), TP);
        // A bad tracestate alone drops the state, not the parent.
        let cx = parent_from_traceparent(TP, "not a tracestate,,==");
        assert!(cx.span().span_context().is_valid());
    }

    #[test]
    fn garbage_gives_an_empty_context() {
        let long = format!("{TP}{}", "-0".repeat(300));
        for tp in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            // Multi-byte characters where the dashes should be.
            "00é4bf92f3577b34da6a3ce929d0e0e47é00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bé-01",
            &long,
        ] {
            let cx = parent_from_traceparent(tp, "a=b");
            assert!(!cx.has_active_span(), "{tp:?} was accepted");
            assert!(!is_sampled_traceparent(tp));
        }
    }

    #[test]
    fn without_an_opentelemetry_layer_there_is_no_context_to_propagate() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::debug_span!(target: crate::TARGET, "x");
            assert!(!set_remote_parent(&span, TP, ""));
            let _g = span.enter();
            assert_eq!(current_traceparent(), None);
        });
        assert_eq!(current_traceparent(), None, "no subscriber at all");
    }

    /// Runs `f` under a subscriber with only the OpenTelemetry layer, on a
    /// tracer that samples roots at `ratio`; returns what it exported.
    fn traced(ratio: f64, f: impl FnOnce()) -> Vec<opentelemetry_sdk::trace::SpanData> {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        provider.force_flush().unwrap();
        exporter.get_finished_spans().unwrap()
    }

    #[test]
    fn a_span_under_a_remote_parent_propagates_its_own_context() {
        let mut own = None;
        let spans = traced(0.0, || {
            let span = tracing::debug_span!(target: crate::TARGET, "child");
            assert!(set_remote_parent(&span, TP, "k=v"));
            let _g = span.enter();
            own = current_traceparent();
        });
        let (tp, ts) = own.expect("a sampled parent makes a sampled child at ratio 0");
        let cx = parent_from_traceparent(&tp, &ts);
        let child = cx.span().span_context().clone();
        let parent = parent_from_traceparent(TP, "")
            .span()
            .span_context()
            .clone();
        assert_eq!(child.trace_id(), parent.trace_id(), "same trace");
        assert_ne!(child.span_id(), parent.span_id(), "its own span id");
        assert!(child.is_sampled());
        assert_eq!(ts, "k=v", "tracestate carried on");
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "child");
        assert_eq!(spans[0].parent_span_id, parent.span_id());
        assert_eq!(spans[0].span_context.span_id(), child.span_id());
    }

    #[test]
    fn unsampled_spans_propagate_nothing() {
        let spans = traced(0.0, || {
            let root = tracing::debug_span!(target: crate::TARGET, "root");
            assert_eq!(span_traceparent(&root), None, "ratio 0 samples no root");
            let child = tracing::debug_span!(target: crate::TARGET, "child");
            let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
            assert!(set_remote_parent(&child, unsampled, ""));
            assert_eq!(span_traceparent(&child), None, "parent said not sampled");
        });
        assert!(spans.is_empty());
        let spans = traced(1.0, || {
            let root = tracing::debug_span!(target: crate::TARGET, "root");
            assert!(
                span_traceparent(&root).is_some(),
                "ratio 1 samples every root"
            );
        });
        assert_eq!(spans.len(), 1);
    }
}
