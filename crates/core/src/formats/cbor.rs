//! CBOR payloads (RFC 8949): Tributary's document shape in CBOR
//! (`application/cbor`), and SenML CBOR (RFC 8428 section 6,
//! `application/senml+cbor`).
//!
//! A CBOR item is decoded into the JSON data model and then read by the JSON
//! parsers ([`super::json`], [`super::senml`]), so that the two encodings
//! accept exactly the same documents and refuse them with the same
//! messages. The decoder is bounded by its input: every declared length is
//! checked against the bytes left before anything is allocated, nesting is
//! at most [`MAX_DEPTH`], and it never recurses deeper than that.
//!
//! What CBOR has and JSON has not:
//! * byte strings: refused, except as SenML's `vd`, which becomes its
//!   base64url text (as SenML JSON writes it);
//! * tags: the tagged item is read as if untagged (tag 1, epoch time, is
//!   a number either way);
//! * NaN and infinities: refused (JSON cannot carry them, and no metric
//!   stores them); `undefined` and simple values other than `false`,
//!   `true` and `null`: refused;
//! * map keys: text, and for SenML the integer labels of RFC 8428 table 6
//!   (`-2` is `bn`, `2` is `v`, and so on). Other integer keys are refused.
//!
//! ```
//! use tributary_core::{Limits, Value};
//! use tributary_core::formats::cbor;
//!
//! // [{0: "temp", 2: 21.5}]: SenML CBOR with integer labels (n, v).
//! let pack = [0x81, 0xa2, 0x00, 0x64, b't', b'e', b'm', b'p', 0x02, 0xf9, 0x4d, 0x60];
//! let points = cbor::parse_senml(&pack, 1_700_000_000_000_000_000, &Limits::default()).unwrap();
//! assert_eq!(points[0].metric, "temp");
//! assert_eq!(points[0].value, Value::F64(21.5));
//! ```

use base64::Engine as _;
use serde_json::{Map, Number, Value as Json};

use super::{ParseError, json, senml};
use crate::limits::Limits;
use crate::model::Point;

/// The deepest nesting taken (a SenML pack is 2 deep; Tributary's document
/// 3).
pub const MAX_DEPTH: usize = 16;

/// Parses Tributary's document (`{"ts": .., "values": {..}}`, or an array
/// of them) written in CBOR.
pub fn parse(body: &[u8], now_ns: i64, limits: &Limits) -> Result<Vec<Point>, ParseError> {
    let doc = decode(body, Labels::Text)?;
    json::parse(&to_bytes(&doc)?, now_ns, limits)
}

/// Parses a SenML CBOR pack (RFC 8428 section 6).
pub fn parse_senml(body: &[u8], now_ns: i64, limits: &Limits) -> Result<Vec<Point>, ParseError> {
    let doc = decode(body, Labels::Senml)?;
    senml::parse(&to_bytes(&doc)?, now_ns, limits)
}

/// A SenML CBOR pack as SenML JSON text (integer labels named), for
/// readers that adjust a pack before [`senml::parse`] (LwM2M's names start
/// with `/`).
pub fn senml_to_json(body: &[u8]) -> Result<Vec<u8>, ParseError> {
    to_bytes(&decode(body, Labels::Senml)?)
}

fn to_bytes(doc: &Json) -> Result<Vec<u8>, ParseError> {
    serde_json::to_vec(doc).map_err(|e| ParseError::new("body", e.to_string()))
}

/// How map keys are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Labels {
    /// Text only.
    Text,
    /// Text, or SenML's integer labels.
    Senml,
}

/// SenML's integer labels (RFC 8428 table 6).
fn senml_label(n: i64) -> Option<&'static str> {
    Some(match n {
        -1 => "bver",
        -2 => "bn",
        -3 => "bt",
        -4 => "bu",
        -5 => "bv",
        -6 => "bs",
        0 => "n",
        1 => "u",
        2 => "v",
        3 => "vs",
        4 => "vb",
        5 => "s",
        6 => "t",
        7 => "ut",
        8 => "vd",
        _ => return None,
    })
}

/// Decodes one CBOR item that spans all of `body`, as JSON.
fn decode(body: &[u8], labels: Labels) -> Result<Json, ParseError> {
    let mut d = Decoder {
        data: body,
        pos: 0,
        labels,
    };
    let item = d.item(0, None)?;
    if d.pos != body.len() {
        return Err(d.error("bytes after the CBOR item"));
    }
    Ok(item)
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    labels: Labels,
}

/// What the next item is: its major type and argument, or a break.
enum Head {
    Item { major: u8, arg: Arg },
    Break,
}

/// A head's argument: a number, or "indefinite length".
enum Arg {
    Value(u64),
    Indefinite,
}

impl Decoder<'_> {
    fn error(&self, message: &str) -> ParseError {
        ParseError::new(format!("byte {}", self.pos), message)
    }

    fn byte(&mut self) -> Result<u8, ParseError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| self.error("the CBOR item ends early"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&[u8], ParseError> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.error("a length runs past the end of the body"));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.data[start..self.pos])
    }

    fn head(&mut self) -> Result<Head, ParseError> {
        let first = self.byte()?;
        let (major, info) = (first >> 5, first & 0x1f);
        let arg = match info {
            0..=23 => Arg::Value(u64::from(info)),
            24 => Arg::Value(u64::from(self.byte()?)),
            25..=27 => {
                let n = 1u64 << (info - 24);
                let bits = self
                    .take(n)?
                    .iter()
                    .fold(0u64, |v, b| (v << 8) | u64::from(*b));
                if major == 7 {
                    // A float: its raw bits, under a pseudo major type (8:
                    // half, 9: single, 10: double) that `item` converts.
                    return Ok(Head::Item {
                        major: 8 + (info - 25),
                        arg: Arg::Value(bits),
                    });
                }
                Arg::Value(bits)
            }
            31 if major == 7 => return Ok(Head::Break),
            31 if matches!(major, 2..=5) => Arg::Indefinite,
            _ => return Err(self.error("a reserved or malformed CBOR head")),
        };
        Ok(Head::Item { major, arg })
    }

    /// One item, at `depth`; `head` when it was read already.
    fn item(&mut self, depth: usize, head: Option<Head>) -> Result<Json, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested deeper than 16"));
        }
        let head = match head {
            Some(h) => h,
            None => self.head()?,
        };
        let Head::Item { major, arg } = head else {
            return Err(self.error("a break outside an indefinite-length item"));
        };
        match (major, arg) {
            (0, Arg::Value(n)) => Ok(Json::Number(n.into())),
            (1, Arg::Value(n)) => {
                let n = i64::try_from(n)
                    .map(|n| -1 - n)
                    .map_err(|_| self.error("a negative integer below -2^63"))?;
                Ok(Json::Number(n.into()))
            }
            (2, arg) => {
                let bytes = self.string(2, arg)?;
                Err(self.error(&format!(
                    "a byte string ({} bytes) where text or a number was expected",
                    bytes.len()
                )))
            }
            (3, arg) => {
                let bytes = self.string(3, arg)?;
                String::from_utf8(bytes)
                    .map(Json::String)
                    .map_err(|_| self.error("a text string that is not UTF-8"))
            }
            (4, arg) => {
                let mut items = Vec::new();
                self.each(arg, |d, head| {
                    items.push(d.item(depth + 1, Some(head))?);
                    Ok(())
                })?;
                Ok(Json::Array(items))
            }
            (5, arg) => {
                let mut map = Map::new();
                self.each(arg, |d, head| {
                    let key = d.key(head)?;
                    let value = if key == "vd" && d.labels == Labels::Senml {
                        d.binary_value()?
                    } else {
                        d.item(depth + 1, None)?
                    };
                    if map.insert(key.clone(), value).is_some() {
                        return Err(d.error(&format!("the key {key:?} twice in one map")));
                    }
                    Ok(())
                })?;
                Ok(Json::Object(map))
            }
            (6, Arg::Value(_)) => self.item(depth + 1, None),
            (7, Arg::Value(20)) => Ok(Json::Bool(false)),
            (7, Arg::Value(21)) => Ok(Json::Bool(true)),
            (7, Arg::Value(22)) => Ok(Json::Null),
            (7, _) => Err(self.error("a CBOR simple value other than false, true and null")),
            (8, Arg::Value(bits)) => float(half(bits as u16)).ok_or_else(|| self.non_finite()),
            (9, Arg::Value(bits)) => {
                float(f64::from(f32::from_bits(bits as u32))).ok_or_else(|| self.non_finite())
            }
            (10, Arg::Value(bits)) => float(f64::from_bits(bits)).ok_or_else(|| self.non_finite()),
            _ => Err(self.error("a malformed CBOR item")),
        }
    }

    fn non_finite(&self) -> ParseError {
        self.error("NaN or an infinity (no metric stores them)")
    }

    /// The items of an array or the pairs of a map, definite or not. Each
    /// takes at least one byte, so a declared count over the bytes left is
    /// refused before the loop.
    fn each(
        &mut self,
        arg: Arg,
        mut f: impl FnMut(&mut Self, Head) -> Result<(), ParseError>,
    ) -> Result<(), ParseError> {
        match arg {
            Arg::Value(n) => {
                if n > (self.data.len() - self.pos) as u64 {
                    return Err(self.error("a count runs past the end of the body"));
                }
                for _ in 0..n {
                    let head = self.head()?;
                    if matches!(head, Head::Break) {
                        return Err(self.error("a break inside a definite-length item"));
                    }
                    f(self, head)?;
                }
            }
            Arg::Indefinite => loop {
                match self.head()? {
                    Head::Break => break,
                    head => f(self, head)?,
                }
            },
        }
        Ok(())
    }

    /// A string's bytes: definite, or the chunks of an indefinite one
    /// (each a definite string of the same type).
    fn string(&mut self, major: u8, arg: Arg) -> Result<Vec<u8>, ParseError> {
        match arg {
            Arg::Value(n) => Ok(self.take(n)?.to_vec()),
            Arg::Indefinite => {
                let mut out = Vec::new();
                loop {
                    match self.head()? {
                        Head::Break => return Ok(out),
                        Head::Item {
                            major: m,
                            arg: Arg::Value(n),
                        } if m == major => out.extend_from_slice(self.take(n)?),
                        _ => return Err(self.error("a bad chunk in an indefinite-length string")),
                    }
                }
            }
        }
    }

    fn key(&mut self, head: Head) -> Result<String, ParseError> {
        match head {
            Head::Item { major: 3, arg } => {
                let bytes = self.string(3, arg)?;
                String::from_utf8(bytes).map_err(|_| self.error("a key that is not UTF-8"))
            }
            Head::Item {
                major: major @ (0 | 1),
                arg: Arg::Value(n),
            } if self.labels == Labels::Senml => {
                let n = i64::try_from(n)
                    .ok()
                    .map(|n| if major == 0 { n } else { -1 - n });
                n.and_then(senml_label)
                    .map(str::to_owned)
                    .ok_or_else(|| self.error("an integer label that SenML does not define"))
            }
            _ => Err(self.error("a map key that is not text")),
        }
    }

    /// SenML's `vd`: a byte string, as base64url text.
    fn binary_value(&mut self) -> Result<Json, ParseError> {
        match self.head()? {
            Head::Item { major: 2, arg } => {
                let bytes = self.string(2, arg)?;
                Ok(Json::String(
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
                ))
            }
            _ => Err(self.error("vd (data value) must be a byte string")),
        }
    }
}

fn float(v: f64) -> Option<Json> {
    Number::from_f64(v).map(Json::Number)
}

/// A half-precision float (IEEE 754 binary16) as an f64.
fn half(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f64::from(bits & 0x3ff);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn senml(bytes: &[u8]) -> Result<Vec<Point>, ParseError> {
        parse_senml(bytes, NOW, &Limits::default())
    }

    #[test]
    fn senml_packs_with_integer_labels_and_every_float_width_decode() {
        // [{-2: "dev:", -3: 1.32e9 (single), 0: "temp", 1: "Cel", 2: 23.5
        // (double)}, {0: "temp", 6: 60, 2: 23.59375 (half)}].
        let mut pack = vec![0x82, 0xa5, 0x21, 0x64];
        pack.extend_from_slice(b"dev:");
        pack.extend_from_slice(&[0x22, 0xfa]);
        pack.extend_from_slice(&1.32e9f32.to_bits().to_be_bytes());
        pack.extend_from_slice(&[0x00, 0x64]);
        pack.extend_from_slice(b"temp");
        pack.extend_from_slice(&[0x01, 0x63]);
        pack.extend_from_slice(b"Cel");
        pack.extend_from_slice(&[0x02, 0xfb]);
        pack.extend_from_slice(&23.5f64.to_bits().to_be_bytes());
        pack.extend_from_slice(&[0xa3, 0x00, 0x64]);
        pack.extend_from_slice(b"temp");
        pack.extend_from_slice(&[0x06, 0x18, 60, 0x02, 0xf9, 0x4d, 0xe6]);
        let points = senml(&pack).unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].metric, "dev:temp");
        assert_eq!(points[0].ts_ns, 1_320_000_000_000_000_000);
        assert_eq!(points[0].value, Value::F64(23.5));
        assert_eq!(points[1].ts_ns, 1_320_000_060_000_000_000);
        // 0x4de6 is 23.59375 in half precision.
        assert_eq!(points[1].value, Value::F64(23.59375));
    }

    #[test]
    fn tributary_documents_read_as_their_json_twins() {
        // {"values": {"temp": 21.5, "on": true, "state": "ok"}}
        let mut doc = vec![0xa1, 0x66];
        doc.extend_from_slice(b"values");
        doc.push(0xa3);
        doc.extend_from_slice(&[0x64]);
        doc.extend_from_slice(b"temp");
        doc.extend_from_slice(&[0xf9, 0x4d, 0x60]);
        doc.push(0x62);
        doc.extend_from_slice(b"on");
        doc.push(0xf5);
        doc.push(0x65);
        doc.extend_from_slice(b"state");
        doc.push(0x62);
        doc.extend_from_slice(b"ok");
        let mut points = parse(&doc, NOW, &Limits::default()).unwrap();
        let mut twin = json::parse(
            br#"{"values": {"temp": 21.5, "on": true, "state": "ok"}}"#,
            NOW,
            &Limits::default(),
        )
        .unwrap();
        points.sort_by(|a, b| a.metric.cmp(&b.metric));
        twin.sort_by(|a, b| a.metric.cmp(&b.metric));
        assert_eq!(points, twin);
    }

    #[test]
    fn indefinite_lengths_tags_and_vd_are_read() {
        // [_ {_ 0: "blob", 8: h'0102ff'}] with a tag 1 around nothing else.
        let pack = [
            0x9f, 0xbf, 0x00, 0x64, b'b', b'l', b'o', b'b', 0x08, 0x43, 0x01, 0x02, 0xff, 0xff,
            0xff,
        ];
        let points = senml(&pack).unwrap();
        assert_eq!(points[0].value, Value::Str("AQL_".into()));
        // Tag 1 (epoch time) around bt.
        let pack = [
            0x81, 0xa3, 0x22, 0xc1, 0x1a, 0x4e, 0xae, 0x93, 0x80, 0x00, 0x61, b'x', 0x02, 0x01,
        ];
        let points = senml(&pack).unwrap();
        assert_eq!(points[0].ts_ns, 0x4eae_9380 * 1_000_000_000);
    }

    #[test]
    fn malformed_and_hostile_input_is_refused_clearly() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "ends early"),
            (&[0x81], "runs past"),
            (
                &[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                "count runs past",
            ),
            (&[0x7a, 0xff, 0xff, 0xff, 0xff], "length runs past"),
            (&[0x81, 0xa1, 0x09, 0x01], "integer label"),
            (&[0x81, 0xa1, 0x42, 0x01, 0x02, 0x01], "not text"),
            (&[0x81, 0xa1, 0x02, 0xf9, 0x7e, 0x00], "NaN"),
            (&[0x81, 0xa1, 0x02, 0xf7], "simple value"),
            (&[0x81, 0xa1, 0x02, 0x41, 0x00], "byte string"),
            (&[0x81, 0xa0, 0x00], "after the CBOR item"),
            (&[0xff], "break outside"),
            (&[0x1c], "reserved"),
            (&[0x81, 0xa2, 0x02, 0x01, 0x02, 0x02], "twice"),
            (&[0x81, 0xa1, 0x08, 0x01], "byte string"),
        ];
        for (bytes, says) in cases {
            let e = senml(bytes).unwrap_err();
            assert!(e.to_string().contains(says), "{bytes:02x?}: {e}");
        }
        // Nesting: 17 arrays deep is refused without recursing further.
        let deep = [0x81u8; 40];
        assert!(senml(&deep).unwrap_err().to_string().contains("deeper"));
        // A million-deep input cannot overflow the stack either.
        let deeper = vec![0x81u8; 1_000_000];
        assert!(senml(&deeper).is_err());
    }

    #[test]
    fn halves_convert_exactly() {
        assert_eq!(half(0x3c00), 1.0);
        assert_eq!(half(0xc000), -2.0);
        assert_eq!(half(0x0001), 2f64.powi(-24));
        assert_eq!(half(0x7bff), 65504.0);
        assert!(half(0x7c00).is_infinite() && half(0x7e00).is_nan());
    }
}
