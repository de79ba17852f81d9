//! Property tests: no input makes the parsers panic, and what parses prints
//! back to a query that parses to the same thing.

use proptest::prelude::*;
use tributary_promql::{
    Error, format_value, parse, parse_duration, parse_duration_param, parse_time,
    sanitize_label_name, sanitize_metric_name,
};

const TOKENS: &[&str] = &[
    "x",
    "temp",
    "job:rate:5m",
    "__name__",
    "a",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "topk",
    "by",
    "without",
    "rate",
    "increase",
    "avg_over_time",
    "last_over_time",
    "histogram_quantile",
    "foo",
    "offset",
    "bool",
    "on",
    "ignoring",
    "group_left",
    "and",
    "or",
    "unless",
    "Inf",
    "NaN",
    "1",
    "0.5",
    "1e3",
    "0x1f",
    "5m",
    "1h30m",
    "0s",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "@",
    "=",
    "!=",
    "=~",
    "!~",
    "==",
    ">",
    "<=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "\"v\"",
    "'w'",
    "`r.*`",
    "\"",
    "\"\\u00e9\"",
    "\"\\q\"",
    "# c\n",
    "\n",
    "é",
    "!",
    ".",
    "$",
];

fn token_soup() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(TOKENS), 0..48),
        any::<bool>(),
    )
        .prop_map(|(tokens, spaced)| tokens.join(if spaced { " " } else { "" }))
}

/// Syntactically valid queries of the subset (some ill-typed or
/// vector-vector, which must then be refused cleanly).
fn query() -> impl Strategy<Value = String> {
    let selector = prop_oneof![
        Just("x".to_owned()),
        Just("temp{site=~\"a|b\"}".to_owned()),
        Just("{__name__=\"y\", fleet!=\"f\"}".to_owned()),
        Just("job:rate:5m{a='b\\n'}".to_owned()),
    ];
    let leaf = prop_oneof![
        2 => (-1e6f64..1e6).prop_map(|n| n.to_string()),
        1 => Just("Inf".to_owned()),
        1 => Just("NaN".to_owned()),
        1 => Just("0x10".to_owned()),
        5 => selector.clone(),
        5 => (
            prop::sample::select(vec!["rate", "increase", "sum_over_time", "count_over_time", "max_over_time"]),
            selector,
            prop::sample::select(vec!["5m", "1h30m", "250ms", "1d"]),
        )
            .prop_map(|(f, s, r)| format!("{f}({s}[{r}])")),
    ];
    leaf.prop_recursive(6, 48, 2, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["+", "-", "*", "/", "%", "^"]),
                inner.clone()
            )
                .prop_map(|(l, op, r)| format!("{l} {op} {r}")),
            inner.clone().prop_map(|e| format!("({e})")),
            inner.clone().prop_map(|e| format!("-{e}")),
            (
                prop::sample::select(vec!["sum", "avg", "min", "max", "count"]),
                inner.clone(),
                any::<bool>()
            )
                .prop_map(|(op, e, after)| {
                    if after {
                        format!("{op}({e}) by (fleet)")
                    } else {
                        format!("{op} by (site, fleet) ({e})")
                    }
                }),
            inner.prop_map(|e| format!("sum({e})")),
        ]
    })
}

/// What parses must check, print, and parse back to the same print.
fn round_trips(q: &str) -> Result<(), TestCaseError> {
    if let Ok(e) = parse(q) {
        prop_assert!(e.check().is_ok(), "{q}");
        let printed = e.to_string();
        let again = parse(&printed);
        prop_assert!(again.is_ok(), "{q} printed as {printed}: {again:?}");
        prop_assert_eq!(again.map(|e| e.to_string()).unwrap_or_default(), printed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        round_trips(&s)?;
    }

    #[test]
    fn ascii_strings_never_panic(s in "[ -~\t\n]{0,120}") {
        round_trips(&s)?;
    }

    #[test]
    fn token_soup_never_panics(q in token_soup()) {
        round_trips(&q)?;
    }

    #[test]
    fn valid_queries_parse_or_are_refused_cleanly(q in query()) {
        match parse(&q) {
            Ok(_) => round_trips(&q)?,
            Err(Error::Unsupported(msg)) => prop_assert_eq!(msg, "unsupported: arithmetic between two vectors"),
            Err(e) => prop_assert!(e.to_string().contains("expected type instant vector in aggregation"), "{q}: {e}"),
        }
    }

    #[test]
    fn parameters_never_panic(s in any::<String>(), f in any::<f64>()) {
        let _ = parse_time("time", &s);
        let _ = parse_duration_param("step", &s);
        let _ = parse_duration(&s);
        let _ = parse_time("time", &f.to_string());
        let _ = parse_duration_param("step", &f.to_string());
        let m = sanitize_metric_name(&s);
        let first_ok = m.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':');
        prop_assert!(first_ok && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "{m}");
        let l = sanitize_label_name(&s);
        prop_assert!(parse(&format!("x{{{l}=\"v\"}}")).is_ok(), "{l}");
        prop_assert!(!l.starts_with("__"));
    }

    #[test]
    fn values_format_without_exponent_and_read_back(f in any::<f64>()) {
        let s = format_value(f);
        prop_assert!(!s.contains('e'), "{s}");
        if f.is_finite() {
            prop_assert_eq!(s.parse::<f64>().ok(), Some(f));
        }
    }
}
