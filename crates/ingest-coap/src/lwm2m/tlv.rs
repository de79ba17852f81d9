//! The OMA LwM2M TLV format (Content-Format 11542; LwM2M 1.1 Core, 7.4.3):
//! what most LwM2M clients answer a Read or Observe with.
//!
//! Each entry is a type byte, an identifier of 8 or 16 bits, a length of
//! 0 to 24 bits (or 0 to 7 in the type byte), then the value. An entry is
//! an Object Instance, a Resource with a value, a Multiple Resource, or a
//! Resource Instance; the first and third hold entries. Nesting is at most
//! three deep by the format's own rules (instance → multiple resource →
//! resource instance), and this decoder enforces it: no recursion follows
//! the client's input further.

use std::fmt;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ObjectInstance,
    ResourceInstance,
    MultipleResource,
    Resource,
}

/// A value-bearing entry: its path below the request's (instance if
/// given, resource, resource instance if any) and its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub instance: Option<u16>,
    pub resource: u16,
    pub resource_instance: Option<u16>,
    pub value: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlvError(pub &'static str);

impl fmt::Display for TlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLV: {}", self.0)
    }
}

/// The most entries decoded from one payload.
pub(crate) const MAX_ENTRIES: usize = 1024;

/// One entry: its kind, identifier and value.
type Raw<'a> = (Kind, u16, &'a [u8]);

/// One entry, and the rest of the data.
fn entry(data: &[u8]) -> Result<(Raw<'_>, &[u8]), TlvError> {
    let (&t, mut rest) = data.split_first().ok_or(TlvError("empty entry"))?;
    let kind = match t >> 6 {
        0 => Kind::ObjectInstance,
        1 => Kind::ResourceInstance,
        2 => Kind::MultipleResource,
        _ => Kind::Resource,
    };
    let id = if t & 0x20 != 0 {
        let b = rest.get(..2).ok_or(TlvError("cut in an identifier"))?;
        rest = &rest[2..];
        u16::from_be_bytes([b[0], b[1]])
    } else {
        let (&b, r) = rest.split_first().ok_or(TlvError("cut in an identifier"))?;
        rest = r;
        u16::from(b)
    };
    let len_bytes = usize::from((t >> 3) & 0x03);
    let len = if len_bytes == 0 {
        usize::from(t & 0x07)
    } else {
        let b = rest.get(..len_bytes).ok_or(TlvError("cut in a length"))?;
        rest = &rest[len_bytes..];
        b.iter().fold(0usize, |n, &x| (n << 8) | usize::from(x))
    };
    let value = rest
        .get(..len)
        .ok_or(TlvError("a value longer than the payload"))?;
    Ok(((kind, id, value), &rest[len..]))
}

/// Every value-bearing entry of a payload, in order.
pub(crate) fn decode(mut data: &[u8]) -> Result<Vec<Entry<'_>>, TlvError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let ((kind, id, value), rest) = entry(data)?;
        data = rest;
        match kind {
            Kind::Resource => push(
                &mut out,
                Entry {
                    instance: None,
                    resource: id,
                    resource_instance: None,
                    value,
                },
            )?,
            Kind::MultipleResource => resource_instances(&mut out, None, id, value)?,
            Kind::ObjectInstance => {
                let mut inner = value;
                while !inner.is_empty() {
                    let ((k, rid, v), rest) = entry(inner)?;
                    inner = rest;
                    match k {
                        Kind::Resource => push(
                            &mut out,
                            Entry {
                                instance: Some(id),
                                resource: rid,
                                resource_instance: None,
                                value: v,
                            },
                        )?,
                        Kind::MultipleResource => {
                            resource_instances(&mut out, Some(id), rid, v)?;
                        }
                        _ => return Err(TlvError("an object instance holds only resources")),
                    }
                }
            }
            Kind::ResourceInstance => {
                return Err(TlvError("a resource instance outside a multiple resource"));
            }
        }
    }
    Ok(out)
}

fn push<'a>(out: &mut Vec<Entry<'a>>, e: Entry<'a>) -> Result<(), TlvError> {
    if out.len() >= MAX_ENTRIES {
        return Err(TlvError("too many entries"));
    }
    out.push(e);
    Ok(())
}

fn resource_instances<'a>(
    out: &mut Vec<Entry<'a>>,
    instance: Option<u16>,
    resource: u16,
    mut data: &'a [u8],
) -> Result<(), TlvError> {
    while !data.is_empty() {
        let ((kind, id, value), rest) = entry(data)?;
        data = rest;
        if kind != Kind::ResourceInstance {
            return Err(TlvError(
                "a multiple resource holds only resource instances",
            ));
        }
        push(
            out,
            Entry {
                instance,
                resource,
                resource_instance: Some(id),
                value,
            },
        )?;
    }
    Ok(())
}

/// A TLV value as a number: an Integer (1, 2, 4 or 8 bytes, signed, big
/// endian) or a Float (4 or 8 bytes), told apart by the resource's type.
pub(crate) fn number(value: &[u8], float: bool) -> Option<f64> {
    Some(match (float, value.len()) {
        (true, 4) => f64::from(f32::from_be_bytes(value.try_into().ok()?)),
        (true, 8) => f64::from_be_bytes(value.try_into().ok()?),
        (false, 1) => f64::from(value[0] as i8),
        (false, 2) => f64::from(i16::from_be_bytes(value.try_into().ok()?)),
        (false, 4) => f64::from(i32::from_be_bytes(value.try_into().ok()?)),
        (false, 8) => i64::from_be_bytes(value.try_into().ok()?) as f64,
        _ => return None,
    })
    .filter(|v: &f64| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_resource_a_multiple_one_and_an_instance() {
        // 5700 = 0x1644 (16-bit id), Float 21.5 as 8 bytes.
        let mut one = vec![0b1110_1000, 0x16, 0x44, 8];
        one.extend_from_slice(&21.5f64.to_be_bytes());
        let e = decode(&one).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].instance, e[0].resource), (None, 5700));
        assert_eq!(number(e[0].value, true), Some(21.5));

        // Object instance 0 holding resource 9 (Integer 87) and multiple
        // resource 7 with instances 0 → 3800 and 1 → 5000.
        let multiple = [0b0100_0010, 0, 0x0e, 0xd8, 0b0100_0010, 1, 0x13, 0x88];
        let mut inner = vec![0b1100_0001, 9, 87, 0b1000_1000, 7, multiple.len() as u8];
        inner.extend_from_slice(&multiple);
        let mut instance = vec![0b0000_1000, 0, inner.len() as u8];
        instance.extend_from_slice(&inner);
        let e = decode(&instance).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].instance, e[0].resource), (Some(0), 9));
        assert_eq!(number(e[0].value, false), Some(87.0));
        assert_eq!(
            (
                e[2].resource,
                e[2].resource_instance,
                number(e[2].value, false)
            ),
            (7, Some(1), Some(5000.0))
        );
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for bad in [
            &[0b1110_1000u8, 0x16][..],
            &[0b1100_0011, 9, 1][..],
            &[0b0100_0001, 9, 1][..],
            &[0b0000_0011, 0, 0b0100_0001, 1, 1][..],
            &[0b1101_1000, 9, 0xff, 0xff, 0xff][..],
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(number(&[1, 2, 3], false), None);
        assert_eq!(number(&f64::NAN.to_be_bytes(), true), None);
    }

    #[test]
    fn any_bytes_decode_or_fail_cleanly() {
        // A cheap sweep standing in for a fuzzer: every 3-byte input and a
        // pseudo-random set of longer ones.
        for a in 0..=255u8 {
            for b in [0u8, 1, 7, 0x16, 0xff] {
                let _ = decode(&[a, b, 3, 1, 2, 3, a]);
            }
        }
        let mut x = 0x2545_f491_u32;
        for _ in 0..5000 {
            let bytes: Vec<u8> = (0..24)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }
}
