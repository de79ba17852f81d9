//! Property tests of the payload parsers: generated payloads are written
//! with reference serializers written here, parsed, and compared with an
//! independent model of what they mean; arbitrary input never panics.
//!
//! Run: `cargo test -p tributary-core --test proptest_formats`
//! (`PROPTEST_CASES=10000` for a longer run).

use std::fmt::Write;

use proptest::prelude::*;
use tributary_core::formats::lineproto::{self, FieldValue, Line, Precision};
use tributary_core::formats::{DeviceBatch, ParseError, json, senml};
use tributary_core::time::format_rfc3339;
use tributary_core::{Limits, Point, Value};

const NOW: i64 = 1_700_000_000_000_000_000;

// ---------------------------------------------------------------------------
// Line protocol
// ---------------------------------------------------------------------------

/// Reference escaper: a backslash before every character in `special` and
/// before every backslash.
fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn escape_measurement(s: &str) -> String {
    escape(s, &[',', ' '])
}

fn escape_key(s: &str) -> String {
    escape(s, &[',', '=', ' '])
}

fn escape_string(s: &str) -> String {
    escape(s, &['"'])
}

/// Writes a field value the way a client library would.
fn write_field_value(v: &FieldValue<'_>, spelling: usize) -> String {
    const TRUE: [&str; 5] = ["t", "T", "true", "True", "TRUE"];
    const FALSE: [&str; 5] = ["f", "F", "false", "False", "FALSE"];
    match v {
        FieldValue::Float(f) => format!("{f:?}"),
        FieldValue::Int(i) => format!("{i}i"),
        FieldValue::UInt(u) => format!("{u}u"),
        FieldValue::Bool(true) => TRUE[spelling % 5].to_owned(),
        FieldValue::Bool(false) => FALSE[spelling % 5].to_owned(),
        FieldValue::Str(s) => format!("\"{}\"", escape_string(s)),
    }
}

fn write_line(line: &Line<'_>, spellings: &[usize]) -> String {
    let mut out = escape_measurement(&line.measurement);
    for (k, v) in &line.tags {
        write!(out, ",{}={}", escape_key(k), escape_key(v)).unwrap();
    }
    for (i, (k, v)) in line.fields.iter().enumerate() {
        let sep = if i == 0 { ' ' } else { ',' };
        write!(
            out,
            "{sep}{}={}",
            escape_key(k),
            write_field_value(v, spellings.get(i).copied().unwrap_or(0))
        )
        .unwrap();
    }
    if let Some(ts) = line.timestamp {
        write!(out, " {ts}").unwrap();
    }
    out
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        (-1_000_000i64..1_000_000).prop_map(|i| i as f64 / 100.0)
    ]
}

/// Any value line protocol can carry, with strings holding every character
/// that needs escaping.
fn field_value(string: &'static str) -> impl Strategy<Value = FieldValue<'static>> {
    prop_oneof![
        finite_f64().prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Int),
        any::<u64>().prop_map(FieldValue::UInt),
        any::<bool>().prop_map(FieldValue::Bool),
        string.prop_map(|s| FieldValue::Str(s.into())),
    ]
}

/// Names full of characters that need escaping (`,`, `=`, space, `"`,
/// backslash) and non-ASCII ones; not starting with what would make the
/// line a comment or blank.
const NAME: &str = r#"[a-zA-Z0-9_,= "\\é🚀=-][a-zA-Z0-9_,= "\\é🚀#'=.-]{0,12}"#;

fn raw_line() -> impl Strategy<Value = (Line<'static>, Vec<usize>)> {
    (
        NAME,
        prop::collection::vec((NAME, NAME), 0..4),
        prop::collection::vec((NAME, field_value(r#"[^\n]{0,16}"#)), 1..5),
        prop::option::of(any::<i64>()),
        prop::collection::vec(0usize..5, 5),
    )
        .prop_map(|(measurement, tags, fields, timestamp, spellings)| {
            let line = Line {
                measurement: measurement.into(),
                tags: tags
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
                fields: fields.into_iter().map(|(k, v)| (k.into(), v)).collect(),
                timestamp,
            };
            (line, spellings)
        })
}

/// One generated line of a body for [`lineproto::parse`]: all names valid
/// for Tributary, label values with spaces, backslashes and quotes.
#[derive(Debug, Clone)]
struct GenLine {
    device: &'static str,
    /// Where among the tags the device tag goes.
    device_at: usize,
    labels: Vec<(&'static str, String)>,
    measurement: String,
    fields: Vec<(String, FieldValue<'static>)>,
    timestamp: Option<i64>,
    spellings: Vec<usize>,
    crlf: bool,
    comment_before: bool,
}

fn gen_line() -> impl Strategy<Value = GenLine> {
    let metric_part = "[A-Za-z0-9_.:/-]{1,10}";
    let value = prop_oneof![
        finite_f64().prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Int),
        (0..=i64::MAX as u64).prop_map(FieldValue::UInt),
        any::<bool>().prop_map(FieldValue::Bool),
        r#"[^\n]{0,24}"#.prop_map(|s| FieldValue::Str(s.into())),
    ];
    (
        prop::sample::select(vec!["host-1", "h.2", "dev_3", "a:b", "Z"]),
        0usize..4,
        prop::collection::vec(
            (
                prop::sample::select(vec!["rack", "region", "room.name", "k-1/x"]),
                r#"[^,=\p{Cc}]{1,12}"#,
            ),
            0..3,
        ),
        metric_part,
        prop::collection::vec((metric_part, value), 1..6),
        prop::option::of(-2_000_000i64..2_000_000),
        prop::collection::vec(0usize..5, 6),
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                device,
                device_at,
                labels,
                measurement,
                fields,
                timestamp,
                spellings,
                crlf,
                comment_before,
            )| {
                GenLine {
                    device,
                    device_at,
                    labels,
                    measurement,
                    fields,
                    timestamp,
                    spellings,
                    crlf,
                    comment_before,
                }
            },
        )
}

fn write_body(lines: &[GenLine]) -> String {
    let mut body = String::new();
    for l in lines {
        if l.comment_before {
            body.push_str("# a comment, with = and \"quotes\"\n\n");
        }
        let mut tags: Vec<(String, String)> = l
            .labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        tags.insert(
            l.device_at.min(tags.len()),
            ("device".to_owned(), l.device.to_owned()),
        );
        let line = Line {
            measurement: l.measurement.as_str().into(),
            tags: tags
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            fields: l
                .fields
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.clone()))
                .collect(),
            timestamp: l.timestamp,
        };
        body.push_str(&write_line(&line, &l.spellings));
        body.push_str(if l.crlf { "\r\n" } else { "\n" });
    }
    body
}

/// What the body means, computed without the parser.
fn expected_batches(lines: &[GenLine], precision: Precision) -> Vec<DeviceBatch> {
    let mut batches: Vec<DeviceBatch> = Vec::new();
    for l in lines {
        let index = match batches.iter().position(|b| b.device == l.device) {
            Some(i) => i,
            None => {
                batches.push(DeviceBatch {
                    device: l.device.to_owned(),
                    ..DeviceBatch::default()
                });
                batches.len() - 1
            }
        };
        let batch = &mut batches[index];
        for (k, v) in &l.labels {
            batch.labels.insert((*k).to_owned(), v.clone());
        }
        let ts_ns = l.timestamp.map_or(NOW, |t| t * precision.nanos());
        for (key, value) in &l.fields {
            let value = match value {
                FieldValue::Float(f) => Value::F64(*f),
                FieldValue::Int(i) => Value::I64(*i),
                FieldValue::UInt(u) => Value::I64(i64::try_from(*u).unwrap()),
                FieldValue::Bool(b) => Value::Bool(*b),
                FieldValue::Str(s) => Value::Str(s.to_string()),
            };
            batch.points.push(Point {
                metric: format!("{}.{key}", l.measurement),
                ts_ns,
                value,
            });
        }
    }
    batches
}

fn precision() -> impl Strategy<Value = Precision> {
    prop::sample::select(vec![
        Precision::Ns,
        Precision::Us,
        Precision::Ms,
        Precision::S,
        Precision::M,
        Precision::H,
    ])
}

/// Text made of line-protocol pieces, for the never-panics property.
const LINEPROTO_SOUP: &str =
    r#"([a-z0-9]{1,4}|[,= "\\#\n\r\t.eEiutfTF+-]|device=|é|\x{2028}){0,60}"#;

/// Checks that an error is located at `line N` with N a line of `body`.
fn check_line_location(body: &[u8], e: &ParseError) -> Result<(), TestCaseError> {
    let lines = body.iter().filter(|b| **b == b'\n').count() + 1;
    let n: usize = e
        .location
        .strip_prefix("line ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("location {:?} is not `line N`", e.location)))?;
    prop_assert!((1..=lines).contains(&n), "line {} of {}: {}", n, lines, e);
    prop_assert!(!e.message.is_empty());
    Ok(())
}

proptest! {
    #[test]
    fn lineproto_tokenizer_round_trips_escapes((line, spellings) in raw_line()) {
        let text = write_line(&line, &spellings);
        let parsed = Line::parse(&text);
        prop_assert_eq!(parsed, Ok(Some(line)), "{}", text);
    }

    #[test]
    fn lineproto_parse_round_trips(lines in prop::collection::vec(gen_line(), 1..20), precision in precision()) {
        let body = write_body(&lines);
        let parsed = lineproto::parse(body.as_bytes(), precision, "device", NOW, &Limits::default());
        prop_assert_eq!(parsed, Ok(expected_batches(&lines, precision)), "{}", body);
    }

    #[test]
    fn lineproto_nanosecond_timestamps_round_trip(ts in any::<i64>()) {
        let body = format!("m,device=d v=1i {ts}");
        let parsed = lineproto::parse(body.as_bytes(), Precision::Ns, "device", NOW, &Limits::default());
        prop_assert_eq!(parsed.map(|b| b[0].points[0].ts_ns), Ok(ts));
    }

    #[test]
    fn lineproto_arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = lineproto::parse(&body, Precision::Ns, "device", NOW, &Limits::default()) {
            check_line_location(&body, &e)?;
        }
    }

    #[test]
    fn lineproto_arbitrary_text_never_panics(body in LINEPROTO_SOUP, precision in precision()) {
        let limits = Limits { max_points_per_request: 5, max_devices_per_request: 2, max_labels: 2, ..Limits::default() };
        match lineproto::parse(body.as_bytes(), precision, "device", NOW, &limits) {
            Ok(batches) => {
                let points: usize = batches.iter().map(|b| b.points.len()).sum();
                prop_assert!(points <= 5 && batches.len() <= 2, "limits not enforced: {:?}", batches);
            }
            Err(e) => check_line_location(body.as_bytes(), &e)?,
        }
        for line in body.split('\n') {
            let _ = Line::parse(line);
        }
    }
}

// ---------------------------------------------------------------------------
// SenML
// ---------------------------------------------------------------------------

/// A time in milliseconds, written as decimal seconds (`-1.500`).
fn seconds_text(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

#[derive(Debug, Clone)]
enum GenValue {
    V(f64),
    Vs(String),
    Vb(bool),
    /// No value field: the record carries a sum.
    None,
}

#[derive(Debug, Clone)]
struct GenRecord {
    bn: Option<&'static str>,
    /// Milliseconds.
    bt: Option<i64>,
    bv: Option<f64>,
    bs: Option<f64>,
    n: &'static str,
    t: Option<i64>,
    value: GenValue,
    s: Option<f64>,
    unit: Option<&'static str>,
}

fn small_f64() -> impl Strategy<Value = f64> {
    (-100_000i64..100_000).prop_map(|i| i as f64 / 100.0)
}

/// Either relative (around 0) or absolute (around 2023) times.
fn millis() -> impl Strategy<Value = i64> {
    prop_oneof![
        -100_000_000i64..100_000_000,
        1_600_000_000_000i64..1_800_000_000_000
    ]
}

fn gen_record() -> impl Strategy<Value = GenRecord> {
    (
        prop::option::of(prop::sample::select(vec![
            "urn:dev:ow:10e2073a01080063:",
            "2001:db8::2/",
            "dev.",
            "X",
        ])),
        prop::option::of(millis()),
        prop::option::of(small_f64()),
        prop::option::of(small_f64()),
        prop::sample::select(vec!["temp", "current", "a_", "x.y/z", "7"]),
        prop::option::of(millis()),
        prop_oneof![
            small_f64().prop_map(GenValue::V),
            r#"[\PC\x00-\x1f"\\]{0,10}"#.prop_map(GenValue::Vs),
            any::<bool>().prop_map(GenValue::Vb),
            Just(GenValue::None),
        ],
        prop::option::of(small_f64()),
        prop::option::of(prop::sample::select(vec!["Cel", "%RH", "/"])),
    )
        .prop_map(|(bn, bt, bv, bs, n, t, value, s, unit)| GenRecord {
            bn,
            bt,
            bv,
            bs,
            n,
            t,
            value,
            s,
            unit,
        })
}

fn write_pack(records: &[GenRecord]) -> String {
    let mut out = String::from("[");
    for (i, r) in records.iter().enumerate() {
        let mut fields = Vec::new();
        if let Some(bn) = r.bn {
            fields.push(format!("\"bn\":{}", serde_json::to_string(bn).unwrap()));
        }
        if let Some(bt) = r.bt {
            fields.push(format!("\"bt\":{}", seconds_text(bt)));
        }
        if let Some(bv) = r.bv {
            fields.push(format!("\"bv\":{bv:?}"));
        }
        if let Some(bs) = r.bs {
            fields.push(format!("\"bs\":{bs:?}"));
        }
        fields.push(format!("\"n\":{}", serde_json::to_string(r.n).unwrap()));
        if let Some(u) = r.unit {
            fields.push(format!("\"u\":\"{u}\""));
        }
        if let Some(t) = r.t {
            fields.push(format!("\"t\":{}", seconds_text(t)));
        }
        match &r.value {
            GenValue::V(v) => fields.push(format!("\"v\":{v:?}")),
            GenValue::Vs(s) => fields.push(format!("\"vs\":{}", serde_json::to_string(s).unwrap())),
            GenValue::Vb(b) => fields.push(format!("\"vb\":{b}")),
            GenValue::None => {}
        }
        if let Some(s) = r.s {
            fields.push(format!("\"s\":{s:?}"));
        }
        if i > 0 {
            out.push(',');
        }
        write!(out, "{{{}}}", fields.join(",")).unwrap();
    }
    out.push(']');
    out
}

/// RFC 8428 resolution, done independently: integer milliseconds, plain
/// string concatenation. `None` when some record has neither value nor sum.
fn resolve(records: &[GenRecord]) -> Option<Vec<Point>> {
    let (mut bn, mut bt, mut bv, mut bs) = (String::new(), 0i64, None, None);
    let mut points = Vec::new();
    for r in records {
        if let Some(name) = r.bn {
            bn = name.to_owned();
        }
        bt = r.bt.unwrap_or(bt);
        bv = r.bv.or(bv);
        bs = r.bs.or(bs);
        let name = format!("{bn}{}", r.n);
        let ms = bt + r.t.unwrap_or(0);
        let ts_ns = if ms < (1 << 28) * 1000 {
            NOW + ms * 1_000_000
        } else {
            ms * 1_000_000
        };
        let value = match &r.value {
            GenValue::V(v) => Some(Value::F64(bv.unwrap_or(0.0) + v)),
            GenValue::Vs(s) => Some(Value::Str(s.clone())),
            GenValue::Vb(b) => Some(Value::Bool(*b)),
            GenValue::None => None,
        };
        let sum = (bs.is_some() || r.s.is_some())
            .then(|| Value::F64(bs.unwrap_or(0.0) + r.s.unwrap_or(0.0)));
        if value.is_none() && sum.is_none() {
            return None;
        }
        if let Some(value) = value {
            points.push(Point {
                metric: name.clone(),
                ts_ns,
                value,
            });
        }
        if let Some(sum) = sum {
            points.push(Point {
                metric: format!("{name}.sum"),
                ts_ns,
                value: sum,
            });
        }
    }
    Some(points)
}

/// JSON values built from the labels both JSON formats use, nested.
fn jsonish() -> impl Strategy<Value = serde_json::Value> {
    let key = prop::sample::select(vec![
        "bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut",
        "x_", "ts", "values", "temp", "",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        finite_f64().prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "temp",
            "urn:a:",
            "aGkgCg",
            "2024-05-01T12:00:00Z",
            "-x",
            "a b",
            ""
        ])
        .prop_map(serde_json::Value::from),
        (1e8f64..1e10).prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|entries| {
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// Text made of JSON tokens, mostly malformed.
const JSON_SOUP: &str = r#"([\[\]{},:]|"(n|v|bn|bt|t|vs|vb|vd|s|bver|x_|ts|values)"|-?[0-9]{1,3}(\.[0-9])?(e[+-]?[0-9]{1,3})?|true|null|"[a-z:é\\]{0,4}"|\s){0,40}"#;

proptest! {
    #[test]
    fn senml_resolution_matches_the_rfc(records in prop::collection::vec(gen_record(), 1..15)) {
        let pack = write_pack(&records);
        let parsed = senml::parse(pack.as_bytes(), NOW, &Limits::default());
        match resolve(&records) {
            Some(points) => prop_assert_eq!(parsed, Ok(points), "{}", pack),
            None => {
                let e = parsed.expect_err("a record without value or sum must be refused");
                prop_assert!(e.location.starts_with("record "), "{}", e);
                prop_assert!(e.message.contains("no value"), "{}", e);
            }
        }
    }

    #[test]
    fn senml_and_json_never_panic_on_json_values(value in jsonish()) {
        let body = serde_json::to_vec(&value).unwrap();
        for result in [senml::parse(&body, NOW, &Limits::default()), json::parse(&body, NOW, &Limits::default())] {
            if let Err(e) = result {
                prop_assert!(!e.location.is_empty() && !e.message.is_empty(), "{:?}", e);
            }
        }
    }

    #[test]
    fn senml_and_json_never_panic_on_token_soup(body in JSON_SOUP) {
        let limits = Limits { max_points_per_request: 3, ..Limits::default() };
        for result in [senml::parse(body.as_bytes(), NOW, &limits), json::parse(body.as_bytes(), NOW, &limits)] {
            match result {
                Ok(points) => prop_assert!(points.len() <= 3),
                Err(e) => prop_assert!(!e.location.is_empty() && !e.message.is_empty(), "{:?}", e),
            }
        }
    }

    #[test]
    fn senml_and_json_never_panic_on_bytes(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = senml::parse(&body, NOW, &Limits::default());
        let _ = json::parse(&body, NOW, &Limits::default());
    }
}

// ---------------------------------------------------------------------------
// Tributary JSON
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum GenTs {
    None,
    Millis(i64),
    /// Milliseconds with a fraction: whole ms and microseconds.
    FractionalMillis(i64, u16),
    Rfc3339(i64),
}

fn gen_object() -> impl Strategy<Value = (GenTs, Vec<(String, Value)>)> {
    let ts = prop_oneof![
        Just(GenTs::None),
        (-1_000_000_000_000i64..4_000_000_000_000).prop_map(GenTs::Millis),
        (0i64..4_000_000_000_000, 0u16..1000).prop_map(|(ms, us)| GenTs::FractionalMillis(ms, us)),
        (0i64..4_000_000_000_000_000_000).prop_map(GenTs::Rfc3339),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(Value::I64),
        // Written with a fraction or an exponent, so always a double.
        finite_f64().prop_map(Value::F64),
        any::<bool>().prop_map(Value::Bool),
        r#"[\PC\x00-\x1f"\\]{0,12}"#.prop_map(Value::Str),
    ];
    (
        ts,
        prop::collection::vec(("[A-Za-z0-9_.:/-]{1,12}", value), 1..8),
    )
}

fn write_object(ts: &GenTs, values: &[(String, Value)]) -> String {
    let mut out = String::from("{");
    match ts {
        GenTs::None => {}
        GenTs::Millis(ms) => write!(out, "\"ts\":{ms},").unwrap(),
        GenTs::FractionalMillis(ms, us) => write!(out, "\"ts\":{ms}.{us:03},").unwrap(),
        GenTs::Rfc3339(ns) => write!(out, "\"ts\":\"{}\",", format_rfc3339(*ns)).unwrap(),
    }
    out.push_str("\"values\":{");
    for (i, (name, value)) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = match value {
            Value::I64(v) => v.to_string(),
            // `{:?}` always writes a fraction or an exponent.
            Value::F64(v) => format!("{v:?}"),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => serde_json::to_string(s).unwrap(),
        };
        write!(out, "{}:{value}", serde_json::to_string(name).unwrap()).unwrap();
    }
    out.push_str("}}");
    out
}

fn expected_points(objects: &[(GenTs, Vec<(String, Value)>)]) -> Vec<Point> {
    objects
        .iter()
        .flat_map(|(ts, values)| {
            let ts_ns = match ts {
                GenTs::None => NOW,
                GenTs::Millis(ms) => ms * 1_000_000,
                GenTs::FractionalMillis(ms, us) => ms * 1_000_000 + i64::from(*us) * 1000,
                GenTs::Rfc3339(ns) => *ns,
            };
            values.iter().map(move |(name, value)| Point {
                metric: name.clone(),
                ts_ns,
                value: value.clone(),
            })
        })
        .collect()
}

proptest! {
    #[test]
    fn json_round_trips(objects in prop::collection::vec(gen_object(), 1..10), as_array in any::<bool>()) {
        let body = if objects.len() == 1 && !as_array {
            write_object(&objects[0].0, &objects[0].1)
        } else {
            let parts: Vec<_> = objects.iter().map(|(ts, values)| write_object(ts, values)).collect();
            format!("[{}]", parts.join(","))
        };
        let parsed = json::parse(body.as_bytes(), NOW, &Limits::default());
        prop_assert_eq!(parsed, Ok(expected_points(&objects)), "{}", body);
    }
}
