//! InfluxDB line protocol (1.x `/write` and 2.x `/api/v2/write` syntax).
//!
//! ```text
//! cpu,device=host-17,region=eu usage_user=12.5,usage_idle=84.25,load=2i,up=true,fw="1.2" 1700000000000000000
//! ```
//!
//! Each line is `measurement[,tag=value...] field=value[,field=value...] [timestamp]`:
//!
//! * Every field becomes one point whose metric is `measurement.field`.
//! * The tag named by the `device_tag` argument (`device` by default in
//!   Tributary) says which device the line belongs to; a line without it is
//!   refused. The other tags become labels of that device; when one body
//!   gives a device's tag two values, the last one wins.
//! * Field values: floats (`1.5`, `-3`, `1e3`), integers (`3i`), unsigned
//!   integers (`3u`, stored as signed integers, so at most `i64::MAX`),
//!   booleans (`t`, `T`, `true`, `True`, `TRUE` and the same for false) and
//!   double-quoted strings.
//! * The timestamp is an integer in the request's [`Precision`]; without
//!   one, the line gets the time the request was received.
//! * Blank lines and lines starting with `#` are skipped; lines may end in
//!   `\n` or `\r\n`; extra spaces between the sections are allowed.
//!
//! Escaping follows the InfluxDB line protocol reference: a backslash
//! escapes `,` and space in measurements; `,`, `=` and space in tag keys,
//! tag values and field keys; `"` and `\` in string values. A doubled
//! backslash is one backslash everywhere; a backslash before any other
//! character is kept as it is. Newlines cannot be escaped.
//!
//! Errors are located as `line N` (counting from 1) with the column and what
//! was expected in the message: `line 7: missing tag "device"`,
//! `line 2: column 19: expected '=' after field key "usage"`.
//!
//! The parser works on the bytes of the body, borrows every name that has no
//! escapes, and builds each metric name once per measurement and field
//! position rather than once per value.

use std::borrow::Cow;
use std::collections::HashMap;

use super::{DeviceBatch, ParseError};
use crate::limits::Limits;
use crate::model::{
    Point, ValidationError, Value, validate_device_id, validate_label, validate_metric,
};

/// The unit of line-protocol timestamps (the `precision` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Nanoseconds, the default.
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
    /// Minutes (InfluxDB 1.x only).
    M,
    /// Hours (InfluxDB 1.x only).
    H,
}

impl Precision {
    /// The spellings [`Precision::parse`] accepts, for error messages.
    pub const ACCEPTED: &'static str = "ns, us, ms, s (or n, u, µs, m, h)";

    /// Parses a precision as InfluxDB 2.x (`ns`, `us`, `ms`, `s`) or 1.x
    /// (`n`, `u`, `ms`, `s`, `m`, `h`) spell it; `µs` is accepted too.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ns" | "n" => Precision::Ns,
            "us" | "u" | "µs" => Precision::Us,
            "ms" => Precision::Ms,
            "s" => Precision::S,
            "m" => Precision::M,
            "h" => Precision::H,
            _ => return None,
        })
    }

    /// Nanoseconds in one unit.
    pub const fn nanos(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
            Precision::M => 60_000_000_000,
            Precision::H => 3_600_000_000_000,
        }
    }
}

/// A field value as written, before it is mapped to a [`Value`].
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    /// `1.5`, `-3`, `1e3`.
    Float(f64),
    /// `3i`.
    Int(i64),
    /// `3u`.
    UInt(u64),
    /// `t`, `true`, `F`, `FALSE`...
    Bool(bool),
    /// `"text"`, unescaped.
    Str(Cow<'a, str>),
}

/// One line, split and unescaped but not validated against Tributary's
/// rules: what the protocol says, for tools and tests. [`parse`] is what
/// ingest uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    /// The measurement, unescaped.
    pub measurement: Cow<'a, str>,
    /// Tag keys and values, unescaped, in line order (repeats kept).
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Field keys, unescaped, and values, in line order.
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// In the request's precision, not yet scaled.
    pub timestamp: Option<i64>,
}

impl<'a> Line<'a> {
    /// Splits one line (without its `\n`; a trailing `\r` is dropped).
    /// Blank and comment lines give `Ok(None)`. Errors are located at
    /// `line 1`.
    ///
    /// ```
    /// use tributary_core::formats::lineproto::{FieldValue, Line};
    ///
    /// let line = Line::parse(r#"my\ room,floor=1 temp=21.5,note="a \"b\"" 17"#).unwrap().unwrap();
    /// assert_eq!(line.measurement, "my room");
    /// assert_eq!(line.fields[1].1, FieldValue::Str("a \"b\"".into()));
    /// assert_eq!(line.timestamp, Some(17));
    /// ```
    pub fn parse(line: &'a str) -> Result<Option<Self>, ParseError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(at) = line.find('\n') {
            return Err(SyntaxError::new(at, "unexpected newline").locate(1, line));
        }
        let mut tags = Vec::new();
        let mut collect = Collect::default();
        match tokenize(line, &mut tags, &mut collect) {
            Ok(true) => Ok(Some(Line {
                measurement: collect.measurement,
                tags,
                fields: collect.fields,
                timestamp: collect.timestamp,
            })),
            Ok(false) => Ok(None),
            Err(LineError::Syntax(e)) => Err(e.locate(1, line)),
            Err(LineError::Sink(never)) => match never {},
        }
    }
}

/// Collects the fields of one line for [`Line::parse`].
#[derive(Default)]
struct Collect<'a> {
    measurement: Cow<'a, str>,
    fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    timestamp: Option<i64>,
}

impl<'a> LineSink<'a> for Collect<'a> {
    type Error = std::convert::Infallible;

    fn head(&mut self, measurement: Cow<'a, str>, _: &Tags<'a>) -> Result<(), Self::Error> {
        self.measurement = measurement;
        Ok(())
    }

    fn field(
        &mut self,
        _: usize,
        key: Cow<'a, str>,
        value: FieldValue<'a>,
    ) -> Result<(), Self::Error> {
        self.fields.push((key, value));
        Ok(())
    }

    fn end(&mut self, timestamp: Option<i64>) -> Result<(), Self::Error> {
        self.timestamp = timestamp;
        Ok(())
    }
}

/// Parses a line-protocol body into points grouped by device.
///
/// Devices come out in the order they first appear, each with its points in
/// body order. Points are validated like [`validate_point`] does, device ids
/// with [`validate_device_id`] and tags with [`validate_label`]. At most
/// `limits.max_points_per_request` points and
/// `limits.max_devices_per_request` devices are accepted, and at most
/// `limits.max_labels` labels per device.
///
/// ```
/// use tributary_core::{Limits, Value};
/// use tributary_core::formats::lineproto::{self, Precision};
///
/// let body = b"cpu,device=host-17,region=eu usage=12.5,load=2i 1700000000\n";
/// let batches = lineproto::parse(body, Precision::S, "device", 0, &Limits::default()).unwrap();
/// assert_eq!(batches[0].device, "host-17");
/// assert_eq!(batches[0].labels["region"], "eu");
/// assert_eq!(batches[0].points[1].metric, "cpu.load");
/// assert_eq!(batches[0].points[1].value, Value::I64(2));
/// assert_eq!(batches[0].points[1].ts_ns, 1_700_000_000_000_000_000);
///
/// let body = b"cpu,device=host-17 usage=1\ncpu,region=us usage=1\n";
/// let err = lineproto::parse(body, Precision::S, "device", 0, &Limits::default()).unwrap_err();
/// assert_eq!(err.to_string(), r#"line 2: missing tag "device""#);
/// ```
///
/// [`validate_point`]: crate::model::validate_point
pub fn parse(
    body: &[u8],
    precision: Precision,
    device_tag: &str,
    now_ns: i64,
    limits: &Limits,
) -> Result<Vec<DeviceBatch>, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = body[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        ParseError::new(format!("line {line}"), "not valid UTF-8")
    })?;
    let mut builder = Builder {
        precision,
        device_tag,
        now_ns,
        limits,
        batches: Vec::new(),
        devices: HashMap::new(),
        last_device: None,
        metrics: MetricCache::default(),
        points: 0,
        line: Current::default(),
    };
    let mut tags = Vec::new();
    let mut rest = text;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let line = match find_newline(rest.as_bytes()) {
            Some(end) => {
                let (line, next) = rest.split_at(end);
                rest = &next[1..];
                line
            }
            None => std::mem::take(&mut rest),
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        builder.line.number = number;
        match tokenize(line, &mut tags, &mut builder) {
            Ok(_) => {}
            Err(LineError::Syntax(e)) => return Err(e.locate(number, line)),
            Err(LineError::Sink(e)) => return Err(e),
        }
    }
    Ok(builder.batches)
}

/// The position of the first `\n`, eight bytes at a time.
fn find_newline(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = b.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word) ^ NEWLINES;
        // Non-zero iff some byte of `x` is zero (the classic SWAR test).
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return chunk.iter().position(|c| *c == b'\n').map(|i| offset + i);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|c| *c == b'\n')
        .map(|i| offset + i)
}

// ---- Tokenizer ----

type Tags<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// Receives a line as the tokenizer reads it: fields go straight to their
/// destination instead of through an intermediate list.
trait LineSink<'a> {
    type Error;

    /// The measurement and the tags, before any field.
    fn head(&mut self, measurement: Cow<'a, str>, tags: &Tags<'a>) -> Result<(), Self::Error>;

    /// The field at `position` (from 0) of the line.
    fn field(
        &mut self,
        position: usize,
        key: Cow<'a, str>,
        value: FieldValue<'a>,
    ) -> Result<(), Self::Error>;

    /// The end of the line, with its timestamp if it has one.
    fn end(&mut self, timestamp: Option<i64>) -> Result<(), Self::Error>;
}

/// Why a line was refused: its syntax, or what the sink made of it.
enum LineError<E> {
    Syntax(Box<SyntaxError>),
    Sink(E),
}

impl<E> From<Box<SyntaxError>> for LineError<E> {
    fn from(e: Box<SyntaxError>) -> Self {
        LineError::Syntax(e)
    }
}

/// A syntax error at byte offset `at` of a line.
#[derive(Debug)]
struct SyntaxError {
    at: usize,
    message: String,
}

impl SyntaxError {
    fn new(at: usize, message: impl Into<String>) -> Box<Self> {
        Box::new(Self {
            at,
            message: message.into(),
        })
    }

    fn locate(&self, number: usize, line: &str) -> ParseError {
        let column = line.get(..self.at).map_or(self.at, |s| s.chars().count()) + 1;
        ParseError::new(
            format!("line {number}"),
            format!("column {column}: {}", self.message),
        )
    }
}

/// Ends a measurement.
fn measurement_stop(c: u8) -> bool {
    c == b',' || c == b' '
}

/// Ends a tag key, a tag value or a field key; also what a backslash
/// escapes in them.
fn key_stop(c: u8) -> bool {
    c == b',' || c == b'=' || c == b' '
}

/// Scans a name from `i` to the first unescaped byte for which `stop` holds
/// (or the end). A backslash escapes another backslash or a byte for which
/// `stop` holds. Returns the end and whether any escape was seen.
#[inline]
fn scan(b: &[u8], mut i: usize, stop: impl Fn(u8) -> bool) -> (usize, bool) {
    let mut escaped = false;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            if let Some(&next) = b.get(i + 1)
                && (next == b'\\' || stop(next))
            {
                escaped = true;
                i += 2;
                continue;
            }
        } else if stop(c) {
            break;
        }
        i += 1;
    }
    (i, escaped)
}

/// Drops the backslash of every escape (`\` before `\` or a byte `escapes`
/// accepts).
fn unescape(raw: &str, escapes: fn(u8) -> bool) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(&next) = b.get(i + 1)
            && (next == b'\\' || escapes(next))
        {
            // Both positions are ASCII bytes, so they are char boundaries.
            out.push_str(&raw[copied..i]);
            copied = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&raw[copied..]);
    out
}

/// The name in `line[start..end]`, unescaped if needed.
#[inline]
fn name<'a>(
    line: &'a str,
    start: usize,
    end: usize,
    escaped: bool,
    escapes: fn(u8) -> bool,
) -> Cow<'a, str> {
    let raw = &line[start..end];
    if escaped {
        Cow::Owned(unescape(raw, escapes))
    } else {
        Cow::Borrowed(raw)
    }
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// Reads one line (no `\n`, no trailing `\r`): its tags into the reusable
/// `tags`, everything else into `sink`. Returns `false` for blank and
/// comment lines.
///
/// Every index used to slice `line` is either its length or the position of
/// an ASCII byte, hence always a char boundary.
fn tokenize<'a, S: LineSink<'a>>(
    line: &'a str,
    tags: &mut Tags<'a>,
    sink: &mut S,
) -> Result<bool, LineError<S::Error>> {
    tags.clear();
    let b = line.as_bytes();
    let mut i = 0;
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if matches!(b.get(i), None | Some(b'#')) {
        return Ok(false);
    }

    let start = i;
    let (end, escaped) = scan(b, i, measurement_stop);
    if end == start {
        return Err(SyntaxError::new(start, "expected a measurement name").into());
    }
    let measurement = name(line, start, end, escaped, measurement_stop);
    i = end;

    while b.get(i) == Some(&b',') {
        i += 1;
        let (key_end, escaped) = scan(b, i, key_stop);
        if key_end == i {
            return Err(SyntaxError::new(i, "expected a tag key").into());
        }
        let key = name(line, i, key_end, escaped, key_stop);
        if b.get(key_end) != Some(&b'=') {
            return Err(
                SyntaxError::new(key_end, format!("expected '=' after tag key {key:?}")).into(),
            );
        }
        let value_start = key_end + 1;
        let (value_end, escaped) = scan(b, value_start, key_stop);
        if value_end == value_start {
            return Err(
                SyntaxError::new(value_start, format!("missing value of tag {key:?}")).into(),
            );
        }
        if b.get(value_end) == Some(&b'=') {
            return Err(SyntaxError::new(
                value_end,
                format!("unescaped '=' in the value of tag {key:?}"),
            )
            .into());
        }
        tags.push((key, name(line, value_start, value_end, escaped, key_stop)));
        i = value_end;
    }

    i = skip_spaces(b, i);
    if i == b.len() {
        return Err(
            SyntaxError::new(i, "expected a field set after the measurement and tags").into(),
        );
    }
    sink.head(measurement, tags).map_err(LineError::Sink)?;
    let mut position = 0;
    loop {
        let (key_end, escaped) = scan(b, i, key_stop);
        if key_end == i {
            return Err(SyntaxError::new(i, "expected a field key").into());
        }
        let key = name(line, i, key_end, escaped, key_stop);
        if b.get(key_end) != Some(&b'=') {
            return Err(
                SyntaxError::new(key_end, format!("expected '=' after field key {key:?}")).into(),
            );
        }
        let raw_key = &line[i..key_end];
        let (value, value_end) = field_value(line, key_end + 1, &key)?;
        sink.field(position, key, value).map_err(LineError::Sink)?;
        position += 1;
        i = value_end;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b' ') => break,
            None => {
                sink.end(None).map_err(LineError::Sink)?;
                return Ok(true);
            }
            Some(_) => {
                return Err(SyntaxError::new(
                    i,
                    format!("expected ',' or ' ' after the value of field {raw_key:?}"),
                )
                .into());
            }
        }
    }

    i = skip_spaces(b, i);
    if i == b.len() {
        sink.end(None).map_err(LineError::Sink)?;
        return Ok(true);
    }
    let ts_start = i;
    while matches!(b.get(i), Some(c) if *c != b' ') {
        i += 1;
    }
    let token = &line[ts_start..i];
    if !is_integer(token) {
        return Err(SyntaxError::new(
            ts_start,
            format!("invalid timestamp {token:?}: expected an integer"),
        )
        .into());
    }
    let timestamp = token
        .parse::<i64>()
        .map_err(|_| SyntaxError::new(ts_start, format!("timestamp {token} is out of range")))?;
    i = skip_spaces(b, i);
    if i != b.len() {
        return Err(SyntaxError::new(i, "unexpected text after the timestamp").into());
    }
    sink.end(Some(timestamp)).map_err(LineError::Sink)?;
    Ok(true)
}

/// `-?[0-9]+`
fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
}

/// Reads the field value starting at `start`; returns it and its end.
fn field_value<'a>(
    line: &'a str,
    start: usize,
    key: &str,
) -> Result<(FieldValue<'a>, usize), Box<SyntaxError>> {
    let b = line.as_bytes();
    match b.get(start) {
        None | Some(b',' | b' ') => Err(SyntaxError::new(
            start,
            format!("missing value of field {key:?}"),
        )),
        Some(b'"') => {
            let mut i = start + 1;
            let mut escaped = false;
            loop {
                match b.get(i) {
                    None => {
                        return Err(SyntaxError::new(
                            start,
                            format!(
                                "unterminated string value of field {key:?} (strings cannot span lines)"
                            ),
                        ));
                    }
                    Some(b'\\') if matches!(b.get(i + 1), Some(b'"' | b'\\')) => {
                        escaped = true;
                        i += 2;
                    }
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            let value = name(line, start + 1, i, escaped, |c| c == b'"');
            Ok((FieldValue::Str(value), i + 1))
        }
        Some(_) => {
            let mut end = start;
            while matches!(b.get(end), Some(c) if *c != b',' && *c != b' ') {
                end += 1;
            }
            let token = &line[start..end];
            scalar(token)
                .map(|value| (value, end))
                .map_err(|problem| SyntaxError::new(start, format!("field {key:?}: {problem}")))
        }
    }
}

/// An unquoted field value: number or boolean.
fn scalar(token: &str) -> Result<FieldValue<'static>, String> {
    let invalid = || {
        format!(
            "invalid value {token:?}: expected a float (1.5), an integer (3i), an unsigned integer (3u), \
             a boolean (t, false) or a \"string\""
        )
    };
    match token.as_bytes().last() {
        Some(b'0'..=b'9' | b'.') => {
            if let Some(f) = simple_float(token.as_bytes()) {
                return Ok(FieldValue::Float(f));
            }
            // `str::parse::<f64>` also takes "inf", "NaN" and a leading '+',
            // which line protocol does not.
            let b = token.as_bytes();
            let plausible = matches!(b.first(), Some(b'-' | b'.' | b'0'..=b'9'))
                && b.iter()
                    .all(|c| matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'));
            if !plausible {
                return Err(invalid());
            }
            token.parse().map(FieldValue::Float).map_err(|_| invalid())
        }
        Some(b'i') => {
            let digits = &token[..token.len() - 1];
            if !is_integer(digits) {
                return Err(invalid());
            }
            digits
                .parse()
                .map(FieldValue::Int)
                .map_err(|_| format!("integer {token} is out of range"))
        }
        Some(b'u') => {
            let digits = &token[..token.len() - 1];
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(invalid());
            }
            digits
                .parse()
                .map(FieldValue::UInt)
                .map_err(|_| format!("unsigned integer {token} is out of range"))
        }
        _ => match token {
            "t" | "T" | "true" | "True" | "TRUE" => Ok(FieldValue::Bool(true)),
            "f" | "F" | "false" | "False" | "FALSE" => Ok(FieldValue::Bool(false)),
            _ => Err(invalid()),
        },
    }
}

/// Exact powers of ten that an `f64` holds.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The common case of floats, `-?digits[.digits]` with at most 2^53 as
/// digits, parsed fast and exactly: both the digits and the power of ten
/// are exact doubles, so one IEEE division rounds correctly (Clinger's fast
/// path). `None` for anything else, left to `str::parse`.
fn simple_float(b: &[u8]) -> Option<f64> {
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let mut mantissa: u64 = 0;
    let mut count = 0usize;
    let mut dot: Option<usize> = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                count += 1;
            }
            b'.' if dot.is_none() => dot = Some(i),
            _ => return None,
        }
    }
    let fraction_digits = dot.map_or(0, |d| digits.len() - d - 1);
    if count == 0 || mantissa > 1 << 53 {
        return None;
    }
    let value = mantissa as f64 / *POW10.get(fraction_digits)?;
    Some(if negative { -value } else { value })
}

// ---- From lines to device batches ----

struct Builder<'a, 'l> {
    precision: Precision,
    device_tag: &'l str,
    now_ns: i64,
    limits: &'l Limits,
    batches: Vec<DeviceBatch>,
    /// Device id to its index in `batches`.
    devices: HashMap<Cow<'a, str>, usize>,
    /// The previous line's device: consecutive lines usually share it.
    last_device: Option<(Cow<'a, str>, usize)>,
    metrics: MetricCache<'a>,
    /// Points so far, for the limit.
    points: usize,
    /// The line being read.
    line: Current<'a>,
}

/// Where the points of the line being read go.
#[derive(Default)]
struct Current<'a> {
    /// 1-based, for errors.
    number: usize,
    measurement: Cow<'a, str>,
    batch: usize,
    /// The measurement's entry in the metric cache.
    entry: usize,
    /// The index of the line's first point in its batch.
    first_point: usize,
}

impl<'a> LineSink<'a> for Builder<'a, '_> {
    type Error = ParseError;

    fn head(&mut self, measurement: Cow<'a, str>, tags: &Tags<'a>) -> Result<(), ParseError> {
        let number = self.line.number;
        let at = || format!("line {number}");
        let device = tags
            .iter()
            .rev()
            .find(|(key, _)| key == self.device_tag)
            .map(|(_, value)| value)
            .ok_or_else(|| ParseError::new(at(), format!("missing tag {:?}", self.device_tag)))?;
        let batch_index = self.batch_for(device, number)?;

        let batch = &mut self.batches[batch_index];
        for (key, value) in tags {
            if key == self.device_tag
                || batch
                    .labels
                    .get(key.as_ref())
                    .is_some_and(|current| current == value)
            {
                continue;
            }
            validate_label(key, value).map_err(|e| ParseError::invalid(at(), &e))?;
            batch.labels.insert(key.to_string(), value.to_string());
            if batch.labels.len() > self.limits.max_labels {
                return Err(ParseError::new(
                    at(),
                    format!(
                        "device {:?} has more than {} labels",
                        batch.device, self.limits.max_labels
                    ),
                ));
            }
        }

        self.line.entry = self.metrics.entry(&measurement);
        self.line.measurement = measurement;
        self.line.batch = batch_index;
        self.line.first_point = batch.points.len();
        Ok(())
    }

    fn field(
        &mut self,
        position: usize,
        key: Cow<'a, str>,
        value: FieldValue<'a>,
    ) -> Result<(), ParseError> {
        let line = &self.line;
        let at = || format!("line {}", line.number);
        let max_points = self.limits.max_points_per_request;
        if self.points >= max_points {
            return Err(ParseError::too_large(
                at(),
                format!("more than {max_points} points in one request"),
            ));
        }
        self.points += 1;
        let metric = self
            .metrics
            .metric(line.entry, position, &line.measurement, key, self.limits)
            .map_err(|e| ParseError::invalid(at(), &e))?;
        let value = match value {
            FieldValue::Float(f) => Value::F64(f),
            FieldValue::Int(i) => Value::I64(i),
            FieldValue::UInt(u) => Value::I64(i64::try_from(u).map_err(|_| {
                ParseError::new(
                    at(),
                    format!("{metric}: unsigned value {u} does not fit a signed 64-bit integer"),
                )
            })?),
            FieldValue::Bool(b) => Value::Bool(b),
            FieldValue::Str(s) => Value::Str(s.into_owned()),
        };
        validate_value(&metric, &value, self.limits).map_err(|e| ParseError::invalid(at(), &e))?;
        // The timestamp comes after the fields: `end` sets it.
        self.batches[line.batch].points.push(Point {
            metric,
            ts_ns: self.now_ns,
            value,
        });
        Ok(())
    }

    fn end(&mut self, timestamp: Option<i64>) -> Result<(), ParseError> {
        let Some(t) = timestamp else {
            return Ok(());
        };
        let ts_ns = t.checked_mul(self.precision.nanos()).ok_or_else(|| {
            ParseError::new(
                format!("line {}", self.line.number),
                format!("timestamp {t} is out of range"),
            )
        })?;
        for point in &mut self.batches[self.line.batch].points[self.line.first_point..] {
            point.ts_ns = ts_ns;
        }
        Ok(())
    }
}

impl<'a> Builder<'a, '_> {
    /// The index of `device`'s batch, created (and the device id validated)
    /// on first sight.
    #[allow(
        clippy::ptr_arg,
        reason = "the Cow is cloned into the index, keeping its borrow of the body"
    )]
    fn batch_for(&mut self, device: &Cow<'a, str>, number: usize) -> Result<usize, ParseError> {
        if let Some((last, index)) = &self.last_device
            && last == device
        {
            return Ok(*index);
        }
        let index = match self.devices.get(device.as_ref()) {
            Some(index) => *index,
            None => {
                let at = || format!("line {number}");
                validate_device_id(device, self.limits)
                    .map_err(|e| ParseError::invalid(at(), &e))?;
                let max = self.limits.max_devices_per_request;
                if self.batches.len() >= max {
                    return Err(ParseError::too_large(
                        at(),
                        format!("more than {max} devices in one request"),
                    ));
                }
                self.batches.push(DeviceBatch {
                    device: device.to_string(),
                    ..DeviceBatch::default()
                });
                let index = self.batches.len() - 1;
                self.devices.insert(device.clone(), index);
                index
            }
        };
        self.last_device = Some((device.clone(), index));
        Ok(index)
    }
}

/// Validated metric names, per measurement and field position: lines of one
/// measurement usually list the same fields in the same order, so the name
/// of the n-th field is built and validated once, then cloned per value.
#[derive(Default)]
struct MetricCache<'a> {
    entries: Vec<MeasurementMetrics<'a>>,
    index: HashMap<Cow<'a, str>, usize>,
    /// The previous line's entry.
    last: Option<usize>,
}

struct MeasurementMetrics<'a> {
    measurement: Cow<'a, str>,
    /// Field key and metric name, by position in the line.
    fields: Vec<(Cow<'a, str>, String)>,
}

impl<'a> MetricCache<'a> {
    #[allow(
        clippy::ptr_arg,
        reason = "the Cow is cloned into the index, keeping its borrow of the body"
    )]
    fn entry(&mut self, measurement: &Cow<'a, str>) -> usize {
        if let Some(last) = self.last
            && self.entries[last].measurement == *measurement
        {
            return last;
        }
        let entry = match self.index.get(measurement.as_ref()) {
            Some(entry) => *entry,
            None => {
                self.entries.push(MeasurementMetrics {
                    measurement: measurement.clone(),
                    fields: Vec::new(),
                });
                let entry = self.entries.len() - 1;
                self.index.insert(measurement.clone(), entry);
                entry
            }
        };
        self.last = Some(entry);
        entry
    }

    /// The metric of field `key` at `position` in a line of `measurement`
    /// (whose entry is `entry`).
    fn metric(
        &mut self,
        entry: usize,
        position: usize,
        measurement: &str,
        key: Cow<'a, str>,
        limits: &Limits,
    ) -> Result<String, ValidationError> {
        let fields = &mut self.entries[entry].fields;
        if let Some((cached_key, metric)) = fields.get(position)
            && *cached_key == key
        {
            return Ok(metric.clone());
        }
        let mut metric = String::with_capacity(measurement.len() + 1 + key.len());
        metric.push_str(measurement);
        metric.push('.');
        metric.push_str(&key);
        validate_metric(&metric, limits)?;
        // Positions are visited in order from 0, so `position` is at most
        // `fields.len()`.
        if let Some(slot) = fields.get_mut(position) {
            *slot = (key, metric.clone());
        } else {
            fields.push((key, metric.clone()));
        }
        Ok(metric)
    }
}

/// The value checks of [`crate::model::validate_point`], for a point whose
/// metric name was validated already (see [`MetricCache`]).
fn validate_value(metric: &str, value: &Value, limits: &Limits) -> Result<(), ValidationError> {
    match value {
        Value::Str(s) if s.len() > limits.max_string_len => Err(ValidationError::new(
            metric,
            format!("string value longer than {} bytes", limits.max_string_len),
        )),
        Value::F64(v) if !v.is_finite() => {
            Err(ValidationError::new(metric, "value is not a finite number"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::validate_point;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn parse_ok(body: &str) -> Vec<DeviceBatch> {
        match parse(
            body.as_bytes(),
            Precision::Ns,
            "device",
            NOW,
            &Limits::default(),
        ) {
            Ok(batches) => batches,
            Err(e) => panic!("{body:?}: {e}"),
        }
    }

    #[track_caller]
    fn assert_err(body: &str, expected: &str) {
        match parse(
            body.as_bytes(),
            Precision::Ns,
            "device",
            NOW,
            &Limits::default(),
        ) {
            Ok(batches) => panic!("{body:?}: accepted as {batches:?}"),
            Err(e) => assert!(
                e.to_string().contains(expected),
                "{body:?}: {e} should contain {expected:?}"
            ),
        }
    }

    fn line(text: &str) -> Line<'_> {
        match Line::parse(text) {
            Ok(Some(line)) => line,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn point(metric: &str, ts_ns: i64, value: Value) -> Point {
        Point {
            metric: metric.to_owned(),
            ts_ns,
            value,
        }
    }

    #[test]
    fn typical_line() {
        let batches = parse_ok(
            "cpu,device=host-17,region=eu usage_user=12.5,usage_system=3.25,load=2i 1700000000000000000\n",
        );
        assert_eq!(
            batches,
            vec![DeviceBatch {
                device: "host-17".into(),
                labels: BTreeMap::from([("region".into(), "eu".into())]),
                points: vec![
                    point("cpu.usage_user", NOW, Value::F64(12.5)),
                    point("cpu.usage_system", NOW, Value::F64(3.25)),
                    point("cpu.load", NOW, Value::I64(2)),
                ],
            }]
        );
    }

    // The "Special characters" examples of the InfluxDB line protocol reference.
    #[test]
    fn influxdb_escaping_examples() {
        assert_eq!(
            line(r#"my\ Measurement fieldKey="string value""#).measurement,
            "my Measurement"
        );
        let l = line(r#"myMeasurement fieldKey="\"string\" within a string""#);
        assert_eq!(
            l.fields,
            vec![(
                "fieldKey".into(),
                FieldValue::Str(r#""string" within a string"#.into())
            )]
        );
        let l = line(r"myMeasurement,tag\ Key1=tag\ Value1,tag\ Key2=tag\ Value2 fieldKey=100");
        assert_eq!(
            l.tags,
            vec![
                ("tag Key1".into(), "tag Value1".into()),
                ("tag Key2".into(), "tag Value2".into())
            ]
        );
        assert_eq!(
            l.fields,
            vec![("fieldKey".into(), FieldValue::Float(100.0))]
        );
        let l = line(r#"myMeasurement,tagKey=🍭 fieldKey="Launch 🚀" 1556813561098000000"#);
        assert_eq!(l.tags, vec![("tagKey".into(), "🍭".into())]);
        assert_eq!(
            l.fields,
            vec![("fieldKey".into(), FieldValue::Str("Launch 🚀".into()))]
        );
        assert_eq!(l.timestamp, Some(1_556_813_561_098_000_000));
        // Commas and equals signs.
        let l = line(r"a\,b\=c,k\,1\=x=v\,2\=y f\,g\=h=1");
        assert_eq!(
            l.measurement, r"a,b\=c",
            "'=' needs no escape in a measurement"
        );
        assert_eq!(l.tags, vec![("k,1=x".into(), "v,2=y".into())]);
        assert_eq!(l.fields[0].0, "f,g=h");
        // Unescaped quotes and equals signs are literal where they are not special.
        let l = line(r#"m"1,t="q" f'=1"#);
        assert_eq!(l.measurement, r#"m"1"#);
        assert_eq!(l.tags, vec![("t".into(), r#""q""#.into())]);
        assert_eq!(l.fields[0].0, "f'");
    }

    // The "Escaping backslashes" table of the InfluxDB line protocol reference.
    #[test]
    fn influxdb_backslash_table() {
        for (written, meant) in [
            (r"\", r"\"),
            (r"\\", r"\"),
            (r"\\\", r"\\"),
            (r"\\\\", r"\\"),
            (r"\\\\\", r"\\\"),
            (r"\\\\\\", r"\\\"),
        ] {
            // Followed by a character that needs no escape: a lone backslash
            // before a space or a quote would escape it.
            let text = format!(r#"m{written}b,t=a{written}b f{written}b="a{written}b""#);
            let l = line(&text);
            assert_eq!(l.measurement, format!("m{meant}b"), "measurement {written}");
            assert_eq!(l.tags[0].1, format!("a{meant}b"), "tag value {written}");
            assert_eq!(l.fields[0].0, format!("f{meant}b"), "field key {written}");
            assert_eq!(
                l.fields[0].1,
                FieldValue::Str(format!("a{meant}b").into()),
                "string {written}"
            );
        }
        let l = line(r#"m s="a\nb\\n""#);
        assert_eq!(
            l.fields[0].1,
            FieldValue::Str(r"a\nb\n".into()),
            "other escapes stay as written"
        );
    }

    #[test]
    fn field_types() {
        let l = line(
            "m a=1,b=-1.5,c=1e3,d=-2.5E-3,e=.5,f=3i,g=-9223372036854775808i,h=18446744073709551615u,\
             i=t,j=T,k=true,l=True,m=TRUE,n=f,o=F,p=false,q=False,r=FALSE,s=\"\"",
        );
        let values: Vec<_> = l.fields.into_iter().map(|(_, v)| v).collect();
        use FieldValue::*;
        assert_eq!(
            values,
            vec![
                Float(1.0),
                Float(-1.5),
                Float(1000.0),
                Float(-0.0025),
                Float(0.5),
                Int(3),
                Int(i64::MIN),
                UInt(u64::MAX),
                Bool(true),
                Bool(true),
                Bool(true),
                Bool(true),
                Bool(true),
                Bool(false),
                Bool(false),
                Bool(false),
                Bool(false),
                Bool(false),
                Str("".into()),
            ]
        );
    }

    #[test]
    fn comments_blank_lines_crlf_and_spacing() {
        let body = "# a comment\r\n\r\n   \n  # indented comment\ncpu,device=d1 a=1  17\r\n\tcpu,device=d1 b=2\ncpu,device=d1 c=3 18 \n";
        let batches = parse_ok(body);
        assert_eq!(
            batches[0].points,
            vec![
                point("cpu.a", 17, Value::F64(1.0)),
                point("cpu.b", NOW, Value::F64(2.0)),
                point("cpu.c", 18, Value::F64(3.0))
            ]
        );
        assert_eq!(parse_ok(""), vec![]);
        assert_eq!(parse_ok("\n\n# only comments"), vec![]);
        assert_eq!(line("m a=1\r").fields.len(), 1);
        assert_eq!(Line::parse("  # x").map(|l| l.is_none()), Ok(true));
    }

    #[test]
    fn grouping_by_device_and_labels() {
        let body = "\
            cpu,device=a,rack=1 x=1 1\n\
            cpu,device=b x=2 2\n\
            mem,device=a,rack=2,room=r1 y=3i 3\n\
            cpu,device=b,device=c x=4 4\n";
        let batches = parse_ok(body);
        let summary: Vec<_> = batches
            .iter()
            .map(|b| {
                (
                    b.device.as_str(),
                    b.labels.clone(),
                    b.points.iter().map(|p| p.ts_ns).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "a",
                    BTreeMap::from([("rack".into(), "2".into()), ("room".into(), "r1".into())]),
                    vec![1, 3]
                ),
                ("b", BTreeMap::new(), vec![2]),
                ("c", BTreeMap::new(), vec![4]),
            ],
            "last tag value wins; devices in order of first appearance"
        );
        assert_eq!(batches[0].points[1], point("mem.y", 3, Value::I64(3)));
    }

    #[test]
    fn device_tag_is_configurable() {
        let batches = parse(
            b"m,host=h1,device=x v=1",
            Precision::Ns,
            "host",
            NOW,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(batches[0].device, "h1");
        assert_eq!(
            batches[0].labels,
            BTreeMap::from([("device".into(), "x".into())])
        );
    }

    #[test]
    fn precisions() {
        for (p, text, expected) in [
            (Precision::Ns, "ns", 5),
            (Precision::Us, "us", 5_000),
            (Precision::Ms, "ms", 5_000_000),
            (Precision::S, "s", 5_000_000_000),
            (Precision::M, "m", 300_000_000_000),
            (Precision::H, "h", 18_000_000_000_000),
        ] {
            assert_eq!(Precision::parse(text), Some(p));
            let batches = parse(b"m,device=d v=1 5", p, "device", NOW, &Limits::default()).unwrap();
            assert_eq!(batches[0].points[0].ts_ns, expected, "{text}");
        }
        assert_eq!(Precision::parse("n"), Some(Precision::Ns));
        assert_eq!(Precision::parse("u"), Some(Precision::Us));
        assert_eq!(Precision::parse("µs"), Some(Precision::Us));
        assert_eq!(Precision::parse("sec"), None);
        assert_eq!(Precision::parse(""), None);
        assert_eq!(Precision::default(), Precision::Ns);
        let e = parse(
            b"m,device=d v=1 9223372036855",
            Precision::Ms,
            "device",
            NOW,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1: timestamp 9223372036855 is out of range"
        );
        let batches = parse(
            b"m,device=d v=1 -5",
            Precision::S,
            "device",
            NOW,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(batches[0].points[0].ts_ns, -5_000_000_000);
    }

    #[test]
    fn syntax_errors() {
        let d = "m,device=d";
        assert_err(
            ",device=d a=1",
            "line 1: column 1: expected a measurement name",
        );
        assert_err("m,device=d", "line 1: column 11: expected a field set");
        assert_err("m,device=d ", "line 1: column 12: expected a field set");
        assert_err("m,=d a=1", "line 1: column 3: expected a tag key");
        assert_err(
            "m,device a=1",
            "line 1: column 9: expected '=' after tag key \"device\"",
        );
        assert_err(
            "m,device= a=1",
            "line 1: column 10: missing value of tag \"device\"",
        );
        assert_err(
            "m,device=a=b x=1",
            "line 1: column 11: unescaped '=' in the value of tag \"device\"",
        );
        assert_err("m,device=d, a=1", "line 1: column 12: expected a tag key");
        assert_err(
            &format!("{d} a"),
            "line 1: column 13: expected '=' after field key \"a\"",
        );
        assert_err(
            &format!("{d} a,b=1"),
            "column 13: expected '=' after field key \"a\"",
        );
        assert_err(&format!("{d} =1"), "column 12: expected a field key");
        assert_err(
            &format!("{d} a="),
            "column 14: missing value of field \"a\"",
        );
        assert_err(
            &format!("{d} a=,b=1"),
            "column 14: missing value of field \"a\"",
        );
        assert_err(&format!("{d} a=1,"), "column 16: expected a field key");
        assert_err(&format!("{d} a=1, 5"), "column 16: expected a field key");
        assert_err(
            &format!("{d} a=\"x"),
            "column 14: unterminated string value of field \"a\"",
        );
        assert_err(
            &format!("{d} a=\"x\"y"),
            "column 17: expected ',' or ' ' after the value of field \"a\"",
        );
        assert_err(
            &format!("{d} a=abc"),
            "column 14: field \"a\": invalid value \"abc\": expected a float",
        );
        assert_err(&format!("{d} a=inf"), "invalid value \"inf\"");
        assert_err(&format!("{d} a=NaN"), "invalid value \"NaN\"");
        assert_err(&format!("{d} a=+1"), "invalid value \"+1\"");
        assert_err(&format!("{d} a=1.2.3"), "invalid value \"1.2.3\"");
        assert_err(&format!("{d} a=1ii"), "invalid value \"1ii\"");
        assert_err(&format!("{d} a=-1u"), "invalid value \"-1u\"");
        assert_err(&format!("{d} a=1.5i"), "invalid value \"1.5i\"");
        assert_err(
            &format!("{d} a=9223372036854775808i"),
            "field \"a\": integer 9223372036854775808i is out of range",
        );
        assert_err(
            &format!("{d} a=18446744073709551616u"),
            "unsigned integer 18446744073709551616u is out of range",
        );
        assert_err(
            &format!("{d} a=1 x"),
            "column 16: invalid timestamp \"x\": expected an integer",
        );
        assert_err(&format!("{d} a=1 1.5"), "invalid timestamp \"1.5\"");
        assert_err(
            &format!("{d} a=1 99999999999999999999"),
            "timestamp 99999999999999999999 is out of range",
        );
        assert_err(
            &format!("{d} a=1 1 2"),
            "column 18: unexpected text after the timestamp",
        );
        assert_err(
            &format!("ok,device=d a=1\n\n{d} a=1 1 2"),
            "line 3: column 18",
        );
        assert_err("m,device=d é=\"x", "line 1: column 14: unterminated");
        let e = parse(
            b"m,device=d a=1\nm,device=d b=\xff",
            Precision::Ns,
            "device",
            NOW,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "line 2: not valid UTF-8");
        assert_eq!(
            Line::parse("m a=1\nn b=2").unwrap_err().to_string(),
            "line 1: column 6: unexpected newline"
        );
    }

    #[test]
    fn semantic_errors() {
        assert_err("cpu,region=eu a=1", r#"line 1: missing tag "device""#);
        assert_err(
            "cpu,device=d a=1\ncpu,device=a/b a=1",
            "line 2: device: invalid character '/'",
        );
        assert_err(
            "cpu,device=d,bad\\ key=x a=1",
            "line 1: label key: invalid character ' '",
        );
        assert_err(
            "cpu,device=d,k=a\\,b a=1",
            "line 1: label k: value must not contain ','",
        );
        assert_err(
            "cpu,device=d my\\ field=1",
            "line 1: metric: invalid character ' ' in \"cpu.my field\"",
        );
        assert_err(
            "cpu,device=d a=1u,b=9223372036854775808u",
            "line 1: cpu.b: unsigned value 9223372036854775808 does not fit",
        );
        assert_err(
            "cpu,device=d a=1e999",
            "line 1: cpu.a: value is not a finite number",
        );
        let limits = Limits {
            max_string_len: 2,
            max_metric_len: 6,
            max_labels: 1,
            ..Limits::default()
        };
        let run = |body: &str| {
            parse(body.as_bytes(), Precision::Ns, "device", NOW, &limits)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            run("cpu,device=d a=\"abc\""),
            "line 1: cpu.a: string value longer than 2 bytes"
        );
        assert_eq!(
            run("cpu,device=d abc=1"),
            "line 1: metric: longer than 6 bytes"
        );
        assert_eq!(
            run("cpu,device=d,a=1 x=1\ncpu,device=d,b=1 x=1"),
            "line 2: device \"d\" has more than 1 labels"
        );
    }

    #[test]
    fn count_limits_are_too_large() {
        let limits = Limits {
            max_points_per_request: 3,
            max_devices_per_request: 2,
            ..Limits::default()
        };
        let run = |body: &str| parse(body.as_bytes(), Precision::Ns, "device", NOW, &limits);
        assert_eq!(
            run("m,device=a x=1,y=2,z=3").map(|b| b[0].points.len()),
            Ok(3)
        );
        let e = run("m,device=a x=1,y=2\nm,device=a x=1,y=2").unwrap_err();
        assert!(e.too_large, "{e}");
        assert_eq!(e.to_string(), "line 2: more than 3 points in one request");
        let e = run("m,device=a x=1\nm,device=b x=1\nm,device=a x=1\nm,device=c x=1").unwrap_err();
        assert!(e.too_large, "{e}");
        assert_eq!(e.to_string(), "line 4: more than 2 devices in one request");
    }

    #[test]
    fn metric_cache_follows_changing_field_sets() {
        let body =
            "cpu,device=d a=1,b=2\nmem,device=d a=3\ncpu,device=d b=4,a=5\ncpu,device=d a=6,c=7";
        let metrics: Vec<_> = parse_ok(body)[0]
            .points
            .iter()
            .map(|p| p.metric.clone())
            .collect();
        assert_eq!(
            metrics,
            [
                "cpu.a", "cpu.b", "mem.a", "cpu.b", "cpu.a", "cpu.a", "cpu.c"
            ]
        );
    }

    #[test]
    fn validate_value_agrees_with_validate_point() {
        let limits = Limits {
            max_string_len: 3,
            ..Limits::default()
        };
        for value in [
            Value::F64(1.0),
            Value::F64(f64::NAN),
            Value::F64(f64::NEG_INFINITY),
            Value::I64(1),
            Value::Bool(false),
            Value::Str("abc".into()),
            Value::Str("abcd".into()),
        ] {
            let p = point("m.x", 0, value.clone());
            assert_eq!(
                validate_value("m.x", &value, &limits),
                validate_point(&p, &limits),
                "{value:?}"
            );
        }
    }

    #[test]
    fn simple_float_agrees_with_str_parse() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "1",
            "0.1",
            "1.",
            ".5",
            "-.5",
            "12.5",
            "84.25",
            "3.14159265358979",
            "9007199254740992",
            "9007199254740993",
            "0.30000000000000004",
            "123456789.123456789",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "18446744073709551616",
            "1.2.3",
            "-",
            ".",
            "",
            "1-2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 17) as usize + 1;
            let dot = (x >> 8) as usize % (digits + 1);
            let mut s: String = (0..digits)
                .map(|i| char::from(b'0' + ((x >> (i * 3)) % 10) as u8))
                .collect();
            s.insert(dot, '.');
            cases.push(s);
        }
        for case in cases {
            if let Some(fast) = simple_float(case.as_bytes()) {
                let slow: f64 = case.parse().unwrap();
                assert_eq!(fast.to_bits(), slow.to_bits(), "{case}");
            }
        }
        assert_eq!(
            simple_float(b"1e5"),
            None,
            "exponents are left to str::parse"
        );
        assert_eq!(
            simple_float(b"9007199254740993"),
            None,
            "more than 2^53 is left to str::parse"
        );
    }

    #[test]
    fn find_newline_matches_position() {
        let text = b"0123456789abcdef\nxyz\n";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let b = &text[start..end];
                assert_eq!(
                    find_newline(b),
                    b.iter().position(|c| *c == b'\n'),
                    "{start}..{end}"
                );
            }
        }
    }
}
